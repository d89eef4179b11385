"""Images for the pipeline: ROS image messages <-> BGR arrays (at the numpy level and
without ROS), and validation of the frames handed to the pipeline.

The conversion rules follow ``sensor_msgs/image_encodings`` and cv_bridge, so a frame
decoded here is the frame the node sees. Functions take the message *fields* (not a
message object), so the node (rclpy messages) and the offline tools (rosbags messages)
share them: ``decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
msg.is_bigendian)``.

Two kinds of failure are kept apart on purpose:

- :class:`UnsupportedEncodingError`: the stream as a whole cannot be read (an encoding or
  compressed format this module does not handle). Callers stop and say so.
- :class:`CorruptImageError`: one frame is broken (short data buffer, undecodable JPEG).
  Callers skip that frame and count it.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "COMPRESSED_FORMATS",
    "RAW_ENCODINGS",
    "CorruptImageError",
    "UnsupportedEncodingError",
    "as_bgr_image",
    "decode_compressed",
    "decode_image",
    "encode_compressed",
    "encode_image",
]


class UnsupportedEncodingError(ValueError):
    """An image encoding or compressed format that cannot be turned into BGR."""


class CorruptImageError(ValueError):
    """One image whose bytes do not match its own description."""


# encoding -> (channels, bytes per channel, cv2 conversion to BGR or None)
_RAW: dict[str, tuple[int, int, int | None]] = {
    "bgr8": (3, 1, None),
    "rgb8": (3, 1, cv2.COLOR_RGB2BGR),
    "bgra8": (4, 1, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, 1, cv2.COLOR_RGBA2BGR),
    "mono8": (1, 1, cv2.COLOR_GRAY2BGR),
    "8UC1": (1, 1, cv2.COLOR_GRAY2BGR),
    "8UC3": (3, 1, None),  # cv_bridge treats 8UC3 as BGR
    "8UC4": (4, 1, cv2.COLOR_BGRA2BGR),
    "bgr16": (3, 2, None),
    "rgb16": (3, 2, cv2.COLOR_RGB2BGR),
    "bgra16": (4, 2, cv2.COLOR_BGRA2BGR),
    "rgba16": (4, 2, cv2.COLOR_RGBA2BGR),
    "mono16": (1, 2, cv2.COLOR_GRAY2BGR),
    # Bayer: ROS names the pattern from the top-left pixel, OpenCV from the second row
    # and column, hence the shifted names (the mapping cv_bridge uses).
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerBG2BGR),
    "bayer_bggr8": (1, 1, cv2.COLOR_BayerRG2BGR),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGR2BGR),
    "bayer_grbg8": (1, 1, cv2.COLOR_BayerGB2BGR),
    # Packed 4:2:2, two bytes per pixel.
    "yuv422": (2, 1, cv2.COLOR_YUV2BGR_UYVY),
    "uyvy": (2, 1, cv2.COLOR_YUV2BGR_UYVY),
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2BGR_YUY2),
    "yuyv": (2, 1, cv2.COLOR_YUV2BGR_YUY2),
}
RAW_ENCODINGS: tuple[str, ...] = tuple(_RAW)

# Substrings of CompressedImage.format that OpenCV's imdecode reads. image_transport
# writes e.g. "jpeg", "png" or "rgb8; jpeg compressed bgr8" (pixels already in BGR).
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "jpg", "png", "webp", "bmp", "tiff")
# Streams that look like images but are not decodable frames on their own.
_UNSUPPORTED_COMPRESSED: tuple[str, ...] = ("compresseddepth", "h264", "h265", "hevc", "theora", "av1")


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes | bytearray | memoryview | np.ndarray,
    is_bigendian: bool | int = False,
) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into a ``(height, width, 3)`` uint8
    BGR array (a copy, C-contiguous).

    16-bit encodings keep their high byte (the usual 16 -> 8 bit display scaling).
    Row padding (``step`` larger than a row) is honoured.
    """
    try:
        channels, depth, conversion = _RAW[encoding]
    except KeyError:
        raise UnsupportedEncodingError(
            f"image encoding {encoding!r} is not supported: use one of {list(RAW_ENCODINGS)}"
        ) from None
    height, width, step = int(height), int(width), int(step)
    row_bytes = width * channels * depth
    if height <= 0 or width <= 0:
        raise CorruptImageError(f"image size {width}x{height} ({encoding}): width and height must be > 0")
    if step < row_bytes:
        raise CorruptImageError(
            f"image step {step} < {row_bytes} bytes needed for a row of {width} {encoding} pixels"
        )
    buffer = _as_uint8(data)
    if buffer.size < step * height:
        raise CorruptImageError(
            f"image data has {buffer.size} bytes, expected step*height = {step}*{height} = "
            f"{step * height} for {width}x{height} {encoding}"
        )
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        pixels16 = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
        pixels = (pixels16 >> 8).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, channels)
    if channels == 1:
        pixels = pixels[:, :, 0]
    if conversion is None:
        return np.ascontiguousarray(pixels, dtype=np.uint8).copy()
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def decode_compressed(fmt: str, data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (``format``, ``data``) into a
    ``(H, W, 3)`` uint8 BGR array."""
    lowered = fmt.lower().replace(" ", "")
    if any(token in lowered for token in _UNSUPPORTED_COMPRESSED):
        raise UnsupportedEncodingError(
            f"compressed image format {fmt!r} is not supported: use an image_transport "
            f"'compressed' stream ({', '.join(COMPRESSED_FORMATS)})"
        )
    if lowered and not any(token in lowered for token in COMPRESSED_FORMATS):
        raise UnsupportedEncodingError(
            f"compressed image format {fmt!r} is not supported: expected one naming "
            f"{', '.join(COMPRESSED_FORMATS)} (e.g. 'jpeg' or 'rgb8; jpeg compressed bgr8')"
        )
    buffer = _as_uint8(data)
    if buffer.size == 0:
        raise CorruptImageError(f"compressed image ({fmt!r}) has no data")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise CorruptImageError(f"compressed image ({fmt!r}, {buffer.size} bytes) could not be decoded")
    return image


def encode_image(image_bgr: np.ndarray, encoding: str = "bgr8") -> tuple[int, int, int, np.ndarray]:
    """BGR uint8 image -> ``(height, width, step, data)`` fields of a
    ``sensor_msgs/Image`` in ``encoding`` (bgr8, rgb8 or mono8)."""
    image_bgr = _check_bgr(image_bgr)
    if encoding == "bgr8":
        pixels = image_bgr
    elif encoding == "rgb8":
        pixels = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    elif encoding == "mono8":
        pixels = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    else:
        raise UnsupportedEncodingError(f"encoding {encoding!r} cannot be written: use bgr8, rgb8 or mono8")
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    step = pixels.strides[0]
    return height, width, step, pixels.reshape(-1).copy()


def encode_compressed(image_bgr: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, np.ndarray]:
    """BGR uint8 image -> ``(format, data)`` of a ``sensor_msgs/CompressedImage``, as
    image_transport's compressed plugin writes them."""
    image_bgr = _check_bgr(image_bgr)
    fmt = fmt.lower()
    if fmt in ("jpeg", "jpg"):
        ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        name = "bgr8; jpeg compressed bgr8"
    elif fmt == "png":
        ok, data = cv2.imencode(".png", image_bgr)
        name = "bgr8; png compressed bgr8"
    else:
        raise UnsupportedEncodingError(f"compressed format {fmt!r} cannot be written: use jpeg or png")
    if not ok:
        raise CorruptImageError(f"OpenCV could not encode a {image_bgr.shape} image as {fmt}")
    return name, data.reshape(-1)


def _check_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _as_uint8(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A flat uint8 view of a message's ``data`` (numpy array from rosbags, bytes or
    ``array.array`` from rclpy)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)



def as_bgr_image(image: np.ndarray) -> np.ndarray:
    """A contiguous ``(H, W, 3)`` uint8 BGR view or copy of ``image``.

    Accepts BGR, BGRA and grey (``(H, W)`` or ``(H, W, 1)``) uint8 images; anything else
    (other dtypes, other channel counts, zero-size images, non-arrays) raises ValueError
    saying what was received and what is expected.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image of type {type(image).__name__}: expected a numpy array (H, W, 3) uint8 BGR")
    if image.dtype != np.uint8:
        raise ValueError(f"image of dtype {image.dtype}: expected uint8 (8-bit BGR, grey or BGRA)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image of shape {image.shape}: expected (H, W, 3) BGR, (H, W, 4) BGRA "
                         f"or (H, W) grey")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image of shape {image.shape} is empty: expected height and width >= 1")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)
