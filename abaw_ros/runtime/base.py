"""The inference interface every backend implements, and the model metadata it carries.

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

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from abaw_ros import tasks as task_registry

from .engine_cache import default_cache_dir

METADATA_KEY = "abaw_ros"  # ONNX metadata_props key holding the metadata JSON
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass
class BackendOptions:
    """Settings of :func:`abaw_ros.runtime.load_backend`, passed to every backend; each
    reads the ones that concern it."""

    precision: str = "fp32"
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: the backend's best
    engine_cache_dir: Path | None = None  # None: ~/.cache/abaw_ros/engines (see cache_root)
    force_engine_update: bool = False
    num_threads: int | None = None  # CPU threads; None: the cores this process may use
    opt_batch_size: int = 4  # crops per encoder call the engines are tuned for
    max_batch_size: int = 16  # most crops per encoder call (TensorRT profile)
    max_windows: int = 8  # most windows per temporal-head call (TensorRT profile)
    calibration: Path | Sequence[np.ndarray] | None = None  # face crops for int8
    calibration_limit: int = 256
    workspace_bytes: int = 1 << 30  # TensorRT builder workspace
    accept_precision: bool = False  # use an int8/fp16 build that misses the precision tolerances (logged)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: choose one of {list(PRECISIONS)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads={self.num_threads}: must be >= 1 (or None for all usable cores)")
        if not 1 <= self.opt_batch_size <= self.max_batch_size:
            raise ValueError(
                f"opt_batch_size={self.opt_batch_size}, max_batch_size={self.max_batch_size}: "
                "need 1 <= opt_batch_size <= max_batch_size"
            )
        if self.max_windows < 1:
            raise ValueError(f"max_windows={self.max_windows}: must be >= 1")
        if self.engine_cache_dir is not None:
            self.engine_cache_dir = Path(self.engine_cache_dir).expanduser()

    @property
    def cache_root(self) -> Path:
        """Where engines, quantized graphs and exports from checkpoints are kept."""
        return self.engine_cache_dir if self.engine_cache_dir is not None else default_cache_dir() / "engines"


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


class MetadataValueError(ValueError):
    """A model's metadata holds a value no model can have (a zero or NaN std, a mean of
    1e308, a threshold outside (0, 1)); the message names the field and the allowed values."""


# Preprocessing a model may declare: crops are scaled to [0, 1] and then normalised with
# its mean/std, so a mean outside [0, 1] or a std near 0 (or not finite) would blow the
# inputs up to inf/NaN (and stop the int8 quantizer with a bare "scale issue").
MEAN_RANGE = (0.0, 1.0)
STD_RANGE = (1e-3, 10.0)


def _check_values(metadata: ModelMetadata) -> None:
    for name, lo, hi in (("mean", *MEAN_RANGE), ("std", *STD_RANGE)):
        values = getattr(metadata, name)
        if len(values) != 3 or not all(lo <= v <= hi for v in values):  # NaN fails every comparison
            raise MetadataValueError(f"{name}={list(values)}: must be 3 numbers, each {lo:g} to {hi:g} (the "
                                     f"per-channel {name} of crops scaled to [0, 1])")
    if not all(0.0 < v < 1.0 for v in metadata.au_thresholds):
        raise MetadataValueError(f"au_thresholds={list(metadata.au_thresholds)}: probabilities must lie in (0, 1)")
    if not 0.0 < metadata.ah_threshold < 1.0:
        raise MetadataValueError(f"ah_threshold={metadata.ah_threshold}: a probability must lie in (0, 1)")


@dataclass(frozen=True)
class ModelMetadata:
    """What a deployed model needs to explain itself: tasks, output layout, window length,
    preprocessing and thresholds. Travels inside every exported ONNX graph."""

    tasks: tuple[str, ...]
    window_length: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_names: tuple[str, ...]
    feature_shapes: tuple[tuple[int, int, int], ...]  # per frame (C, H, W), same order as names
    output_mode: str = "window"  # "window": (B, D); "frame": (B, T, D)
    output_names: tuple[str, ...] = ()
    au_thresholds: tuple[float, ...] = (0.5,) * len(task_registry.AU_NAMES)
    ah_threshold: float = 0.5
    trained: bool = False
    config: Mapping[str, Any] = field(default_factory=dict, compare=False)
    time_patch_size: int = 4  # pt, frames per tubelet
    # per level (pt, dim, h, w): one frame's tubelet-embedding projections; empty for
    # models exported before the streaming graphs existed
    projection_shapes: tuple[tuple[int, int, int, int], ...] = ()
    # what the weights were trained on (data roots, fixture or not, protocol, commit);
    # abaw_ros.models.provenance.provenance_summary turns it into one line
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", task_registry.normalize_tasks(self.tasks))
        if not self.output_names:
            object.__setattr__(self, "output_names", tuple(task_registry.output_names(self.tasks)))
        if self.window_length < 1:
            raise ValueError(f"window_length={self.window_length}: must be >= 1")
        if self.output_mode not in ("window", "frame"):
            raise ValueError(f"output_mode={self.output_mode!r}: must be 'window' or 'frame'")
        if len(self.feature_names) != len(self.feature_shapes):
            raise ValueError(
                f"{len(self.feature_names)} feature names {list(self.feature_names)} but "
                f"{len(self.feature_shapes)} feature shapes: they must pair up"
            )
        expected = task_registry.output_size(self.tasks)
        if len(self.output_names) != expected:
            raise ValueError(
                f"{len(self.output_names)} output names for tasks {list(self.tasks)}: expected {expected}"
            )
        if self.projection_shapes:
            if len(self.projection_shapes) != len(self.feature_shapes):
                raise ValueError(
                    f"{len(self.projection_shapes)} projection shapes for {len(self.feature_shapes)} feature levels"
                )
            if any(len(s) != 4 or s[0] != self.time_patch_size for s in self.projection_shapes):
                raise ValueError(
                    f"projection_shapes {self.projection_shapes}: each must be (pt={self.time_patch_size}, dim, h, w)"
                )
            if self.window_length % self.time_patch_size:
                raise ValueError(f"window_length={self.window_length}: not a multiple of pt={self.time_patch_size}")
        if len(self.au_thresholds) != len(task_registry.AU_NAMES):
            raise ValueError(
                f"au_thresholds has {len(self.au_thresholds)} values: expected "
                f"{len(task_registry.AU_NAMES)} ({', '.join(task_registry.AU_NAMES)})"
            )
        _check_values(self)

    @property
    def output_dim(self) -> int:
        return len(self.output_names)

    @property
    def output_slices(self) -> dict[str, slice]:
        return task_registry.output_slices(self.tasks)

    @property
    def tubelet_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        """Per level ``(T/pt, dim, h, w)``: the tubelet sums ``temporal_tubelets`` takes."""
        return tuple((self.window_length // s[0], *s[1:]) for s in self.projection_shapes)

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = dict(self.config)
        data["provenance"] = dict(self.provenance)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetadata:
        """Build from the exported metadata JSON (or a checkpoint's info); values missing
        at the top level are taken from the nested model ``config``."""
        config = dict(data.get("config") or {})

        def pick(key: str, default: Any = None) -> Any:
            if data.get(key) is not None:
                return data[key]
            if config.get(key) is not None:
                return config[key]
            return default

        missing = [k for k in ("window_length", "input_size", "mean", "std") if pick(k) is None]
        shapes = pick("feature_shapes")
        if shapes is None:
            missing.append("feature_shapes")
        if missing:
            raise ValueError(f"model metadata lacks {missing}; present keys: {sorted(data)}")
        names = pick("feature_names") or [f"feature{i}" for i in range(len(shapes))]
        if isinstance(shapes, Mapping):  # {name: shape}
            names = list(names) if len(names) == len(shapes) else list(shapes)
            shapes = [shapes[n] for n in names]
        au_thr = pick("au_thresholds", (0.5,) * len(task_registry.AU_NAMES))
        return cls(
            tasks=tuple(pick("tasks", task_registry.TASK_ORDER)),
            window_length=int(pick("window_length")),
            input_size=int(pick("input_size")),
            mean=tuple(float(v) for v in pick("mean")),
            std=tuple(float(v) for v in pick("std")),
            feature_names=tuple(str(n) for n in names),
            feature_shapes=tuple(tuple(int(d) for d in s[-3:]) for s in shapes),
            output_mode=str(pick("output_mode", "window")),
            output_names=tuple(pick("output_names", ()) or ()),
            au_thresholds=tuple(float(v) for v in au_thr),
            ah_threshold=float(pick("ah_threshold", 0.5)),
            trained=bool(pick("trained", False)),
            config=config,
            time_patch_size=int(pick("time_patch_size", 4)),
            projection_shapes=tuple(tuple(int(d) for d in s) for s in (data.get("projection_shapes") or ())),
            provenance=dict(data.get("provenance") or {}),
        )

    @classmethod
    def from_onnx(cls, path: str | Path) -> ModelMetadata:
        return cls.from_dict(read_onnx_metadata(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata JSON stored under ``metadata_props[abaw_ros]`` of an ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    props: dict[str, str]
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    except ImportError:  # deployment images may carry ONNX Runtime but not onnx
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        props = dict(session.get_modelmeta().custom_metadata_map)
    if METADATA_KEY not in props:
        raise ValueError(
            f"{path} has no '{METADATA_KEY}' metadata (keys: {sorted(props)}); "
            "export it with `abaw-affect export` so the graph carries its configuration"
        )
    return json.loads(props[METADATA_KEY])


class InferenceBackend(ABC):
    """Runs the encoder and the temporal head. Subclasses live in their own modules and
    are imported only when chosen (see :func:`abaw_ros.runtime.load_backend`)."""

    name: ClassVar[str] = "base"

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
