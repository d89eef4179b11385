"""A :class:`~abaw_ros.perception.pipeline.FrameResult` -> one ``FaceAffectArray``, built
with whichever message classes the caller has: rclpy's (the node) or the ``rosbags`` type
store's (the offline tools' bags). The field values come from
:func:`~abaw_ros.perception.face_values.face_affect_values`, so both kinds of message are
filled by the same rules and assembled by the same code."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from abaw_ros.perception.face_values import face_affect_values

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FrameResult

__all__ = ["AffectMessageTypes", "face_affect_array"]

@dataclass(frozen=True)
class AffectMessageTypes:
    """The message classes a ``FaceAffectArray`` is built from (constructors taking the
    message fields as keywords). ``lists``: array fields as Python lists, not numpy."""

    time: Callable[..., Any]  # builtin_interfaces/Time
    header: Callable[..., Any]  # std_msgs/Header
    roi: Callable[..., Any]  # sensor_msgs/RegionOfInterest
    face: Callable[..., Any]  # abaw_ros/FaceAffect
    array: Callable[..., Any]  # abaw_ros/FaceAffectArray
    lists: bool = False


def _time(types: AffectMessageTypes, stamp_ns: int) -> Any:
    sec, nanosec = divmod(max(0, int(stamp_ns)), 1_000_000_000)
    return types.time(sec=sec, nanosec=nanosec)


def face_affect_array(
    result: FrameResult,
    stamp_ns: int,
    frame_id: str,
    types: AffectMessageTypes,
    image_shape: Sequence[int] | None = None,
    weights_trained: bool = False,
    model_id: str = "",
) -> Any:
    """``FrameResult`` -> ``FaceAffectArray`` with the source image's stamp (ns) and
    frame_id, and what the values can be trusted for (``weights_trained``, ``model_id``)."""
    faces = []
    for face in result.faces:
        values = face_affect_values(face, image_shape)
        x, y, w, h = values.pop("roi")
        roi = types.roi(x_offset=x, y_offset=y, height=h, width=w, do_rectify=False)
        window_start = _time(types, values.pop("window_start_ns"))
        if types.lists:  # rclpy wants Python lists for bool[] arrays (rosbags takes numpy)
            values = {name: v.tolist() if isinstance(v, np.ndarray) else v for name, v in values.items()}
        faces.append(types.face(roi=roi, window_start=window_start, **values))
    header = types.header(stamp=_time(types, stamp_ns), frame_id=frame_id)
    return types.array(header=header, faces=faces, weights_trained=bool(weights_trained), model_id=model_id)
