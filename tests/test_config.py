"""PipelineConfig: parameter listing, validation messages, ROS 2 parameters-file I/O."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from abaw_ros.config import ConfigError, PipelineConfig

PACKAGE_YAML = Path(__file__).resolve().parents[1] / "config" / "affect.yaml"


def test_every_field_is_a_described_scalar_parameter():
    specs = list(PipelineConfig.parameters())
    assert [s.name for s in specs] == [f.name for f in dataclasses.fields(PipelineConfig)]
    for spec in specs:
        assert spec.type in (str, int, float, bool), spec
        assert isinstance(spec.default, spec.type), spec
        assert len(spec.description) > 15, spec.name
        if spec.choices:
            assert spec.default in spec.choices
    names = {s.name for s in specs}
    for required in ("model_file_path", "engine_file_path", "force_engine_update", "backend", "precision",
                     "num_threads", "detector", "detector_model_path", "detection_interval",
                     "detection_threshold", "min_face_size", "max_faces", "track_iou_threshold",
                     "track_distance_threshold", "track_min_hits", "track_max_misses", "window_length",
                     "publish_debug_image", "crop_size"):
        assert required in names
    defaults = PipelineConfig()
    assert defaults.force_engine_update is False
    assert defaults.validate() is defaults


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("window_length", 6, "window_length=6: must be a positive multiple of 4"),
        ("window_length", 0, "window_length=0"),
        ("backend", "cuda", "backend='cuda': must be one of \\['auto', 'onnxruntime', 'torch', 'tensorrt'\\]"),
        ("precision", "bf16", "precision='bf16': must be one of"),
        ("detector", "dlib", "detector='dlib': must be one of"),
        ("image_transport", "theora", "image_transport='theora'"),
        ("detection_interval", 0, "detection_interval=0: must be 1 to 1000 frames"),
        ("detection_threshold", 1.5, "detection_threshold=1.5: must be 0 to 1"),
        ("min_face_size", 5, "min_face_size=5: must be 12 to 4096 pixels"),
        ("max_faces", 0, "max_faces=0: must be 1 to 64 faces"),
        ("track_iou_threshold", -0.1, "track_iou_threshold=-0.1"),
        ("track_distance_threshold", -1.0, "track_distance_threshold=-1.0"),
        ("track_min_hits", 0, "track_min_hits=0"),
        ("track_max_misses", -1, "track_max_misses=-1"),
        ("num_threads", 0, "num_threads=0"),
        ("crop_size", 16, "crop_size=16"),
        ("diagnostics_period", 0.0, "diagnostics_period=0.0"),
        ("window_length", "8", "window_length='8': must be of type int, got str"),
        ("publish_debug_image", "yes", "publish_debug_image='yes': must be of type bool"),
        ("max_faces", True, "max_faces=True: must be of type int, got bool"),
    ],
)
def test_validation_names_the_parameter_the_value_and_the_fix(field, value, message):
    config = dataclasses.replace(PipelineConfig(), **{field: value})
    with pytest.raises(ConfigError, match=message):
        config.validate()


NUMERIC = [spec for spec in PipelineConfig.parameters() if spec.type in (int, float)]


@pytest.mark.parametrize("spec", NUMERIC, ids=[spec.name for spec in NUMERIC])
def test_every_numeric_parameter_has_a_finite_range_beside_its_description(spec):
    assert spec.bounds is not None, f"{spec.name}: no range declared"
    assert math.isfinite(spec.bounds.low) and math.isfinite(spec.bounds.high)
    assert spec.default in spec.bounds


@pytest.mark.parametrize("spec", NUMERIC, ids=[spec.name for spec in NUMERIC])
def test_values_beyond_a_range_are_refused_naming_the_range(spec):
    beyond = [spec.bounds.high + 1, spec.bounds.low - 1]
    if spec.type is float:
        beyond += [1e308, float("inf"), float("-inf"), float("nan")]
    else:
        beyond += [2**63 - 1]
    for value in beyond:
        if value == spec.bounds.off:
            continue
        config = dataclasses.replace(PipelineConfig(), **{spec.name: value})
        with pytest.raises(ConfigError) as caught:
            config.validate(check_files=False)
        assert str(caught.value).startswith(f"{spec.name}={value!r}: must be ")
        assert spec.bounds.describe() in str(caught.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="model_file_path=.*nope.pt.*no such file"):
        PipelineConfig(model_file_path=str(tmp_path / "nope.pt")).validate()
    PipelineConfig(model_file_path=str(tmp_path / "nope.pt")).validate(check_files=False)
    with pytest.raises(ConfigError, match="detector_model_path='': detector=yunet needs"):
        PipelineConfig(detector="yunet").validate()
    with pytest.raises(ConfigError, match="detector_model_path=.*yunet.onnx.*no such file"):
        PipelineConfig(detector="yunet", detector_model_path=str(tmp_path / "yunet.onnx")).validate()
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    assert PipelineConfig(model_file_path=str(model)).validate().model_file_path == str(model)


def test_from_dict_accepts_ints_for_floats_and_rejects_unknown_names():
    config = PipelineConfig.from_dict({"detection_threshold": 1, "window_length": 16})
    assert config.detection_threshold == 1.0 and isinstance(config.detection_threshold, float)
    assert config.window_length == 16
    with pytest.raises(ConfigError, match="unknown parameter\\(s\\) \\['window_lenght'\\]"):
        PipelineConfig.from_dict({"window_lenght": 8})


def test_package_yaml_lists_every_parameter_and_loads():
    document = yaml.safe_load(PACKAGE_YAML.read_text())
    params = document["/**/abaw_affect"]["ros__parameters"]
    assert set(params) == {s.name for s in PipelineConfig.parameters()}
    config = PipelineConfig.from_yaml(PACKAGE_YAML).validate()
    assert config.model_file_path == ""  # untrained network by default
    text = PACKAGE_YAML.read_text()
    for spec in PipelineConfig.parameters():  # every parameter is explained in a comment
        line = next(i for i, s in enumerate(text.splitlines()) if s.strip().startswith(f"{spec.name}:"))
        assert text.splitlines()[line - 1].strip().startswith("#"), spec.name


def test_yaml_round_trip(tmp_path):
    config = PipelineConfig(window_length=16, backend="onnxruntime", detector="haar", detection_interval=3,
                            detection_threshold=0.75, max_faces=2, publish_debug_image=True)
    path = tmp_path / "params.yaml"
    config.to_yaml(path)
    assert PipelineConfig.from_yaml(path) == config
    with pytest.raises(ConfigError, match="no '/\\*\\*' or 'other_node' section"):
        PipelineConfig.from_yaml(path, node_name="other_node")


def test_yaml_wildcard_then_node_sections(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "/camera_driver:\n  ros__parameters: {fps: 30}\n"
        "/robot/abaw_affect:\n  ros__parameters: {window_length: 16, max_faces: 1}\n"
        "/**:\n  ros__parameters: {window_length: 12, detector: haar}\n"
    )
    config = PipelineConfig.from_yaml(path)
    assert (config.window_length, config.max_faces, config.detector) == (16, 1, "haar")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abaw_affect:\n  ros__parameters: {window_length: 6}\n", None),
        ("abaw_affect:\n  ros__parameters: {frame_rate: 6}\n", "unknown parameter\\(s\\) \\['frame_rate'\\]"),
        ("abaw_affect:\n  window_length: 8\n", "section 'abaw_affect' has no 'ros__parameters'"),
        ("abaw_affect: [\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_bad_parameter_files_are_explained(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    if message is None:  # loads, but validation names the bad value
        with pytest.raises(ConfigError, match="window_length=6"):
            PipelineConfig.from_yaml(path).validate()
    else:
        with pytest.raises(ConfigError, match=message):
            PipelineConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="no such file"):
        PipelineConfig.from_yaml(tmp_path / "absent.yaml")


def test_the_range_table_in_the_node_docs_is_the_code():
    """docs/NODE.md lists every numeric parameter's range; it must say what the code checks."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "NODE.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[2] in ("at start", "at run time"):
            rows[cells[0].strip("`")] = cells[1]
    assert rows == {spec.name: spec.bounds.describe() for spec in NUMERIC}


def test_the_spec_declares_which_parameters_a_running_node_applies():
    """Declared once, on the parameter spec: the node's parameter callback and
    PerceptionPipeline.reconfigure both read it."""
    runtime = {spec.name for spec in PipelineConfig.parameters() if spec.runtime}
    assert runtime == PipelineConfig.runtime_parameters() == {
        "detection_interval", "detection_threshold", "min_face_size", "max_faces",
        "track_iou_threshold", "track_distance_threshold", "track_min_hits", "track_max_misses",
        "publish_debug_image", "diagnostics_period", "image_qos", "expected_input_rate",
        "input_loss_warn_fraction",
    }
    changed = dataclasses.replace(PipelineConfig(), window_length=12, max_faces=2, backend="torch")
    assert changed.load_time_changes(PipelineConfig()) == ["backend", "window_length"]
