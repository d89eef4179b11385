"""Model files that exist but cannot be used raise one ModelFileError naming the file and
what is wrong, at the loaders (so every caller gets the same words) and through the
command line (one line, exit code 2, no traceback)."""
from __future__ import annotations

import logging

import fault_files
import pytest

from abaw_ros.config import ConfigError, ModelFileError, PipelineConfig
from abaw_ros.runtime.bundle import ModelBundle


@pytest.mark.parametrize(("make", "expected"), [
    (fault_files.empty_checkpoint, "empty or cut short"),
    (fault_files.garbage_checkpoint, "not a PyTorch checkpoint"),
])
def test_a_broken_checkpoint_is_named(make, expected, tmp_path):
    from abaw_ros.models import load_checkpoint

    path = make(tmp_path)
    with pytest.raises(ModelFileError, match=f"{path.name}.*{expected}"):
        load_checkpoint(path)


def test_a_malicious_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    from abaw_ros.models import load_checkpoint

    path, marker = fault_files.malicious_checkpoint(tmp_path)
    with pytest.raises(ModelFileError, match="malicious.pt: refused.*posix.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_broken_bundles_are_named(model_bundle, tmp_path):
    with pytest.raises(ModelFileError, match="truncated_bundle/encoder.onnx: not a readable"):
        ModelBundle.open(fault_files.truncated_bundle(tmp_path, model_bundle))
    with pytest.raises(ModelFileError, match="input_size=100000"):
        ModelBundle.open(fault_files.metadata_bundle(tmp_path, model_bundle, "huge", input_size=100000))
    with pytest.raises(ModelFileError, match="encoder.onnx has window_length=8 but temporal_head.onnx has "
                                             "window_length=12"):
        _mixed_window(tmp_path, model_bundle)


def _mixed_window(tmp_path, model_bundle):
    """The head's metadata says T=12 while the encoder's says T=8."""
    import shutil

    t12 = fault_files.metadata_bundle(tmp_path, model_bundle, "t12", window_length=12)
    target = tmp_path / "mixed"
    shutil.copytree(model_bundle, target)
    shutil.copyfile(t12 / "temporal_head.onnx", target / "temporal_head.onnx")
    return ModelBundle.open(target)


@pytest.mark.parametrize(("make", "kind"), [(fault_files.fifo_model, "named pipe"),
                                            (fault_files.dev_zero_model, "character device")])
def test_a_model_path_that_is_not_a_regular_file_is_refused_before_reading(make, kind, tmp_path):
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=f"model_file_path=.*{path.name}.*{kind}"):
        PipelineConfig(model_file_path=str(path)).validate()
    from abaw_ros.runtime.bundle import resolve_model_path

    with pytest.raises(ModelFileError, match=kind):
        resolve_model_path(path)


def test_the_command_line_reports_a_bad_model_in_one_line_with_exit_2(tmp_path, caplog):
    from abaw_ros.cli import main

    path, marker = fault_files.malicious_checkpoint(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert main(["export", str(path), "-o", str(tmp_path / "out")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "malicious.pt: refused" in errors[0], errors
    assert not marker.exists() and not (tmp_path / "out").exists()


BAD_METADATA = {
    "std_0": ({"std": [0.0, 0.224, 0.225]}, "std=[0.0, 0.224, 0.225]: must be 3 numbers, each 0.001 to 10"),
    "std_nan": ({"std": [float("nan")] * 3}, "std=[nan, nan, nan]"),
    "mean_1e308": ({"mean": [1e308, 0.456, 0.406]}, "mean=[1e+308, 0.456, 0.406]: must be 3 numbers, each 0 to 1"),
    "mean_two_values": ({"mean": [0.5, 0.5]}, "mean=[0.5, 0.5]"),
    "au_threshold_nan": ({"au_thresholds": [float("nan")] + [0.5] * 11}, "au_thresholds=[nan, 0.5"),
    "ah_threshold_2": ({"ah_threshold": 2.0}, "ah_threshold=2.0: a probability must lie in (0, 1)"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_impossible_metadata_values_are_named_at_load(case, model_bundle, tmp_path):
    changes, expected = BAD_METADATA[case]
    bundle = fault_files.metadata_bundle(tmp_path, model_bundle, case, **changes)
    with pytest.raises(ModelFileError) as caught:
        ModelBundle.open(bundle)
    assert str(caught.value).startswith(f"{bundle / 'encoder.onnx'}: its metadata gives ")
    assert expected in str(caught.value)
