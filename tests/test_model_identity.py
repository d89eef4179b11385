"""One model, one id, whichever tool runs it: the node (every FaceAffectArray and
/diagnostics, over real rclpy and DDS), bag-eval (the affect bag's messages and its
report), predict (the CSV sidecar) and predict-abaw (the line it prints) name the
untrained stand-in of an empty ``model_file_path`` with the same
``affect_net_T8@sha256:...``: the identity the backend carries from where it was loaded."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from abaw_ros import cli
from abaw_ros.offline.bag_writers import ImageBagWriter
from abaw_ros.runtime.identity import model_id
from abaw_ros.runtime.opening import untrained_checkpoint
from abaw_ros.tasks import AU_NAMES

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("one_torch_thread")]

WINDOW = 8
UNTRAINED = ["-p", "backend:=onnxruntime", "-p", "warmup:=false", "-p", f"window_length:={WINDOW}",
             "-p", "detection_interval:=2"]  # no --model-file-path: the untrained stand-in


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for every tool (the node's process included), so they share the stand-in."""
    path = tmp_path_factory.mktemp("identity_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABAW_ROS_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    from skimage import data

    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (288, 288))
    out = []
    for i in range(6):
        frame = np.full((360, 480, 3), 110, np.uint8)
        frame[40:328, 10 + 8 * i:298 + 8 * i] = person
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def expected(cache) -> str:
    value = model_id(untrained_checkpoint(WINDOW))
    assert value.startswith(f"affect_net_T{WINDOW}@sha256:")
    return value


def predict_id(tmp: Path, frames) -> str:
    video = tmp / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (480, 360))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = tmp / "clip.csv"
    assert cli.main(["predict", str(video), "-o", str(out), "--no-progress", *UNTRAINED]) == 0
    model = json.loads(out.with_suffix(".json").read_text())["model"]
    assert model["model_file_path"] == "" and model["trained"] is False
    return model["model_id"]


def bag_eval_ids(tmp: Path, frames) -> set[str]:
    from rosbags.highlevel import AnyReader

    bag = tmp / "scene"
    with ImageBagWriter(bag, "/camera/image_raw", "mcap", frame_id="head_camera") as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, 1_700_000_000_000_000_000 + i * 40_000_000)
    assert cli.main(["bag-eval", str(bag), "--no-progress", "--no-plot", *UNTRAINED]) == 0
    report = json.loads((tmp / "scene_affect_report.json").read_text())
    ids = {report["model"].get("model_id")}
    with AnyReader([tmp / "scene_affect"]) as reader:
        ids |= {reader.deserialize(raw, conn.msgtype).model_id for conn, _, raw in reader.messages()}
    return ids


def predict_abaw_id(tmp: Path, capsys) -> str:
    root = tmp / "cropped_aligned" / "video1"
    root.mkdir(parents=True)
    for n in (1, 2, 3):
        cv2.imwrite(str(root / f"{n:05d}.jpg"), np.full((112, 112, 3), 40 * n, np.uint8))
    videos = tmp / "va_test_set.txt"
    videos.write_text("video1\n")
    counts = tmp / "frame_counts.txt"
    counts.write_text("video,frames\nvideo1,3\n")
    capsys.readouterr()
    code = cli.main(["predict-abaw", "--num-workers", "0", "--device", "cpu", "--checkpoint",
                     str(untrained_checkpoint(WINDOW)), "--task", "va", "--affwild2-images", str(tmp),
                     "--videos", str(videos), "--frame-counts", str(counts), "--out", str(tmp / "sub")])
    assert code == 0
    return " ".join(line.removeprefix("model ").strip() for line in capsys.readouterr().out.splitlines()
                    if line.startswith("model "))


def node_ids(tmp: Path, cache: Path, ros_domain_id: int) -> set[str]:
    pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")
    from ros_harness import FrameClient, NodeProcess, params_file, send_in_lockstep, unique_namespace

    from abaw_ros.ros.demo_scene import DemoScene

    namespace = unique_namespace("identity")
    params = params_file(tmp, model_file_path="", backend="onnxruntime", window_length=WINDOW,
                         diagnostics_period=0.5)
    node = NodeProcess(params, tmp / "node.log", namespace, env=dict(os.environ, ABAW_ROS_CACHE=str(cache)))
    client = FrameClient(namespace, domain_id=ros_domain_id)
    try:
        assert client.wait_for_node(node, timeout=120), node.log()[-3000:]
        answered = [a for a in send_in_lockstep(client, DemoScene(faces=1), 4) if a.result is not None]
        assert answered, node.log()[-3000:]
        assert client.wait_for(lambda: bool(client.diagnostics()), timeout=10)
        return {a.msg.model_id for a in answered} | {client.diagnostics()[-1]["model_id"]}
    finally:
        client.close()
        node.stop()


def test_every_tool_names_the_untrained_stand_in_with_one_id(tmp_path, cache, expected, frames, capsys,
                                                             ros_domain_id):
    found = {
        "predict": {predict_id(_dir(tmp_path, "predict"), frames)},
        "bag-eval": bag_eval_ids(_dir(tmp_path, "bag_eval"), frames),
        "predict-abaw": {predict_abaw_id(_dir(tmp_path, "abaw"), capsys)},
        "node": node_ids(_dir(tmp_path, "node"), cache, ros_domain_id),
    }
    assert found == dict.fromkeys(found, {expected}), found


def _dir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


def test_the_backend_carries_its_identity_and_summary(model_bundle, untrained_checkpoint):
    from abaw_ros.config import PipelineConfig
    from abaw_ros.runtime import load_backend, open_backend

    bundle = load_backend(model_bundle, "onnxruntime")
    assert bundle.identity.model_id == model_id(model_bundle) and bundle.identity.model_file_path == str(model_bundle)
    checkpoint = load_backend(untrained_checkpoint, "torch")
    assert checkpoint.identity.model_id == model_id(untrained_checkpoint)
    config = dataclasses.replace(PipelineConfig(), model_file_path=str(model_bundle), backend="onnxruntime",
                                 precision="fp32", warmup=False)
    opened = open_backend(config)
    summary = opened.summary()
    assert summary["model_id"] == bundle.identity.model_id and summary["model_file_path"] == str(model_bundle)
    assert (summary["backend"], summary["precision"], summary["trained"]) == ("onnxruntime", "fp32", False)
    assert list(summary["au_thresholds"]) == list(AU_NAMES) and summary["tasks"] == list(opened.metadata.tasks)
