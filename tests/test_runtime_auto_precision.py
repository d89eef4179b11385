"""``precision: auto`` (the shipped default): int8 where the build passes the accuracy gate
against fp32, fp32 otherwise, and the choice is logged."""
from __future__ import annotations

import logging

import numpy as np

import abaw_ros.runtime.opening as loading
from abaw_ros.config import PipelineConfig


def test_auto_runs_int8_when_the_gate_passes_and_fp32_when_it_refuses(model_bundle, tmp_path, monkeypatch, caplog):
    options = {"backend": "onnxruntime", "engine_cache_dir": tmp_path, "num_threads": 2}
    with caplog.at_level(logging.INFO):
        good = loading.load_auto_precision(model_bundle, **options)
    assert good.precision == "int8" and set(good.compiled_artifacts()) == {"encoder", "projection"}
    assert good.precision_verdict["status"] == "passed"
    assert "precision auto: int8" in caplog.text
    caplog.clear()
    # calibrated on flat grey images: activation ranges that clip real faces, refused by the gate
    monkeypatch.setattr(loading, "default_calibration_crops",
                        lambda: [np.full((112, 112, 3), 128, np.uint8) for _ in range(16)])
    with caplog.at_level(logging.INFO):
        fallback = loading.load_auto_precision(model_bundle, **options)
    assert fallback.precision == "fp32" and fallback.compiled_artifacts() == {}
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "auto" in r.getMessage())
    assert "running fp32" in warning and "precision check failed" in warning
    assert PipelineConfig().precision == "auto"
