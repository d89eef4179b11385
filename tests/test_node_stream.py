"""The running node over real DDS: the node is its installed executable in a process of
its own, started once for this module with ``--ros-args --params-file config/affect.yaml``
and an untrained exported model; this process is the camera and the listener.

The tests run in file order against the same node (its tracker state carries over, which
each test allows for) and end with a Ctrl-C that must stop it cleanly.
"""
from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

from ros_harness import (  # noqa: E402
    FrameClient,
    NodeProcess,
    params_file,
    send_in_lockstep,
    unique_namespace,
)
from sensor_msgs.msg import Image  # noqa: E402

from abaw_ros.ros.demo_scene import DemoScene  # noqa: E402
from abaw_ros.runtime.base import ModelMetadata  # noqa: E402
from abaw_ros.tasks import AU_NAMES, EMI_NAMES  # noqa: E402

pytestmark = pytest.mark.timeout(120)
FRAME_ID = "test_camera_optical"
WINDOW = 8  # the model_bundle fixture's window length


@pytest.fixture(scope="module")
def domain():
    """A ROS_DOMAIN_ID for the module's node and client (the node lives across tests, so
    the function-scoped ros_domain_id fixture cannot be used); the namespace below keeps
    runs apart even if another run picks the same domain."""
    with pytest.MonkeyPatch.context() as mp:
        domain_id = random.SystemRandom().randint(101, 200)
        mp.setenv("ROS_DOMAIN_ID", str(domain_id))
        yield domain_id


@pytest.fixture(scope="module")
def thresholds(model_bundle) -> tuple[np.ndarray, float]:
    metadata = ModelMetadata.from_onnx(model_bundle / "encoder.onnx")
    return np.asarray(metadata.au_thresholds), metadata.ah_threshold


