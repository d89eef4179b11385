"""bag-eval end to end: bags of a real face (the astronaut moving across the frame) in
both storages go through the node's pipeline (exported ONNX model, MTCNN detector);
the affect bag, the metrics report and the plot are checked against what can be
recomputed independently from the written bag."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from abaw_ros import cli, metrics
from abaw_ros.config import PipelineConfig
from abaw_ros.offline.annotations import load_frame_labels
from abaw_ros.offline.bag_eval import BagEvalOptions, evaluate_bag
from abaw_ros.offline.bag_types import FACE_AFFECT_ARRAY, IMAGE, BagError, affect_typestore
from abaw_ros.offline.bag_writers import ImageBagWriter
from abaw_ros.tasks import AU_NAMES

ROOT = Path(__file__).resolve().parents[1]
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 40_000_000  # 25 fps


# --- input ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_frames() -> list[np.ndarray]:
    """12 frames (480x360 BGR) of the astronaut photograph sliding to the right."""
    from skimage import data

    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (288, 288))
    frames = []
    for i in range(12):
        frame = np.full((360, 480, 3), 110, np.uint8)
        x = 10 + 8 * i  # slow enough for the tracker to follow between detections
        frame[40:328, x:x + 288] = person
        frames.append(frame)
    return frames


def write_scene_bag(path: Path, frames: list[np.ndarray], storage: str, compression: str | None = None,
                    topic: str = "/camera/image_raw") -> list[int]:
    stamps = [START_NS + i * PERIOD_NS for i in range(len(frames))]
    with ImageBagWriter(path, topic, storage, compression=compression, frame_id="head_camera") as writer:
        for frame, stamp in zip(frames, stamps, strict=True):
            writer.write(frame, stamp, log_time_ns=stamp + 5_000_000)  # received 5 ms later
    return stamps


@pytest.fixture(scope="module")
def config(model_bundle) -> PipelineConfig:
    """The node's parameters file with the test model (ONNX Runtime on CPU)."""
    base = PipelineConfig.from_yaml(ROOT / "config" / "affect.yaml")
    return dataclasses.replace(base, model_file_path=str(model_bundle), backend="onnxruntime", warmup=False)


