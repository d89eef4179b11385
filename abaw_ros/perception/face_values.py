"""A pipeline face -> the field values of a ``FaceAffect`` message, as plain Python and
numpy values (no ROS, no rosbags), so the node (rclpy messages) and the offline tools
(rosbags messages) fill their messages by the same rules:

- tasks the model does not estimate are NaN (and their flags false);
- the box becomes an unsigned ``RegionOfInterest`` clipped to the image;
- ``window_start_ns`` is the stamp of the oldest frame in the face's window, in
  nanoseconds (each message type turns it into its ``builtin_interfaces/Time``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from abaw_ros.tasks import TASKS, message_values, task_order

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FaceResult

__all__ = ["face_affect_values", "roi_from_box"]


def roi_from_box(box: Sequence[float], image_shape: Sequence[int] | None) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` box -> ``(x_offset, y_offset, width, height)`` clipped to the image
    (``RegionOfInterest`` is unsigned and must lie inside the image)."""
    x, y, w, h = (int(round(float(v))) for v in box)
    x0, y0, x1, y1 = x, y, x + w, y + h
    if image_shape is not None:
        height, width = int(image_shape[0]), int(image_shape[1])
        x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
        y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
    else:
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = max(x1, x0), max(y1, y0)
    return x0, y0, x1 - x0, y1 - y0


def face_affect_values(face: FaceResult, image_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """The fields of a ``FaceAffect`` message as plain values (``roi`` as
    ``(x_offset, y_offset, width, height)``, the window start as ``window_start_ns``). Tasks the model does not estimate are NaN
    and their flags false."""
    outputs: Mapping[str, Any] = face.outputs
    values: dict[str, Any] = {
        "face_id": str(face.face_id),
        "roi": roi_from_box(face.box, image_shape),
        "detection_confidence": float(face.confidence),
        "window_length": int(face.window_length),
        "frames_observed": int(face.frames_observed),
    }
    for name in task_order():  # each task's own fields (tasks.Task.message_fields)
        task = TASKS[name]
        flags = getattr(face, task.flag_field, None) if task.flag_field else None
        values.update(message_values(task, outputs.get(name), flags))
    values["window_start_ns"] = int(getattr(face, "window_start_ns", 0))
    return values
