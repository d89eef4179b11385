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
- :class:`CorruptImageError`: one frame is broken (short data buffer, undecodable JPEG,
  a size above the pixel limit). Callers skip that frame and count it.

Frames are measured before they are decoded: a raw image by its ``width`` x ``height``
fields, a compressed one by the size its own header declares (PNG IHDR, JPEG SOFn, WebP,
BMP, TIFF and PNM headers), so a 60 KB PNG that would decode to 8000x8000 pixels is refused
without allocating them (:class:`ImageTooLargeError`).
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

from abaw_ros.config import DEFAULT_MAX_IMAGE_PIXELS
from abaw_ros.errors import shown

__all__ = [
    "COMPRESSED_FORMATS",
    "RAW_ENCODINGS",
    "CorruptImageError",
    "ImageTooLargeError",
    "UnsupportedEncodingError",
    "compressed_image_size",
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


class ImageTooLargeError(CorruptImageError):
    """One image larger than the pixel limit (``max_image_pixels``); it is not decoded."""


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
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into a ``(height, width, 3)`` uint8
    BGR array (a copy, C-contiguous).

    16-bit encodings keep their high byte (the usual 16 -> 8 bit display scaling).
    Row padding (``step`` larger than a row) is honoured. Images of more than
    ``max_pixels`` pixels raise :class:`ImageTooLargeError`.
    """
    try:
        channels, depth, conversion = _RAW[encoding]
    except (KeyError, TypeError):
        raise UnsupportedEncodingError(
            f"image encoding {shown(encoding)} is not supported: use one of {list(RAW_ENCODINGS)}"
        ) from None
    height, width, step = int(height), int(width), int(step)
    row_bytes = width * channels * depth
    if height <= 0 or width <= 0:
        raise CorruptImageError(f"image size {width}x{height} ({encoding}): width and height must be > 0")
    _check_pixels(width, height, max_pixels, encoding)
    if channels == 2 and width % 2:
        # 4:2:2 packs two pixels into one U/V pair, so a row holds an even number of them.
        raise CorruptImageError(
            f"image size {width}x{height} ({encoding}): a 4:2:2 image needs an even width"
        )
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
    try:
        return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)
    except cv2.error as exc:  # e.g. a Bayer image too small to demosaic
        raise CorruptImageError(
            f"image {width}x{height} ({encoding}) cannot be converted to BGR: {_first_line(exc)}"
        ) from None


def decode_compressed(fmt: str, data: bytes | bytearray | memoryview | np.ndarray,
                      max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (``format``, ``data``) into a
    ``(H, W, 3)`` uint8 BGR array.

    The size is read from the image's header first: more than ``max_pixels`` pixels raise
    :class:`ImageTooLargeError` without decoding, and so does data whose header cannot
    be read (it would not decode either).
    """
    lowered = str(fmt)[:200].lower().replace(" ", "")
    if any(token in lowered for token in _UNSUPPORTED_COMPRESSED):
        raise UnsupportedEncodingError(
            f"compressed image format {shown(fmt)} is not supported: use an image_transport "
            f"'compressed' stream ({', '.join(COMPRESSED_FORMATS)})"
        )
    if lowered and not any(token in lowered for token in COMPRESSED_FORMATS):
        raise UnsupportedEncodingError(
            f"compressed image format {shown(fmt)} is not supported: expected one naming "
            f"{', '.join(COMPRESSED_FORMATS)} (e.g. 'jpeg' or 'rgb8; jpeg compressed bgr8')"
        )
    buffer = _as_uint8(data)
    if buffer.size == 0:
        raise CorruptImageError(f"compressed image ({shown(fmt)}) has no data")
    size = compressed_image_size(buffer)
    if size is None:
        raise CorruptImageError(
            f"compressed image ({shown(fmt)}, {buffer.size} bytes) could not be decoded: no JPEG, "
            f"PNG, WebP, BMP or TIFF header giving the image size"
        )
    _check_pixels(size[0], size[1], max_pixels, f"{size[2]} header")
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise CorruptImageError(
            f"compressed image ({shown(fmt)}, {buffer.size} bytes) could not be decoded: {_first_line(exc)}"
        ) from None
    if image is None:
        raise CorruptImageError(f"compressed image ({shown(fmt)}, {buffer.size} bytes) could not be decoded")
    if image.shape[0] * image.shape[1] > max_pixels:  # a header that lied about the size
        raise ImageTooLargeError(
            f"compressed image decoded to {image.shape[1]}x{image.shape[0]} pixels, more than "
            f"max_image_pixels={max_pixels} (its header declared {size[0]}x{size[1]})"
        )
    return image


# -- image sizes from headers, without decoding ------------------------------------------
# PNG: 8-byte signature, then the IHDR chunk whose data starts with width and height
# (4 bytes each, big-endian) (PNG specification, 11.2.2 IHDR). JPEG: the frame header of
# a SOFn marker (FFC0-FFCF except C4 DHT, C8 JPG, CC DAC) holds precision (1 byte), height
# and width (2 bytes each) (ITU-T T.81, B.2.2). WebP: RIFF container, chunk VP8 / VP8L /
# VP8X (RFC 9649). BMP: BITMAPINFOHEADER width/height (int32 LE). TIFF: first IFD tags
# 256 ImageWidth / 257 ImageLength (TIFF 6.0, section 2). PGM/PPM: ASCII width and height
# after the magic number.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_image_size(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, int, str] | None:
    """``(width, height, format)`` as the image's own header declares it, or None when
    no header of a known format is found. Reads a few bytes; never decodes pixels."""
    buf = _as_uint8(data)
    head = buf[:64].tobytes()
    try:
        if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return width, height, "PNG"
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(buf)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head[:2] == b"BM" and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height), "BMP"
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(buf)
        if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"):
            return _pnm_size(buf[:1024].tobytes())  # comments may come before the size
    except struct.error:  # header cut short
        return None
    return None


