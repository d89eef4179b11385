"""bag-eval and predict run one frame loop (source -> pipeline -> sinks) with one skip
accounting; the offline modules and commands form no import circle and stay small."""
from __future__ import annotations

import ast
import csv
import dataclasses
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from abaw_ros.config import PipelineConfig
from abaw_ros.offline.bag_eval import BagEvalOptions, evaluate_bag
from abaw_ros.offline.bag_reader import read_affect_bag
from abaw_ros.offline.bag_types import IMAGE, affect_typestore, make_header
from abaw_ros.offline.bag_writers import ImageBagWriter
from abaw_ros.offline.predict import predict

ROOT = Path(__file__).resolve().parents[1]
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 40_000_000
BROKEN, DEPTH = 2, 4  # message 2: garbage CDR; message 4: a 16UC1 depth frame


@pytest.fixture(scope="module")
def config(model_bundle) -> PipelineConfig:
    base = PipelineConfig.from_yaml(ROOT / "config" / "affect.yaml")
    return dataclasses.replace(base, model_file_path=str(model_bundle), backend="onnxruntime", warmup=False)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """7 frames of the astronaut photograph sliding right; one broken, one in 16UC1."""
    from skimage import data

    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (288, 288))
    store = affect_typestore()
    bag = tmp_path_factory.mktemp("loop") / "recording"
    with ImageBagWriter(bag, storage="mcap") as writer:
        for i in range(7):
            stamp = START_NS + i * PERIOD_NS
            if i == BROKEN:
                writer.write_raw(b"\x00\x01\x00\x00\x07\x00\x00", stamp)
            elif i == DEPTH:
                writer.write_message(store.types[IMAGE](
                    header=make_header(stamp, "camera", store), height=48, width=64, encoding="16UC1",
                    is_bigendian=0, step=128, data=np.zeros(48 * 128, np.uint8)), stamp)
            else:
                frame = np.full((360, 480, 3), 110, np.uint8)
                frame[40:328, 10 + 8 * i:298 + 8 * i] = person
                writer.write(frame, stamp)
    return bag


