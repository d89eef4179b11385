"""A stock camera over Fast DDS at its defaults (no profile file on either side): the node
matches the camera's QoS, tells transport loss and clock skew apart on /diagnostics, and
refuses runtime changes it cannot apply. And a best-effort camera with the large-frame
profile on both sides, set the way this package sets it for the distro's Fast DDS.

The node is its installed executable in a process of its own; the camera is a plain rclpy
publisher in another process (default QoS unless stated, depth 10), so neither carries
the large-frame profile the other node tests use. This process only listens and calls the
node's parameter service.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

from ros_harness import (  # noqa: E402
    FrameClient,
    NodeProcess,
    params_file,
    set_parameters,
    unique_namespace,
)

from abaw_ros.ros.transport import PROFILE_VARIABLES, prefer_large_frame_transport  # noqa: E402

pytestmark = pytest.mark.timeout(180)
WINDOW = 8

# A camera as a driver writes it: one publisher, 640x480 bgr8 by default, stamps at the
# frame rate. --skip K leaves out every K-th frame (a camera that loses frames upstream);
# --stamp-offset shifts the stamps (a camera whose clock is off). Waits for "go" on stdin
# once the node's subscription is matched; prints the stamps it published.
CAMERA = textwrap.dedent(
    """
    import argparse, json, sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    p = argparse.ArgumentParser()
    p.add_argument("--namespace"); p.add_argument("--frames", type=int); p.add_argument("--rate", type=float)
    p.add_argument("--width", type=int, default=640); p.add_argument("--height", type=int, default=480)
    p.add_argument("--best-effort", action="store_true"); p.add_argument("--skip", type=int, default=0)
    p.add_argument("--stamp-offset", type=float, default=0.0)
    a = p.parse_args()
    rclpy.init()
    node = rclpy.create_node("stock_camera", namespace=a.namespace)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT) if a.best_effort else 10
    pub = node.create_publisher(Image, "image", qos)
    msg = Image(height=a.height, width=a.width, encoding="bgr8", step=a.width * 3)
    ramp = np.linspace(40, 200, a.width, dtype=np.uint8)
    msg.data = np.repeat(np.tile(ramp, (a.height, 1))[:, :, None], 3, axis=2).tobytes()  # no face
    msg.header.frame_id = "camera_optical_frame"
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    print("MATCHED", flush=True)
    sys.stdin.readline()
    sent = []
    period = 1.0 / a.rate
    t_next = time.monotonic()
    for i in range(a.frames):
        stamp = node.get_clock().now().nanoseconds + int(a.stamp_offset * 1e9)
        if not (a.skip and i % a.skip == a.skip - 1):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            pub.publish(msg)
            sent.append(stamp)
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(1.0)  # let a reliable writer finish repairs before the process goes
    print("SENT " + json.dumps(sent), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def _no_profile_env() -> dict[str, str]:
    env = dict(os.environ, RMW_IMPLEMENTATION="rmw_fastrtps_cpp")
    for variable in PROFILE_VARIABLES.values():
        env.pop(variable, None)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    return env


def _profile_env() -> dict[str, str]:
    """The large-frame profile under the variable this environment's Fast DDS reads."""
    env = _no_profile_env()
    assert prefer_large_frame_transport(env)
    return env


@pytest.fixture(scope="module")
def domain():
    with pytest.MonkeyPatch.context() as mp:
        domain_id = random.SystemRandom().randint(201, 230)
        mp.setenv("ROS_DOMAIN_ID", str(domain_id))
        yield domain_id


@contextmanager
def _started_node(domain, model_bundle, tmp_path_factory, env: dict[str, str]):
    tmp = tmp_path_factory.mktemp("node_qos")
    namespace = unique_namespace("qos")
    params = params_file(tmp, model_file_path=str(model_bundle), backend="onnxruntime",
                         window_length=WINDOW, detection_interval=5, min_face_size=80,
                         detection_threshold=0.6)
    node = NodeProcess(params, tmp / "node.log", namespace, env=env)
    client = FrameClient(namespace, domain_id=domain, camera=False)
    try:
        ok = client.wait_for(lambda: not node.alive() or
                             client.node.count_subscribers(f"{namespace}/image") > 0, timeout=90)
        assert ok and node.alive(), f"node did not come up:\n{node.log()[-3000:]}"
        yield node, client, namespace
    finally:
        client.close()
        node.stop()


@pytest.fixture(scope="module")
def running(domain, model_bundle, tmp_path_factory):
    """(node, listener, namespace): the node with the shipped defaults except a light
    detector setting (the frames hold no face: the point here is transport)."""
    with _started_node(domain, model_bundle, tmp_path_factory, _no_profile_env()) as started:
        yield started


def _run_camera(node: NodeProcess, client: FrameClient, namespace: str, *args: str,
                wait_log: str | None = None, env: dict[str, str] | None = None) -> list[int]:
    """Run the camera process; once it is matched (and ``wait_log`` is in the node's log)
    it streams; returns the stamps it published."""
    cam = subprocess.Popen([sys.executable, "-c", CAMERA, "--namespace", namespace, *args],
                           env=env or _no_profile_env(), text=True, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert cam.stdout.readline().strip() == "MATCHED", cam.stderr.read()
        if wait_log is not None:
            assert client.wait_for(lambda: wait_log in node.log(), timeout=20), node.log()[-3000:]
            time.sleep(1.0)  # the camera's writer discovers the re-created reader
        cam.stdin.write("go\n")
        cam.stdin.flush()
        out, err = cam.communicate(timeout=120)
    finally:
        if cam.poll() is None:
            cam.kill()
    assert cam.returncode == 0, err
    line = next(x for x in out.splitlines() if x.startswith("SENT "))
    return json.loads(line[len("SENT "):])


def test_reliable_stock_camera_is_matched_and_nearly_every_frame_answered(running):
    node, client, namespace = running
    client.clear()
    sent = _run_camera(node, client, namespace, "--frames", "150", "--rate", "15",
                       wait_log=f"subscribed to {namespace}/image reliable")
    client.wait_for(lambda: len(client.results_for(sent)) >= len(sent), timeout=5)
    answered = len(client.results_for(sent))
    assert answered >= 0.9 * len(sent), (
        f"{answered} of {len(sent)} frames answered:\n{node.log()[-3000:]}")
    assert "all 1 publisher(s) offer reliable" in node.log()
    report = client.diagnostics()[-1]
    assert report["input_reliability"] == "reliable"
    assert float(report["frames_lost_in_transport_fraction"]) < 0.1, report
    assert abs(float(report["camera_rate_hz"]) - 15.0) < 2.0, report
    # diagnostic_updater's FrequencyStatus keys, against the camera's rate.
    rate = client.diagnostics("input image rate")[-1]
    for key in ("Events in window", "Events since startup", "Duration of window (s)",
                "Actual frequency (Hz)", "Target frequency (Hz)", "Minimum acceptable frequency (Hz)"):
        assert key in rate, key
    assert client.diagnostics("affect output rate")


def test_best_effort_camera_losing_frames_is_reported_at_warn(running):
    node, client, namespace = running
    client.clear()
    # Every 3rd frame never leaves the camera: a third of the stream is lost (and best
    # effort may lose more on the way).
    _run_camera(node, client, namespace, "--frames", "120", "--rate", "15", "--best-effort",
                "--skip", "3", "--width", "320", "--height", "240")
    assert f"subscribed to {namespace}/image best effort" in node.log(), node.log()[-3000:]
    assert client.wait_for(lambda: any(float(d.get("frames_lost_in_transport_fraction", 0)) > 0
                                       for d in client.diagnostics()), timeout=5)
    report = [d for d in client.diagnostics() if float(d["frames_lost_in_transport_fraction"]) > 0][-1]
    lost = float(report["frames_lost_in_transport_fraction"])
    assert 0.25 <= lost <= 0.95, report
    assert abs(float(report["camera_rate_hz"]) - 15.0) < 2.0, report
    assert report["level"] == "1"
    message = report["message"]
    assert "never reached the node" in message and f"{lost:.0%}" in message
    for fix in ("reliable", "compressed", "fastdds_large_frames.xml", "rmw_zenoh", "docs/NODE.md"):
        assert fix in message, fix
    assert report["input_reliability"] == "best_effort"
    rate = client.diagnostics("input image rate")[-1]
    assert rate["message"] in ("Frequency too low.", "No events recorded."), rate


def test_stamps_far_from_the_clock_are_clock_skew_not_latency(running):
    node, client, namespace = running
    client.clear()
    _run_camera(node, client, namespace, "--frames", "20", "--rate", "15", "--width", "320",
                "--height", "240", "--stamp-offset", "-86400")
    assert client.wait_for(lambda: any(int(d.get("clock_skew_frames", 0)) > 0 for d in client.diagnostics()),
                           timeout=5), client.diagnostics()[-1:]
    report = next(d for d in client.diagnostics() if "clock skew" in d["message"])
    assert float(report["clock_offset_ms"]) == pytest.approx(86_400_000, rel=0.01)
    assert report["latency_ms_p50"] == "nan"  # no frame had a usable stamp this period
    assert report["level"] == "1"


def test_runtime_changes_the_node_cannot_apply_are_refused(running):
    node, client, namespace = running
    (result,) = set_parameters(client, namespace, window_length=12)
    assert not result.successful
    assert "window_length" in result.reason and "restart" in result.reason
    (result,) = set_parameters(client, namespace, detection_threshold=2.0)
    assert not result.successful and "detection_threshold=2.0" in result.reason
    (result,) = set_parameters(client, namespace, detection_interval=3)
    assert result.successful, result.reason
    assert client.wait_for(lambda: "applied at run time: detection_interval 5 -> 3" in node.log(), timeout=5)
    (result,) = set_parameters(client, namespace, detection_threshold=0.8)  # the detector is rebuilt
    assert result.successful, result.reason
    assert client.wait_for(lambda: "detection_threshold 0.6 -> 0.8" in node.log(), timeout=10)
    (result,) = set_parameters(client, namespace, window_length=6)  # invalid as well as fixed
    assert not result.successful and "window_length" in result.reason
    assert "window_length 8 -> 12" not in node.log()
    assert node.alive()


def test_the_log_says_untrained_once(running):
    node, _client, _namespace = running
    log = node.log()
    warnings = [line for line in log.splitlines() if "[WARN]" in line and "untrained" in line.lower()]
    assert len(warnings) == 1, warnings


def test_best_effort_640x480_camera_with_the_large_frame_profile_is_nearly_all_answered(
        domain, model_bundle, tmp_path_factory):
    """A best-effort (sensor-data) camera, 640x480 bgr8 at 15 Hz, with the profile set on
    both sides as the demo sets it: on Jazzy that is FASTRTPS_DEFAULT_PROFILES_FILE, which
    Fast DDS 2.14 reads (only FASTDDS_... was set before: most frames never arrived)."""
    env = _profile_env()
    with _started_node(domain, model_bundle, tmp_path_factory, env) as (node, client, namespace):
        client.clear()
        sent = _run_camera(node, client, namespace, "--frames", "150", "--rate", "15", "--best-effort",
                           wait_log=f"subscribed to {namespace}/image best effort", env=env)
        client.wait_for(lambda: len(client.results_for(sent)) >= len(sent), timeout=5)
        answered = len(client.results_for(sent))
        print(f"best-effort 640x480 at 15 Hz with the profile: {answered} of {len(sent)} answered")
        assert answered >= 0.9 * len(sent), f"{answered} of {len(sent)} frames answered:\n{node.log()[-3000:]}"
        # this node's reports only: the module's other node publishes /diagnostics on the same domain
        reports = client.diagnostics(f"{namespace.strip('/')}/abaw_affect: affect pipeline")
        assert reports and reports[-1]["input_reliability"] == "best_effort", reports[-1:]
        assert reports[-1]["largest_deliverable_frame"].startswith("16777216 bytes"), reports[-1]
