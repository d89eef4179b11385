"""Per-frame affect from a video file, an image folder or a bag (``abaw-affect predict``).

Every frame goes through :meth:`PerceptionPipeline.process` — the code the node runs —
one after the other. The result is a CSV with one row per frame and face (a frame without
a face gets one row with an empty ``face_id``, so every frame appears), a sidecar JSON
(``<csv stem>.json``) that says which model made the numbers (id, trained or not,
thresholds) and what was read, and optionally a video with the results drawn in.

Sources (:mod:`abaw_ros.offline.sources`): a video file, a folder of images in natural
order, or one image topic of a bag; frames that cannot be decoded are skipped and listed.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from abaw_ros.config import PipelineConfig
from abaw_ros.offline.frame_loop import MAX_LISTED_SKIPS, FrameCounts, run_frames
from abaw_ros.offline.sources import (
    DEFAULT_IMAGE_FPS,
    FrameSource,
    SourceError,
    SourceFrame,
    open_source,
    source_inputs,
)
from abaw_ros.outputs import (
    Output,
    OutputError,
    Staging,
    check_outputs,
    is_json_of_format,
    starts_with_line,
    write_faults,
)
from abaw_ros.tasks import BUILTIN_ORDER, TASKS, csv_cells, csv_columns, task_order

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FaceResult, FrameResult, PerceptionPipeline

log = logging.getLogger(__name__)

# Codec per suffix of the annotated video (both are in every OpenCV build).
VIDEO_CODECS: dict[str, str] = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}

# The CSV layout: one source of truth for the writer, the docs and the tests.
FRAME_COLUMNS: tuple[str, ...] = ("frame", "time_s", "stamp_ns", "source")
FACE_COLUMNS: tuple[str, ...] = (
    "face_id", "x", "y", "w", "h", "detection_confidence",
    *csv_columns(BUILTIN_ORDER),  # each task's values, then flags (tasks.Task.csv_columns)
    "frames_observed", "window_length",
)
CSV_COLUMNS: tuple[str, ...] = FRAME_COLUMNS + FACE_COLUMNS


# ---------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------
def _number(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.6g}"


def face_row(face: FaceResult) -> dict[str, str]:
    """The face columns of one face (:data:`FACE_COLUMNS`); tasks the model does not
    estimate are empty."""
    x, y, w, h = (int(v) for v in face.box)
    row = {"face_id": str(face.face_id), "x": str(x), "y": str(y), "w": str(w), "h": str(h),
           "detection_confidence": _number(float(face.confidence))}
    for name in task_order():  # registered tasks too: tasks.Task.csv_columns
        task = TASKS[name]
        flags = getattr(face, task.flag_field, None) if task.flag_field else None
        row.update(csv_cells(task, face.outputs.get(name), flags, _number))
    row["frames_observed"] = str(int(face.frames_observed))
    row["window_length"] = str(int(face.window_length))
    return row


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
@dataclass
class PredictResult(FrameCounts):
    """What a run did (the frame loop's counts, rows and ids); ``to_dict()`` is the sidecar."""

    source: dict[str, Any]
    csv: Path
    sidecar: Path
    video: Path | None
    model: dict[str, Any]
    rows: int = 0
    face_ids: dict[str, int] = field(default_factory=dict)  # id -> frames

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "csv": str(self.csv),
            "video": str(self.video) if self.video else None,
            "model": self.model,
            "columns": list(CSV_COLUMNS),
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_skipped": len(self.skipped),
            "skipped": [{"frame": s.index, "name": s.name, "reason": s.reason}
                        for s in self.skipped[:MAX_LISTED_SKIPS]],
            "frames_with_face": self.frames_with_face,
            "rows": self.rows,
            "face_ids": self.face_ids,
            "interrupted": self.interrupted,
            "stopped_at_max_frames": self.stopped_at_max_frames,
            "elapsed_s": round(self.elapsed_s, 4),
            "frames_per_second": round(self.frames_per_second, 3),
            "pipeline_frames_per_second": round(self.pipeline_frames_per_second, 3),
        }

    def summary(self) -> str:
        lines = [f"{self.frames_processed} frames of {self.source['path']} ({self.source['kind']}) in "
                 f"{self.elapsed_s:.1f} s: {self.frames_per_second:.2f} frames/s (pipeline alone "
                 f"{self.pipeline_frames_per_second:.2f} frames/s)",
                 f"faces in {self.frames_with_face} frames, ids {', '.join(self.face_ids) or 'none'}; "
                 f"{self.rows} rows -> {self.csv} (model {self.model['model_id']}, sidecar {self.sidecar})"]
        if not self.model["trained"]:
            lines.append("UNTRAINED model: the affect values are placeholders, not estimates")
        if self.video:
            lines.append(f"annotated video: {self.video}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} frames that could not be decoded (listed in the sidecar)")
        if self.interrupted:
            lines.append("interrupted: the rows of the frames processed so far are kept")
        return "\n".join(lines)


