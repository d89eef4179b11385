"""One inference interface over TensorRT, ONNX Runtime and PyTorch.

>>> backend = load_backend("model_bundle/", backend="auto", precision="fp16")
>>> maps = backend.encode(preprocess_crops(face_crops, backend.metadata))
>>> outputs = backend.temporal(windows)  # activated, (B, D)

``open_backend(config)`` is what the pipeline, the node and the offline tools call: every
"auto" of a :class:`~abaw_ros.config.PipelineConfig` resolved (:mod:`.opening`).

The backends are listed in :mod:`abaw_ros.backend_registry` (one spec each); each lives in
its own module implementing :class:`BackendModule`, imported only when chosen
(:mod:`.loading`), so a machine without TensorRT (or without torch) still runs the others.
"""
from __future__ import annotations

from abaw_ros.backend_registry import AUTO_CANDIDATES, AUTO_ORDER, BACKENDS, PRECISIONS, BackendSpec
from abaw_ros.model_metadata import ModelMetadata, read_onnx_metadata

from .base import BackendModule, BackendUnavailableError, InferenceBackend, TensorSpec
from .bundle import ModelBundle
from .engine_cache import EngineCache, EngineKey, InputProfile, default_cache_dir
from .identity import ModelIdentity
from .loading import available_backends, load_backend
from .opening import open_backend
from .options import BackendOptions
from .preprocess import load_crop_images, normalize_crops, preprocess_crops

__all__ = [
    "AUTO_CANDIDATES",
    "AUTO_ORDER",
    "BACKENDS",
    "PRECISIONS",
    "BackendModule",
    "BackendOptions",
    "BackendSpec",
    "BackendUnavailableError",
    "EngineCache",
    "EngineKey",
    "InferenceBackend",
    "InputProfile",
    "ModelBundle",
    "ModelIdentity",
    "ModelMetadata",
    "TensorSpec",
    "available_backends",
    "default_cache_dir",
    "load_backend",
    "load_crop_images",
    "normalize_crops",
    "open_backend",
    "preprocess_crops",
    "read_onnx_metadata",
]