def _pnm_size(head: bytes) -> tuple[int, int, str] | None:
    # Netpbm: magic, then width and height as ASCII decimals separated by whitespace,
    # with '#' comments to the end of a line (netpbm's pnm(5) manual).
    text = b"\n".join(line.split(b"#")[0] for line in head[2:].split(b"\n")).split()
    if len(text) < 2 or not (text[0].isdigit() and text[1].isdigit()):
        return None
    return int(text[0]), int(text[1]), "PNM"


def _jpeg_size(buf: np.ndarray) -> tuple[int, int, str] | None:
    data = memoryview(buf)
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return width, height, "JPEG"
        if length < 2 or marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _webp_size(head: bytes) -> tuple[int, int, str] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF, "WebP"
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, "WebP"
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height, "WebP"
    return None


def _tiff_size(buf: np.ndarray) -> tuple[int, int, str] | None:
    order = "<" if buf[:2].tobytes() == b"II" else ">"
    (offset,) = struct.unpack(order + "I", buf[4:8].tobytes())
    (count,) = struct.unpack(order + "H", buf[offset:offset + 2].tobytes())
    count = min(count, 512)
    table = buf[offset + 2: offset + 2 + 12 * count].tobytes()  # the first IFD, wherever it is
    found: dict[int, int] = {}
    for i in range(len(table) // 12):
        entry = table[12 * i: 12 * i + 12]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            fmt = order + ("H" if kind == 3 else "I")
            found[tag] = struct.unpack(fmt, entry[8:8 + struct.calcsize(fmt)])[0]
    if 256 in found and 257 in found:
        return found[256], found[257], "TIFF"
    return None


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image of {width}x{height} = {width * height:,} pixels ({what}) is larger than "
            f"max_image_pixels={max_pixels:,}: not decoded"
        )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


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
