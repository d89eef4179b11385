"""``abaw-affect build-engine`` and ``abaw-affect bench`` through the real command line."""
from __future__ import annotations

import json

from abaw_ros.cli import main
from abaw_ros.runtime import AUTO_CANDIDATES, available_backends


def test_build_engine_builds_then_reuses_the_int8_graph(model_bundle, tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    import cv2

    from abaw_ros.runtime.samples import lfw_face_crops

    for i, crop in enumerate(lfw_face_crops(16)):
        cv2.imwrite(str(crops / f"{i:03d}.png"), crop[:, :, ::-1])
    argv = ["build-engine", str(model_bundle), "--backend", "onnxruntime", "--precision", "int8",
            "--calibration", str(crops), "--engine-cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "encoder:" in first and "built in" in first
    # the precision check: the sample faces plus the 16 calibration crops
    assert "accuracy of onnxruntime int8 against onnxruntime fp32 (64 face crops" in first
    assert "precision check PASSED" in first
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "reused (key matches)" in again and "precision check PASSED" in again  # the verdict kept in the entry
    assert main([*argv, "--force-engine-update"]) == 0
    assert "force_engine_update=True" in capsys.readouterr().out


def test_build_engine_explains_a_missing_tensorrt(model_bundle, tmp_path, capsys):
    if available_backends()["tensorrt"] is None:
        return  # TensorRT runs here; test_runtime_tensorrt covers it
    rc = main(["build-engine", str(model_bundle), "--engine-cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 2 and "cannot build a tensorrt engine here" in out and "JetPack" in out


def test_bench_prints_every_available_backend_side_by_side(untrained_checkpoint, tmp_path, capsys):
    result = tmp_path / "bench.json"
    rc = main(["bench", "--model", str(untrained_checkpoint), "--iterations", "2", "--warmup", "1",
               "--batch", "2", "--crops", "32", "--engine-cache-dir", str(tmp_path / "cache"),
               "--json", str(result)])
    out = capsys.readouterr().out
    assert rc == 0
    runnable = {AUTO_CANDIDATES[name][0] for name, reason in available_backends().items() if reason is None}
    rows = json.loads(result.read_text())["rows"]
    measured = {(r["backend"], r["precision"]) for r in rows}
    assert {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")} <= measured
    assert {b for b, _ in measured} == runnable
    for r in rows:
        assert all(r[k] > 0 for k in ("encoder_ms_per_frame_b1", "encoder_ms_per_frame_batched",
                                      "head_ms_per_window_b1", "head_ms_per_window_batched"))
        assert abs(r["stream_fps"] - 1000 / (r["encoder_ms_per_frame_b1"] + r["head_ms_per_window_b1"])) < 1e-6
    assert "enc ms/frame" in out and "head ms/win" in out and "stream fps" in out
    assert "accuracy of onnxruntime int8 against onnxruntime fp32" in out
    assert "speed-up of onnxruntime int8 over onnxruntime fp32" in out
    if "tensorrt" not in runnable:
        assert "skipped tensorrt fp32, tensorrt fp16, tensorrt int8: TensorRT" in out
