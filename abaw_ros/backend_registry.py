"""The inference backends the package knows, as data: one :class:`BackendSpec` each.

Lowest floor (standard library only), so the parameter spec (``config.py``), the
commands and the runtime read the same table without importing any runtime. How a spec
is imported, checked and run lives in :mod:`abaw_ros.runtime.loading`; the module a spec
names implements :class:`abaw_ros.runtime.base.BackendModule`. A new backend is one
module and one entry here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["AUTO_CANDIDATES", "AUTO_ORDER", "BACKENDS", "PRECISIONS", "BackendSpec", "backend_spec"]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BackendSpec:
    """One backend: where it lives and what it offers."""

    name: str
    module: str  # defines check_available(options) and create_backend(source, options)
    precisions: tuple[str, ...]  # what it can run somewhere (each machine may offer fewer)
    needs: str  # packages and hardware, for messages and docs
    checkpoint_only: bool = False  # runs checkpoints only, not ONNX bundles
    # precisions for which it compiles graphs into the cache (what build-engine makes)
    compiles: tuple[str, ...] = ()
    # what `bench` measures when it is available
    bench_precisions: tuple[str, ...] = ("fp32",)
    # its fp32 is a reference the other backends' accuracy is reported against
    reference: bool = False
    # what `auto` runs instead when this backend lacks the asked precision here
    auto_fallback: Mapping[str, str] = field(default_factory=dict)
    # fp32 agreement with the checkpoint's own modules (torch) on the same crops: largest
    # difference of the activated outputs, and of the feature maps relative to their largest
    # magnitude (checked by tests/test_runtime_contract.py)
    fp32_output_atol: float = 1e-4
    fp32_feature_rtol: float = 1e-4


# In the order of the `backend` parameter's choices.
BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec for spec in (
        BackendSpec("onnxruntime", "abaw_ros.runtime.onnxruntime_backend", ("fp32", "int8"),
                    "onnxruntime (CPU); onnxruntime-gpu for fp32 on CUDA", compiles=("int8",),
                    bench_precisions=("fp32", "int8"), reference=True, auto_fallback={"fp16": "fp32"}),
        BackendSpec("torch", "abaw_ros.runtime.torch_backend", ("fp32", "fp16"),
                    "torch and timm, a checkpoint (fp16 on CUDA only)", checkpoint_only=True,
                    reference=True, auto_fallback={"fp16": "fp32", "int8": "fp32"},
                    fp32_output_atol=0.0, fp32_feature_rtol=0.0),
        BackendSpec("tensorrt", "abaw_ros.runtime.tensorrt_backend", PRECISIONS,
                    "TensorRT 10+ Python bindings, cuda-python and an NVIDIA GPU", compiles=PRECISIONS,
                    bench_precisions=PRECISIONS, fp32_output_atol=1e-3, fp32_feature_rtol=1e-3),
    )
}

# What `auto` tries, in order: candidate -> (backend, device it runs on; None: the backend's choice).
AUTO_CANDIDATES: dict[str, tuple[str, str | None]] = {
    "tensorrt": ("tensorrt", None),
    "onnxruntime-cuda": ("onnxruntime", "cuda"),
    "onnxruntime-cpu": ("onnxruntime", "cpu"),
    "torch": ("torch", None),
}
AUTO_ORDER: tuple[str, ...] = tuple(AUTO_CANDIDATES)


def backend_spec(name: str) -> BackendSpec:
    """The spec of ``name``; ValueError listing the choices otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r}: choose one of {['auto', *BACKENDS]}")
    return BACKENDS[name]
