"""The predictions of one subject over a stream, frame by frame.

The node publishes every tracked face; annotations describe one person. A
:class:`PredictionTrack` keeps, for each processed frame, the outputs of one chosen face
(``largest`` box by default, or a fixed tracker id), with NaN where no face was chosen.
It is built the same way from pipeline results and from ``FaceAffectArray`` messages
read back from a bag, so metrics can be recomputed from the bag alone.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from abaw_ros.tasks import BUILTIN_ORDER, TASKS, message_values, values_from_message

# The tasks a FaceAffect message carries (the message definition is fixed: the built-in ones).
MESSAGE_TASKS: tuple[str, ...] = tuple(t for t in BUILTIN_ORDER if TASKS[t].message_fields)

FACE_LARGEST = "largest"
FACE_MOST_CONFIDENT = "most-confident"
FACE_POLICIES: tuple[str, ...] = (FACE_LARGEST, FACE_MOST_CONFIDENT)


class UnknownFaceError(ValueError):
    """A track follows a tracker id that no processed frame shows."""


def _stamp_ns(stamp: Any) -> int:
    return 0 if stamp is None else int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def face_values_from_msg(face: Any) -> dict[str, Any]:
    """A ``FaceAffect`` message (any message class with its fields) -> the plain values
    :func:`abaw_ros.perception.face_values.face_affect_values` gives for a pipeline face."""
    values: dict[str, Any] = {
        "face_id": face.face_id,
        "roi": (int(face.roi.x_offset), int(face.roi.y_offset), int(face.roi.width), int(face.roi.height)),
        "detection_confidence": float(face.detection_confidence),
        "window_length": int(face.window_length),
        "frames_observed": int(face.frames_observed),
    }
    for name in MESSAGE_TASKS:  # each task's own fields (tasks.Task.message_fields)
        task = TASKS[name]
        read = values_from_message(task, face)
        values.update(message_values(task, *read))
    values["window_start_ns"] = _stamp_ns(getattr(face, "window_start", None))  # absent in older bags
    return values


def choose_face(faces: Sequence[dict[str, Any]], policy: str = FACE_LARGEST) -> dict[str, Any] | None:
    """The face a track follows: the largest box (ties: most confident, then the older
    id), the most confident one, or the face whose tracker id is ``policy``."""
    if not faces:
        return None
    if policy == FACE_LARGEST:
        return min(faces, key=lambda f: (-_area(f), -f["detection_confidence"], _id_key(f["face_id"])))
    if policy == FACE_MOST_CONFIDENT:
        return min(faces, key=lambda f: (-f["detection_confidence"], -_area(f), _id_key(f["face_id"])))
    return next((f for f in faces if f["face_id"] == policy), None)


def _area(face: dict[str, Any]) -> int:
    return int(face["roi"][2]) * int(face["roi"][3])


def _id_key(face_id: str) -> tuple[int, int, str]:
    return (0, int(face_id), "") if face_id.isdigit() else (1, 0, face_id)


@dataclass
class PredictionTrack:
    """Per processed frame: topic index, stamp, faces seen, and the chosen face's outputs
    (``outputs[task]`` ``(M, size)`` float32, NaN without a face)."""

    face_policy: str = FACE_LARGEST
    indices: list[int] = field(default_factory=list)
    stamps_ns: list[int] = field(default_factory=list)
    n_faces: list[int] = field(default_factory=list)
    face_ids: list[str] = field(default_factory=list)
    rows: dict[str, list[np.ndarray]] = field(default_factory=lambda: {t: [] for t in MESSAGE_TASKS})
    flag_rows: dict[str, list] = field(default_factory=lambda: {t: [] for t in MESSAGE_TASKS if TASKS[t].flag_field})
    frames_per_id: dict[str, int] = field(default_factory=dict)  # every id seen, followed or not

    def add(self, index: int, stamp_ns: int, faces: Sequence[dict[str, Any]]) -> None:
        face = choose_face(faces, self.face_policy)
        for seen in faces:
            self.frames_per_id[seen["face_id"]] = self.frames_per_id.get(seen["face_id"], 0) + 1
        self.indices.append(int(index))
        self.stamps_ns.append(int(stamp_ns))
        self.n_faces.append(len(faces))
        self.face_ids.append("" if face is None else face["face_id"])
        for name in MESSAGE_TASKS:  # every task a message carries: tasks.Task.message_fields
            task = TASKS[name]
            if face is None:
                self.rows[name].append(np.full(task.size, np.nan, dtype=np.float32))
                if task.flag_field:
                    self.flag_rows[name].append(np.zeros(task.size, dtype=bool) if task.threshold == "per_output"
                                                else False)
                continue
            values, flags = values_from_message(task, face)
            self.rows[name].append(values)
            if task.flag_field:
                self.flag_rows[name].append(flags)

    def __len__(self) -> int:
        return len(self.indices)

    def extend(self, other: PredictionTrack) -> None:
        """Append the frames of ``other`` after this track's."""
        self.indices += other.indices
        self.stamps_ns += other.stamps_ns
        self.n_faces += other.n_faces
        self.face_ids += other.face_ids
        for task, rows in other.rows.items():
            self.rows[task] += rows
        for task, rows in other.flag_rows.items():
            self.flag_rows[task] += rows

    @property
    def followed_ids(self) -> list[str]:
        """The tracker ids this track took its values from, in order of first use."""
        return list(dict.fromkeys(f for f in self.face_ids if f))

    def require_face(self, where: str = "the stream") -> None:
        """Raise :class:`UnknownFaceError` when the track follows a tracker id that no frame
        shows, naming the ids that do occur (with their frame counts)."""
        if self.face_policy in FACE_POLICIES or self.has_face.any():
            return
        present = ", ".join(f"{face_id} ({n} frames)" for face_id, n in
                            sorted(self.frames_per_id.items(), key=lambda kv: _id_key(kv[0])))
        raise UnknownFaceError(
            f"--face {self.face_policy!r}: no face with this tracker id in {where}; ids present: "
            f"{present or 'none (no face was detected)'}; or use --face {FACE_LARGEST} / {FACE_MOST_CONFIDENT}")

    # -- arrays ---------------------------------------------------------------------------
    def output(self, task: str) -> np.ndarray:
        rows = self.rows[task]
        if not rows:
            return np.zeros((0, TASKS[task].size), dtype=np.float32)
        return np.stack(rows).astype(np.float32)

    @property
    def index_array(self) -> np.ndarray:
        return np.asarray(self.indices, dtype=np.int64)

    @property
    def stamp_array(self) -> np.ndarray:
        return np.asarray(self.stamps_ns, dtype=np.int64)

    def flags(self, task: str) -> np.ndarray:
        """The chosen face's thresholded flags of ``task`` per frame (``(M, size)`` for one
        threshold per output, ``(M,)`` for one per task), false without a face."""
        spec = TASKS[task]
        rows = self.flag_rows[task]
        if spec.threshold == "per_output":
            return np.stack(rows) if rows else np.zeros((0, spec.size), dtype=bool)
        return np.asarray(rows, dtype=bool)

    @property
    def au_active(self) -> np.ndarray:
        return self.flags("au")

    @property
    def hesitant(self) -> np.ndarray:
        return self.flags("ah")

    @property
    def has_face(self) -> np.ndarray:
        return np.asarray([bool(f) for f in self.face_ids], dtype=bool)

    def estimated(self, task: str) -> np.ndarray:
        """Frames where the chosen face has finite outputs for ``task`` (a model without
        the task publishes NaN)."""
        out = self.output(task)
        return np.all(np.isfinite(out), axis=1) if len(out) else np.zeros(0, dtype=bool)
