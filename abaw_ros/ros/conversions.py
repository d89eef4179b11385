"""Conversions between ROS messages and the pipeline's plain types.

Image messages become BGR ``uint8`` arrays (what :class:`PerceptionPipeline` takes), and a
:class:`FrameResult` becomes a ``FaceAffectArray`` that carries the source image's header.
Every malformed input raises one of :data:`IMAGE_ERRORS` naming the bad value, so the
node can warn and move on to the next frame.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from abaw_ros.config import DEFAULT_MAX_IMAGE_PIXELS
from abaw_ros.msg import FaceAffect, FaceAffectArray
from abaw_ros.perception.affect_message import AffectMessageTypes, face_affect_array
from abaw_ros.perception.image import (
    CorruptImageError,
    UnsupportedEncodingError,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
)

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FrameResult

# Decoding is shared with the offline tools (bag-eval), so a frame the node sees is the
# frame bag-eval sees. Both error types name the bad value.
IMAGE_ERRORS: tuple[type[Exception], ...] = (UnsupportedEncodingError, CorruptImageError)


def image_to_bgr(msg: Image, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``(H, W, 3)`` BGR uint8 (a copy).

    Raises :class:`UnsupportedEncodingError` for an encoding that cannot be read and
    :class:`CorruptImageError` for a zero-size image, a ``step`` smaller than a row,
    ``data`` shorter than ``height * step`` or more than ``max_pixels`` pixels.
    """
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian,
                        max_pixels=max_pixels)


def compressed_to_bgr(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> ``(H, W, 3)`` BGR uint8.

    Raises :class:`CorruptImageError` for empty or undecodable data or a header declaring
    more than ``max_pixels`` pixels (checked before decoding), and
    :class:`UnsupportedEncodingError` for formats that are not still images (e.g. h264).
    """
    return decode_compressed(msg.format, msg.data, max_pixels=max_pixels)


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


def ns_to_time(stamp_ns: int) -> Time:
    sec, nanosec = divmod(max(0, int(stamp_ns)), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


# rclpy's message classes for the one FaceAffectArray builder the offline bags use too.
_MESSAGE_TYPES = AffectMessageTypes(Time, Header, RegionOfInterest, FaceAffect, FaceAffectArray, lists=True)


def frame_result_to_msg(
    result: FrameResult, header: Header, image_shape: tuple[int, ...] | None = None,
    weights_trained: bool = False, model_id: str = "",
) -> FaceAffectArray:
    """``FrameResult`` -> ``FaceAffectArray`` with stamp and frame_id of the source image
    and what the values can be trusted for (``weights_trained``, ``model_id``). Built by
    :func:`abaw_ros.perception.affect_message.face_affect_array`, as bag-eval's bags are:
    tasks the model does not estimate are NaN (and their flags false), boxes are clipped."""
    return face_affect_array(result, stamp_to_ns(header), header.frame_id, _MESSAGE_TYPES, image_shape,
                             weights_trained, model_id)
