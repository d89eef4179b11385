"""Frames that must be refused before they cost anything: compressed images are measured
from their own header (PNG IHDR, JPEG SOFn, WebP, BMP, TIFF) and refused above the pixel
limit without being decoded; odd-width 4:2:2 frames and OpenCV conversion failures are
bad frames with a reason; values taken from a message are shown cut short."""
from __future__ import annotations

import cv2
import fault_files
import numpy as np
import pytest

from abaw_ros.config import DEFAULT_MAX_IMAGE_PIXELS, ConfigError, PipelineConfig
from abaw_ros.perception.image import (
    CorruptImageError,
    ImageTooLargeError,
    UnsupportedEncodingError,
    compressed_image_size,
    decode_compressed,
    decode_image,
)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".tiff"])
def test_the_size_is_read_from_the_header_of_every_format_opencv_writes(ext, astronaut_bgr):
    image = np.ascontiguousarray(astronaut_bgr[:123, :301])
    ok, data = cv2.imencode(ext, image)
    assert ok
    width, height, _fmt = compressed_image_size(data)
    assert (width, height) == (301, 123)


def test_a_progressive_jpeg_size_is_read_too(astronaut_bgr):
    ok, data = cv2.imencode(".jpg", astronaut_bgr[:77, :99].copy(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and compressed_image_size(data)[:2] == (99, 77)


@pytest.mark.parametrize(("make", "size", "fmt"), [
    (lambda: fault_files.png_bomb(8000), "8000x8000", "PNG"),
    (lambda: fault_files.jpeg_bomb(12000), "12000x12000", "JPEG"),
], ids=["png_8000", "jpeg_12000"])
def test_a_decompression_bomb_is_refused_naming_its_size(make, size, fmt):
    data = make()
    assert len(data) < 3_000_000  # small on the wire ...
    with pytest.raises(ImageTooLargeError, match=f"image of {size} = .* pixels \\({fmt} header\\).*max_image_pixels"):
        decode_compressed("png" if fmt == "PNG" else "jpeg", data)
    # ... and decodable when the limit allows it: the header told the truth
    width, height, _ = compressed_image_size(data)
    assert width * height > DEFAULT_MAX_IMAGE_PIXELS


def test_frames_up_to_the_limit_decode(astronaut_bgr):
    _fmt, data = "jpeg", cv2.imencode(".jpg", astronaut_bgr)[1]
    assert decode_compressed("jpeg", data, max_pixels=512 * 512).shape == (512, 512, 3)
    with pytest.raises(ImageTooLargeError, match="512x512"):
        decode_compressed("jpeg", data, max_pixels=512 * 512 - 1)
    height, width = 480, 640
    raw = np.zeros((height, width, 3), np.uint8).tobytes()
    assert decode_image("bgr8", height, width, width * 3, raw).shape == (height, width, 3)
    with pytest.raises(ImageTooLargeError, match="640x480"):
        decode_image("bgr8", height, width, width * 3, raw, max_pixels=640 * 480 - 1)


def test_data_without_a_known_header_is_a_corrupt_frame():
    with pytest.raises(CorruptImageError, match="no JPEG, PNG, WebP, BMP or TIFF header"):
        decode_compressed("jpeg", b"\x00" * 100)
    png_signature_only = b"\x89PNG\r\n\x1a\n"
    with pytest.raises(CorruptImageError):
        decode_compressed("png", png_signature_only)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuyv", "yuv422_yuy2"])
def test_an_odd_width_422_frame_is_a_corrupt_frame_with_the_reason(encoding):
    with pytest.raises(CorruptImageError, match=f"641x2 \\({encoding}\\): a 4:2:2 image needs an even width"):
        decode_image(encoding, 2, 641, 641 * 2, bytes(2 * 641 * 2))
    assert decode_image(encoding, 2, 640, 640 * 2, bytes(2 * 640 * 2)).shape == (2, 640, 3)


def test_values_from_the_message_are_shown_cut_short():
    with pytest.raises(UnsupportedEncodingError) as raised:
        decode_image("x" * 100_000, 2, 2, 6, bytes(12))
    assert len(str(raised.value)) < 600 and "(100000 chars)" in str(raised.value)
    with pytest.raises(UnsupportedEncodingError) as raised:
        decode_compressed("h264" + "y" * 100_000, b"\x00")
    assert len(str(raised.value)) < 600


@pytest.mark.parametrize(("value", "ok"), [(64 * 64, True), (DEFAULT_MAX_IMAGE_PIXELS, True),
                                           (63, False), (16384 * 16384 + 1, False)])
def test_max_image_pixels_is_bounded(value, ok):
    config = PipelineConfig(max_image_pixels=value)
    if ok:
        config.validate()
    else:
        with pytest.raises(ConfigError, match=f"max_image_pixels={value}"):
            config.validate()


def test_the_warning_throttle_keeps_few_kinds_and_short_lines(caplog):
    import logging

    pytest.importorskip("rclpy", reason="the throttle logs through the ROS node (rclpy)")
    from abaw_ros.ros.node_logging import WarningThrottle

    log = logging.getLogger("abaw_ros.test_throttle")
    throttle = WarningThrottle(log, period=60.0, max_kinds=8, max_chars=100)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for i in range(1000):
            throttle.warn(f"kind{i}", "x" * 10_000)
        for _ in range(1000):
            throttle.warn("same", "bad frame")
    assert len(throttle) <= 8
    assert all(len(r.getMessage()) < 130 for r in caplog.records)
    assert sum(r.getMessage() == "bad frame" for r in caplog.records) == 1  # once per period
