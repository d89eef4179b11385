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

import numpy as np

from abaw_ros.tasks import AU_NAMES, EMI_NAMES

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FaceResult

__all__ = ["face_affect_values", "roi_from_box"]


def _floats(values: Any, size: int, name: str) -> np.ndarray:
    """A task's outputs as ``size`` float32 values; NaN where the model has no such task."""
    if values is None:
        return np.full(size, np.nan, dtype=np.float32)
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size != size:
        raise ValueError(f"task {name!r}: expected {size} outputs, got {flat.size}")
    return flat


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
    va = _floats(outputs.get("va"), 2, "va")
    active = face.au_active if face.au_active is not None else np.zeros(len(AU_NAMES), dtype=bool)
    active = np.asarray(active, dtype=bool).reshape(-1)
    if active.size != len(AU_NAMES):
        raise ValueError(f"au_active: expected {len(AU_NAMES)} flags, got {active.size}")
    return {
        "face_id": str(face.face_id),
        "roi": roi_from_box(face.box, image_shape),
        "detection_confidence": float(face.confidence),
        "window_length": int(face.window_length),
        "frames_observed": int(face.frames_observed),
        "valence": float(va[0]),
        "arousal": float(va[1]),
        "au_probability": _floats(outputs.get("au"), len(AU_NAMES), "au"),
        "au_active": active,
        "mimicry_intensity": _floats(outputs.get("emi"), len(EMI_NAMES), "emi"),
        "hesitancy_probability": float(_floats(outputs.get("ah"), 1, "ah")[0]),
        "hesitant": bool(face.hesitant),
        "window_start_ns": int(getattr(face, "window_start_ns", 0)),
    }
