"""The node on ``image/compressed`` (``image_transport: compressed``) over real DDS, with
``~/debug_image`` on: JPEG frames give tracked faces, broken JPEG data is reported and
skipped, the debug image shows the boxes, and an external shutdown (SIGTERM) ends the
node cleanly. One node process for the module; this process is camera and listener."""
from __future__ import annotations

import random
import threading
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
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from abaw_ros.ros.conversions import bgr_to_compressed, image_to_bgr  # noqa: E402
from abaw_ros.ros.demo_scene import DemoScene  # noqa: E402

pytestmark = pytest.mark.timeout(120)
FRAME_ID = "jpeg_camera"


@pytest.fixture(scope="module")
def domain():
    """A ROS_DOMAIN_ID for the module's node and client (see test_node_stream.py)."""
    with pytest.MonkeyPatch.context() as mp:
        domain_id = random.SystemRandom().randint(101, 200)
        mp.setenv("ROS_DOMAIN_ID", str(domain_id))
        yield domain_id


@pytest.fixture(scope="module")
def running(domain, model_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_compressed")
    namespace = unique_namespace("jpeg")
    params = params_file(tmp, model_file_path=str(model_bundle), backend="onnxruntime", window_length=8,
                         image_transport="compressed", publish_debug_image=True, detection_interval=2)
    node = NodeProcess(params, tmp / "node.log", namespace)
    client = FrameClient(namespace, domain_id=domain)
    try:
        assert client.wait_for_node(node, timeout=90, compressed=True), f"node did not come up:\n{node.log()[-3000:]}"
        yield node, client
    finally:
        client.close()
        node.stop()


def test_compressed_frames_give_tracked_faces(running):
    node, client = running
    sent = send_in_lockstep(client, DemoScene(faces=1), 12, frame_id=FRAME_ID, compressed=True)
    answers = [a for a in sent if a.result is not None]
    assert len(answers) >= 11, f"only {len(answers)} of 12 JPEG frames answered:\n{node.log()[-2000:]}"
    settled = [a for a in answers if a.index >= 4]  # published from the second detection on
    assert all(len(a.msg.faces) == 1 for a in settled), [len(a.msg.faces) for a in settled]
    assert len({a.msg.faces[0].face_id for a in settled}) == 1
    assert all(a.msg.header.frame_id == FRAME_ID for a in answers)
    assert settled[-1].msg.faces[0].frames_observed == 8  # the window filled up


def test_raw_images_are_not_read_when_the_transport_is_compressed(running):
    _node, client = running
    stamp = client.send_image(DemoScene(faces=1).frame(0), frame_id=FRAME_ID)
    time.sleep(1.0)
    assert client.results_for([stamp]) == []


def test_broken_jpeg_data_is_reported_and_skipped(running):
    node, client = running
    scene = DemoScene(faces=1)
    good = bytes(bgr_to_compressed(scene.frame(0)).data)
    broken = {
        "corrupt JPEG": ("jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 16, "could not be decoded"),
        "truncated JPEG": ("jpeg", good[:200], "could not be decoded"),
        "empty data": ("jpeg", b"", "has no data"),
        "video format": ("h264", good, "'h264'"),
    }
    log_before = len(node.log())
    for k, (label, (fmt, data, _text)) in enumerate(broken.items()):
        msg = CompressedImage(header=client.header(client.now_ns(), FRAME_ID), format=fmt)
        msg.data = data
        client.send_raw_message(msg)
        time.sleep(0.2)  # the node is idle (lockstep), so it takes this frame before the next
        answered = send_in_lockstep(client, scene, 1, frame_id=FRAME_ID, compressed=True, start=10 + k)
        assert answered[0].result is not None, f"no answer after {label}:\n{node.log()[log_before:][-2000:]}"
        assert node.alive()
    log = node.log()[log_before:]
    for label, (_fmt, _data, text) in broken.items():
        assert text in log, f"no warning for {label} ({text!r}) in:\n{log[-3000:]}"
    assert "Traceback" not in log
    report = client.wait_for(lambda: any(int(d["bad_frames"]) >= len(broken) for d in client.diagnostics()),
                             timeout=5)
    assert report, client.diagnostics()[-1:]


def test_debug_image_shows_the_faces(running):
    _node, client = running
    got: list[Image] = []
    lock = threading.Lock()

    def keep(msg: Image) -> None:
        with lock:
            got.append(msg)

    from rclpy.qos import qos_profile_sensor_data

    topic = f"{client.node.get_namespace()}/abaw_affect/debug_image"
    client.node.create_subscription(Image, topic, keep, qos_profile_sensor_data)
    assert client.wait_for(lambda: client.node.count_publishers(topic) > 0, timeout=10)
    time.sleep(0.5)  # let the node see this subscription (it draws only when someone listens)
    scene = DemoScene(faces=1)
    sent = send_in_lockstep(client, scene, 6, frame_id=FRAME_ID, compressed=True, start=20)
    assert client.wait_for(lambda: bool(got), timeout=10), "no debug image"
    with lock:
        by_stamp = {m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec: m for m in got}
    with_face = [a for a in sent if a.result is not None and a.msg.faces and a.stamp_ns in by_stamp]
    assert with_face, "no debug image for a frame with a face"
    a = with_face[-1]
    debug = by_stamp[a.stamp_ns]
    assert (debug.width, debug.height, debug.encoding, debug.header.frame_id) == (640, 480, "bgr8", FRAME_ID)
    drawn = image_to_bgr(debug).astype(int)
    source = image_to_bgr_from_jpeg(scene.frame(a.index)).astype(int)
    roi = a.msg.faces[0].roi
    changed = np.abs(drawn - source).sum(axis=2) > 60
    box_edge = changed[roi.y_offset : roi.y_offset + roi.height, roi.x_offset : roi.x_offset + 3]
    assert box_edge.mean() > 0.5, "no box drawn at the face's left edge"
    assert changed[40:, : max(roi.x_offset - 80, 1)].mean() < 0.02  # far from the face: untouched
    assert changed[5:25, 8:200].mean() > 0.05  # the untrained-weights note in the corner


def image_to_bgr_from_jpeg(image: np.ndarray) -> np.ndarray:
    """What the node decoded from the JPEG the client sent."""
    from abaw_ros.ros.conversions import compressed_to_bgr

    return compressed_to_bgr(bgr_to_compressed(image))


def test_external_shutdown_stops_the_node_cleanly(running):
    import signal

    node, _client = running
    node.proc.send_signal(signal.SIGTERM)
    code = node.wait_exit(timeout=20)
    log = node.log()
    assert code == 0, f"exit code {code}:\n{log[-2000:]}"
    assert "Traceback" not in log
