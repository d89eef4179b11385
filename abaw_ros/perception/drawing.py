"""Pipeline results drawn onto the camera frame: each face's box, tracker id, valence and
arousal, hesitancy and the AUs that are on (probability >= the model's threshold).

Used by ``abaw-affect predict --video``; the node can draw its debug image with it too.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from abaw_ros.perception.pipeline import FaceResult
from abaw_ros.tasks import TASKS, task_order

BOX_COLOUR = (0, 220, 0)  # BGR
TEXT_COLOUR = (0, 255, 0)
HESITANT_COLOUR = (0, 165, 255)
NOTE_COLOUR = (0, 0, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SCALE = 0.45
_LINE = 14  # pixels between text lines at _SCALE


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """Text with a dark outline, readable on any background."""
    cv2.putText(canvas, text, org, _FONT, _SCALE, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, org, _FONT, _SCALE, colour, 1, cv2.LINE_AA)


def face_lines(face: FaceResult) -> list[str]:
    """The caption of one face: id and window fill, then each estimated task's line (V/A, hesitancy, active AUs)."""
    lines = [f"{face.face_id} ({face.frames_observed}/{face.window_length})"]
    drawn = sorted((TASKS[t] for t in task_order() if TASKS[t].caption is not None), key=lambda t: t.caption_rank)
    for task in drawn:  # each task's caption line (tasks.Task.caption), in its rank
        values = face.outputs.get(task.name)
        if values is not None:
            lines.append(task.caption(values, getattr(face, task.flag_field, None) if task.flag_field else None))
    return lines


def draw_faces(image_bgr: np.ndarray, faces: Sequence[FaceResult], note: str = "") -> np.ndarray:
    """A copy of ``image_bgr`` with every face drawn and ``note`` in the bottom-left corner."""
    canvas = np.ascontiguousarray(image_bgr).copy()
    height, width = canvas.shape[:2]
    if note:  # bottom-left: faces are rarely drawn there
        _text(canvas, note, (8, height - 10), NOTE_COLOUR)
    for face in faces:
        x, y, w, h = (int(v) for v in face.box)
        colour = HESITANT_COLOUR if face.hesitant else BOX_COLOUR
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, 2)
        lines = face_lines(face)
        # Above the box when there is room, else inside it from the top.
        top = y - 6 - _LINE * (len(lines) - 1)
        if top < 12:
            top = min(y + 16, max(height - _LINE * len(lines), 12))
        for k, text in enumerate(lines):
            _text(canvas, text, (min(max(x, 2), max(width - 60, 2)), top + _LINE * k), TEXT_COLOUR)
    return canvas
