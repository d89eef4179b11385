"""The node's ROS4HRI (REP-155) topics over real DDS, against an ``hri_msgs`` package built
with colcon from the published field definitions (tests/hri_msgs_build.py).

- ``own``: the node publishes /humans/faces/tracked and, per face, roi, expression and
  facs with the values of its FaceAffectArray for the same frame; a face that leaves
  takes its topics with it.
- ``follow``: this process is the ROS4HRI face detector (tracked ids and rois, stamped
  with the image's header, as hri_face_detect publishes them); the node publishes faces
  under those ids only, and nothing of its own on tracked or roi.
- Without hri_msgs, publish_ros4hri=true ends the node in one line naming the install
  command, exit 2.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

import threading  # noqa: E402

from hri_msgs_build import HriMsgsUnavailable, build_hri_msgs  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from ros_harness import (  # noqa: E402
    FrameClient,
    NodeProcess,
    params_file,
    send_in_lockstep,
    unique_namespace,
)

from abaw_ros.ros.demo_scene import DemoScene, portrait_bgr  # noqa: E402
from abaw_ros.tasks import AU_NAMES  # noqa: E402

pytestmark = pytest.mark.timeout(300)
FRAME_ID = "hri_camera_optical"
WINDOW = 8
AU_NUMBERS = [int(name[2:]) for name in AU_NAMES]
TOPICS = ("roi", "expression", "facs")


@pytest.fixture(scope="module")
def hri():
    """(the hri_msgs build, its ``msg`` module), importable here and in the node."""
    try:
        build = build_hri_msgs()
        build.activate()
    except HriMsgsUnavailable as exc:
        pytest.skip(f"no hri_msgs package for the ROS4HRI tests: {exc}")
    from hri_msgs import msg

    return build, msg


@pytest.fixture(scope="module")
def domain():
    with pytest.MonkeyPatch.context() as mp:
        domain_id = random.SystemRandom().randint(101, 200)
        mp.setenv("ROS_DOMAIN_ID", str(domain_id))
        yield domain_id


@pytest.fixture(scope="module")
def flagged_bundle(untrained_checkpoint, tmp_path_factory):
    """The test network exported with ``trained=True``, so the ROS4HRI confidence is the
    window fill times the detection confidence (untrained weights give 0)."""
    from abaw_ros.models import export_onnx, load_checkpoint

    model, info = load_checkpoint(untrained_checkpoint)
    out_dir = tmp_path_factory.mktemp("flagged_bundle")
    export_onnx(model, out_dir, thresholds=info["thresholds"], trained=True)
    return out_dir


class HriTopics:
    """A ROS4HRI listener on the client's node: /humans/faces/tracked, and per face id once
    watched, its roi, expression and facs, each message kept by its stamp."""

    def __init__(self, client: FrameClient, msg) -> None:
        self.node, self.msg = client.node, msg
        self._lock = threading.Lock()
        self.tracked: dict[int, list[str]] = {}
        self.messages: dict[tuple[str, str], dict[int, object]] = {}
        self._watched: set[str] = set()
        self.node.create_subscription(msg.IdsList, "/humans/faces/tracked", self._on_tracked, QoSProfile(depth=50))

    @staticmethod
    def _stamp(header) -> int:
        return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec

    def _on_tracked(self, msg) -> None:
        with self._lock:
            self.tracked[self._stamp(msg.header)] = list(msg.ids)

    def watch(self, face_id: str) -> None:
        if face_id in self._watched:
            return
        self._watched.add(face_id)
        types = {"roi": self.msg.NormalizedRegionOfInterest2D, "expression": self.msg.Expression,
                 "facs": self.msg.FacialActionUnits}
        for topic, msg_type in types.items():
            def store(m, key=(face_id, topic)) -> None:
                with self._lock:
                    self.messages.setdefault(key, {})[self._stamp(m.header)] = m
            self.node.create_subscription(msg_type, f"/humans/faces/{face_id}/{topic}", store, QoSProfile(depth=50))

    def get(self, face_id: str, topic: str, stamp_ns: int):
        with self._lock:
            return self.messages.get((face_id, topic), {}).get(stamp_ns)

    def publishers(self, face_id: str, topic: str) -> int:
        return self.node.count_publishers(f"/humans/faces/{face_id}/{topic}")


def start_node(tmp, domain, bundle, env, **overrides):
    namespace = unique_namespace("ros4hri")
    params = params_file(tmp, model_file_path=str(bundle), backend="onnxruntime", window_length=WINDOW,
                         image_transport="raw", detection_interval=2, publish_ros4hri=True, **overrides)
    node = NodeProcess(params, tmp / "node.log", namespace, env=env)
    client = FrameClient(namespace, domain_id=domain)
    return node, client


def check_same_values(hri_topics: HriTopics, answer, face, with_roi: bool) -> None:
    """The ROS4HRI messages of ``face`` (from the FaceAffectArray ``answer``) carry its values."""
    stamp = answer.stamp_ns
    expression = hri_topics.get(face.face_id, "expression", stamp)
    facs = hri_topics.get(face.face_id, "facs", stamp)
    assert expression is not None and facs is not None, (face.face_id, answer.index)
    confidence = face.frames_observed / face.window_length * face.detection_confidence
    assert expression.header.frame_id == facs.header.frame_id == FRAME_ID
    assert (expression.valence, expression.arousal) == (face.valence, face.arousal)
    assert expression.expression == ""
    assert expression.confidence == pytest.approx(confidence, rel=1e-5) and confidence > 0
    intensity, conf = np.asarray(facs.intensity), np.asarray(facs.confidence)
    np.testing.assert_array_equal(intensity[AU_NUMBERS], np.asarray(face.au_probability))
    np.testing.assert_allclose(conf[AU_NUMBERS], confidence, rtol=1e-5)
    others = np.setdiff1d(np.arange(99), AU_NUMBERS)
    assert not intensity[others].any() and not conf[others].any()
    roi = hri_topics.get(face.face_id, "roi", stamp)
    if with_roi:
        assert roi is not None
        r = face.roi
        assert (roi.xmin, roi.ymin, roi.xmax, roi.ymax) == pytest.approx(
            (r.x_offset / 640, r.y_offset / 480, (r.x_offset + r.width) / 640, (r.y_offset + r.height) / 480), abs=1e-6)
        assert roi.c == pytest.approx(face.detection_confidence, rel=1e-6)


def wait_for_messages(client: FrameClient, hri_topics: HriTopics, answers, topics=("expression", "facs")) -> None:
    def arrived() -> bool:
        return all(hri_topics.get(f.face_id, t, a.stamp_ns) is not None
                   for a in answers for f in a.msg.faces for t in topics)
    client.wait_for(arrived, timeout=10)


def test_own_faces_publish_tracked_roi_expression_and_facs_and_leave_with_their_topics(
        hri, domain, flagged_bundle, tmp_path):
    build, msg = hri
    node, client = start_node(tmp_path, domain, flagged_bundle, build.env())
    try:
        assert client.wait_for_node(node, timeout=120), f"node did not come up:\n{node.log()[-3000:]}"
        hri_topics = HriTopics(client, msg)
        scene = DemoScene(faces=2)
        # Watch each id as soon as the FaceAffectArray names it (the ROS4HRI topics of a
        # face appear with its first result).
        sent = []
        for start in range(0, 18, 3):
            sent += send_in_lockstep(client, scene, 3, frame_id=FRAME_ID, start=start)
            for answer in sent:
                for face in (answer.msg.faces if answer.result else []):
                    hri_topics.watch(face.face_id)
        settled = [a for a in sent[9:] if a.result is not None and a.msg.faces]
        assert len(settled) >= 6, f"{len(settled)} answered frames with faces:\n{node.log()[-2000:]}"
        wait_for_messages(client, hri_topics, settled, TOPICS)
        ids = {f.face_id for a in settled for f in a.msg.faces}
        assert len(ids) == 2, ids
        for answer in settled:
            for face in answer.msg.faces:
                check_same_values(hri_topics, answer, face, with_roi=True)
            tracked = hri_topics.tracked.get(answer.stamp_ns)
            assert tracked is not None and {f.face_id for f in answer.msg.faces} <= set(tracked), tracked
        for face_id in ids:
            assert all(hri_topics.publishers(face_id, t) == 1 for t in TOPICS)

        # The faces leave: once the tracker lets them go, their topics go too.
        empty = DemoScene(faces=0)
        gone = send_in_lockstep(client, empty, 24, frame_id=FRAME_ID)
        stamps = [a.stamp_ns for a in gone if a.result is not None]
        assert client.wait_for(lambda: any(hri_topics.tracked.get(s) == [] for s in stamps), timeout=5), \
            [hri_topics.tracked.get(s) for s in stamps]
        assert client.wait_for(lambda: all(hri_topics.publishers(i, t) == 0 for i in ids for t in TOPICS),
                               timeout=10), {(i, t): hri_topics.publishers(i, t) for i in ids for t in TOPICS}
        assert client.node.count_publishers("/humans/faces/tracked") == 1
    finally:
        client.close()
        node.stop()


class Ros4hriDetector:
    """What hri_face_detect publishes, from this process: /humans/faces/tracked and each
    face's roi (normalised box, ``c`` left at 0), stamped with the image's header."""

    def __init__(self, client: FrameClient, msg) -> None:
        self.client, self.msg = client, msg
        self.tracked_pub = client.node.create_publisher(msg.IdsList, "/humans/faces/tracked", 1)
        self.roi_pubs: dict[str, object] = {}

    def track(self, ids) -> None:
        for face_id in ids:
            if face_id not in self.roi_pubs:
                self.roi_pubs[face_id] = self.client.node.create_publisher(
                    self.msg.NormalizedRegionOfInterest2D, f"/humans/faces/{face_id}/roi", 1)
        for face_id in [i for i in self.roi_pubs if i not in ids]:
            self.client.node.destroy_publisher(self.roi_pubs.pop(face_id))

    def publish(self, stamp_ns: int, boxes: dict[str, tuple[float, float, float, float]]) -> None:
        header = self.client.header(stamp_ns, FRAME_ID)
        for face_id, (x1, y1, x2, y2) in boxes.items():
            self.roi_pubs[face_id].publish(self.msg.NormalizedRegionOfInterest2D(
                header=header, xmin=x1 / 640, ymin=y1 / 480, xmax=x2 / 640, ymax=y2 / 480))
        self.tracked_pub.publish(self.msg.IdsList(header=header, ids=list(boxes)))


def face_box_in_portrait() -> np.ndarray:
    """Where MTCNN finds the face in the demo portrait, as fractions of the portrait."""
    from abaw_ros.config import PipelineConfig
    from abaw_ros.perception.detectors import create_detector

    portrait = portrait_bgr()
    (face,) = create_detector(PipelineConfig(detector="mtcnn", num_threads=1)).detect(portrait)[:1]
    h, w = portrait.shape[:2]
    return np.asarray(face.box) / [w, h, w, h]


def test_follow_mode_publishes_expression_and_facs_under_the_detectors_ids(hri, domain, flagged_bundle, tmp_path):
    build, msg = hri
    relative = face_box_in_portrait()
    node, client = start_node(tmp_path, domain, flagged_bundle, build.env(), ros4hri_faces="follow")
    try:
        assert client.wait_for_node(node, timeout=120), f"node did not come up:\n{node.log()[-3000:]}"
        hri_topics = HriTopics(client, msg)
        detector = Ros4hriDetector(client, msg)
        ids = ["qwert", "asdfg"]  # left, right: hri_face_detect's random five-letter ids
        for face_id in ids:
            hri_topics.watch(face_id)
        detector.track(ids)
        scene = DemoScene(faces=2)

        def boxes(index: int, which) -> dict[str, tuple[float, float, float, float]]:
            out = {}
            for face_id, (x, y, w, h) in zip(ids, scene.portrait_boxes(index), strict=True):
                if face_id in which:
                    out[face_id] = tuple(np.asarray([x, y, x, y]) + relative * [w, h, w, h])
            return out

        # The node follows the ids once it has seen the tracked list (roi subscriptions).
        def subscribed() -> bool:
            detector.tracked_pub.publish(msg.IdsList(header=client.header(client.now_ns()), ids=ids))
            return all(pub.get_subscription_count() > 0 for pub in detector.roi_pubs.values())
        assert client.wait_for(subscribed, timeout=20, poll=0.2), node.log()[-2000:]

        def run(indices, which):
            answers = []
            for index in indices:
                stamp = client.now_ns()
                detector.publish(stamp, boxes(index, which))
                time.sleep(0.05)  # the rois reach the node before the frame, as a detector's would
                client.send_image(scene.frame(index), stamp_ns=stamp, frame_id=FRAME_ID)
                client.wait_for(lambda s=stamp: bool(client.results_for([s])), 10, poll=0.005)
                found = client.results_for([stamp])
                answers.append((index, stamp, found[0].msg if found else None))
            return answers

        answers = run(range(12), ids)
        settled = [(i, s, m) for i, s, m in answers[2:] if m is not None]
        assert len(settled) >= 8, node.log()[-2000:]
        for index, _, affect in settled:
            assert sorted(f.face_id for f in affect.faces) == sorted(ids), (index, [f.face_id for f in affect.faces])
            for face in affect.faces:  # each id's result is the face in that id's roi
                x1, y1, x2, y2 = boxes(index, ids)[face.face_id]
                r = face.roi
                assert abs(r.x_offset - x1) <= 2 and abs(r.y_offset - y1) <= 2, (face.face_id, r, (x1, y1))
                assert abs(r.x_offset + r.width - x2) <= 2 and abs(r.y_offset + r.height - y2) <= 2
        wait_for_messages(client, hri_topics, [_Answer(s, m) for _, s, m in settled])
        for _, stamp, affect in settled:
            for face in affect.faces:
                check_same_values(hri_topics, _Answer(stamp, affect), face, with_roi=False)
        # Faces stay the detector's: the node publishes no tracked list and no roi of its own.
        assert client.node.count_publishers("/humans/faces/tracked") == 1
        assert all(client.node.count_publishers(f"/humans/faces/{i}/roi") == 1 for i in ids)
        assert all(hri_topics.publishers(i, t) == 1 for i in ids for t in ("expression", "facs"))

        # "asdfg" leaves the detector's list: only "qwert" is estimated, asdfg's topics go.
        detector.track(ids[:1])
        later = run(range(12, 18), ids[:1])
        assert all(m is None or [f.face_id for f in m.faces] in ([], ["qwert"]) for _, _, m in later)
        assert any(m is not None and [f.face_id for f in m.faces] == ["qwert"] for _, _, m in later)
        assert client.wait_for(lambda: all(hri_topics.publishers("asdfg", t) == 0 for t in ("expression", "facs")),
                               timeout=10), node.log()[-2000:]
        assert all(hri_topics.publishers("qwert", t) == 1 for t in ("expression", "facs"))
    finally:
        client.close()
        node.stop()


class _Answer:
    def __init__(self, stamp_ns: int, msg) -> None:
        self.stamp_ns, self.msg, self.index = stamp_ns, msg, None


def test_without_hri_msgs_the_node_names_the_install_command_and_exits_2(domain, model_bundle, tmp_path):
    env = dict(os.environ)
    if subprocess.run([sys.executable, "-c", "import hri_msgs"], env=env, capture_output=True).returncode == 0:
        pytest.skip("hri_msgs is installed in this environment")
    params = params_file(tmp_path, model_file_path=str(model_bundle), backend="onnxruntime", window_length=WINDOW,
                         publish_ros4hri=True)
    node = NodeProcess(params, tmp_path / "node.log", unique_namespace("ros4hri_missing"), env=env)
    try:
        code = node.wait_exit(timeout=120)
    finally:
        node.stop()
    log = node.log()
    fatal = [line for line in log.splitlines() if "[FATAL]" in line]
    assert code == 2, log[-3000:]
    assert len(fatal) == 1 and "hri_msgs" in fatal[0] and "apt install ros-" in fatal[0], log[-3000:]
    assert "Traceback" not in log


def test_the_managed_node_has_ros4hri_topics_only_while_active(hri, domain, flagged_bundle, tmp_path):
    from lifecycle_msgs.msg import Transition
    from ros_harness import node_executable
    from test_node_lifecycle import _Lifecycle

    build, msg = hri
    namespace = unique_namespace("ros4hri_managed")
    params = params_file(tmp_path, model_file_path=str(flagged_bundle), backend="onnxruntime", window_length=WINDOW,
                         detection_interval=2, publish_ros4hri=True)
    node = NodeProcess(params, tmp_path / "node.log", namespace, env=build.env(),
                       executable=node_executable("affect_lifecycle_node"))
    client = FrameClient(namespace, domain_id=domain)
    try:
        lifecycle = _Lifecycle(client, f"{namespace}/abaw_affect")
        hri_topics = HriTopics(client, msg)
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE), node.log()[-3000:]
        assert client.node.count_publishers("/humans/faces/tracked") == 0  # inactive: no topics yet
        for _ in range(2):  # activate, frames, deactivate; and once more
            assert lifecycle.transition(Transition.TRANSITION_ACTIVATE), node.log()[-3000:]
            assert client.wait_for_node(timeout=20), node.log()[-3000:]
            answers = [a for a in send_in_lockstep(client, DemoScene(faces=1), 8, frame_id=FRAME_ID)
                       if a.result is not None and a.msg.faces]
            assert answers, node.log()[-3000:]
            face_id = answers[-1].msg.faces[0].face_id
            hri_topics.watch(face_id)
            more = [a for a in send_in_lockstep(client, DemoScene(faces=1), 3, frame_id=FRAME_ID, start=8)
                    if a.result is not None and a.msg.faces]
            wait_for_messages(client, hri_topics, more[-1:])
            check_same_values(hri_topics, more[-1], more[-1].msg.faces[0], with_roi=True)
            assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
            assert client.wait_for(lambda f=face_id: client.node.count_publishers("/humans/faces/tracked") == 0
                                   and hri_topics.publishers(f, "expression") == 0, timeout=10)
    finally:
        client.close()
        node.stop()
