"""Choosing a backend: clear errors for bad names, paths and precisions; TensorRT asked for
where it is missing says what is missing and how to fix it; ``auto`` falls back and logs
why."""
from __future__ import annotations

import importlib.util
import logging

import pytest

from abaw_ros.runtime import BACKENDS, BackendUnavailableError, available_backends, load_backend


def tensorrt_usable() -> bool:
    return available_backends()["tensorrt"] is None


needs_no_tensorrt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and tensorrt_usable(),
    reason="TensorRT and a GPU are present here: the missing-TensorRT behaviour cannot be observed",
)


def test_unknown_backend_names_value_and_choices(model_bundle):
    with pytest.raises(ValueError) as err:
        load_backend(model_bundle, backend="openvino")
    message = str(err.value)
    assert "'openvino'" in message and all(name in message for name in ["auto", *BACKENDS])


def test_unknown_precision_names_value_and_choices(model_bundle):
    with pytest.raises(ValueError, match=r"precision='bf16'.*fp32.*fp16.*int8"):
        load_backend(model_bundle, backend="onnxruntime", precision="bf16")


def test_missing_model_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_backend(missing)


def test_bundle_without_graphs_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"lacks \['encoder.onnx', 'temporal_head.onnx'\]"):
        load_backend(tmp_path, backend="onnxruntime")


def test_unsupported_file_type_is_named(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported file type '.tflite'"):
        load_backend(bad)


@needs_no_tensorrt
def test_tensorrt_missing_says_what_and_how(model_bundle):
    with pytest.raises(BackendUnavailableError) as err:
        load_backend(model_bundle, backend="tensorrt", precision="fp16")
    message = str(err.value)
    missing_package = importlib.util.find_spec("tensorrt") is None
    if missing_package:
        assert "TensorRT is not installed" in message
    else:
        assert "GPU" in message or "cuda-python" in message
    assert "JetPack" in message and "onnxruntime" in message  # how to fix, and the alternative


@needs_no_tensorrt
def test_auto_falls_back_to_onnxruntime_and_logs_why(model_bundle, caplog):
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):
        backend = load_backend(model_bundle, backend="auto")
    assert backend.name == "onnxruntime" and backend.precision == "fp32"
    text = caplog.text
    assert "skipping tensorrt" in text
    assert "using onnxruntime" in text


@needs_no_tensorrt
def test_auto_with_fp16_runs_fp32_on_cpu_and_warns(model_bundle, caplog):
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):
        backend = load_backend(model_bundle, backend="auto", precision="fp16")
    assert (backend.name, backend.precision) == ("onnxruntime", "fp32")
    assert "offers no fp16" in caplog.text


def test_onnxruntime_fp16_is_refused_with_the_alternatives(model_bundle):
    with pytest.raises(BackendUnavailableError, match="fp32 and int8"):
        load_backend(model_bundle, backend="onnxruntime", precision="fp16")


def test_int8_without_calibration_asks_for_face_crops(model_bundle, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        load_backend(model_bundle, backend="onnxruntime", precision="int8", engine_cache_dir=tmp_path)


def test_torch_backend_needs_the_checkpoint(model_bundle):
    with pytest.raises(ValueError, match=r"needs a checkpoint \(.pt\).*ONNX bundle"):
        load_backend(model_bundle, backend="torch")


def test_torch_refuses_int8_and_cpu_fp16(untrained_checkpoint):
    with pytest.raises(BackendUnavailableError, match="not int8"):
        load_backend(untrained_checkpoint, backend="torch", precision="int8")
    if available_backends("fp16")["torch"] is not None:
        with pytest.raises(BackendUnavailableError, match="fp16 on CUDA only"):
            load_backend(untrained_checkpoint, backend="torch", precision="fp16")


def test_bad_batch_options_are_named(model_bundle):
    with pytest.raises(ValueError, match="opt_batch_size=32, max_batch_size=16"):
        load_backend(model_bundle, backend="onnxruntime", opt_batch_size=32)
    with pytest.raises(TypeError, match="max_batchsize"):
        load_backend(model_bundle, backend="onnxruntime", max_batchsize=4)


needs_cpu_onnxruntime = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is not None
    and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
    reason="onnxruntime-gpu is installed here: the CPU-only behaviour cannot be observed",
)


@needs_cpu_onnxruntime
def test_onnxruntime_cuda_is_tried_before_the_cpu_and_skipped_with_the_reason(model_bundle, caplog):
    reasons = available_backends()
    assert list(reasons) == ["tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch"]
    assert "no CUDA provider" in reasons["onnxruntime-cuda"] and "onnxruntime-gpu" in reasons["onnxruntime-cuda"]
    assert reasons["onnxruntime-cpu"] is None
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):
        backend = load_backend(model_bundle, backend="auto")
    assert backend.device.startswith("cpu")
    text = caplog.text
    assert text.index("skipping onnxruntime-cuda") < text.index("using onnxruntime-cpu")
    with pytest.raises(BackendUnavailableError, match="no CUDA provider"):
        load_backend(model_bundle, backend="onnxruntime", device="cuda")


def test_auto_with_a_device_tries_only_what_runs_there(model_bundle, caplog):
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):
        backend = load_backend(model_bundle, backend="auto", device="cpu")
    assert backend.name == "onnxruntime" and backend.device.startswith("cpu")
    assert "skipping onnxruntime-cuda: device='cpu' asked" in caplog.text


def test_onnxruntime_int8_on_cuda_is_refused_with_the_way_out():
    reason = available_backends("int8", device="cuda")["onnxruntime-cuda"]
    assert "CUDA provider" in reason or "int8 (QDQ) encoder runs on the CPU" in reason