def sidecar_path(csv_path: Path) -> Path:
    return csv_path.with_suffix(".json") if csv_path.suffix.lower() == ".csv" else csv_path.with_name(
        csv_path.name + ".json")


PREDICT_FORMAT = "abaw_ros.predict"  # the sidecar's format field: how a rerun recognises it


def _our_csv(path: Path) -> bool:
    return starts_with_line(path, ",".join(CSV_COLUMNS))


def _our_sidecar(path: Path) -> bool:
    return is_json_of_format(path, PREDICT_FORMAT)


def _check_outputs(paths: Sequence[Path], overwrite: bool, source: Path) -> list[bool]:
    """Refuse (:class:`~abaw_ros.outputs.OutputError`) before anything is read when an
    output (``paths``: CSV, sidecar, optionally the video) is the SOURCE or inside it, two
    outputs share a path, or an existing file is not an earlier output of predict (CSV:
    its header; sidecar: its ``format``) or is one and ``overwrite`` is not given. The
    annotated video carries no marker: an existing regular file is replaced with
    ``overwrite``."""
    outputs = [Output(paths[0], "CSV", _our_csv, written_by="predict (its header differs)"),
               Output(paths[1], "sidecar JSON", _our_sidecar, written_by="predict")]
    outputs += [Output(path, "--video") for path in paths[2:]]
    return check_outputs(outputs, overwrite, source_inputs(source))


class _VideoSink:
    """The annotated video, opened at the first frame (its size is the video's size)."""

    def __init__(self, path: Path, fps: float, target: Path | None = None) -> None:
        self.path = path
        self.target = target or path  # where the video goes once complete (path: its staging)
        self.fps = fps
        self.size: tuple[int, int] | None = None
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            height, width = image.shape[:2]
            self.size = (width, height)
            codec = VIDEO_CODECS.get(self.path.suffix.lower())
            if codec is None:
                raise SourceError(f"--video {str(self.target)!r}: choose a file ending in "
                                  f"{', '.join(VIDEO_CODECS)}")
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), self.fps, self.size)
            if not self._writer.isOpened():
                raise SourceError(f"--video {str(self.target)!r}: OpenCV cannot write {codec} video here")
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()

    def check_complete(self) -> None:
        """OpenCV's writer reports no write error: a video cut short by a full disk has no
        readable index, so its frame count is checked once it is closed."""
        capture = cv2.VideoCapture(str(self.path))
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
        finally:
            capture.release()
        if count <= 0:
            raise OutputError(f"cannot write --video {str(self.target)!r}: the video holds no readable frame "
                              f"of the {self.frames} written (disk full?); nothing of it was kept")


