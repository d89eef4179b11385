"""Our import, fallback and selection logic against stand-in ``tensorrt`` / ``cuda`` packages
that have the API surface of TensorRT 10.3, 10.16 and 11.4 (and broken or old ones), on this
machine without a GPU. The stand-ins only answer what our code asks at import and in the
availability check; they never build or run an engine (tests/test_runtime_tensorrt.py does,
on a GPU).

The surfaces follow the Python bindings (NVIDIA/TensorRT python/src/infer/pyCore.cpp at
v10.3.0, v10.16, v11.1): 11 has no ``IInt8*Calibrator*``, no ``BuilderFlag.FP16`` /
``INT8``, no ``EXPLICIT_BATCH``, and ``STRONGLY_TYPED`` only as a deprecated no-op."""
from __future__ import annotations

import importlib
import logging
import sys
import textwrap

import pytest

from abaw_ros.cli import main
from abaw_ros.runtime import BackendUnavailableError, available_backends, load_backend

TRT_COMMON = '''
class Logger:
    class Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, severity=None):
        self.severity = severity


class ILogger:
    def __init__(self):
        pass


class MemoryPoolType:
    WORKSPACE = 0


class TensorIOMode:
    NONE, INPUT, OUTPUT = range(3)


def nptype(trt_type):
    raise TypeError("stand-in: no engines here")
'''

TRT_SURFACES = {
    "10.3.0": '''
__version__ = "10.3.0"


class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class BuilderFlag:
    FP16, BF16, INT8, REFIT, DISABLE_TIMING_CACHE, TF32 = 0, 1, 2, 3, 4, 5


class IInt8EntropyCalibrator2:
    def __init__(self):
        pass
''',
    "10.16.0": '''
__version__ = "10.16.0.72"


class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1
    PREFER_AOT_PYTHON_PLUGINS = 2
    PREFER_JIT_PYTHON_PLUGINS = 3


class BuilderFlag:
    FP16, BF16, INT8, REFIT, DISABLE_TIMING_CACHE, TF32 = 0, 1, 2, 3, 4, 5


class IInt8EntropyCalibrator2:
    def __init__(self):
        pass
''',
    "11.4.0": '''
__version__ = "11.4.0.106"


class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED = 0  # deprecated in 11.0, ignored
    PREFER_AOT_PYTHON_PLUGINS = 1
    PREFER_JIT_PYTHON_PLUGINS = 2


class BuilderFlag:
    REFIT, DISABLE_TIMING_CACHE, TF32 = 0, 1, 2
''',
}

CUDA_NO_GPU = '''
import enum


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorNoDevice = 100


def cudaGetErrorName(err):
    return cudaError_t.cudaSuccess, cudaError_t(err).name.encode()


def cudaGetDeviceCount():
    return cudaError_t.cudaErrorNoDevice, 0
'''


def _purge() -> None:
    for name in list(sys.modules):
        if name in ("tensorrt", "cuda") or name.startswith(("tensorrt.", "cuda.", "abaw_ros.runtime.tensorrt")):
            del sys.modules[name]


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """``standin(trt_source, cuda=True)`` makes a ``tensorrt`` package (and cuda-python's
    ``cuda.bindings.runtime`` reporting no GPU) importable for this test only."""
    _purge()
    roots = []

    def install(trt_source: str, cuda: bool = True) -> None:
        root = tmp_path / f"site{len(roots)}"
        roots.append(root)
        (root / "tensorrt").mkdir(parents=True)
        (root / "tensorrt" / "__init__.py").write_text(textwrap.dedent(trt_source))
        if cuda:
            (root / "cuda" / "bindings").mkdir(parents=True)
            (root / "cuda" / "__init__.py").write_text("")
            (root / "cuda" / "bindings" / "__init__.py").write_text("")
            (root / "cuda" / "bindings" / "runtime.py").write_text(CUDA_NO_GPU)
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()

    yield install
    _purge()


