"""Conversions between ROS messages and the pipeline's plain types.

Image messages become BGR ``uint8`` arrays (what :class:`PerceptionPipeline` takes), and a
:class:`FrameResult` becomes a ``FaceAffectArray`` that carries the source image's header.
Every malformed input raises one of :data:`IMAGE_ERRORS` naming the bad value, so the
node can warn and move on to the next frame.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from abaw_ros.msg import FaceAffect, FaceAffectArray
from abaw_ros.offline.images import (
    CorruptImageError,
    UnsupportedEncodingError,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
)
from abaw_ros.tasks import AU_NAMES, EMI_NAMES

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FaceResult, FrameResult

# Decoding is shared with the offline tools (bag-eval), so a frame the node sees is the
# frame bag-eval sees. Both error types name the bad value.
IMAGE_ERRORS: tuple[type[Exception], ...] = (UnsupportedEncodingError, CorruptImageError)


def image_to_bgr(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``(H, W, 3)`` BGR uint8 (a copy).

    Raises :class:`UnsupportedEncodingError` for an encoding that cannot be read and
    :class:`CorruptImageError` for a zero-size image, a ``step`` smaller than a row or
    ``data`` shorter than ``height * step``.
    """
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)


def compressed_to_bgr(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> ``(H, W, 3)`` BGR uint8.

    Raises :class:`CorruptImageError` for empty or undecodable data and
    :class:`UnsupportedEncodingError` for formats that are not still images (e.g. h264).
    """
    return decode_compressed(msg.format, msg.data)


def bgr_to_image(bgr: np.ndarray, header: Header | None = None, encoding: str = "bgr8") -> Image:
    """BGR uint8 array -> ``sensor_msgs/Image`` in ``encoding`` (bgr8, rgb8 or mono8)."""
    height, width, step, data = encode_image(bgr, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.step = int(height), int(width), int(step)
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.data = data.tobytes()
    return msg


def bgr_to_compressed(bgr: np.ndarray, header: Header | None = None, quality: int = 90) -> CompressedImage:
    """BGR uint8 array -> JPEG ``sensor_msgs/CompressedImage`` (as image_transport writes it)."""
    fmt, data = encode_compressed(bgr, "jpeg", quality)
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = data.tobytes()
    return msg


def stamp_to_ns(header: Header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _floats(values: object, size: int) -> list[float]:
    """A task's outputs as ``size`` floats; NaN where the model does not estimate the task."""
    if values is None:
        return [math.nan] * size
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size != size:
        raise ValueError(f"expected {size} outputs, got {flat.size}")
    return [float(v) for v in flat]


def _roi(box: Sequence[int], image_shape: tuple[int, ...] | None) -> RegionOfInterest:
    x, y, w, h = (int(round(float(v))) for v in box)
    x0, y0, x1, y1 = x, y, x + w, y + h
    if image_shape is not None:  # RegionOfInterest is unsigned and must lie inside the image
        height, width = image_shape[:2]
        x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
        y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
    else:
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = max(x1, x0), max(y1, y0)
    return RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0, do_rectify=False)


def face_result_to_msg(face: FaceResult, image_shape: tuple[int, ...] | None = None) -> FaceAffect:
    """One tracked face -> ``FaceAffect``. Tasks the model does not estimate are NaN (and
    their flags false)."""
    outputs: Mapping[str, np.ndarray] = face.outputs
    msg = FaceAffect()
    msg.face_id = str(face.face_id)
    msg.roi = _roi(face.box, image_shape)
    msg.detection_confidence = float(face.confidence)
    msg.window_length = int(face.window_length)
    msg.frames_observed = int(face.frames_observed)
    msg.valence, msg.arousal = _floats(outputs.get("va"), 2)
    msg.au_probability = _floats(outputs.get("au"), len(AU_NAMES))
    active = face.au_active if face.au_active is not None else [False] * len(AU_NAMES)
    msg.au_active = [bool(a) for a in np.asarray(active, dtype=bool).reshape(-1)]
    msg.mimicry_intensity = _floats(outputs.get("emi"), len(EMI_NAMES))
    (msg.hesitancy_probability,) = _floats(outputs.get("ah"), 1)
    msg.hesitant = bool(face.hesitant)
    return msg


def frame_result_to_msg(
    result: FrameResult, header: Header, image_shape: tuple[int, ...] | None = None
) -> FaceAffectArray:
    """``FrameResult`` -> ``FaceAffectArray`` with stamp and frame_id of the source image."""
    msg = FaceAffectArray()
    msg.header = Header(stamp=header.stamp, frame_id=header.frame_id)
    msg.faces = [face_result_to_msg(face, image_shape) for face in result.faces]
    return msg
