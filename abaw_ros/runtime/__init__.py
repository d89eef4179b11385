"""One inference interface over TensorRT, ONNX Runtime and PyTorch.

>>> backend = load_backend("model_bundle/", backend="auto", precision="fp16")
>>> maps = backend.encode(preprocess_crops(face_crops, backend.metadata))
>>> outputs = backend.temporal(windows)  # activated, (B, D)

Each backend lives in its own module, imported only when chosen, so a machine without
TensorRT (or without torch) still runs the others. ``auto`` tries TensorRT (needs the
package and a GPU), then ONNX Runtime (CUDA provider if present, else CPU), then PyTorch,
and logs which one it took and why it skipped the others.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .base import (
    PRECISIONS,
    BackendOptions,
    BackendUnavailableError,
    InferenceBackend,
    ModelMetadata,
    TensorSpec,
    read_onnx_metadata,
)
from .bundle import ModelBundle, resolve_model_path
from .engine_cache import EngineCache, EngineKey, InputProfile, default_cache_dir
from .preprocess import load_crop_images, normalize_crops, preprocess_crops

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "PRECISIONS",
    "BackendOptions",
    "BackendUnavailableError",
    "EngineCache",
    "EngineKey",
    "InferenceBackend",
    "InputProfile",
    "ModelBundle",
    "ModelMetadata",
    "TensorSpec",
    "available_backends",
    "default_cache_dir",
    "load_backend",
    "load_crop_images",
    "normalize_crops",
    "preprocess_crops",
    "read_onnx_metadata",
]

LOG = logging.getLogger(__name__)

# backend name -> module defining check_available(options) and create_backend(source, options)
BACKENDS: dict[str, str] = {
    "tensorrt": "abaw_ros.runtime.tensorrt_backend",
    "onnxruntime": "abaw_ros.runtime.onnxruntime_backend",
    "torch": "abaw_ros.runtime.torch_backend",
}
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "onnxruntime", "torch")
# What `auto` runs instead when the backend it falls back to lacks the asked precision.
_AUTO_PRECISION_FALLBACK: dict[str, dict[str, str]] = {
    "onnxruntime": {"fp16": "fp32"},
    "torch": {"fp16": "fp32", "int8": "fp32"},
}


def _backend_module(name: str) -> ModuleType:
    """Import a backend's module; a missing runtime becomes BackendUnavailableError."""
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {name!r} cannot be imported: {exc}") from exc


def available_backends(precision: str = "fp32", device: str | None = None) -> dict[str, str | None]:
    """``{backend: None if it can run here, else the reason}``, in ``auto`` order."""
    result: dict[str, str | None] = {}
    for name in AUTO_ORDER:
        try:
            _backend_module(name).check_available(BackendOptions(precision=precision, device=device))
            result[name] = None
        except BackendUnavailableError as exc:
            result[name] = str(exc)
    return result


def load_backend(
    model_path: str | Path,
    backend: str = "auto",
    precision: str = "fp32",
    *,
    engine_cache_dir: str | Path | None = None,
    force_engine_update: bool = False,
    num_threads: int | None = None,
    device: str | None = None,
    calibration: str | Path | Sequence[np.ndarray] | None = None,
    **options: Any,
) -> InferenceBackend:
    """Load ``model_path`` (checkpoint ``.pt`` or bundle directory) on ``backend``.

    ``precision``: fp32 | fp16 (TensorRT; torch on CUDA) | int8 (TensorRT, ONNX Runtime;
    needs ``calibration``, a folder of face crops or a list of HxWx3 uint8 RGB crops).
    ``engine_cache_dir``: where engines, quantized graphs and exports of checkpoints are
    kept (default ``~/.cache/abaw_ros/engines``); ``force_engine_update`` rebuilds them.
    Further keywords are :class:`BackendOptions` fields (``max_batch_size``, ...).
    """
    choices = ["auto", *BACKENDS]
    if backend not in choices:
        raise ValueError(f"backend={backend!r}: choose one of {choices}")
    opts = BackendOptions(
        precision=precision,
        device=device,
        engine_cache_dir=Path(engine_cache_dir) if engine_cache_dir is not None else None,
        force_engine_update=force_engine_update,
        num_threads=num_threads,
        calibration=calibration,
        **options,
    )
    source = resolve_model_path(model_path)
    if backend != "auto":
        module = _backend_module(backend)
        module.check_available(opts)
        instance = module.create_backend(source, opts)
        LOG.info("inference backend: %s (%s, %s)", instance.name, instance.precision, instance.device)
        return instance

    skipped: list[str] = []
    for name in AUTO_ORDER:
        chosen = opts
        fallback = _AUTO_PRECISION_FALLBACK.get(name, {}).get(precision)
        try:
            module = _backend_module(name)
            try:
                module.check_available(opts)
            except BackendUnavailableError:
                if fallback is None:
                    raise
                chosen = replace(opts, precision=fallback)
                module.check_available(chosen)
        except BackendUnavailableError as exc:
            skipped.append(f"{name}: {exc}")
            LOG.info("auto backend: skipping %s: %s", name, exc)
            continue
        if name == "torch" and source.checkpoint is None:
            skipped.append("torch: needs a checkpoint, got an ONNX bundle")
            continue
        if chosen.precision != precision:
            LOG.warning("auto backend: %s offers no %s here; running %s", name, precision, chosen.precision)
        instance = module.create_backend(source, chosen)
        why = "; ".join(skipped) if skipped else "first choice available"
        LOG.info("auto backend: using %s (%s, %s); %s", name, instance.precision, instance.device,
                 f"skipped {why}" if skipped else why)
        return instance
    raise BackendUnavailableError("no inference backend can run here:\n  " + "\n  ".join(skipped))