def predict(
    source: str | Path,
    csv_path: str | Path,
    config: PipelineConfig | None = None,
    *,
    video: str | Path | None = None,
    fps: float | None = None,
    topic: str | None = None,
    recover: bool = False,
    max_frames: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    pipeline: PerceptionPipeline | None = None,
) -> PredictResult:
    """Run the node's pipeline on every frame of ``source``; write the CSV, the sidecar
    JSON and (``video``) the annotated video. Files are written in staging folders next to
    them and renamed at the end (:class:`abaw_ros.outputs.Staging`): an earlier result is
    replaced only when this run completes, and a failed run leaves nothing behind. Ctrl-C
    stops early and keeps the rows so far."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames={max_frames}: must be >= 1")
    source_path, csv_path = Path(source), Path(csv_path)
    video_path = Path(video) if video is not None else None
    outputs = [csv_path, sidecar_path(csv_path)] + ([video_path] if video_path else [])
    if video_path is not None and video_path.suffix.lower() not in VIDEO_CODECS:
        raise SourceError(f"--video {str(video_path)!r}: choose a file ending in {', '.join(VIDEO_CODECS)}")
    _check_outputs(outputs, overwrite, source_path)
    limit = (config or getattr(pipeline, "config", None) or PipelineConfig()).max_image_pixels
    with open_source(source_path, fps, topic, recover, limit) as frames:  # a bad source fails before the model loads
        if pipeline is None:
            from abaw_ros.perception.pipeline import PerceptionPipeline

            pipeline = PerceptionPipeline((config or PipelineConfig()).validate())
        result = PredictResult(frames.describe(), csv_path, outputs[1], video_path, pipeline.model_summary())
        with contextlib.ExitStack() as stack:  # every staging is removed unless committed
            # an output that exists now passed _check_outputs: ours, and --overwrite given
            staged = {path: stack.enter_context(Staging(path, what, replace=path.exists()))
                      for path, what in zip(outputs, ("CSV", "sidecar JSON", "--video"), strict=False)}
            _run(frames, pipeline, result, staged, video_path, max_frames, progress)
            result.source = frames.describe()
            with write_faults(outputs[1], "sidecar JSON"):
                staged[outputs[1]].path.write_text(
                    json.dumps(_finite({"format": PREDICT_FORMAT, **result.to_dict()}), indent=2) + "\n",
                    encoding="utf-8")
            if video_path is not None and not staged[video_path].path.exists():
                result.video = None  # interrupted before the first frame
            for path in outputs:
                if staged[path].path.exists():
                    staged[path].commit()
    return result


def _run(frames: FrameSource, pipeline: Any, result: PredictResult, staged: dict[Path, Staging],
         video_path: Path | None, max_frames: int | None, progress: bool) -> None:
    from abaw_ros.perception.drawing import draw_faces

    total = frames.total if max_frames is None else min(frames.total or max_frames, max_frames)
    sink = _VideoSink(staged[video_path].path, frames.fps or DEFAULT_IMAGE_FPS, video_path) if video_path else None
    write_row = _CsvRows(staged[result.csv].path, result.csv)
    note = "" if result.model["trained"] else "UNTRAINED model: placeholder values"

    def to_csv(frame: SourceFrame, frame_result: FrameResult) -> None:
        faces = frame_result.faces
        base = {"frame": str(frame.index), "time_s": f"{frame.time_s:.6f}", "stamp_ns": str(frame.stamp_ns),
                "source": frame.name}
        if faces:
            for face in faces:
                write_row({**base, **face_row(face)})
                result.face_ids[face.face_id] = result.face_ids.get(face.face_id, 0) + 1
        else:
            write_row({**base, **dict.fromkeys(FACE_COLUMNS, "")})
        result.rows += max(len(faces), 1)

    sinks = [to_csv]
    if sink is not None:
        sinks.append(lambda frame, frame_result: sink.write(draw_faces(frame.image, frame_result.faces, note)))
    start = time.perf_counter()
    with write_row:
        try:  # Ctrl-C ends the loop: the rows so far are kept
            run_frames(frames, pipeline, sinks, result, max_frames=max_frames, interruptible=True,
                       progress=progress, total=total, desc=frames.path.name)
        finally:
            if sink is not None:
                sink.close()
    if sink is not None and sink.frames:
        sink.check_complete()
    result.elapsed_s = time.perf_counter() - start
    if result.frames_processed == 0:
        raise SourceError(f"SOURCE {str(frames.path)!r}: no frame could be processed "
                          f"({result.frames_read} read{result.no_frame_detail()})")
    if sink is not None and sink.frames == 0:
        staged[video_path].path.unlink(missing_ok=True)


class _CsvRows:
    """The CSV, opened in the staging folder; a write fault is one line naming the CSV."""

    def __init__(self, path: Path, target: Path) -> None:
        self.target = target
        with write_faults(target, "CSV"):
            self._handle = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        self._writer = csv.DictWriter(self._handle, fieldnames=list(CSV_COLUMNS), extrasaction="raise")
        self({name: name for name in CSV_COLUMNS})

    def __call__(self, row: dict[str, str]) -> None:
        with write_faults(self.target, "CSV"):
            self._writer.writerow(row)

    def __enter__(self) -> _CsvRows:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            with write_faults(self.target, "CSV"):
                self._handle.close()  # flushes: a full disk may show here
        except OutputError:
            if exc_type is None:
                raise


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