def test_bag_eval_and_predict_read_skip_and_count_a_bag_the_same_way(tmp_path, recording, config):
    """The same bag through both tools: the same frames processed, the same frames skipped
    for the same reasons, the same faces with the same tracker ids on every frame."""
    evaluated = evaluate_bag(BagEvalOptions(recording, output=tmp_path / "affect", write_plot=False,
                                            progress=False), config)
    predicted = predict(recording, tmp_path / "rows.csv", config, progress=False)

    assert evaluated.frames_processed == predicted.frames_processed == 5
    assert evaluated.frames_read == predicted.frames_read == 7
    assert [(s.index, s.reason) for s in evaluated.skipped] == [(s.index, s.reason) for s in predicted.skipped]
    assert [s.index for s in predicted.skipped] == [BROKEN, DEPTH]
    assert (evaluated.frames_skipped_broken, evaluated.frames_skipped_unsupported) == (1, 1)
    assert (predicted.frames_skipped_broken, predicted.frames_skipped_unsupported) == (1, 1)
    assert evaluated.frames_with_face == predicted.frames_with_face and evaluated.faces_total >= 1

    ids_in_bag = [sorted(f.face_id for f in m.msg.faces) for m in read_affect_bag(evaluated.output)]
    per_frame: dict[str, list[str]] = {}
    with open(tmp_path / "rows.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            per_frame.setdefault(row["frame"], []).extend([row["face_id"]] if row["face_id"] else [])
    assert ids_in_bag == [sorted(ids) for ids in per_frame.values()]


def test_predict_logs_the_first_skipped_frames_and_counts_the_rest_like_bag_eval(tmp_path, config, caplog):
    """Twelve unreadable images: the first ten are named in the log, then one line says the
    rest are only counted; the sidecar lists all twelve."""
    import json

    from skimage import data

    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    for i in range(1, 13):
        (folder / f"{i}.png").write_bytes(b"not a png")
    caplog.set_level(logging.WARNING, logger="abaw_ros.offline")
    result = predict(folder, tmp_path / "rows.csv", config, progress=False)
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping frame")]
    assert len(skips) == 10 and skips[0].startswith("skipping frame 1: 1.png")
    assert any("further skipped frames are counted" in r.getMessage() for r in caplog.records)
    assert result.frames_processed == 1 and len(result.skipped) == 12
    sidecar = json.loads((tmp_path / "rows.json").read_text())
    assert sidecar["frames_skipped"] == 12 and [s["name"] for s in sidecar["skipped"]][:2] == ["1.png", "2.png"]


def test_the_node_and_the_bags_build_face_affect_arrays_with_one_function():
    """perception.affect_message.face_affect_array with rclpy's classes gives the message
    the node publishes (ros.conversions), with rosbags' classes the one bag-eval writes."""
    pytest.importorskip("rclpy")
    try:
        from abaw_ros.msg import FaceAffect, FaceAffectArray
    except ImportError:
        pytest.skip("abaw_ros messages are not built (colcon build)")
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import RegionOfInterest
    from std_msgs.msg import Header

    from abaw_ros.offline.bag_writers import frame_result_to_msg
    from abaw_ros.perception.affect_message import AffectMessageTypes, face_affect_array
    from abaw_ros.perception.pipeline import FaceResult, FrameResult
    from abaw_ros.ros import conversions

    active = np.zeros(12, bool)
    active[[1, 5]] = True
    face = FaceResult(face_id="7", box=(-3, 5, 40, 50), confidence=0.9, window_length=8, frames_observed=4,
                      outputs={"va": np.array([0.1, -0.2], np.float32), "au": np.linspace(0, 1, 12, dtype=np.float32),
                               "emi": np.linspace(0, 1, 6, dtype=np.float32), "ah": np.array([0.6], np.float32)},
                      au_active=active, hesitant=True, window_start_ns=START_NS - PERIOD_NS)
    result = FrameResult(stamp_ns=START_NS, faces=[face])
    rclpy_types = AffectMessageTypes(time=Time, header=Header, roi=RegionOfInterest, face=FaceAffect,
                                     array=FaceAffectArray, lists=True)
    built = face_affect_array(result, START_NS, "cam", rclpy_types, (48, 64, 3), True, "net@sha256:ab")
    header = Header(stamp=Time(sec=START_NS // 10**9, nanosec=START_NS % 10**9), frame_id="cam")
    assert built == conversions.frame_result_to_msg(result, header, (48, 64, 3), True, "net@sha256:ab")

    in_bag = frame_result_to_msg(result, START_NS, "cam", (48, 64, 3), weights_trained=True, model_id="net@sha256:ab")
    mine, theirs = in_bag.faces[0], built.faces[0]
    assert (in_bag.header.stamp.sec, in_bag.header.stamp.nanosec, in_bag.model_id, in_bag.weights_trained) == \
        (built.header.stamp.sec, built.header.stamp.nanosec, built.model_id, built.weights_trained)
    for name in ("face_id", "detection_confidence", "window_length", "frames_observed", "valence", "arousal",
                 "hesitancy_probability", "hesitant"):
        assert getattr(mine, name) == pytest.approx(getattr(theirs, name)), name
    assert np.array_equal(mine.au_probability, theirs.au_probability)
    assert np.array_equal(mine.mimicry_intensity, theirs.mimicry_intensity)
    assert (mine.roi.x_offset, mine.roi.width, mine.window_start.sec) == \
        (theirs.roi.x_offset, theirs.roi.width, theirs.window_start.sec)
    assert mine.au_active.tolist() == list(theirs.au_active)


def _imports(path: Path) -> set[str]:
    """The abaw_ros modules ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("abaw_ros"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("abaw_ros"))
    return found


def test_offline_modules_and_commands_form_no_import_circle_and_stay_small():
    """bag-eval's and predict's commands share their helpers from commands/options.py
    (no circle bag_eval <-> bag_batch, predict does not import bag_eval); every offline
    module is at most about 400 lines."""
    package = ROOT / "abaw_ros"
    files = [*sorted((package / "offline").glob("*.py")), *sorted((package / "commands").glob("*.py"))]
    graph = {"abaw_ros." + ".".join(f.relative_to(package).with_suffix("").parts): _imports(f) for f in files}
    assert "abaw_ros.commands.bag_eval" not in graph["abaw_ros.commands.bag_batch"]
    assert "abaw_ros.commands.bag_eval" not in graph["abaw_ros.commands.predict"]

    def circle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            module, path = stack.pop()
            for dep in graph.get(module, ()):
                if dep == start:
                    return [*path, dep]
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
        return None

    circles = [c for m in graph if (c := circle_from(m))]
    assert not circles, circles
    sizes = {f.name: len(f.read_text(encoding="utf-8").splitlines()) for f in (package / "offline").glob("*.py")}
    assert max(sizes.values()) <= 410, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
