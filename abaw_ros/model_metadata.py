"""The model metadata schema: what an exported graph (and a checkpoint-backed backend)
says about its model, written and read by this one module.

Every ONNX graph of a bundle carries the JSON of :meth:`ModelMetadata.to_stored` under
``metadata_props[abaw_ros]`` (:data:`METADATA_KEY`); :meth:`ModelMetadata.from_dict` reads
that JSON, the layouts written by earlier exports (thresholds also under ``thresholds``,
values only in the nested model ``config``, feature shapes as ``{name: shape}``) and a
checkpoint's info. Lowest floor: numpy-free, torch-free and onnx-free at import, so an
ONNX-Runtime-only install and the ROS-free core read it alike.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from abaw_ros import tasks as task_registry

__all__ = [
    "GRAPH_FILES",
    "MEAN_RANGE",
    "METADATA_KEY",
    "METADATA_VERSION",
    "STD_RANGE",
    "MetadataValueError",
    "ModelMetadata",
    "read_onnx_metadata",
]

METADATA_KEY = "abaw_ros"  # ONNX metadata_props key holding the metadata JSON
METADATA_VERSION = 1
# graph -> file name in a model bundle (written by export, opened by runtime.bundle)
GRAPH_FILES: dict[str, str] = {
    "encoder": "encoder.onnx",
    "projection": "frame_projection.onnx",
    "tubelet_head": "tubelet_head.onnx",
    "temporal_head": "temporal_head.onnx",
    "window": "window.onnx",
}


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
    # SHA-256 of the model's config and weights (export's model_hash); "" when unknown
    model_hash: str = field(default="", compare=False)

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

    # -- (de)serialisation: the one writer and the one reader -----------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (``ModelMetadata(**m.to_dict()) == m``)."""
        data = asdict(self)
        data["config"] = dict(self.config)
        data["provenance"] = dict(self.provenance)
        return data

    def to_stored(self, graph: str | None = None) -> dict[str, Any]:
        """The JSON every exported graph carries (``graph``: which one it is); read back
        by :meth:`from_dict`."""
        t = self.window_length
        out_shape = ["batch", t, self.output_dim] if self.output_mode == "frame" else ["batch", self.output_dim]
        return {
            "metadata_version": METADATA_VERSION,
            "graph": graph,
            "config": dict(self.config),
            "tasks": list(self.tasks),
            "output_names": list(self.output_names),
            "output_slices": {k: [s.start, s.stop] for k, s in self.output_slices.items()},
            "output_mode": self.output_mode,
            "output_shape": out_shape,
            "activated": True,
            "feature_names": list(self.feature_names),
            "feature_shapes": [list(s) for s in self.feature_shapes],
            "time_patch_size": self.time_patch_size,
            "projection_shapes": [list(s) for s in self.projection_shapes],
            "window_length": t,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "au_thresholds": list(self.au_thresholds),
            "ah_threshold": self.ah_threshold,
            "trained": bool(self.trained),
            "provenance": dict(self.provenance),
            "files": dict(GRAPH_FILES),
            "model_hash": self.model_hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetadata:
        """Build from the stored JSON (:meth:`to_stored`, :meth:`to_dict`), a layout
        written by an earlier export, or a checkpoint's info. Where a value is missing at
        the top level it is taken from the ``thresholds`` entry (thresholds) or the nested
        model ``config`` (everything else), as earlier exports and checkpoints hold them."""
        config = dict(data.get("config") or {})
        thresholds = data.get("thresholds") if isinstance(data.get("thresholds"), Mapping) else {}

        def pick(key: str, default: Any = None) -> Any:
            for source in (data, thresholds, config):
                if source.get(key) is not None:
                    return source[key]
            return default

        missing = [k for k in ("window_length", "input_size", "mean", "std") if pick(k) is None]
        shapes = pick("feature_shapes")
        if shapes is None:
            missing.append("feature_shapes")
        if missing:
            raise ValueError(f"model metadata lacks {missing}; present keys: {sorted(data)}")
        names = pick("feature_names") or [f"feature{i}" for i in range(len(shapes))]
        if isinstance(shapes, Mapping):  # {name: shape}
            names = list(names) if set(names) == set(shapes) else list(shapes)  # the mapping's order otherwise
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
            model_hash=str(data.get("model_hash") or ""),
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
