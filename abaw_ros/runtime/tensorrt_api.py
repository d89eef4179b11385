"""The TensorRT and cuda-python this machine has, and what their APIs offer.

Importing this module imports ``tensorrt`` and cuda-python's runtime bindings; anything
that goes wrong (package missing, a shared library that does not load, a TensorRT older
than 10) raises :class:`BackendUnavailableError` with the fix. Nothing here needs a GPU
until :func:`gpu_identity` is called.

One code path serves TensorRT 10.3 (JetPack 6.1/6.2), 10.13 (JetPack 7.0/7.1), 10.16
(JetPack 7.2) and 11.x (x86 wheels, JetPack 7.2.2+). What differs between them, from the
Python bindings' sources (NVIDIA/TensorRT ``python/src/infer/pyCore.cpp`` at v10.3.0,
v10.16 and v11.1) and the 10.x -> 11.x migration guide (docs.nvidia.com/deeplearning/
tensorrt, "Removed Python APIs and Replacements", 11.4):

- ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists in 10.x (opt-in) and in 11.x
  (deprecated and ignored: networks are always strongly typed). We always build strongly
  typed networks, so precision comes from the ONNX graph alone.
- ``BuilderFlag.FP16`` / ``INT8``, ``IBuilderConfig.int8_calibrator``,
  ``set_calibration_profile`` and the ``IInt8*Calibrator*`` classes are removed in 11
  (deprecated since 10.1 / 10.12). They are not used here at all.
- ``BuilderFlag.TF32`` exists in all of them (cleared: fp32 means fp32).
- ``platform_has_fast_fp16`` / ``platform_has_tf32`` are gone in 11; not used.
- ``execute_async_v3(stream_handle)`` and ``set_tensor_address(name, memory)`` take
  integer addresses (``size_t``) and return a bool that must be checked.

cuda-python: ``cuda.bindings.runtime`` (12.6+ layout), falling back to ``cuda.cudart``.
cuda-python 13 deprecates ``int(cudaStream_t)``; :func:`stream_handle` uses
``cuda.bindings.utils.get_cuda_native_handle`` where it exists. The cudart calls
themselves are given the stream object.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from abaw_ros.errors import one_line

from .base import BackendUnavailableError

LOG = logging.getLogger(__name__)

INSTALL_HELP = (
    "On Jetson, TensorRT comes with JetPack 6.1 or newer (TensorRT 10.3, CUDA 12.6; JetPack 7.x: 10.13/10.16, "
    "CUDA 13): `sudo apt install nvidia-jetpack` (or just `python3-libnvinfer`; a venv needs "
    "--system-site-packages to see it), then `pip install 'cuda-python==<JetPack's CUDA>.*'`. "
    "On x86 with an NVIDIA driver: `pip install tensorrt-cu12 'cuda-python==12.*'` (tensorrt-cu13 and "
    "'cuda-python==13.*' for CUDA 13 drivers). "
    "Without a GPU use backend='onnxruntime' or backend='auto'. See docs/RUNTIME.md."
)


try:
    import tensorrt as trt
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise BackendUnavailableError(f"TensorRT is not installed (import tensorrt: {exc}). {INSTALL_HELP}") from exc
except Exception as exc:  # e.g. OSError: a libnvinfer that does not load
    raise BackendUnavailableError(
        one_line(f"TensorRT is installed but does not import ({type(exc).__name__}: {exc}). {INSTALL_HELP}")
    ) from exc


@dataclass(frozen=True)
class TensorRTFeatures:
    """What the imported TensorRT offers that this backend cares about."""

    version: str
    major: int
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (10.0+)
    always_strongly_typed: bool  # 11+: the flag is ignored, every network is strongly typed
    tf32_flag: bool  # BuilderFlag.TF32
    weak_typing_flags: bool  # BuilderFlag.FP16/INT8 (removed in 11; never set here)
    implicit_calibrators: bool  # IInt8EntropyCalibrator2 (removed in 11; never used here)

    @classmethod
    def of(cls, module: ModuleType) -> TensorRTFeatures:
        version = str(getattr(module, "__version__", "0"))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = 0
        flags = getattr(module, "NetworkDefinitionCreationFlag", None)
        builder_flags = getattr(module, "BuilderFlag", None)
        return cls(
            version=version,
            major=major,
            strongly_typed_flag=hasattr(flags, "STRONGLY_TYPED"),
            always_strongly_typed=major >= 11,
            tf32_flag=hasattr(builder_flags, "TF32"),
            weak_typing_flags=hasattr(builder_flags, "FP16") and hasattr(builder_flags, "INT8"),
            implicit_calibrators=hasattr(module, "IInt8EntropyCalibrator2"),
        )

    def unusable_reason(self) -> str | None:
        """Why this TensorRT cannot run the backend, or None."""
        if self.major < 10:
            return (f"TensorRT {self.version} found; this backend needs TensorRT 10 or newer (named I/O tensors, "
                    f"execute_async_v3, strongly typed networks). {INSTALL_HELP}")
        if not (self.strongly_typed_flag or self.always_strongly_typed):
            return f"TensorRT {self.version} has no strongly typed networks (NetworkDefinitionCreationFlag.STRONGLY_TYPED)"
        return None

    def network_flags(self) -> int:
        """``create_network`` flags: strongly typed (implicit from 11 on, where the flag is
        deprecated and ignored)."""
        if self.always_strongly_typed or not self.strongly_typed_flag:
            return 0
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    def describe(self) -> str:
        return (f"TensorRT {self.version}: strongly typed networks"
                f"{' (always)' if self.always_strongly_typed else ' (flag)'}, precision from the ONNX graph")


FEATURES = TensorRTFeatures.of(trt)
if FEATURES.unusable_reason() is not None:
    raise BackendUnavailableError(FEATURES.unusable_reason())

try:  # cuda-python >= 12.6 layout first, then the older one
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
except ImportError as exc:
    raise BackendUnavailableError(
        f"TensorRT {FEATURES.version} found, but cuda-python is not installed (needed for GPU buffers and "
        f"streams: {exc}). {INSTALL_HELP}"
    ) from exc
except Exception as exc:  # a cuda-python that does not load (driver/runtime mismatch)
    raise BackendUnavailableError(
        one_line(f"TensorRT {FEATURES.version} found, but cuda-python does not import ({type(exc).__name__}: "
                  f"{exc}). {INSTALL_HELP}")
    ) from exc

try:
    from cuda.bindings.utils import get_cuda_native_handle as _native_handle
except Exception:  # older cuda-python: int(stream) is the way there
    _native_handle = None


_SEVERITY = {
    trt.Logger.Severity.INTERNAL_ERROR: logging.ERROR,
    trt.Logger.Severity.ERROR: logging.ERROR,
    trt.Logger.Severity.WARNING: logging.WARNING,
    trt.Logger.Severity.INFO: logging.DEBUG,
    trt.Logger.Severity.VERBOSE: logging.DEBUG,
}


class _Logger(trt.ILogger):
    """Forwards TensorRT's messages to Python logging."""

    def __init__(self) -> None:
        trt.ILogger.__init__(self)

    def log(self, severity: Any, msg: str) -> None:
        LOG.log(_SEVERITY.get(severity, logging.INFO), "[TensorRT] %s", msg)


