"""Building TensorRT engines: an ONNX graph -> a serialized, strongly typed engine.

The graph already carries its precision (the exported fp32 graph, the fp16 graph or the
Q/DQ int8 graph of :mod:`abaw_ros.runtime.precision_graphs`); the builder is given no
precision flags, only the optimisation profile, the workspace limit and TF32 off. This is
the one build path of TensorRT 11 (strong typing only, explicit quantization only) and is
supported unchanged from TensorRT 10.0 on (``STRONGLY_TYPED`` flag, Q/DQ graphs).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine_cache import InputProfile
from .tensorrt_api import FEATURES, TRT_LOGGER, trt


def _parse(network: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, TRT_LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT {FEATURES.version} could not parse {onnx_path.name}: {errors}")
    return parser


def build_serialized_engine(
    onnx_path: Path, profiles: Sequence[InputProfile], *, workspace_bytes: int = 1 << 30, label: str = ""
) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized engine
    with one optimisation profile (``profiles``: one per input)."""
    builder = trt.Builder(TRT_LOGGER)
    network = builder.create_network(FEATURES.network_flags())
    _parser = _parse(network, onnx_path)  # the parser must outlive the build
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if FEATURES.tf32_flag:
        # On by default on Ampere and newer (Orin included); the fp32 parts of every graph stay fp32.
        config.clear_flag(trt.BuilderFlag.TF32)
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    missing = names - {p.name for p in profiles}
    if missing:
        raise ValueError(f"{onnx_path.name}: no optimisation profile for input(s) {sorted(missing)}")
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(
            f"TensorRT {FEATURES.version} failed to build the {label or onnx_path.name} engine (see the log above)"
        )
    return bytes(serialized)
