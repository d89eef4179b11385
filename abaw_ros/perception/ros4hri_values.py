"""A pipeline face -> the field values of the ROS4HRI (REP-155) face messages, as plain
Python and numpy values (no ROS), so the rules are tested without a ROS graph.

Field definitions (hri_msgs, humble-devel branch, commit 4e7c1765216e, the branch released
for Humble and Jazzy):

- ``Expression.msg``: ``std_msgs/Header header``, ``string expression`` (one of the listed
  category constants), ``float32 valence`` and ``float32 arousal`` "from -1.0 to +1.0",
  ``float32 confidence`` "from 0.0 to 1.0";
- ``FacialActionUnits.msg``: ``std_msgs/Header header``, ``float32[99] intensity`` and
  ``float32[99] confidence``, "one per AU, ordered per AU codes" (index = FACS number:
  ``INNER_BROW_RAISER=1`` ... ``LIPS_PART=25``, ``JAW_DROP=26``);
- ``NormalizedRegionOfInterest2D.msg``: ``std_msgs/Header header``, ``float32 xmin, ymin,
  xmax, ymax`` normalised to [0, 1] (top-left and bottom-right corners), ``float32 c``, the
  ROI's confidence in [0, 1].

**Confidence.** One number per face, for ``Expression.confidence`` and for the 12 AUs'
entries of ``FacialActionUnits.confidence``: 0 when the model's weights are untrained (the
values are placeholders), else ``frames_observed / window_length`` (a window still
filling holds fewer real frames than the model was trained on) times the face's
detection confidence.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from abaw_ros.tasks import AU_NAMES

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FaceResult

FACS_SIZE = 99  # FacialActionUnits: float32[99], indexed by FACS AU number
# Our AU order (tasks.AU_NAMES) -> FACS AU numbers ("AU12" -> 12).
AU_FACS_NUMBERS: tuple[int, ...] = tuple(int(name.removeprefix("AU")) for name in AU_NAMES)


def affect_confidence(face: FaceResult, weights_trained: bool) -> float:
    """How far to trust this face's values, in [0, 1] (module docstring)."""
    if not weights_trained or face.window_length <= 0:
        return 0.0
    fill = min(max(face.frames_observed / face.window_length, 0.0), 1.0)
    return float(fill * min(max(float(face.confidence), 0.0), 1.0))


def expression_values(face: FaceResult, weights_trained: bool) -> dict[str, float | str] | None:
    """``Expression`` fields (without the header), or None when the model estimates no
    valence/arousal. ``expression`` stays empty: the model has no expression-category head
    (its tasks are VA, AU, EMI and AH), and an empty string claims no category."""
    va = face.outputs.get("va")
    if va is None:
        return None
    va = np.asarray(va, dtype=np.float32).reshape(-1)
    return {"expression": "", "valence": float(np.clip(va[0], -1.0, 1.0)),
            "arousal": float(np.clip(va[1], -1.0, 1.0)),
            "confidence": affect_confidence(face, weights_trained)}


def facs_values(face: FaceResult, weights_trained: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """``FacialActionUnits`` ``(intensity, confidence)``, each ``(99,)`` float32: our 12
    AUs' probabilities at their FACS numbers with the face's confidence, every other entry
    0 with confidence 0 (not estimated); None when the model estimates no AUs."""
    au = face.outputs.get("au")
    if au is None:
        return None
    au = np.asarray(au, dtype=np.float32).reshape(-1)
    if au.size != len(AU_FACS_NUMBERS):
        raise ValueError(f"task 'au': expected {len(AU_FACS_NUMBERS)} outputs, got {au.size}")
    intensity = np.zeros(FACS_SIZE, dtype=np.float32)
    confidence = np.zeros(FACS_SIZE, dtype=np.float32)
    index = list(AU_FACS_NUMBERS)
    intensity[index] = au
    confidence[index] = affect_confidence(face, weights_trained)
    return intensity, confidence


def normalized_roi(box: Sequence[float], image_shape: Sequence[int]) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` pixel box -> ``(xmin, ymin, xmax, ymax)`` in [0, 1] of the image."""
    height, width = float(image_shape[0]), float(image_shape[1])
    x, y, w, h = (float(v) for v in box)
    return (min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0),
            min(max((x + w) / width, 0.0), 1.0), min(max((y + h) / height, 0.0), 1.0))


def pixel_box(roi: Sequence[float], image_shape: Sequence[int]) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` normalised -> ``(x1, y1, x2, y2)`` image pixels."""
    height, width = float(image_shape[0]), float(image_shape[1])
    xmin, ymin, xmax, ymax = (float(v) for v in roi)
    return xmin * width, ymin * height, xmax * width, ymax * height
