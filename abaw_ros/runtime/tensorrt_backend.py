"""TensorRT backend for Jetson (JetPack 6.1+, 7.x) and x86 NVIDIA GPUs: TensorRT 10.3,
10.13, 10.16 and 11.x through one code path.

Precision comes from the graph, never from builder flags (strongly typed networks; see
:mod:`abaw_ros.runtime.tensorrt_api` for what each TensorRT version offers):

- ``fp32``: both exported graphs as they are (TF32 off).
- ``fp16``: both graphs converted to mixed fp16 with fp32 inputs/outputs and the
  sensitive ops (LayerNorm, reductions, softmax) kept fp32
  (:func:`~abaw_ros.runtime.precision_graphs.convert_fp16`).
- ``int8``: the per-frame encoder as a Q/DQ graph (symmetric int8,
  :data:`~abaw_ros.runtime.precision_graphs.INT8_TENSORRT`) quantized with the same
  calibration crops and preprocessing as the ONNX Runtime int8 encoder; the temporal head
  as the fp16 graph (it runs once per window on small maps, the encoder for every face in
  every frame). TensorRT's implicit calibrators (deprecated in 10.1, removed in 11) are
  not used on any version.

Engines are cached by :class:`EngineCache` under a key of the source ONNX hash,
precision, profiles, TensorRT version, GPU name and compute capability and the precision
recipe; every fp16/int8 configuration is checked against fp32 (ONNX Runtime, CPU) before
it is used (:func:`abaw_ros.runtime.accuracy.enforce_precision`).

Importing this module imports TensorRT and cuda-python (:mod:`.tensorrt_api`); it is
imported only when the TensorRT backend is tried, and raises
:class:`BackendUnavailableError` with the fix when either is missing or unusable.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .accuracy import enforce_precision, precision_check_crops
from .base import BackendOptions, BackendUnavailableError, InferenceBackend, TensorSpec
from .bundle import ModelBundle, ModelSource
from .engine_cache import CachedEngine, EngineCache, EngineKey, InputProfile, onnx_sha256
from .precision_graphs import INT8_TENSORRT, convert_fp16, fp16_recipe, quantize_int8
from .preprocess import as_crop_list, preprocess_crops
from .tensorrt_api import FEATURES, INSTALL_HELP, gpu_identity, trt
from .tensorrt_build import build_serialized_engine
from .tensorrt_run import EngineRunner, create_stream, destroy_stream

LOG = logging.getLogger(__name__)

__all__ = ["INSTALL_HELP", "TensorRTBackend", "check_available", "create_backend", "graph_precisions"]

GRAPHS = ("encoder", "temporal_head")


def graph_precisions(precision: str) -> dict[str, str]:
    """The precision each graph is built in for a backend ``precision``."""
    return {"fp32": {"encoder": "fp32", "temporal_head": "fp32"},
            "fp16": {"encoder": "fp16", "temporal_head": "fp16"},
            "int8": {"encoder": "int8", "temporal_head": "fp16"}}[precision]


def graph_recipe(precision: str) -> str:
    """How the graph an engine of ``precision`` is built from is made (part of the key)."""
    made = {"fp32": lambda: "fp32 graph as exported", "fp16": lambda: fp16_recipe().describe(),
            "int8": INT8_TENSORRT.describe}[precision]()
    return f"{made}; strongly typed, TF32 off"


def _prepare_graph(source: Path, precision: str, out_dir: Path, calibration: np.ndarray | None) -> Path:
    """The ONNX graph TensorRT builds for ``precision``, written under ``out_dir``."""
    if precision == "fp32":
        return source
    if precision == "fp16":
        return convert_fp16(source, out_dir / f"{source.stem}.fp16.onnx")
    if calibration is None:
        raise ValueError("an int8 graph needs calibration crops")
    return quantize_int8(source, calibration, out_dir / f"{source.stem}.int8.onnx", INT8_TENSORRT)


def _ordered(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """Engine tensor names in ``wanted`` order when they match, else graph order."""
    return list(wanted) if set(wanted) <= set(names) and len(wanted) == len(names) else list(names)


class TensorRTBackend(InferenceBackend):
    name = "tensorrt"

    def __init__(self, bundle: ModelBundle, options: BackendOptions) -> None:
        device_index = _device_index(options.device)
        gpu_name, capability = gpu_identity(device_index)
        super().__init__(bundle.metadata, options.precision, f"cuda:{device_index} {gpu_name} (sm {capability})")
        self.bundle = bundle
        self.cache = EngineCache(options.cache_root, suffix=".engine")
        self.stream = create_stream()
        self.engines: dict[str, CachedEngine] = {}
        self.precision_verdict: dict[str, object] | None = None
        LOG.info("%s on %s", FEATURES.describe(), self.device)
        calibration: Callable[[], np.ndarray] = _memo(lambda: preprocess_crops(
            as_crop_list(options.calibration, options.calibration_limit), bundle.metadata))
        try:
            self._start(options, gpu_name, capability, calibration)
        except BaseException:  # free the GPU memory and stream of what did start
            self.close()
            raise

    def _start(self, options: BackendOptions, gpu_name: str, capability: str,
               calibration: Callable[[], np.ndarray]) -> None:
        for graph, precision in graph_precisions(options.precision).items():
            entry = self._engine(graph, precision, options, gpu_name, capability, calibration)
            self.engines[graph] = entry
            runner = EngineRunner(entry.read_bytes(), self.stream, graph)
            if graph == "encoder":
                self._encoder = runner
            else:
                self._head = runner
        meta = self.metadata
        self._encoder_outputs = _ordered(self._encoder.outputs, meta.feature_names)
        self._head_inputs = _ordered(self._head.inputs, meta.feature_names)
        if options.precision != "fp32":
            self.precision_verdict = enforce_precision(
                self, self.engines, self.cache,
                reference=lambda: _fp32_reference(self.bundle, options),
                crops=lambda: precision_check_crops(meta, options.calibration),
                accept=options.accept_precision,
                chunk=min(options.max_batch_size, options.max_windows),
            )

    def _engine(self, graph: str, precision: str, options: BackendOptions, gpu_name: str, capability: str,
                calibration: Callable[[], np.ndarray]) -> CachedEngine:
        """The cached engine of one graph: reused when its key matches, built otherwise."""
        source = self.bundle.encoder if graph == "encoder" else self.bundle.temporal_head
        max_batch = options.max_batch_size if graph == "encoder" else options.max_windows
        opt = min(options.opt_batch_size, max_batch) if graph == "encoder" else 1
        profiles = InputProfile.for_onnx(source, opt, max_batch)
        key = EngineKey(onnx_sha256(source), precision, profiles, f"tensorrt {trt.__version__}", gpu_name, capability,
                        recipe=graph_recipe(precision))
        stem = f"{self.bundle.directory.name}.{graph}"
        crops: np.ndarray | None = None
        if precision == "int8":
            if options.calibration is None:
                found = None if options.force_engine_update else self.cache.find_calibrated(key, stem)
                if found is None:
                    raise ValueError(
                        "precision='int8' needs calibration face crops: pass calibration=<folder of face-crop "
                        "images>, or build the engine once with `abaw-affect build-engine MODEL --precision int8 "
                        f"--calibration DIR` into {self.cache.directory}"
                    )
                return found
            crops = calibration()
            if len(crops) == 0:
                raise ValueError("calibration holds no face crops")
            key = dataclasses.replace(
                key, extra=(("calibration_sha256", hashlib.sha256(crops.tobytes()).hexdigest()),))

        def build() -> bytes:
            with tempfile.TemporaryDirectory(prefix="abaw-trt-") as tmp:
                prepared = _prepare_graph(source, precision, Path(tmp), crops)
                return build_serialized_engine(prepared, profiles, workspace_bytes=options.workspace_bytes,
                                               label=f"{graph} {precision}")

        return self.cache.get_or_build(key, build, stem=stem, force=options.force_engine_update)

    def compiled_artifacts(self) -> dict[str, CachedEngine]:
        return dict(self.engines)

    def encode(self, crops: np.ndarray) -> list[np.ndarray]:
        crops = self.check_crops(crops)
        out = self._encoder.run({self._encoder.inputs[0]: crops})
        return [out[n] for n in self._encoder_outputs]

    def temporal(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        windows = self.check_windows(windows)
        out = self._head.run(dict(zip(self._head_inputs, windows, strict=True)))
        return out[self._head.outputs[0]]

    def input_specs(self) -> dict[str, list[TensorSpec]]:
        return {"encoder": self._encoder.specs()[0], "temporal_head": self._head.specs()[0]}

    def output_specs(self) -> dict[str, list[TensorSpec]]:
        return {"encoder": self._encoder.specs()[1], "temporal_head": self._head.specs()[1]}

    def close(self) -> None:
        for runner in (getattr(self, "_encoder", None), getattr(self, "_head", None)):
            if runner is not None:
                runner.close()
        if getattr(self, "stream", None) is not None:
            destroy_stream(self.stream)
            self.stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may be gone already
            pass


def _memo(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """Call ``fn`` once, on first use (the crops are read only if an int8 build needs them)."""
    cell: list[np.ndarray] = []

    def get() -> np.ndarray:
        if not cell:
            cell.append(fn())
        return cell[0]

    return get


def _fp32_reference(bundle: ModelBundle, options: BackendOptions) -> InferenceBackend:
    """What the precision check compares with: the exported fp32 graphs in ONNX Runtime."""
    try:
        from .onnxruntime_backend import OnnxRuntimeBackend
    except BackendUnavailableError as exc:
        raise ValueError(f"checking a {options.precision} engine needs ONNX Runtime as the fp32 reference: {exc}") \
            from exc
    return OnnxRuntimeBackend(bundle, dataclasses.replace(options, precision="fp32", device="cpu", calibration=None))


def _device_index(device: str | None) -> int:
    if device in (None, "cuda", "gpu"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"device={device!r}: the TensorRT backend runs on 'cuda' or 'cuda:<index>'")


def check_available(options: BackendOptions) -> None:
    """Raise :class:`BackendUnavailableError` unless engines of ``options.precision``
    can be built here (a GPU, and the fp16 converter for fp16/int8)."""
    gpu_identity(_device_index(options.device))
    if options.precision in ("fp16", "int8"):
        try:
            fp16_recipe()
        except ValueError as exc:
            raise BackendUnavailableError(str(exc)) from exc


def create_backend(source: ModelSource, options: BackendOptions) -> TensorRTBackend:
    return TensorRTBackend(source.onnx_bundle(options.cache_root), options)
