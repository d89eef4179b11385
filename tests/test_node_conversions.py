"""The node's building blocks without DDS: image message decoding, the latest-frame
hand-off, warning throttling (the launch file: test_launch_logic.py)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from abaw_ros.ros.conversions import (  # noqa: E402
    IMAGE_ERRORS,
    bgr_to_compressed,
    bgr_to_image,
    compressed_to_bgr,
    image_to_bgr,
)
from abaw_ros.ros.handoff import LatestSlot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A real photograph, BGR, with an odd size so row padding and strides matter."""
    from skimage import data

    return np.ascontiguousarray(cv2.cvtColor(data.astronaut()[:101, :75], cv2.COLOR_RGB2BGR))


def _raw(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """An Image message with ``pad`` extra bytes at the end of every row."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, pad), 77, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize(
    ("encoding", "to_encoding"),
    [
        ("bgr8", None),
        ("rgb8", cv2.COLOR_BGR2RGB),
        ("bgra8", cv2.COLOR_BGR2BGRA),
        ("rgba8", cv2.COLOR_BGR2RGBA),
    ],
)
@pytest.mark.parametrize("pad", [0, 3])
def test_color_encodings_decode_to_the_same_bgr_pixels(picture, encoding, to_encoding, pad):
    pixels = picture if to_encoding is None else cv2.cvtColor(picture, to_encoding)
    decoded = image_to_bgr(_raw(pixels, encoding, pad))
    assert decoded.shape == picture.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, picture)


def test_mono8_decodes_to_grey_bgr(picture):
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    decoded = image_to_bgr(_raw(grey, "mono8", pad=1))
    assert decoded.shape == picture.shape
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], grey)


def test_decoded_image_does_not_alias_the_message(picture):
    msg = _raw(picture, "bgr8")
    decoded = image_to_bgr(msg)
    decoded[:] = 0
    np.testing.assert_array_equal(image_to_bgr(msg), picture)


def test_image_messages_written_by_the_demo_camera_round_trip(picture):
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    for encoding in ("bgr8", "rgb8"):
        msg = bgr_to_image(picture, header, encoding)
        assert (msg.encoding, msg.header.frame_id, msg.header.stamp.nanosec) == (encoding, "cam", 345)
        np.testing.assert_array_equal(image_to_bgr(msg), picture)
    compressed = bgr_to_compressed(picture, header)
    assert "jpeg" in compressed.format
    decoded = compressed_to_bgr(compressed)
    assert decoded.shape == picture.shape
    assert np.abs(decoded.astype(int) - picture.astype(int)).mean() < 6.0  # JPEG loss only


def _error_text(func, msg) -> str:
    with pytest.raises(IMAGE_ERRORS) as info:
        func(msg)
    return str(info.value)


def test_unsupported_encoding_is_named(picture):
    msg = _raw(picture, "bgr8")
    msg.encoding = "32FC1"
    assert "32FC1" in _error_text(image_to_bgr, msg)


def test_data_shorter_than_height_times_step_is_reported_with_both_numbers(picture):
    msg = _raw(picture, "bgr8")
    msg.data = bytes(msg.data)[: msg.step * msg.height - 10]
    text = _error_text(image_to_bgr, msg)
    assert str(msg.step * msg.height - 10) in text and str(msg.step * msg.height) in text


def test_step_smaller_than_a_row_is_reported(picture):
    msg = _raw(picture, "bgr8")
    msg.step = msg.width * 3 - 1
    assert str(msg.step) in _error_text(image_to_bgr, msg)


def test_zero_size_images_are_rejected():
    assert "0x0" in _error_text(image_to_bgr, Image(height=0, width=0, encoding="bgr8", step=0))
    assert "no data" in _error_text(compressed_to_bgr, CompressedImage(format="jpeg"))


def test_corrupt_jpeg_is_rejected(picture):
    good = bytes(bgr_to_compressed(picture).data)
    msg = CompressedImage(format="jpeg")
    msg.data = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8  # JPEG magic, then garbage
    assert "could not be decoded" in _error_text(compressed_to_bgr, msg)
    msg.data = good[:20]  # truncated header
    with pytest.raises(IMAGE_ERRORS):
        compressed_to_bgr(msg)


# -- FrameResult -> FaceAffectArray ----------------------------------------------------------
def _face(face_id: str, box, tasks: dict) -> object:
    from abaw_ros.perception.pipeline import FaceResult

    au = tasks.get("au")
    return FaceResult(
        face_id=face_id, box=box, confidence=0.97, window_length=8, frames_observed=5,
        outputs={k: np.asarray(v, dtype=np.float32) for k, v in tasks.items()},
        au_active=np.asarray(au) >= 0.5 if au is not None else np.zeros(12, bool),
        hesitant=bool(tasks.get("ah", [0.0])[0] >= 0.5),
    )


def test_frame_result_becomes_a_message_with_the_source_header():
    from abaw_ros.perception.pipeline import FrameResult
    from abaw_ros.ros.conversions import frame_result_to_msg

    au = np.linspace(0.05, 0.95, 12)
    emi = np.linspace(0.1, 0.6, 6)
    faces = [
        _face("face_3", (10, 20, 30, 40), {"va": [0.25, -0.5], "au": au, "emi": emi, "ah": [0.75]}),
        _face("face_4", (600, 450, 80, 60), {"va": [-1.0, 1.0]}),  # a VA-only model, box past the edge
    ]
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 123_456_789
    msg = frame_result_to_msg(FrameResult(stamp_ns=1, faces=faces), header, (480, 640, 3))
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        "camera_optical", 1_700_000_000, 123_456_789)
    first, second = msg.faces
    assert first.face_id == "face_3"
    assert (first.roi.x_offset, first.roi.y_offset, first.roi.width, first.roi.height) == (10, 20, 30, 40)
    assert (first.window_length, first.frames_observed) == (8, 5)
    assert first.valence == pytest.approx(0.25) and first.arousal == pytest.approx(-0.5)
    np.testing.assert_allclose(first.au_probability, au, atol=1e-6)
    assert list(first.au_active) == [bool(v >= 0.5) for v in au]
    np.testing.assert_allclose(first.mimicry_intensity, emi, atol=1e-6)
    assert first.hesitancy_probability == pytest.approx(0.75) and first.hesitant
    # Clipped to the image; tasks the model does not estimate are NaN, flags false.
    assert (second.roi.x_offset, second.roi.y_offset, second.roi.width, second.roi.height) == (600, 450, 40, 30)
    assert np.isnan(second.au_probability).all() and not any(second.au_active)
    assert np.isnan(second.mimicry_intensity).all() and np.isnan(second.hesitancy_probability)
    assert not second.hesitant
    empty = frame_result_to_msg(FrameResult(stamp_ns=1, faces=[]), header)
    assert empty.faces == [] and empty.header.stamp.nanosec == 123_456_789


# -- latest-frame hand-off -------------------------------------------------------------------
def test_slot_keeps_only_the_newest_item_and_counts_the_replaced_ones():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert slot.take(timeout=0) == 3
    assert slot.dropped == 2
    assert slot.take(timeout=0.05) is None  # empty again
    assert slot.put(4) is False  # the previous item was taken, nothing dropped
    assert slot.dropped == 2


def test_slot_wakes_a_waiting_taker_on_put_and_on_close():
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    taker = threading.Thread(target=lambda: got.append(slot.take(timeout=5.0)))
    taker.start()
    time.sleep(0.05)
    slot.put("frame")
    taker.join(timeout=2.0)
    assert got == ["frame"]

    started = time.monotonic()
    taker = threading.Thread(target=lambda: got.append(slot.take(timeout=5.0)))
    taker.start()
    time.sleep(0.05)
    slot.close()
    taker.join(timeout=2.0)
    assert not taker.is_alive() and got[-1] is None
    assert time.monotonic() - started < 2.0
    assert slot.take(timeout=5.0) is None  # closed: returns at once


def test_slot_memory_is_bounded_under_a_flood():
    slot: LatestSlot[bytes] = LatestSlot()
    for _ in range(10_000):
        slot.put(b"x" * 100)
    assert slot.dropped == 9_999
    assert slot.take(timeout=0) is not None and slot.take(timeout=0) is None


def test_warning_throttle_reports_each_kind_once_per_period_and_counts_the_rest():
    from abaw_ros.ros.node_logging import WarningThrottle

    class Lines:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def warning(self, text: str) -> None:
            self.lines.append(text)

    log = Lines()
    throttle = WarningThrottle(log, period=0.2)
    for _ in range(5):
        throttle.warn("a", "bad encoding")
        throttle.warn("b", "short data")
    assert log.lines == ["bad encoding", "short data"]
    time.sleep(0.25)
    throttle.warn("a", "bad encoding")
    assert log.lines[-1].startswith("bad encoding (4 more like it")
