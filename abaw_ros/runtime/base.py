"""The inference interface every backend implements (:class:`InferenceBackend`) and the
module contract of a backend (:class:`BackendModule`); the model metadata it carries is
the schema of :mod:`abaw_ros.model_metadata`, its settings :mod:`.options`.

A backend runs the network as two graphs: the per-frame encoder (face crops -> feature
maps) and the temporal head (windows of feature maps -> activated task outputs). The
node, the offline tools and the benchmarks only talk to :class:`InferenceBackend`.

Streaming form (``backend.streams_tubelets``): two more graphs split the head's tubelet
embedding. ``project`` maps one frame's feature maps to its projections by every time
slice of the embedding weight, ``(N, pt, dim, h, w)`` per level, once per frame; the ring
buffer sums them per tubelet and ``temporal_tubelets`` runs the rest of the head on those
sums ``(B, T/pt, dim, h, w)``. Same outputs as ``temporal`` on the window, at an
embedding cost per frame that does not grow with T. A backend offers it when its model
has the graphs (``metadata.projection_shapes`` set, bundle files present); callers fall
back to ``encode`` + ``temporal`` otherwise.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from abaw_ros.model_metadata import ModelMetadata

from .identity import ModelIdentity
from .options import BackendOptions

if TYPE_CHECKING:
    from .bundle import ModelSource

__all__ = ["BackendModule", "BackendOptions", "BackendUnavailableError", "InferenceBackend", "ModelMetadata",
           "TensorSpec"]


class BackendUnavailableError(RuntimeError):
    """A backend cannot run here (package, GPU or model file missing); the message says
    what is missing and how to fix it."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. Symbolic dimensions are strings (``"N"``, ``"B"``)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape)
        return f"{self.name}[{dims}] {self.dtype}"


