"""Static int8 (QDQ) ONNX Runtime path: calibrated on real face crops, cached, and
reported against fp32 on other face crops than those it was calibrated on."""
from __future__ import annotations

import onnx
import pytest

from abaw_ros.runtime import load_backend, preprocess_crops
from abaw_ros.runtime.accuracy import compare_backends
from abaw_ros.runtime.samples import lfw_face_crops


@pytest.fixture(scope="module")
def faces():
    crops = lfw_face_crops(200)
    return {"calibration": crops[:64], "evaluation": crops[100:148]}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("int8-cache")


@pytest.fixture(scope="module")
def fp32(model_bundle, cache_dir):
    return load_backend(model_bundle, "onnxruntime", "fp32", engine_cache_dir=cache_dir)


@pytest.fixture(scope="module")
def int8(model_bundle, cache_dir, faces):
    return load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=cache_dir,
                        calibration=faces["calibration"])


def test_int8_encoder_is_a_quantized_graph(int8):
    entry = int8.compiled_artifacts()["encoder"]
    assert entry.built and entry.path.suffix == ".onnx"
    ops = {node.op_type for node in onnx.load(str(entry.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_accuracy_report_against_fp32(fp32, int8, faces):
    crops = preprocess_crops(faces["evaluation"], fp32.metadata)
    report = compare_backends(fp32, int8, crops)
    text = report.format()
    print(text)
    assert report.n_crops == 48 and report.n_windows == 11
    assert [m.name for m in report.maps] == list(fp32.metadata.feature_names)
    assert [t.task for t in report.tasks] == list(fp32.metadata.tasks)
    assert "onnxruntime int8 against onnxruntime fp32" in text
    # quantization changes the numbers (it really ran in int8) ...
    assert all(m.rel_l2 > 1e-4 for m in report.maps)
    # ... but keeps them close: measured here cos mean >= 0.987 per map, output error < 0.01
    assert all(m.cosine_mean > 0.95 for m in report.maps)
    assert report.max_output_error < 0.05
    binary = [t for t in report.tasks if t.decision_agreement is not None]
    assert [t.task for t in binary] == ["au", "ah"] and all(t.decision_agreement >= 0.9 for t in binary)


def test_report_of_a_backend_against_itself_is_exact(fp32, faces):
    report = compare_backends(fp32, fp32, preprocess_crops(faces["evaluation"][:16], fp32.metadata))
    assert report.max_output_error == 0.0
    assert all(m.max_abs == 0.0 and m.cosine_min > 0.99999 for m in report.maps)


def test_quantized_graph_is_reused_until_the_calibration_changes(model_bundle, cache_dir, faces, int8):
    again = load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=cache_dir,
                         calibration=faces["calibration"])
    assert again.compiled_artifacts()["encoder"].built is False
    other = load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=cache_dir,
                         calibration=faces["calibration"][:32])
    entry = other.compiled_artifacts()["encoder"]
    assert entry.built and entry.path != int8.compiled_artifacts()["encoder"].path


def test_int8_without_crops_uses_the_graph_quantized_earlier(model_bundle, faces, tmp_path):
    """The deployment loads int8 with no crops at hand: the graph quantized by an earlier
    calibrated run (e.g. `abaw-affect build-engine`) for this very encoder is used."""
    with pytest.raises(ValueError, match="build-engine"):
        load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path)
    calibrated = load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path,
                              calibration=faces["calibration"][:16])
    reused = load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path)
    entry = reused.compiled_artifacts()["encoder"]
    assert not entry.built and entry.path == calibrated.compiled_artifacts()["encoder"].path
    crops = preprocess_crops(faces["evaluation"][:4], reused.metadata)
    for a, b in zip(reused.encode(crops), calibrated.encode(crops), strict=True):
        assert (a == b).all()
