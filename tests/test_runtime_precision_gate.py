"""The precision gate: an int8 build is compared with fp32 before it is used, refused when
it misses the tolerances (decisions >= 90 % equal, VA |diff| <= 0.05), used with a logged
warning when explicitly accepted, and its verdict travels in the cache entry. Real ONNX
Runtime int8 builds: a good one calibrated on real faces, a bad one calibrated on flat grey
images (its activation ranges then clip every real face)."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from abaw_ros.cli import main
from abaw_ros.runtime import EngineCache, load_backend
from abaw_ros.runtime.accuracy import (
    DEFAULT_TOLERANCES,
    AccuracyReport,
    MapError,
    PrecisionCheckError,
    TaskError,
    Tolerances,
    check_precision,
    precision_check_crops,
)
from abaw_ros.runtime.samples import lfw_face_crops


def _report(va: float, au: float, ah: float) -> AccuracyReport:
    return AccuracyReport(
        "onnxruntime fp32", "onnxruntime int8", 64, 15,
        (MapError("stride32", 0.99, 0.98, 0.01, 0.1),),
        (TaskError("va", va, va / 2, None), TaskError("au", 0.01, 0.005, au), TaskError("ah", 0.01, 0.005, ah)),
    )


@pytest.mark.parametrize(("va", "au", "ah", "failed"), [
    (0.05, 0.90, 0.90, []),  # the bounds themselves pass
    (0.0501, 1.0, 1.0, ["va |diff| 0.0501 > 0.05"]),
    (0.01, 0.899, 1.0, ["au decisions 89.9% equal < 90%"]),
    (1.86, 1.0, 0.53, ["ah decisions 53.0% equal < 90%", "va |diff| 1.86 > 0.05"]),
])
def test_check_precision_names_every_missed_tolerance(va, au, ah, failed):
    result = check_precision(_report(va, au, ah))
    assert result.passed is (not failed)
    assert sorted(result.failures) == sorted(failed)
    assert "\n" not in result.summary()
    assert ("FAILED" if failed else "PASSED") in result.format()


def test_tolerances_can_be_tightened():
    assert check_precision(_report(0.03, 0.95, 0.95)).passed
    assert not check_precision(_report(0.03, 0.95, 0.95), Tolerances(decision_agreement=0.99)).passed
    assert DEFAULT_TOLERANCES == Tolerances(0.90, 0.05)


@pytest.fixture(scope="module")
def grey_crops():
    return [np.full((112, 112, 3), 128, np.uint8) for _ in range(16)]


@pytest.fixture(scope="module")
def faces():
    return lfw_face_crops(200)[:32]


def _entries(cache_dir, graph="encoder"):
    """Cached int8 graphs of ``graph`` (streaming bundles also quantize the projection)."""
    return sorted(cache_dir.glob(f"*.{graph}.*.onnx"))


def test_bad_int8_build_is_refused_and_discarded(model_bundle, tmp_path, grey_crops, caplog):
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"), pytest.raises(PrecisionCheckError) as err:
        load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path, calibration=grey_crops)
    result = err.value.result
    assert not result.passed and any(f.startswith("va |diff|") for f in result.failures)
    message = str(err.value)
    assert "\n" not in message and "precision check failed" in message and "accept_precision" in message
    assert "accuracy of onnxruntime int8 against onnxruntime fp32" in caplog.text  # the report is logged
    assert _entries(tmp_path) == [] and _entries(tmp_path, "projection") == []  # nothing a later start could pick up
    with pytest.raises(ValueError, match="build-engine"):  # ... so a deployment without crops finds none
        load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path)


def test_accepted_bad_build_is_recorded_and_warned_about_at_every_start(model_bundle, tmp_path, grey_crops, caplog):
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):
        backend = load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path,
                               calibration=grey_crops, accept_precision=True)
    assert backend.precision_verdict["status"] == "accepted"
    assert "ACCEPTED below the precision tolerance" in caplog.text
    (entry,) = _entries(tmp_path)
    record = json.loads(EngineCache.key_path(entry).read_text())
    assert record["precision_check"]["status"] == "accepted"
    assert record["precision_check"]["failures"] and "accuracy of" in record["precision_check"]["report"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):  # a later start, without the flag or crops
        again = load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path)
    assert again.compiled_artifacts()["encoder"].path == entry
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "ACCEPTED" in r.getMessage()]
    assert warnings and "va |diff|" in warnings[0].getMessage()


def test_good_int8_build_passes_once_and_keeps_its_verdict(model_bundle, tmp_path, faces, caplog):
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):
        backend = load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path, calibration=faces)
    assert backend.precision_verdict["status"] == "passed"
    assert "precision check PASSED" in caplog.text
    (entry,) = _entries(tmp_path)
    assert json.loads(EngineCache.key_path(entry).read_text())["precision_check"]["status"] == "passed"
    (projection,) = _entries(tmp_path, "projection")  # checked together with the encoder
    assert json.loads(EngineCache.key_path(projection).read_text())["precision_check"]["status"] == "passed"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):
        again = load_backend(model_bundle, "onnxruntime", "int8", engine_cache_dir=tmp_path, calibration=faces)
    assert not again.compiled_artifacts()["encoder"].built
    assert "passed when built" in caplog.text
    assert "accuracy of" not in caplog.text  # the check is not run again for a verified entry


def test_check_crops_are_sample_faces_plus_the_users(model_bundle, grey_crops):
    from abaw_ros.runtime import ModelBundle

    meta = ModelBundle.open(model_bundle).metadata
    crops = precision_check_crops(meta, grey_crops)
    assert crops.shape == (48 + 16, 3, meta.input_size, meta.input_size)
    assert crops[:48].std(axis=(2, 3)).min() > 0.1  # real faces first ...
    assert crops[48:].std(axis=(2, 3)).max() < 1e-6  # ... then the flat crops


def test_build_engine_refuses_a_bad_build_with_exit_2_and_the_report(model_bundle, tmp_path, grey_crops, capsys):
    folder = tmp_path / "grey"
    folder.mkdir()
    for i, crop in enumerate(grey_crops):
        cv2.imwrite(str(folder / f"{i:02d}.png"), crop)
    argv = ["build-engine", str(model_bundle), "--backend", "onnxruntime", "--precision", "int8",
            "--calibration", str(folder), "--engine-cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert "accuracy of onnxruntime int8 against onnxruntime fp32" in out and "precision check FAILED" in out
    assert out.strip().splitlines()[-1].startswith("error: onnxruntime int8: precision check failed")
    assert main([*argv, "--accept-precision"]) == 0
    assert "precision check ACCEPTED" in capsys.readouterr().out