@pytest.fixture(scope="module")
def running(domain, model_bundle, tmp_path_factory):
    """(node process, client) shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("node_stream")
    namespace = unique_namespace("stream")
    params = params_file(tmp, model_file_path=str(model_bundle), backend="onnxruntime",
                         window_length=WINDOW, image_transport="raw", detection_interval=2)
    node = NodeProcess(params, tmp / "node.log", namespace)
    client = FrameClient(namespace, domain_id=domain)
    try:
        assert client.wait_for_node(node, timeout=90), f"node did not come up:\n{node.log()[-3000:]}"
        yield node, client
    finally:
        client.close()
        node.stop()


def _check_face_values(face, thresholds) -> None:
    assert -1.0 <= face.valence <= 1.0 and -1.0 <= face.arousal <= 1.0
    probs = np.asarray(face.au_probability)
    assert probs.shape == (len(AU_NAMES),) and np.all((probs >= 0) & (probs <= 1))
    emi = np.asarray(face.mimicry_intensity)
    assert emi.shape == (len(EMI_NAMES),) and np.all((emi >= 0) & (emi <= 1))
    assert 0.0 <= face.hesitancy_probability <= 1.0
    au_thresholds, ah_threshold = thresholds
    assert list(face.au_active) == list(probs >= au_thresholds)
    assert face.hesitant == (face.hesitancy_probability >= ah_threshold)
    assert all(math.isfinite(v) for v in (face.valence, face.arousal, face.detection_confidence))
    assert 0.0 < face.detection_confidence <= 1.0
    assert face.window_length == WINDOW
    assert 1 <= face.frames_observed <= WINDOW


def _inside(roi, box, margin: int = 4) -> bool:
    x, y, w, h = box
    return (roi.x_offset >= x - margin and roi.y_offset >= y - margin
            and roi.x_offset + roi.width <= x + w + margin and roi.y_offset + roi.height <= y + h + margin)


def _answered(sent):
    return [a for a in sent if a.result is not None]


def test_one_face_gives_one_tracked_face_with_the_source_stamp(running, thresholds):
    node, client = running
    scene = DemoScene(faces=1)
    client.clear()
    sent = send_in_lockstep(client, scene, 16, frame_id=FRAME_ID)
    answers = _answered(sent)
    assert len(answers) >= 14, f"only {len(answers)} of 16 frames answered:\n{node.log()[-2000:]}"
    # Every message carries the stamp and frame_id of one of the frames sent.
    received = client.received()
    assert {r.stamp_ns for r in received} <= {a.stamp_ns for a in sent}
    assert all(r.msg.header.frame_id == FRAME_ID for r in received)
    # A new face is published from its second detection on: by frame 3 whatever the
    # detector's phase (detection_interval=2), even if the first frame was lost.
    settled = [a for a in answers if a.index >= 4]
    assert all(len(a.msg.faces) == 1 for a in settled), [len(a.msg.faces) for a in settled]
    ids = {a.msg.faces[0].face_id for a in settled}
    assert len(ids) == 1, f"face id changed across frames: {ids}"
    for a in settled:
        face = a.msg.faces[0]
        _check_face_values(face, thresholds)
        assert _inside(face.roi, scene.portrait_boxes(a.index)[0]), (face.roi, scene.portrait_boxes(a.index))
        assert face.roi.width >= 40 and face.roi.height >= 40
    observed = [a.msg.faces[0].frames_observed for a in settled]
    assert observed == sorted(observed) and observed[-1] == WINDOW, observed


def test_two_faces_give_two_stable_ids(running, thresholds):
    _node, client = running
    scene = DemoScene(faces=2)
    settled = [a for a in _answered(send_in_lockstep(client, scene, 14, frame_id=FRAME_ID)) if a.index >= 4]
    assert len(settled) >= 8
    assert all(len(a.msg.faces) == 2 for a in settled), [len(a.msg.faces) for a in settled]
    per_frame = [tuple(sorted(f.face_id for f in a.msg.faces)) for a in settled]
    assert all(len(set(ids)) == 2 for ids in per_frame)
    assert len(set(per_frame)) == 1, f"ids changed: {sorted(set(per_frame))}"
    for a in settled:
        boxes = scene.portrait_boxes(a.index)
        left, right = sorted(a.msg.faces, key=lambda f: f.roi.x_offset)
        assert _inside(left.roi, boxes[0]) and _inside(right.roi, boxes[1])
        for face in a.msg.faces:
            _check_face_values(face, thresholds)


def test_no_face_gives_empty_arrays(running):
    _node, client = running
    answers = _answered(send_in_lockstep(client, DemoScene(faces=0), 10, frame_id=FRAME_ID))
    assert len(answers) >= 8
    assert all(a.msg.header.frame_id == FRAME_ID for a in answers)
    # The previous test's faces are gone at the first detector run without them (a track
    # is not published once its detection is missed; the detector runs every
    # detection_interval=2 frames, in between tracks keep their box).
    assert all(len(a.msg.faces) == 0 for a in answers if a.index >= 3), [len(a.msg.faces) for a in answers]


def _bad_images(good: Image) -> dict[str, tuple[Image, str]]:
    """Malformed copies of a good frame -> (message, text the warning must contain)."""
    def copy(**changes) -> Image:
        msg = Image(header=good.header, height=good.height, width=good.width,
                    encoding=good.encoding, is_bigendian=good.is_bigendian, step=good.step)
        msg.data = bytes(good.data)
        for key, value in changes.items():
            setattr(msg, key, value)
        return msg

    short = bytes(good.data)[: good.step * good.height // 2]
    return {
        "unsupported encoding": (copy(encoding="32FC7"), "'32FC7'"),
        "short data": (copy(data=short), f"{len(short)} bytes"),
        "zero size": (copy(height=0, width=0, step=0, data=b""), "0x0"),
        "step too small": (copy(step=good.width), f"step {good.width}"),
    }


def test_bad_frames_are_reported_and_the_node_keeps_publishing(running):
    node, client = running
    from abaw_ros.ros.conversions import bgr_to_image

    scene = DemoScene(faces=1)
    log_before = len(node.log())
    bad = _bad_images(bgr_to_image(scene.frame(0)))
    for k, (label, (msg, _text)) in enumerate(bad.items()):
        msg.header = client.header(client.now_ns(), FRAME_ID)
        client.send_raw_message(msg)
        time.sleep(0.2)  # the node is idle (lockstep), so it takes this frame before the next
        # The next good frame is answered: the node went on after the bad one.
        answers = _answered(send_in_lockstep(client, scene, 1, frame_id=FRAME_ID, start=k))
        assert len(answers) == 1, f"no answer after {label}:\n{node.log()[log_before:][-2000:]}"
        assert node.alive(), f"node died on {label}:\n{node.log()[-2000:]}"
    answers = _answered(send_in_lockstep(client, scene, 4, frame_id=FRAME_ID, start=len(bad)))
    assert len(answers) >= 3 and all(len(a.msg.faces) == 1 for a in answers[1:])
    log = node.log()[log_before:]
    for label, (_msg, text) in bad.items():
        assert text in log, f"no warning naming the bad value for {label} ({text!r}) in:\n{log[-3000:]}"
    assert log.count("[WARN]") >= len(bad)
    assert "Traceback" not in log


def test_diagnostics_report_rates_latency_drops_and_the_model(running, model_bundle):
    node, client = running
    scene = DemoScene(faces=1)
    client.clear()
    # A burst far faster than the node can process: older frames must be dropped.
    for i in range(60):
        client.send_image(scene.frame(i), frame_id=FRAME_ID)
        time.sleep(0.002)
    assert client.wait_for(lambda: any(int(d["dropped_frames"]) > 0 for d in client.diagnostics()),
                           timeout=10), client.diagnostics()[-1:]
    report = client.diagnostics()[-1]
    for key in ("input_rate_hz", "output_rate_hz", "latency_ms_p50", "latency_ms_p95", "dropped_frames",
                "bad_frames", "backend", "model", "weights_trained"):
        assert key in report, key
    assert report["backend"] == "onnxruntime"
    assert report["model"] == str(model_bundle)
    assert report["weights_trained"] == "false"
    assert report["level"] == "1"  # WARN while the weights are untrained
    assert "UNTRAINED" in report["message"]
    assert int(report["bad_frames"]) >= 4  # from the previous test
    assert "UNTRAINED" in node.log()
    busy = [d for d in client.diagnostics() if float(d["input_rate_hz"]) > 0]
    assert busy and any(float(d["output_rate_hz"]) > 0 for d in busy)
    assert any(0 < float(d["latency_ms_p50"]) < 5000 for d in busy)
    # The node is still there for frames at a normal rate after the burst.
    assert len(_answered(send_in_lockstep(client, scene, 3, frame_id=FRAME_ID))) >= 2


def test_ctrl_c_stops_the_node_cleanly(running):
    node, _client = running
    code = node.stop(timeout=15)
    log = node.log()
    assert code == 0, f"exit code {code}:\n{log[-2000:]}"
    assert "Traceback" not in log
