"""Bag I/O without the pipeline: image decoding rules, our message types in rosbags,
image bags in both storages, clear errors for bad bags, FaceAffectArray round trips."""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from abaw_ros.offline.bag_reader import ImageBagReader, ImageFrame, read_affect_bag
from abaw_ros.offline.bag_types import FACE_AFFECT_ARRAY, IMAGE, BagReadError, BagTopicError, affect_typestore
from abaw_ros.offline.bag_writers import AffectBagWriter, ImageBagWriter, frame_result_to_msg
from abaw_ros.perception.image import (
    CorruptImageError,
    UnsupportedEncodingError,
    decode_compressed,
    decode_image,
)
from abaw_ros.perception.pipeline import FaceResult, FrameResult
from abaw_ros.tasks import AU_NAMES

ROOT = Path(__file__).resolve().parents[1]
STORAGES = ["mcap", "sqlite3"]


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A real photograph (BGR) with an odd size, so strides and padding matter."""
    from skimage import data

    return np.ascontiguousarray(cv2.cvtColor(data.astronaut()[100:233, 150:271], cv2.COLOR_RGB2BGR))


def _storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


# --- image decoding -------------------------------------------------------------------------
def test_mono16_honours_endianness_and_keeps_the_high_byte(picture):
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    values = grey.astype(np.uint16) * 256 + 171  # high byte = grey value, low byte noise
    for big in (False, True):
        data = values.astype(">u2" if big else "<u2").tobytes()
        out = decode_image("mono16", *grey.shape, grey.shape[1] * 2, data, big)
        assert np.array_equal(out[:, :, 0], grey) and np.array_equal(out[:, :, 2], grey)


def test_packed_and_bayer_encodings_follow_opencv_conversions(picture):
    h, w = picture.shape[0] // 2 * 2, picture.shape[1] // 2 * 2
    even = np.ascontiguousarray(picture[:h, :w])
    # Bright grey in UYVY byte order (U Y V Y): grey when read as yuv422/uyvy, coloured
    # when the packing is mistaken for YUYV.
    uyvy = np.tile(np.array([128, 200, 128, 200], np.uint8), h * w // 2).tobytes()
    for name in ("yuv422", "uyvy"):
        grey = decode_image(name, h, w, w * 2, uyvy).astype(int)
        assert grey.min() > 190 and np.ptp(grey, axis=2).max() <= 2
    swapped = decode_image("yuv422_yuy2", h, w, w * 2, uyvy).astype(int)
    assert np.ptp(swapped, axis=2).min() > 50
    # A Bayer mosaic sampled from the picture (RGGB: R at (0,0)) demosaics close to it.
    mosaic = np.zeros((h, w), np.uint8)
    mosaic[0::2, 0::2] = even[0::2, 0::2, 2]
    mosaic[0::2, 1::2] = even[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = even[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = even[1::2, 1::2, 0]
    out = decode_image("bayer_rggb8", h, w, w, mosaic.tobytes())
    wrong = decode_image("bayer_bggr8", h, w, w, mosaic.tobytes())
    err = np.abs(out.astype(int) - even.astype(int)).mean()
    assert err < 20 < np.abs(wrong.astype(int) - even.astype(int)).mean()


def test_bad_images_raise_errors_naming_the_problem(picture):
    h, w = picture.shape[:2]
    with pytest.raises(UnsupportedEncodingError, match="'32FC1'"):
        decode_image("32FC1", h, w, w * 4, b"\0" * (h * w * 4))
    with pytest.raises(CorruptImageError, match=f"expected step\\*height = {w * 3}\\*{h}"):
        decode_image("bgr8", h, w, w * 3, picture.tobytes()[:-10])
    with pytest.raises(CorruptImageError, match="step 5 <"):
        decode_image("bgr8", h, w, 5, picture.tobytes())
    ok, jpeg = cv2.imencode(".jpg", picture)
    assert np.abs(decode_compressed("jpeg", jpeg.tobytes()).astype(int) - picture.astype(int)).mean() < 5
    with pytest.raises(CorruptImageError, match="could not be decoded"):
        decode_compressed("jpeg", b"\xff\xd8 not a jpeg at all")
    with pytest.raises(UnsupportedEncodingError, match="'h264'"):
        decode_compressed("h264", jpeg.tobytes())


# --- message types ---------------------------------------------------------------------------
def test_registered_types_hash_like_the_ros_build():
    """rosbags' RIHS01 hash of our types equals the one rosidl generated at build time,
    so ROS 2 tools accept the bags written here."""
    store = affect_typestore()
    json_files = [Path(p) / "share" / "abaw_ros" / "msg" / "FaceAffectArray.json"
                  for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    install = Path(os.environ.get("ABAW_INSTALL_BASE", ROOT / "install"))  # set by setup_env.sh
    json_files.append(install / "abaw_ros" / "share" / "abaw_ros" / "msg" / "FaceAffectArray.json")
    built = next((p for p in json_files if p.is_file()), None)
    if built is None:
        pytest.skip("no colcon build of abaw_ros (share/abaw_ros/msg/FaceAffectArray.json)")
    hashes = json.loads(built.read_text())["type_hashes"]
    expected = next(h["hash_string"] for h in hashes if h["type_name"] == FACE_AFFECT_ARRAY)
    assert store.hash_rihs01(FACE_AFFECT_ARRAY) == expected


def _face(face_id: str, box, outputs: dict) -> FaceResult:
    active = np.zeros(12, bool)
    active[[0, 6]] = True
    return FaceResult(face_id=face_id, box=box, confidence=0.97, window_length=8, frames_observed=5,
                      outputs=outputs, au_active=active, hesitant=True)


def test_frame_result_becomes_a_face_affect_array():
    outputs = {"va": np.array([0.25, -0.5], np.float32), "au": np.linspace(0, 1, 12, dtype=np.float32),
               "ah": np.array([0.75], np.float32)}  # no emi: published as NaN
    result = FrameResult(stamp_ns=5, faces=[_face("3", (-4, 10, 30, 40), outputs)])
    msg = frame_result_to_msg(result, 1_700_000_123_000_000_456, "cam", image_shape=(32, 100, 3))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1_700_000_123, 456, "cam")
    face = msg.faces[0]
    assert face.face_id == "3" and face.window_length == 8 and face.frames_observed == 5
    # box clipped to the image: x -4 -> 0 (width 26), y 10 + 40 -> 32 (height 22)
    assert (face.roi.x_offset, face.roi.y_offset, face.roi.width, face.roi.height) == (0, 10, 26, 22)
    assert (face.valence, face.arousal) == (0.25, -0.5)
    assert np.array_equal(face.au_probability, outputs["au"]) and face.au_active.tolist()[6]
    assert np.isnan(face.mimicry_intensity).all() and face.mimicry_intensity.shape == (6,)
    assert face.hesitancy_probability == 0.75 and face.hesitant is True


# --- image bags --------------------------------------------------------------------------
@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("compression", [None, "png"])
def test_image_bags_round_trip_in_both_storages(tmp_path, picture, storage, compression):
    stamps = [1_700_000_000_000_000_000 + i * 33_333_333 for i in range(4)]
    shifted = [np.roll(picture, 7 * i, axis=1) for i in range(4)]
    bag = tmp_path / "cam"
    with ImageBagWriter(bag, "/cam/image", storage, compression=compression, frame_id="head_cam") as w:
        for img, stamp in zip(shifted, stamps, strict=True):
            w.write(img, stamp)
    with ImageBagReader(bag, "/cam/image") as reader:
        assert reader.storage == storage and reader.message_count == 4
        frames = list(reader.frames())
    assert [f.stamp_ns for f in frames] == stamps and [f.index for f in frames] == [0, 1, 2, 3]
    assert all(f.frame_id == "head_cam" and f.error is None for f in frames)
    for frame, img in zip(frames, shifted, strict=True):
        assert np.array_equal(frame.image, img)  # bgr8 and PNG are lossless


@pytest.mark.parametrize("storage", STORAGES)
def test_missing_topic_error_lists_the_topics_and_their_types(tmp_path, picture, storage):
    bag = tmp_path / "cam"
    with ImageBagWriter(bag, "/front/image_raw", storage) as w:
        w.write(picture, 10)
    with pytest.raises(BagTopicError) as info:
        ImageBagReader(bag, "/camera/image_raw").open()
    text = str(info.value)
    assert "'/camera/image_raw'" in text and str(bag) in text
    assert "/front/image_raw (sensor_msgs/msg/Image, 1 messages)" in text


def test_a_topic_that_is_not_an_image_is_refused(tmp_path):
    bag = tmp_path / "affect"
    with AffectBagWriter(bag, "/affect") as w:
        w.write(FrameResult(0, []), ImageFrame(0, 1, 1, 1, "cam", None))
    with pytest.raises(BagTopicError, match="carries abaw_ros/msg/FaceAffectArray, expected"):
        ImageBagReader(bag, "/affect").open()


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_bags_give_an_error_naming_the_file(tmp_path, picture, storage):
    bag = tmp_path / "cam"
    with ImageBagWriter(bag, storage=storage) as w:
        for i in range(5):
            w.write(picture, 1000 + i)
    store = _storage_file(bag)
    store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])
    with pytest.raises(BagReadError) as info:
        ImageBagReader(bag).open()
    assert store.name in str(info.value) and "truncated or damaged" in str(info.value)


def test_a_bag_folder_without_metadata_is_read_from_its_storage_file(tmp_path, picture):
    bag = tmp_path / "cam"
    with ImageBagWriter(bag, storage="mcap") as w:
        for i in range(3):
            w.write(picture, 1000 + i)
    (bag / "metadata.yaml").unlink()
    with ImageBagReader(bag) as reader:
        assert [f.stamp_ns for f in reader.frames()] == [1000, 1001, 1002]
    shutil.rmtree(bag)
    bag.mkdir()
    with pytest.raises(BagReadError, match="not a ROS 2 bag"):
        ImageBagReader(bag).open()


def test_broken_messages_are_returned_as_skippable_frames(tmp_path, picture):
    """Garbage CDR and an Image whose data is short are frames with an error, not a crash."""
    store = affect_typestore()
    bag = tmp_path / "cam"
    good = ImageBagWriter(bag)
    with good:
        good.write(picture, 100)
        good.write_raw(b"\x00\x01\x00\x00garbage", 200)
        h, w = picture.shape[:2]
        header = store.types["std_msgs/msg/Header"](
            stamp=store.types["builtin_interfaces/msg/Time"](sec=0, nanosec=300), frame_id="camera")
        short = store.types[IMAGE](header=header, height=h, width=w, encoding="bgr8", is_bigendian=0,
                                   step=w * 3, data=picture.reshape(-1)[: w * 3 * 10].copy())
        good.write_message(short, 300)
        good.write(picture, 400)
    with ImageBagReader(bag) as reader:
        frames = list(reader.frames())
    assert [f.image is None for f in frames] == [False, True, True, False]
    assert "not a valid sensor_msgs/msg/Image" in frames[1].error
    assert f"expected step*height = {w * 3}*{h}" in frames[2].error and frames[2].stamp_ns == 300


# --- affect bags -------------------------------------------------------------------------
@pytest.mark.parametrize("storage", STORAGES)
def test_affect_bags_are_readable_from_their_embedded_definitions(tmp_path, storage):
    bag = tmp_path / "affect"
    outputs = {"va": np.array([0.1, 0.2], np.float32), "au": np.full(12, 0.3, np.float32),
               "emi": np.full(6, 0.4, np.float32), "ah": np.array([0.9], np.float32)}
    with AffectBagWriter(bag, "/affect", storage) as w:
        for i in range(3):
            faces = [_face(str(k), (10 * k, 5, 20, 20), outputs) for k in range(i)]
            w.write(FrameResult(i, faces), ImageFrame(i, 50 + i, 7 + i, 7 + i, "cam", np.zeros((64, 64, 3), np.uint8)))

    fresh = get_typestore(Stores.EMPTY)  # knows nothing but what the bag says
    with Reader(bag) as reader:
        (conn,) = reader.connections
        assert conn.msgtype == FACE_AFFECT_ARRAY and "MSG: abaw_ros/FaceAffect" in conn.msgdef.data
        fresh.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        msgs = [(t, fresh.deserialize_cdr(raw, conn.msgtype)) for _, t, raw in reader.messages()]
    assert [t for t, _ in msgs] == [50, 51, 52]
    assert [m.header.stamp.nanosec for _, m in msgs] == [7, 8, 9]
    assert [len(m.faces) for _, m in msgs] == [0, 1, 2]
    face = msgs[2][1].faces[1]
    assert face.face_id == "1" and face.roi.x_offset == 10 and face.hesitant
    assert np.allclose(face.au_probability, 0.3) and len(face.au_active) == len(AU_NAMES)
    assert [m.stamp_ns for m in read_affect_bag(bag)] == [7, 8, 9]


def test_affect_bags_deserialize_with_the_ros_generated_message_class(tmp_path):
    """The same bytes decode with rclpy and the colcon-built abaw_ros.msg classes."""
    serialization = pytest.importorskip("rclpy.serialization", reason="rclpy not installed")
    msg_module = pytest.importorskip("abaw_ros.msg", reason="abaw_ros messages not built with colcon")
    bag = tmp_path / "affect"
    outputs = {"va": np.array([0.5, -0.25], np.float32), "au": np.linspace(0, 1, 12, dtype=np.float32),
               "emi": np.full(6, 0.125, np.float32), "ah": np.array([0.0625], np.float32)}
    with AffectBagWriter(bag) as w:
        w.write(FrameResult(0, [_face("42", (1, 2, 3, 4), outputs)]),
                ImageFrame(0, 9, 1_500_000_000, 1_500_000_000, "cam", np.zeros((10, 10, 3), np.uint8)))
    with Reader(bag) as reader:
        (_, _, raw), = list(reader.messages())
    msg = serialization.deserialize_message(bytes(raw), msg_module.FaceAffectArray)
    assert msg.header.stamp.sec == 1 and msg.header.stamp.nanosec == 500_000_000
    assert msg.faces[0].face_id == "42" and msg.faces[0].arousal == -0.25
    assert np.allclose(msg.faces[0].au_probability, outputs["au"]) and msg.faces[0].hesitant


def test_writers_refuse_to_overwrite_unless_asked(tmp_path, picture):
    bag = tmp_path / "cam"
    with ImageBagWriter(bag) as w:
        w.write(picture, 1)
    with pytest.raises(Exception, match="exists already"):
        ImageBagWriter(bag)
    with ImageBagWriter(bag, overwrite=True, storage="sqlite3") as w:
        w.write(picture, 2)
    assert _storage_file(bag).suffix == ".db3"
    (tmp_path / "notes").mkdir()
    with pytest.raises(Exception, match="not an image bag written by video-to-bag"):
        ImageBagWriter(tmp_path / "notes", overwrite=True)


@pytest.mark.parametrize("which", [3, 0])
def test_reading_goes_on_past_a_damaged_mcap_chunk(tmp_path, picture, which):
    """A chunk whose bytes were changed on disk fails its CRC (which our writer records); the
    chunks after it are still read, the lost frame is counted and the others keep their
    topic index. The first chunk also holds the channel definitions: they are taken from
    the summary section then."""
    bag = tmp_path / "cam"
    big = cv2.resize(picture, (640, 640))  # about one 1.2 MB frame per MCAP chunk
    with ImageBagWriter(bag) as w:
        for i in range(6):
            w.write(big, 1000 + i)
    flip_bytes_in_mcap_chunk(_storage_file(bag), which=which)
    kept = [i for i in range(6) if i != which]
    with ImageBagReader(bag) as reader:
        frames = list(reader.frames())
        assert [f.index for f in frames] == kept and all(f.image is not None for f in frames)
        assert [f.stamp_ns for f in frames] == [1000 + i for i in kept]
        assert np.array_equal(frames[-1].image, big)
        assert (reader.frames_read, reader.frames_lost, reader.frames_unread) == (5, 1, 1)
        assert "checksum" in reader.damage and f"after {which} of 6" in reader.damage
        assert "1 messages lost" in reader.damage


def mcap_chunk_offsets(path: Path) -> list[int]:
    """Offsets of the chunk records of an MCAP file, walked record by record."""
    data = path.read_bytes()
    pos, chunks = 8, []
    while pos < len(data) - 8:
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        if op == 0x06:
            chunks.append(pos)
        if op in (0x02, 0x0F):  # footer, data end
            break
        pos += 9 + length
    return chunks


def flip_bytes_in_mcap_chunk(path: Path, which: int, count: int = 16) -> int:
    """Invert ``count`` bytes in the middle of the ``which``-th chunk's records, on disk, as
    a bad sector or a bit rot would; return the chunk offset."""
    offset = mcap_chunk_offsets(path)[which]
    with path.open("r+b") as handle:
        handle.seek(offset + 1)
        (length,) = struct.unpack("<Q", handle.read(8))
        middle = offset + 9 + length // 2
        handle.seek(middle)
        damaged = bytes(b ^ 0xFF for b in handle.read(count))
        handle.seek(middle)
        handle.write(damaged)
    return offset


def corrupt_mcap_chunk(path: Path, which: int) -> int:
    """Give the ``which``-th chunk record of an MCAP file a wrong CRC; return its offset."""
    data = bytearray(path.read_bytes())
    pos, chunks = 8, []
    while pos < len(data) - 8:
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        if op == 0x06:
            chunks.append(pos)
        if op == 0x02:  # footer
            break
        pos += 9 + length
    offset = chunks[which]
    struct.pack_into("<I", data, offset + 9 + 24, 0xDEADBEEF)  # start, end, size, then crc
    path.write_bytes(bytes(data))
    return offset


def test_writer_rejects_unknown_storage(tmp_path):
    with pytest.raises(Exception, match="storage='rosbag1'"):
        ImageBagWriter(tmp_path / "x", storage="rosbag1")


def test_offline_tools_never_import_ros():
    """bag-eval and video-to-bag run where ROS is not installed."""
    import subprocess
    import sys

    code = ("import sys, abaw_ros.offline.bag_eval, abaw_ros.offline.video_to_bag, "
            "abaw_ros.commands.bag_eval, abaw_ros.commands.video_to_bag; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py', "
            "'sensor_msgs', 'std_msgs') or m == 'abaw_ros.ros' or m.startswith('abaw_ros.ros.')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_recording_cut_short_is_an_error_unless_recovered(tmp_path, picture):
    """A killed recorder leaves an MCAP without footer (and often no metadata.yaml): by
    default an error that names the way out, with recover=True the complete records."""
    bag = tmp_path / "cam"
    big = cv2.resize(picture, (640, 640))  # one frame per MCAP chunk
    with ImageBagWriter(bag) as w:
        for i in range(6):
            w.write(big, 1000 + i)
    (bag / "metadata.yaml").unlink()
    store = _storage_file(bag)
    store.write_bytes(store.read_bytes()[: int(store.stat().st_size * 0.6)])
    with pytest.raises(BagReadError, match="--recover"):
        ImageBagReader(bag).open()
    with ImageBagReader(bag, recover=True) as reader:
        assert reader.recovered and reader.message_count == 3
        frames = list(reader.frames())
        assert "unreadable" in reader.damage
    assert [f.stamp_ns for f in frames] == [1000, 1001, 1002]
    assert all(np.array_equal(f.image, big) for f in frames)
    with pytest.raises(BagTopicError, match=r"/camera/image_raw \(sensor_msgs/msg/Image, 3 messages\)"):
        ImageBagReader(bag, "/other", recover=True).open()


def test_recovery_reads_a_complete_mcap_like_the_normal_reader(tmp_path, picture):
    from abaw_ros.offline.mcap_recovery import RecoveredMcap

    bag = tmp_path / "cam"
    with ImageBagWriter(bag, compression="jpeg") as w:
        for i in range(5):
            w.write(np.roll(picture, i, axis=0), 50 + i)
    found = RecoveredMcap.scan(_storage_file(bag))
    assert found.damage is None
    recovered = [(t, raw) for _, t, raw in found.messages({"/camera/image_raw"})]
    with Reader(bag) as reader:
        normal = [(t, bytes(raw)) for _, t, raw in reader.messages()]
    assert recovered == normal
