"""Conversions between ROS messages and the pipeline's plain types.

Image messages become BGR ``uint8`` arrays (what :class:`PerceptionPipeline` takes), and a
:class:`FrameResult` becomes a ``FaceAffectArray`` that carries the source image's header.
Every malformed input raises :class:`ImageConversionError` naming the bad value, so the
node can warn and move on to the next frame.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from abaw_ros.msg import FaceAffect, FaceAffectArray
from abaw_ros.tasks import AU_NAMES, EMI_NAMES

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FaceResult, FrameResult

# encoding -> (channels, cv2 conversion to BGR or None when already BGR)
_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


class ImageConversionError(ValueError):
    """An image message that cannot be turned into a picture; the text says why.

    ``reason`` is a short stable key (``encoding``, ``size``, ``step``, ``data``, ``decode``)
    that the node uses to throttle repeated warnings of the same kind.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def image_to_bgr(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` (bgr8, rgb8, mono8, bgra8, rgba8) -> ``(H, W, 3)`` BGR uint8.

    The result never aliases the message buffer.
    """
    encoding = msg.encoding.strip().lower()
    if encoding not in _ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding!r}: expected one of {list(SUPPORTED_ENCODINGS)}",
            "encoding",
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"zero-size image: width={width} height={height}", "size")
    channels, conversion = _ENCODINGS[encoding]
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageConversionError(
            f"step={step} is smaller than width*channels={width}*{channels}={row_bytes} "
            f"for encoding {encoding!r}",
            "step",
        )
    needed = height * step
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < needed:
        raise ImageConversionError(
            f"data length {data.size} is shorter than height*step={height}*{step}={needed}",
            "data",
        )
    rows = data[:needed].reshape(height, step)[:, :row_bytes]
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    if conversion is None:
        return np.ascontiguousarray(pixels).copy()
    return cv2.cvtColor(pixels, conversion)


def compressed_to_bgr(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, anything OpenCV decodes) -> BGR uint8."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError(f"zero-size compressed image (format {msg.format!r}, 0 bytes)", "size")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageConversionError(
            f"could not decode compressed image (format {msg.format!r}, {data.size} bytes): "
            "corrupt or unsupported data",
            "decode",
        )
    return image


def bgr_to_image(bgr: np.ndarray, header: Header | None = None, encoding: str = "bgr8") -> Image:
    """BGR uint8 array -> ``sensor_msgs/Image`` in ``encoding`` (bgr8, rgb8 or mono8)."""
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 BGR array, got shape {bgr.shape} dtype {bgr.dtype}")
    if encoding == "bgr8":
        pixels = bgr
    elif encoding == "rgb8":
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    elif encoding == "mono8":
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    else:
        raise ValueError(f"encoding={encoding!r}: choose bgr8, rgb8 or mono8")
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    msg.data = pixels.tobytes()
    return msg


def bgr_to_compressed(bgr: np.ndarray, header: Header | None = None, quality: int = 90) -> CompressedImage:
    """BGR uint8 array -> JPEG ``sensor_msgs/CompressedImage``."""
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {bgr.shape}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = "jpeg"
    msg.data = buffer.tobytes()
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