@pytest.fixture(scope="module")
def label_files(tmp_path_factory) -> dict[str, Path]:
    """Aff-Wild2-style VA and AU files and a hesitancy file for 12 frames, with invalid rows."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("labels")
    va = rng.uniform(-0.9, 0.9, (12, 2)).round(3)
    va_rows = [f"{v:g},{a:g}" for v, a in va]
    va_rows[5] = "-5,-5"
    au = (rng.random((12, 12)) > 0.5).astype(int)
    au_rows = [",".join(map(str, r)) for r in au]
    au_rows[2] = ",".join(["-1"] * 12)
    ah_rows = [str(int(v)) for v in rng.random(12) > 0.5]
    paths = {"va": folder / "video.va.txt", "au": folder / "video.au.txt", "ah": folder / "video.ah.txt"}
    paths["va"].write_text("\n".join(["valence,arousal", *va_rows]) + "\n")
    paths["au"].write_text("\n".join([",".join(AU_NAMES), *au_rows]) + "\n")
    paths["ah"].write_text("\n".join(["hesitancy", *ah_rows]) + "\n")
    return paths


# --- independent reading of the results -------------------------------------------------------
def read_with_embedded_definitions(bag: Path) -> list[tuple[int, object]]:
    """(log time, FaceAffectArray) pairs decoded by a type store that learns the types only
    from the bag itself."""
    store = get_typestore(Stores.EMPTY)
    with Reader(bag) as reader:
        (conn,) = reader.connections
        assert conn.msgtype == FACE_AFFECT_ARRAY and conn.topic == "/affect"
        store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        return [(t, store.deserialize_cdr(raw, conn.msgtype)) for _, t, raw in reader.messages()]


def direct_metrics(messages, frame_of_stamp: dict[int, int], label_files: dict[str, Path]) -> dict:
    """Official metrics from the written messages (largest face per frame) and the label
    files parsed here, independently of the offline code."""
    def parse(path, invalid):
        rows = np.array([[float(x) for x in line.split(",")] for line in path.read_text().split()[1:]])
        return rows, ~np.any(rows == invalid, axis=1)

    truth = {"va": parse(label_files["va"], -5), "au": parse(label_files["au"], -1),
             "ah": parse(label_files["ah"], -1)}
    preds: dict[str, list] = {"va": [], "au": [], "ah": []}
    rows: list[int] = []
    for _, msg in messages:
        if not msg.faces:
            continue
        face = max(msg.faces, key=lambda f: (f.roi.width * f.roi.height, f.detection_confidence))
        rows.append(frame_of_stamp[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec])
        preds["va"].append([face.valence, face.arousal])
        preds["au"].append(face.au_probability)
        preds["ah"].append([face.hesitancy_probability])
    out = {}
    for task, (labels, valid) in truth.items():
        keep = [k for k, r in enumerate(rows) if valid[r]]
        pred = np.asarray(preds[task], dtype=np.float32)[keep]
        out[task] = metrics.task_metrics(task, pred, labels[[rows[k] for k in keep]])
    return out


# --- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("storage", "compression"), [("mcap", None), ("sqlite3", "jpeg")])
def test_one_affect_message_per_frame_with_metrics_and_plot(tmp_path, scene_frames, config, label_files,
                                                              storage, compression):
    bag = tmp_path / "recording"
    stamps = write_scene_bag(bag, scene_frames, storage, compression)
    options = BagEvalOptions(bag, labels=load_frame_labels(**label_files), plot_size_px=(1200, 700),
                             progress=False)
    result = evaluate_bag(options, config)

    assert (result.frames_processed, result.frames_skipped, result.damage) == (12, 0, None)
    assert result.output == tmp_path / "recording_affect" and result.storage == storage
    messages = read_with_embedded_definitions(result.output)
    assert len(messages) == 12
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in messages] == stamps
    assert [t for t, _ in messages] == [s + 5_000_000 for s in stamps]  # written at the image log time
    assert all(m.header.frame_id == "head_camera" for _, m in messages)
    with_face = [m for _, m in messages if m.faces]
    assert len(with_face) >= 9, f"the astronaut was found in only {len(with_face)} of 12 frames"
    for msg in with_face:  # the box follows the face as it slides right
        assert 1 <= len(msg.faces) <= config.max_faces
    xs = [max(m.faces, key=lambda f: f.roi.width).roi.x_offset for m in with_face]
    assert xs[-1] - xs[0] > 50

    report = json.loads(result.report.read_text())
    assert report["run"]["frames_processed"] == 12 and report["run"]["frames_per_second"] > 0
    assert report["model"]["trained"] is False and report["model"]["backend"] == "onnxruntime"
    expected = direct_metrics(messages, {s: i for i, s in enumerate(stamps)}, label_files)
    for task, scores in expected.items():
        got = report["metrics"][task]["scores"]
        for name, value in scores.items():
            assert got[name] == pytest.approx(value, abs=1e-9), f"{task} {name}"
    assert report["metrics"]["va"]["frames_labelled"] == 11  # row 6 is -5
    assert report["metrics"]["au"]["frames_labelled"] == 11  # row 3 is -1

    image = cv2.imread(str(result.plot))
    assert image is not None and image.shape == (700, 1200, 3)
    assert image.std() > 10  # something was drawn


def test_runs_are_deterministic(tmp_path, scene_frames, config):
    bag = tmp_path / "recording"
    write_scene_bag(bag, scene_frames[:8], "mcap")
    outputs = []
    for run in range(2):
        result = evaluate_bag(BagEvalOptions(bag, output=tmp_path / f"affect{run}", write_plot=False,
                                             progress=False), config)
        assert result.frames_processed == 8
        with Reader(result.output) as reader:
            outputs.append([(t, bytes(raw)) for _, t, raw in reader.messages()])
    assert outputs[0] == outputs[1]


def test_broken_frames_are_skipped_and_counted(tmp_path, scene_frames, config, label_files):
    """Frames 3 (garbage CDR) and 6 (pixel buffer cut short) are skipped; every other frame
    is processed and keeps its frame index for the labels."""
    store = affect_typestore()
    bag = tmp_path / "recording"
    stamps = [START_NS + i * PERIOD_NS for i in range(10)]
    with ImageBagWriter(bag, storage="sqlite3") as writer:
        for i, (frame, stamp) in enumerate(zip(scene_frames, stamps, strict=False)):
            if i == 3:
                writer.write_raw(b"\x00\x01\x00\x00\x07\x00\x00", stamp)
            elif i == 6:
                header = store.types["std_msgs/msg/Header"](
                    stamp=store.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                    frame_id="camera")
                writer.write_message(store.types[IMAGE](
                    header=header, height=360, width=480, encoding="bgr8", is_bigendian=0, step=480 * 3,
                    data=frame.reshape(-1)[:1000].copy()), stamp)
            else:
                writer.write(frame, stamp)
    result = evaluate_bag(BagEvalOptions(bag, labels=load_frame_labels(**label_files), progress=False), config)
    assert (result.frames_processed, result.frames_skipped, result.frames_skipped_broken) == (8, 2, 2)
    assert [s.index for s in result.skipped] == [3, 6]
    assert "not a valid sensor_msgs/msg/Image" in result.skipped[0].reason
    assert "expected step*height" in result.skipped[1].reason and result.skipped[1].stamp_ns == stamps[6]
    messages = read_with_embedded_definitions(result.output)
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in messages] == \
        [s for i, s in enumerate(stamps) if i not in (3, 6)]
    report = json.loads(result.report.read_text())
    assert report["run"]["frames_skipped"] == 2 and [s["index"] for s in report["run"]["skipped"]] == [3, 6]
    expected = direct_metrics(messages, {s: i for i, s in enumerate(stamps)}, label_files)
    assert report["metrics"]["va"]["scores"]["va_ccc_mean"] == pytest.approx(expected["va"]["va_ccc_mean"])
    assert "skipped 2 frames: 2 broken" in result.summary()


def test_a_topic_of_only_undecodable_frames_is_a_clear_error(tmp_path, config, caplog):
    store = affect_typestore()
    bag = tmp_path / "depth"
    with ImageBagWriter(bag, "/camera/depth") as writer:
        header = store.types["std_msgs/msg/Header"](
            stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="camera")
        writer.write_message(store.types[IMAGE](header=header, height=4, width=4, encoding="32FC1",
                                                is_bigendian=0, step=16, data=np.zeros(64, np.uint8)), 1)
    with pytest.raises(BagError, match=r"no frame.*topic '/camera/depth'.*message 0.*'32FC1'"):
        evaluate_bag(BagEvalOptions(bag, topic="/camera/depth", progress=False), config)
    assert not (tmp_path / "depth_affect").exists()  # no half-written bag left behind
    with caplog.at_level(logging.ERROR):
        code = cli.main(["bag-eval", str(bag), "-t", "/camera/depth", "--no-progress",
                         "--model-file-path", config.model_file_path, "-p", "backend:=onnxruntime"])
    assert code == 2 and "'32FC1' is not supported" in caplog.text


def test_cli_names_a_missing_topic_and_a_truncated_bag(tmp_path, scene_frames, caplog):
    bag = tmp_path / "recording"
    write_scene_bag(bag, scene_frames[:2], "mcap", topic="/front/image_raw")
    with caplog.at_level(logging.ERROR):
        assert cli.main(["bag-eval", str(bag), "--no-progress"]) == 2
    assert "'/camera/image_raw' is not in bag" in caplog.text
    assert "/front/image_raw (sensor_msgs/msg/Image, 2 messages)" in caplog.text
    caplog.clear()
    store = next(bag.glob("*.mcap"))
    store.write_bytes(store.read_bytes()[:-100])
    with caplog.at_level(logging.ERROR):
        assert cli.main(["bag-eval", str(bag), "-t", "/front/image_raw", "--no-progress"]) == 2
    assert "recording.mcap" in caplog.text and "truncated or damaged" in caplog.text
    assert "--recover" in caplog.text


def test_recover_evaluates_a_recording_that_was_cut_short(tmp_path, scene_frames, model_bundle):
    """The recorder was killed: no metadata.yaml, the MCAP's index and footer missing."""
    bag = tmp_path / "recording"
    stamps = write_scene_bag(bag, scene_frames[:6], "mcap")
    (bag / "metadata.yaml").unlink()
    store = next(bag.glob("*.mcap"))
    store.write_bytes(store.read_bytes()[: store.stat().st_size * 3 // 4])  # inside the 2nd chunk
    code = cli.main(["bag-eval", str(bag), "--recover", "--no-progress", "--no-plot", "--model-file-path",
                     str(model_bundle), "-p", "backend:=onnxruntime", "-p", "warmup:=false"])
    assert code == 0
    report = json.loads((tmp_path / "recording_affect_report.json").read_text())
    assert report["run"]["recovered"] is True and "unreadable" in report["run"]["damage"]
    assert report["run"]["frames_processed"] == 3  # the first chunk: frames 0-2
    messages = read_with_embedded_definitions(tmp_path / "recording_affect")
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in messages] == stamps[:3]
