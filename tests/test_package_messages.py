"""The generated messages: layout of DESIGN §3 and a round trip between two OS processes
over Fast DDS."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_FACE_AFFECT = {
    "face_id": "string",
    "roi": "sensor_msgs/RegionOfInterest",
    "detection_confidence": "float",
    "window_length": "uint16",
    "frames_observed": "uint16",
    "valence": "float",
    "arousal": "float",
    "au_probability": "float[12]",
    "au_active": "boolean[12]",
    "mimicry_intensity": "float[6]",
    "hesitancy_probability": "float",
    "hesitant": "boolean",
    "window_start": "builtin_interfaces/Time",
}


def test_generated_messages_have_the_designed_fields():
    from abaw_ros.msg import FaceAffect, FaceAffectArray

    assert FaceAffect.get_fields_and_field_types() == EXPECTED_FACE_AFFECT
    assert FaceAffectArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "faces": "sequence<abaw_ros/FaceAffect>",
        "weights_trained": "boolean",
        "model_id": "string",
    }


def test_fixed_array_sizes_are_enforced():
    from abaw_ros.msg import FaceAffect

    msg = FaceAffect(check_fields=True)
    assert len(msg.au_probability) == 12 and len(msg.au_active) == 12
    assert len(msg.mimicry_intensity) == 6
    with pytest.raises(AssertionError):
        msg.au_probability = [0.0] * 11
    with pytest.raises(AssertionError):
        msg.mimicry_intensity = [0.0] * 7


def test_message_sizes_match_the_task_registry():
    from abaw_ros.msg import FaceAffect

    from abaw_ros.tasks import TASKS

    msg = FaceAffect()
    assert len(msg.au_probability) == TASKS["au"].size
    assert len(msg.mimicry_intensity) == TASKS["emi"].size


# Two faces with every field set to a distinct value.
FACES = [
    {
        "face_id": f"face-{k}",
        "roi": {"x_offset": 10 + k, "y_offset": 20 + k, "width": 64 + k, "height": 80 + k, "do_rectify": bool(k)},
        "detection_confidence": 0.5 + k / 4,
        "window_length": 8 * (k + 1),
        "frames_observed": 3 + k,
        "valence": -0.25 + k / 2,
        "arousal": 0.125 - k / 8,
        "au_probability": [round((i + 1) / 16 + k / 64, 6) for i in range(12)],
        "au_active": [(i + k) % 3 == 0 for i in range(12)],
        "mimicry_intensity": [round((i + 1) / 8 - k / 32, 6) for i in range(6)],
        "hesitancy_probability": 0.75 - k / 2,
        "hesitant": k == 0,
        "window_start": {"sec": 1_700_000_122 - k, "nanosec": 987_654_321 - k},
    }
    for k in range(2)
]
HEADER = {"sec": 1_700_000_123, "nanosec": 456_789_012, "frame_id": "camera_optical_frame"}
TRUST = {"weights_trained": True, "model_id": "affect_bundle@sha256:0123456789ab"}

_PUBLISHER = textwrap.dedent(
    """
    import json, sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
    from abaw_ros.msg import FaceAffect, FaceAffectArray
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import RegionOfInterest

    spec = json.loads(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node("fixture_publisher")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(FaceAffectArray, "affect", qos)
    msg = FaceAffectArray()
    msg.header.stamp.sec = spec["header"]["sec"]
    msg.header.stamp.nanosec = spec["header"]["nanosec"]
    msg.header.frame_id = spec["header"]["frame_id"]
    msg.weights_trained = spec["trust"]["weights_trained"]
    msg.model_id = spec["trust"]["model_id"]
    for f in spec["faces"]:
        face = FaceAffect()
        for key, value in f.items():
            if key == "roi":
                face.roi = RegionOfInterest(**value)
            elif key == "window_start":
                face.window_start = Time(**value)
            else:
                setattr(face, key, value)
        msg.faces.append(face)
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    for _ in range(20):  # until the subscriber says it has it (it exits)
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.25)
        if pub.get_subscription_count() == 0:
            break
    node.destroy_node()
    rclpy.shutdown()
    """
)

_SUBSCRIBER = textwrap.dedent(
    """
    import json, sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
    from abaw_ros.msg import FaceAffectArray

    rclpy.init()
    node = rclpy.create_node("fixture_subscriber")
    got = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(FaceAffectArray, "affect", got.append, qos)
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not got:
        sys.exit("no FaceAffectArray received")
    m = got[0]
    out = {"header": {"sec": m.header.stamp.sec, "nanosec": m.header.stamp.nanosec,
                      "frame_id": m.header.frame_id}, "faces": [],
           "trust": {"weights_trained": bool(m.weights_trained), "model_id": m.model_id}}
    for f in m.faces:
        out["faces"].append({
            "face_id": f.face_id,
            "roi": {"x_offset": f.roi.x_offset, "y_offset": f.roi.y_offset, "width": f.roi.width,
                    "height": f.roi.height, "do_rectify": f.roi.do_rectify},
            "detection_confidence": float(f.detection_confidence),
            "window_length": f.window_length, "frames_observed": f.frames_observed,
            "valence": float(f.valence), "arousal": float(f.arousal),
            "au_probability": [float(x) for x in f.au_probability],
            "au_active": [bool(x) for x in f.au_active],
            "mimicry_intensity": [float(x) for x in f.mimicry_intensity],
            "hesitancy_probability": float(f.hesitancy_probability), "hesitant": bool(f.hesitant),
            "window_start": {"sec": f.window_start.sec, "nanosec": f.window_start.nanosec},
        })
    print("RESULT " + json.dumps(out), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def test_face_affect_array_crosses_processes_over_fast_dds(ros_domain_id):
    env = dict(os.environ, RMW_IMPLEMENTATION="rmw_fastrtps_cpp")
    sub = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pub = subprocess.Popen([sys.executable, "-c", _PUBLISHER, json.dumps({"header": HEADER, "faces": FACES, "trust": TRUST})],
                           env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sub_out, sub_err = sub.communicate(timeout=90)
        pub.communicate(timeout=30)
    finally:
        for p in (sub, pub):
            if p.poll() is None:
                p.kill()
    assert sub.returncode == 0, sub_err
    assert sub.pid != pub.pid != os.getpid()
    line = next(x for x in sub_out.splitlines() if x.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])
    assert got["header"] == HEADER
    assert got["trust"] == TRUST
    assert len(got["faces"]) == 2
    for sent, received in zip(FACES, got["faces"], strict=True):
        for key, value in sent.items():
            if isinstance(value, float):
                assert received[key] == pytest.approx(value, abs=1e-6), key
            elif isinstance(value, list) and value and isinstance(value[0], float):
                assert received[key] == pytest.approx(value, abs=1e-6), key
            else:
                assert received[key] == value, key