@pytest.mark.parametrize("version", sorted(TRT_SURFACES))
def test_auto_falls_back_to_onnxruntime_with_the_reason(standin, model_bundle, caplog, version):
    standin(TRT_COMMON + TRT_SURFACES[version])
    with caplog.at_level(logging.INFO, logger="abaw_ros.runtime"):
        backend = load_backend(model_bundle, backend="auto", precision="fp16")
    assert (backend.name, backend.precision) == ("onnxruntime", "fp32")
    skip = next(r.getMessage() for r in caplog.records if "skipping tensorrt" in r.getMessage())
    assert f"TensorRT {version.rsplit('.', 1)[0]}" in skip and "needs an NVIDIA GPU" in skip
    assert "cudaErrorNoDevice" in skip


@pytest.mark.parametrize("version", sorted(TRT_SURFACES))
def test_explicit_tensorrt_gives_the_reason_in_one_line(standin, model_bundle, version):
    standin(TRT_COMMON + TRT_SURFACES[version])
    with pytest.raises(BackendUnavailableError) as err:
        load_backend(model_bundle, backend="tensorrt", precision="int8")
    message = str(err.value)
    assert "\n" not in message and "needs an NVIDIA GPU" in message and "onnxruntime" in message
    assert available_backends()["tensorrt"] == message


def test_the_features_this_backend_reads(standin):
    standin(TRT_COMMON + TRT_SURFACES["11.4.0"])
    from abaw_ros.runtime.tensorrt_api import FEATURES as eleven

    assert (eleven.major, eleven.always_strongly_typed, eleven.weak_typing_flags, eleven.implicit_calibrators) == \
        (11, True, False, False)
    assert eleven.tf32_flag and eleven.network_flags() == 0  # strong typing is implicit; the flag is ignored
    _purge()
    standin(TRT_COMMON + TRT_SURFACES["10.3.0"])
    from abaw_ros.runtime.tensorrt_api import FEATURES as ten

    assert (ten.major, ten.always_strongly_typed, ten.weak_typing_flags, ten.implicit_calibrators) == \
        (10, False, True, True)
    assert ten.network_flags() == 1 << 1  # 1 << int(STRONGLY_TYPED): opt in on 10.x


def test_tensorrt_without_cuda_python_says_so(standin, model_bundle):
    standin(TRT_COMMON + TRT_SURFACES["11.4.0"], cuda=False)
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 11\.4\.0\.106 found, but cuda-python is not installed"):
        load_backend(model_bundle, backend="tensorrt")
    assert load_backend(model_bundle, backend="auto").name == "onnxruntime"


def test_tensorrt_that_does_not_load_is_unavailable_not_a_crash(standin, model_bundle):
    standin('raise OSError("libnvinfer.so.11: cannot open shared object file: No such file or directory")')
    reason = available_backends()["tensorrt"]
    assert reason.startswith("TensorRT is installed but does not import (OSError: libnvinfer.so.11")
    assert load_backend(model_bundle, backend="auto").name == "onnxruntime"


def test_an_unexpected_api_gap_at_import_is_unavailable_not_a_crash(standin, model_bundle):
    """What broke `auto` with TensorRT 11: an AttributeError while the backend module is
    imported (there: subclassing IInt8EntropyCalibrator2). Here: a TensorRT without a
    Logger.Severity."""
    standin(TRT_SURFACES["11.4.0"] + "\nclass ILogger:\n    pass\n\nclass Logger:\n    pass\n")
    reason = available_backends()["tensorrt"]
    assert reason.startswith("backend 'tensorrt' cannot be imported: AttributeError")
    assert load_backend(model_bundle, backend="auto").name == "onnxruntime"


def test_tensorrt_8_is_refused_with_the_version(standin, model_bundle):
    standin(TRT_COMMON + '__version__ = "8.6.2"\n')
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 8\.6\.2 found; this backend needs TensorRT 10"):
        load_backend(model_bundle, backend="tensorrt")


def test_build_engine_prints_one_line_and_exits_2(standin, model_bundle, tmp_path, capsys):
    standin(TRT_COMMON + TRT_SURFACES["11.4.0"])
    assert main(["build-engine", str(model_bundle), "--engine-cache-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("cannot build a tensorrt engine here: TensorRT 11.4.0.106 needs")