TRT_LOGGER = _Logger()


def cuda_call(result: Any) -> Any:
    """Check a cuda-python call's ``(error, *values)`` result and return the values."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA call failed: {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def stream_handle(stream: Any) -> int:
    """The native address of a ``cudaStream_t``, as ``execute_async_v3`` takes it."""
    if _native_handle is not None:
        try:
            return int(_native_handle(stream))
        except TypeError:  # a type the helper does not know: fall back
            pass
    return int(stream)


def gpu_identity(device_index: int = 0) -> tuple[str, str]:
    """``(GPU name, compute capability)``, or :class:`BackendUnavailableError` without one."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        reason = cudart.cudaGetErrorName(err)[1] if err != cudart.cudaError_t.cudaSuccess else b"0 devices"
        raise BackendUnavailableError(
            f"TensorRT {FEATURES.version} needs an NVIDIA GPU, none is usable here (cudaGetDeviceCount: "
            f"{reason.decode() if isinstance(reason, bytes) else reason}). Check the driver (nvidia-smi; on "
            "Jetson, that the process may open /dev/nvhost-*), or use backend='onnxruntime'. See the JetPack / "
            "driver notes in docs/RUNTIME.md."
        )
    if not 0 <= device_index < count:
        raise ValueError(f"device cuda:{device_index}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    cuda_call(cudart.cudaSetDevice(device_index))
    props = cuda_call(cudart.cudaGetDeviceProperties(device_index))
    name = props.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"
