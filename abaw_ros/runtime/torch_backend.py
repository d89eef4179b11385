"""PyTorch backend: runs the checkpoint's own modules (the reference the other backends
are checked against). CPU, or CUDA where a CUDA build of torch sees a GPU; fp16 on CUDA
only. ``num_threads`` sets torch's intra-op threads, which is process-wide in PyTorch.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import BackendOptions, BackendUnavailableError, InferenceBackend, ModelMetadata, TensorSpec
from .bundle import ModelSource

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise BackendUnavailableError(f"PyTorch is not installed ({exc}); use backend='onnxruntime'") from exc

LOG = logging.getLogger(__name__)


def _device(options: BackendOptions) -> str:
    if options.device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if options.device == "cpu" or options.device.startswith("cuda"):
        if options.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device={options.device!r}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use device='cpu'"
            )
        return options.device
    raise ValueError(f"device={options.device!r}: choose 'cpu', 'cuda' or 'cuda:<index>'")


def metadata_from_checkpoint(model: Any, info: dict[str, Any]) -> ModelMetadata:
    """The same metadata the ONNX export would carry, built from a loaded checkpoint."""
    from abaw_ros.models.export import model_metadata

    return model_metadata(model, thresholds=info.get("thresholds"), trained=bool(info.get("trained", False)),
                          provenance=info.get("provenance"))


class TorchBackend(InferenceBackend):
    name = "torch"

    def __init__(self, model: Any, metadata: ModelMetadata, options: BackendOptions) -> None:
        device = _device(options)
        if options.precision == "int8":
            raise ValueError("precision='int8' is not offered by the torch backend: use backend='onnxruntime' or 'tensorrt'")
        if options.precision == "fp16" and not device.startswith("cuda"):
            raise ValueError("precision='fp16' with the torch backend needs a CUDA device; use 'fp32' on CPU")
        if options.num_threads is not None:
            torch.set_num_threads(options.num_threads)
        super().__init__(metadata, options.precision, f"{device} x{torch.get_num_threads()}" if device == "cpu" else device)
        self._dtype = torch.float16 if options.precision == "fp16" else torch.float32
        self._device = torch.device(device)
        self.model = model.to(self._device, self._dtype).eval()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self._device, self._dtype)

    @staticmethod
    def _numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy()

    def encode(self, crops: np.ndarray) -> list[np.ndarray]:
        crops = self.check_crops(crops)
        with torch.inference_mode():
            return [self._numpy(m) for m in self.model.encoder(self._tensor(crops))]

    def temporal(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        windows = self.check_windows(windows)
        with torch.inference_mode():
            raw = self.model.head([self._tensor(w) for w in windows])
            return self._numpy(self.model.activate(raw.float()))

    @property
    def streams_tubelets(self) -> bool:
        return True  # the checkpoint's modules run every form

    def project(self, maps: Sequence[np.ndarray]) -> list[np.ndarray]:
        maps = self.check_projection_inputs(maps)
        with torch.inference_mode():
            return [self._numpy(p) for p in self.model.head.project_frames([self._tensor(m) for m in maps])]

    def temporal_tubelets(self, sums: Sequence[np.ndarray]) -> np.ndarray:
        sums = self.check_tubelets(sums)
        with torch.inference_mode():
            raw = self.model.head.forward_tubelets([self._tensor(x) for x in sums])
            return self._numpy(self.model.activate(raw.float()))

    def input_specs(self) -> dict[str, list[TensorSpec]]:
        meta = self.metadata
        s, t = meta.input_size, meta.window_length
        names = meta.feature_names
        return {
            "encoder": [TensorSpec("crops", ("N", 3, s, s))],
            "projection": [TensorSpec(n, ("N", *shape)) for n, shape in zip(names, meta.feature_shapes, strict=True)],
            "tubelet_head": [TensorSpec(f"{n}_tubelets", ("B", *shape))
                             for n, shape in zip(names, meta.tubelet_shapes, strict=True)],
            "temporal_head": [TensorSpec(n, ("B", t, *shape)) for n, shape in zip(names, meta.feature_shapes, strict=True)],
        }

    def output_specs(self) -> dict[str, list[TensorSpec]]:
        meta = self.metadata
        names = meta.feature_names
        out = ("B", meta.window_length, meta.output_dim) if meta.output_mode == "frame" else ("B", meta.output_dim)
        return {
            "encoder": [TensorSpec(n, ("N", *shape)) for n, shape in zip(names, meta.feature_shapes, strict=True)],
            "projection": [TensorSpec(f"{n}_projection", ("N", *shape))
                           for n, shape in zip(names, meta.projection_shapes, strict=True)],
            "tubelet_head": [TensorSpec("outputs", out)],
            "temporal_head": [TensorSpec("outputs", out)],
        }


def check_available(options: BackendOptions) -> None:
    device = _device(options)
    if options.precision == "int8":
        raise BackendUnavailableError("the torch backend offers fp32 (and fp16 on CUDA), not int8")
    if options.precision == "fp16" and device == "cpu":
        raise BackendUnavailableError("the torch backend offers fp16 on CUDA only; this machine has no CUDA GPU for torch")


def create_backend(source: ModelSource, options: BackendOptions) -> TorchBackend:
    if source.checkpoint is None:
        raise ValueError(
            f"backend='torch' needs a checkpoint (.pt); {source.path} is an ONNX bundle. Pass the checkpoint "
            "it was exported from, or use backend='onnxruntime'"
        )
    from abaw_ros.models import load_checkpoint

    model, info = load_checkpoint(source.checkpoint)
    return TorchBackend(model, metadata_from_checkpoint(model, info), options)