class InferenceBackend(ABC):
    """Runs the encoder and the temporal head. Subclasses live in their own modules and
    are imported only when chosen (see :func:`abaw_ros.runtime.load_backend`)."""

    name: ClassVar[str] = "base"
    # which model runs: set by the loader (abaw_ros.runtime.loading) from the path it loaded
    identity: ModelIdentity = ModelIdentity()

    def __init__(self, metadata: ModelMetadata, precision: str, device: str) -> None:
        self.metadata = metadata
        self.precision = precision
        self.device = device

    # -- the interface -----------------------------------------------------------------
    @abstractmethod
    def encode(self, crops: np.ndarray) -> list[np.ndarray]:
        """Crops ``(N, 3, S, S)`` float32 (see :func:`preprocess_crops`) -> one array
        ``(N, C, H, W)`` per feature map, in ``metadata.feature_names`` order."""

    @abstractmethod
    def temporal(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """One ``(B, T, C, H, W)`` array per feature map -> activated outputs ``(B, D)``
        (``(B, T, D)`` in per-frame mode)."""

    # -- the streaming form (optional; see the module docstring) ------------------------
    @property
    def streams_tubelets(self) -> bool:
        """Whether :meth:`project` and :meth:`temporal_tubelets` run here."""
        return False

    def project(self, maps: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One ``(N, C, H, W)`` array per feature map (what :meth:`encode` returns) -> per
        level the frames' tubelet-embedding projections ``(N, pt, dim, h, w)``."""
        raise NotImplementedError(self._no_tubelets())

    def temporal_tubelets(self, sums: Sequence[np.ndarray]) -> np.ndarray:
        """Per level the tubelet sums of the windows ``(B, T/pt, dim, h, w)`` -> activated
        outputs, as :meth:`temporal` gives on the windows they were summed from."""
        raise NotImplementedError(self._no_tubelets())

    def _no_tubelets(self) -> str:
        if not self.metadata.projection_shapes:
            return ("this model predates the streaming graphs (no projection_shapes in its metadata): "
                    "re-export it with `abaw-affect export` for per-frame projections")
        return f"the {self.name} backend does not run the streaming graphs; use encode() + temporal()"

    @abstractmethod
    def input_specs(self) -> dict[str, list[TensorSpec]]:
        """Inputs of each graph: ``{"encoder": [...], "temporal_head": [...]}``."""

    @abstractmethod
    def output_specs(self) -> dict[str, list[TensorSpec]]:
        """Outputs of each graph, same keys as :meth:`input_specs`."""

    # -- shared behaviour --------------------------------------------------------------
    def warmup(self, batch_size: int = 1, iterations: int = 2) -> None:
        """Run both graphs on zeros so lazy initialisation (allocations, kernel choice,
        thread pools) happens before the first real frame."""
        crops = np.zeros((batch_size, 3, self.metadata.input_size, self.metadata.input_size), np.float32)
        windows = self.zero_windows(batch_size)
        for _ in range(iterations):
            maps = self.encode(crops)
            self.temporal(windows)
            if self.streams_tubelets:
                self.project(maps)
                self.temporal_tubelets(self.zero_tubelets(batch_size))

    def zero_tubelets(self, batch_size: int) -> list[np.ndarray]:
        return [np.zeros((batch_size, *shape), np.float32) for shape in self.metadata.tubelet_shapes]

    def zero_windows(self, batch_size: int) -> list[np.ndarray]:
        t = self.metadata.window_length
        return [np.zeros((batch_size, t, *shape), np.float32) for shape in self.metadata.feature_shapes]

    def infer_clips(self, clips: np.ndarray) -> np.ndarray:
        """Whole windows of crops ``(B, T, 3, S, S)`` -> activated outputs: every frame
        encoded, then the temporal head. What the streaming node computes, in one call."""
        clips = np.asarray(clips, np.float32)
        if clips.ndim != 5:
            raise ValueError(f"clips of shape {clips.shape}: expected (B, T, 3, S, S)")
        b, t = clips.shape[:2]
        if t != self.metadata.window_length:
            raise ValueError(f"clips have T={t} frames: the model's window_length is {self.metadata.window_length}")
        maps = self.encode(clips.reshape(b * t, *clips.shape[2:]))
        return self.temporal([m.reshape(b, t, *m.shape[1:]) for m in maps])

    def summary(self, metadata: ModelMetadata | None = None) -> dict[str, Any]:
        """What a tool's report or sidecar says about the model (the same for every tool).
        ``metadata``: what the caller really runs with, when it carries other thresholds
        than the backend's files (a pipeline given tuned ones); default the backend's."""
        from abaw_ros.tasks import AU_NAMES

        meta = self.metadata if metadata is None else metadata
        return {
            "model_file_path": self.identity.model_file_path,
            "model_id": self.identity.model_id,
            "trained": bool(meta.trained),
            "backend": self.name,
            "precision": self.precision,
            "tasks": list(meta.tasks),
            "window_length": int(meta.window_length),
            "output_mode": meta.output_mode,
            "au_thresholds": dict(zip(AU_NAMES, (float(t) for t in meta.au_thresholds), strict=True)),
            "ah_threshold": float(meta.ah_threshold),
        }

    def describe(self) -> str:
        lines = [f"backend {self.name} ({self.precision}, {self.device})"]
        for direction, specs in (("in", self.input_specs()), ("out", self.output_specs())):
            for graph, items in specs.items():
                lines.append(f"  {graph} {direction}: " + ", ".join(str(s) for s in items))
        return "\n".join(lines)

    def compiled_artifacts(self) -> dict[str, Any]:
        """Cache entries (:class:`~abaw_ros.runtime.engine_cache.CachedEngine`) this
        backend runs, per graph: TensorRT engines, quantized ONNX graphs. Empty when it
        runs the exported graphs or the checkpoint as they are."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to free
        """Release runtime resources (GPU memory, sessions). Safe to call twice."""

    def __enter__(self) -> InferenceBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r}, device={self.device!r})"

    # -- validation used by every backend ----------------------------------------------
    def check_crops(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        s = self.metadata.input_size
        if crops.ndim != 4 or crops.shape[1:] != (3, s, s):
            raise ValueError(f"crops of shape {crops.shape}: expected (N, 3, {s}, {s}) (use preprocess_crops)")
        if crops.shape[0] == 0:
            raise ValueError("crops is empty: encode needs at least one crop")
        return np.ascontiguousarray(crops, dtype=np.float32)

    def check_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        meta = self.metadata
        if len(windows) != len(meta.feature_shapes):
            raise ValueError(
                f"{len(windows)} window arrays: the temporal head takes {len(meta.feature_shapes)} "
                f"({', '.join(meta.feature_names)})"
            )
        out = []
        batch = None
        for name, shape, win in zip(meta.feature_names, meta.feature_shapes, windows, strict=True):
            win = np.asarray(win)
            expected = (meta.window_length, *shape)
            if win.ndim != 5 or win.shape[1:] != expected:
                raise ValueError(f"window '{name}' of shape {win.shape}: expected (B, {', '.join(map(str, expected))})")
            if batch is not None and win.shape[0] != batch:
                raise ValueError(f"window batch sizes differ ({batch} vs {win.shape[0]} for '{name}')")
            batch = win.shape[0]
            out.append(np.ascontiguousarray(win, dtype=np.float32))
        return out

    def check_projection_inputs(self, maps: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Validate one frame batch of feature maps for :meth:`project`."""
        return self._check_levels(maps, self.metadata.feature_shapes, "feature maps: project takes",
                                  "feature map", "N", "feature map")

    def check_tubelets(self, sums: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Validate tubelet sums for :meth:`temporal_tubelets`."""
        return self._check_levels(sums, self.metadata.tubelet_shapes, "tubelet arrays: the tubelet head takes",
                                  "tubelet sums", "B", "tubelet")

    def _check_levels(self, arrays: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]], count: str,
                      item: str, batch_axis: str, batch: str) -> list[np.ndarray]:
        """One float32 array per level, each ``(batch, *shape)``, all with the same batch;
        a ValueError names the level and the shape otherwise."""
        meta = self.metadata
        if len(arrays) != len(shapes):
            raise ValueError(f"{len(arrays)} {count} {len(shapes)} ({', '.join(meta.feature_names)})")
        out = []
        for name, shape, x in zip(meta.feature_names, shapes, arrays, strict=True):
            x = np.asarray(x)
            if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
                raise ValueError(f"{item} '{name}' of shape {x.shape}: expected ({batch_axis}, "
                                 f"{', '.join(map(str, shape))})")
            out.append(np.ascontiguousarray(x, dtype=np.float32))
        if len({x.shape[0] for x in out}) > 1:
            raise ValueError(f"{batch} batch sizes differ: {[x.shape[0] for x in out]}")
        return out


class BackendModule(Protocol):
    """What the module a :class:`~abaw_ros.backend_registry.BackendSpec` names defines
    (checked when it is imported, :mod:`abaw_ros.runtime.loading`)."""

    def check_available(self, options: BackendOptions) -> None:
        """Return when the backend can run with ``options`` here; raise
        BackendUnavailableError (what is missing, how to get it) or ValueError (a setting
        it cannot take, such as device='cpu' for TensorRT) otherwise."""

    def create_backend(self, source: ModelSource, options: BackendOptions) -> InferenceBackend:
        """The backend running ``source`` (a checkpoint or a bundle) with ``options``."""


BACKEND_MODULE_FUNCTIONS: tuple[str, ...] = ("check_available", "create_backend")
