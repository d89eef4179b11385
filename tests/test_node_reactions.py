"""The example behaviour node (``affect_reactions``): a sustained smile (AU12 over most of a
second) and hesitancy give one reaction each; untrained output is ignored.

Over real DDS: the affect node (its executable) with a network whose head is set by hand
to always report AU12 and never hesitancy, the astronaut scene from this process, the
behaviour node in a process of its own; and the behaviour node alone fed
``FaceAffectArray`` messages from this process, marked untrained and trained.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

from abaw_ros.msg import FaceAffect, FaceAffectArray  # noqa: E402
from ros_harness import (  # noqa: E402
    FrameClient,
    NodeProcess,
    node_executable,
    params_file,
    send_stream,
    unique_namespace,
)
from std_msgs.msg import String  # noqa: E402

from abaw_ros.ros.affect_reactions import AU12, SustainedCue  # noqa: E402
from abaw_ros.ros.demo_scene import DemoScene  # noqa: E402

pytestmark = pytest.mark.timeout(150)
MS = 1_000_000


def test_sustained_cue_needs_most_of_the_span_and_fires_once():
    cue = SustainedCue(span_s=1.0, fraction=0.7)
    # 15 Hz, cue on in 3 of every 4 messages: fires once the span is covered.
    fired = [cue.update("face_1", k * 66 * MS, k % 4 != 3) for k in range(30)]
    assert fired.index(True) in range(12, 17) and fired.count(True) == 1
    # Off for a second: rearms, then on again fires again.
    assert not any(cue.update("face_1", (30 + k) * 66 * MS, False) for k in range(16))
    assert any(cue.update("face_1", (46 + k) * 66 * MS, True) for k in range(16))
    # Only now and then: never.
    other = SustainedCue(1.0, 0.7)
    assert not any(other.update("face_2", k * 66 * MS, k % 2 == 0) for k in range(45))


@pytest.fixture(scope="module")
def smiling_bundle(untrained_checkpoint, tmp_path_factory):
    """An exported network whose head always gives AU12 and never hesitancy (the
    classifier rows set by hand), marked trained so that consumers act on it."""
    import torch

    from abaw_ros.models import export_onnx, load_checkpoint
    from abaw_ros.tasks import output_slices

    model, info = load_checkpoint(untrained_checkpoint)
    slices = output_slices(model.cfg.tasks)
    with torch.no_grad():
        classifier = model.head.classifier
        for row, bias in ((slices["au"].start + AU12, 12.0), (slices["ah"].start, -12.0)):
            classifier.weight[row].zero_()
            classifier.bias[row] = bias
    out_dir = tmp_path_factory.mktemp("smiling_bundle")
    export_onnx(model, out_dir, thresholds=info["thresholds"], trained=True)
    return out_dir


class _Reactions:
    """The behaviour node as a process and what it publishes on ``reactions``."""

    def __init__(self, client: FrameClient, tmp_path, namespace: str, **params) -> None:

        self.received: list[str] = []
        self._lock = threading.Lock()
        client.node.create_subscription(String, "reactions", self._on, 10)
        cmd = [*node_executable("affect_reactions"), "--ros-args",
               "-r", f"__ns:={namespace}"]
        for name, value in params.items():
            cmd += ["-p", f"{name}:={value}"]
        self.log_path = tmp_path / "reactions.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1",
                                          "RCUTILS_LOGGING_BUFFERED_STREAM": "0"})
        self.client = client

    def _on(self, msg: String) -> None:
        with self._lock:
            self.received.append(msg.data)

    def events(self) -> list[str]:
        with self._lock:
            return list(self.received)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:

        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=15)
        self._log.close()
        return code


def test_reacts_to_a_smile_from_the_running_affect_node(tmp_path, ros_domain_id, smiling_bundle):
    namespace = unique_namespace("reactions")
    params = params_file(tmp_path, model_file_path=str(smiling_bundle), backend="onnxruntime",
                         window_length=8, detection_interval=3)
    node = NodeProcess(params, tmp_path / "node.log", namespace)
    client = FrameClient(namespace, domain_id=ros_domain_id)
    reactions = _Reactions(client, tmp_path, namespace)
    try:
        assert client.wait_for_node(node, timeout=90), node.log()[-3000:]
        assert client.wait_for(lambda: client.node.count_subscribers(f"{namespace}/affect") >= 2, timeout=20)
        send_stream(client, DemoScene(faces=1), 45, rate=15)
        assert client.wait_for(lambda: bool(reactions.events()), timeout=10), (
            reactions.log(), node.log()[-2000:])
        events = reactions.events()
        assert events[0].startswith("smile face_"), events
        assert not [e for e in events if e.startswith("hesitant")], events
        assert "smiling" in reactions.log()
        received = client.received()
        assert received and all(r.msg.weights_trained for r in received)
        assert all(r.msg.model_id.startswith(f"{smiling_bundle.name}@sha256:") for r in received)
        # Each face names the oldest frame of its window: at 15 Hz, T=8 frames span >= 7 periods.
        faces = [(r.stamp_ns, f) for r in received for f in r.msg.faces]
        assert faces
        for stamp, face in faces:
            start = face.window_start.sec * 1_000_000_000 + face.window_start.nanosec
            assert 0 < start <= stamp
            assert stamp - start >= (face.frames_observed - 1) * 60 * MS, (face.frames_observed, stamp - start)
    finally:
        code = reactions.stop()
        client.close()
        node.stop()
    assert code == 0


def _array(stamp_ns: int, trained: bool, smiling: bool, hesitant: bool) -> FaceAffectArray:
    face = FaceAffect(face_id="face_7", hesitant=hesitant)
    face.au_active = [i == AU12 and smiling for i in range(len(face.au_active))]
    msg = FaceAffectArray(faces=[face], weights_trained=trained, model_id="test@sha256:000000000000")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def test_untrained_output_is_ignored_and_hesitancy_reacted_to(tmp_path, ros_domain_id):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    namespace = unique_namespace("reactions")
    client = FrameClient(namespace, domain_id=ros_domain_id, camera=False)
    pub = client.node.create_publisher(FaceAffectArray, "affect",
                                       QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    reactions = _Reactions(client, tmp_path, namespace)
    try:
        # The client's own recorder subscribes to affect too: wait for the behaviour node's.
        assert client.wait_for(lambda: pub.get_subscription_count() >= 2, timeout=30), reactions.log()

        def stream(trained: bool, smiling: bool, hesitant: bool, count: int = 25) -> None:
            for _ in range(count):
                pub.publish(_array(client.now_ns(), trained, smiling, hesitant))
                time.sleep(1 / 15)

        stream(trained=False, smiling=True, hesitant=True)
        # Once it has read them (it says so), it must not have reacted.
        assert client.wait_for(lambda: "ignoring affect from model test@sha256" in reactions.log(), timeout=15)
        time.sleep(0.5)
        assert reactions.events() == []
        assert reactions.log().count("ignoring affect from model test@sha256") == 1
        stream(trained=True, smiling=False, hesitant=True)
        assert client.wait_for(lambda: "hesitant face_7" in reactions.events(), timeout=5), reactions.log()
        assert not [e for e in reactions.events() if e.startswith("smile")]
    finally:
        code = reactions.stop()
        client.close()
    assert code == 0
