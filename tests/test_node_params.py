"""Bad parameters stop the node at start with one clear line naming the parameter (exit
code 2, no traceback); the node is its installed executable with ``--params-file``."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

from ros_harness import NodeProcess, params_file, unique_namespace  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def _start(tmp_path, **overrides) -> NodeProcess:
    return NodeProcess(params_file(tmp_path, **overrides), tmp_path / "node.log", unique_namespace("params"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({"window_length": 6}, ["window_length=6", "multiple of 4"], id="window_length_6"),
        pytest.param({"backend": "tflite"}, ["backend='tflite'", "onnxruntime"], id="unknown_backend"),
        pytest.param({"model_file_path": "/nonexistent/affect_model"},
                     ["model_file_path='/nonexistent/affect_model'", "no such file"], id="missing_model_file"),
        pytest.param({"detection_threshold": "high"}, ["detection_threshold='high'", "float"], id="wrong_type"),
        pytest.param({"window_lenght": 8}, ["window_lenght"], id="misspelt_parameter"),
    ],
)
def test_bad_parameter_fails_at_start_naming_it(tmp_path, ros_domain_id, overrides, expected):
    node = _start(tmp_path, **overrides)
    try:
        code = node.wait_exit(timeout=60)
    finally:
        node.stop()
    log = node.log()
    assert code == 2, f"exit code {code}:\n{log[-2000:]}"
    for text in expected:
        assert text in log, f"{text!r} not in:\n{log}"
    assert "[FATAL]" in log and "invalid parameter" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("content", [None, "abaw_affect:\n  ros__parameters:\n    window_length: [8\n"],
                         ids=["missing", "malformed"])
def test_unreadable_parameters_file_fails_at_start_naming_it(tmp_path, ros_domain_id, content):
    path = tmp_path / "affect_params.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    node = NodeProcess(path, tmp_path / "node.log", unique_namespace("params"))
    try:
        code = node.wait_exit(timeout=60)
    finally:
        node.stop()
    log = node.log()
    assert code == 2, f"exit code {code}:\n{log[-2000:]}"
    assert str(path) in log and "[FATAL]" in log
    assert "Traceback" not in log


def test_model_with_another_window_length_is_refused(tmp_path, ros_domain_id, model_bundle):
    node = _start(tmp_path, model_file_path=str(model_bundle), backend="onnxruntime", window_length=12)
    try:
        code = node.wait_exit(timeout=80)
    finally:
        node.stop()
    log = node.log()
    assert code == 2, f"exit code {code}:\n{log[-2000:]}"
    assert "window_length=12" in log and "window_length=8" in log  # what it is and what would fit
    assert "Traceback" not in log


def test_parameters_are_declared_with_descriptions(ros_domain_id):
    """Every PipelineConfig field is a declared ROS parameter with its description and the
    config's default; no rclpy executor or DDS traffic is needed to check that."""
    import rclpy

    from abaw_ros.config import PipelineConfig
    from abaw_ros.ros.affect_node import AffectNode

    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    try:
        node = AffectNode(context=context)
        try:
            specs = list(PipelineConfig.parameters())
            assert specs
            for spec in specs:
                assert node.has_parameter(spec.name), spec.name
                descriptor = node.describe_parameter(spec.name)
                assert descriptor.description.startswith(spec.description), spec.name
                assert node.get_parameter(spec.name).value == spec.default, spec.name
            config = node.read_config()
            assert config == PipelineConfig()
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()
