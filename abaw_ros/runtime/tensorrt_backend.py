"""TensorRT backend (TensorRT 10.x Python API), for Jetson (JetPack) and x86 NVIDIA GPUs.

Engines are built from the exported ONNX graphs with one optimisation profile over the
batch dimension, cached on disk by :class:`EngineCache` and rebuilt when anything they
depend on changes. Execution uses the name-based tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``).

CUDA memory and streams go through ``cuda-python`` (the ``cudart`` runtime bindings):
it is a small pip package that matches the CUDA of JetPack and of desktop drivers, so the
deployment image needs no CUDA build of PyTorch.

Precision:
- ``fp32``: both graphs in fp32 (TF32 disabled).
- ``fp16``: both graphs with the FP16 builder flag (TensorRT keeps fp32 where needed).
- ``int8``: the per-frame encoder in INT8, calibrated with an entropy calibrator
  (``IInt8EntropyCalibrator2``) on a folder of face crops, FP16 allowed as fallback;
  the temporal head in FP16. The encoder runs on every face in every frame and is
  almost all of the compute; the head runs once per window on small feature maps and
  its LayerNorm/MLP chain gains little from INT8.

This module imports TensorRT at import time; it is imported only when the TensorRT
backend is chosen, and raises :class:`BackendUnavailableError` with the fix when
TensorRT, cuda-python or a GPU is missing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendOptions, BackendUnavailableError, InferenceBackend, TensorSpec
from .bundle import ModelBundle, ModelSource
from .engine_cache import CachedEngine, EngineCache, EngineKey, InputProfile, atomic_write_bytes, onnx_sha256
from .preprocess import as_crop_list, preprocess_crops

LOG = logging.getLogger(__name__)

INSTALL_HELP = (
    "On Jetson, TensorRT 10 comes with JetPack 6.1 or newer (TensorRT 10.3, CUDA 12.6): "
    "`sudo apt install nvidia-jetpack` (or just `python3-libnvinfer`; a venv needs "
    "--system-site-packages to see it), then `pip install 'cuda-python==12.6.*'`. "
    "On x86 with an NVIDIA driver: `pip install tensorrt-cu12 'cuda-python==12.*'` (cu13 for CUDA 13). "
    "Without a GPU use backend='onnxruntime' or backend='auto'. See docs/RUNTIME.md."
)

try:
    import tensorrt as trt
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise BackendUnavailableError(f"TensorRT is not installed (import tensorrt: {exc}). {INSTALL_HELP}") from exc

try:  # cuda-python >= 12.6 layout first, then the older one
    from cuda.bindings import runtime as cudart
except ImportError:  # pragma: no cover - depends on the machine
    try:
        from cuda import cudart
    except ImportError as exc:
        raise BackendUnavailableError(
            f"cuda-python is not installed (needed for GPU buffers and streams: {exc}). {INSTALL_HELP}"
        ) from exc

_TRT_MAJOR = int(trt.__version__.split(".")[0])
if _TRT_MAJOR < 10:  # pragma: no cover - depends on the machine
    raise BackendUnavailableError(
        f"TensorRT {trt.__version__} found; this backend uses the TensorRT 10 API (named I/O tensors, "
        f"execute_async_v3). {INSTALL_HELP}"
    )

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


_TRT_LOGGER = _Logger()


# -- CUDA helpers (cuda-python runtime API) -----------------------------------------------
def _cuda(result: Any) -> Any:
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


def gpu_identity(device_index: int = 0) -> tuple[str, str]:
    """``(GPU name, compute capability)``, or :class:`BackendUnavailableError` without one."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        reason = cudart.cudaGetErrorName(err)[1] if err != cudart.cudaError_t.cudaSuccess else b"0 devices"
        raise BackendUnavailableError(
            f"TensorRT needs an NVIDIA GPU, none is usable here (cudaGetDeviceCount: "
            f"{reason.decode() if isinstance(reason, bytes) else reason}). Check the driver (nvidia-smi; on "
            "Jetson, that the process may open /dev/nvhost-*), or use backend='onnxruntime'."
        )
    if not 0 <= device_index < count:
        raise ValueError(f"device cuda:{device_index}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    _cuda(cudart.cudaSetDevice(device_index))
    props = _cuda(cudart.cudaGetDeviceProperties(device_index))
    name = props.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


class _DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int | None = int(_cuda(cudart.cudaMalloc(self.nbytes)))

    def free(self) -> None:
        if self.ptr is not None:
            cudart.cudaFree(self.ptr)
            self.ptr = None


# -- building --------------------------------------------------------------------------
class FaceCropCalibrator(trt.IInt8EntropyCalibrator2):
    """Feeds preprocessed face crops to TensorRT's INT8 entropy calibration. The
    calibration table is kept beside the engines and reused while the crops and graph
    stay the same (its file name holds both hashes)."""

    def __init__(self, crops: np.ndarray, batch_size: int, cache_file: Path) -> None:
        trt.IInt8EntropyCalibrator2.__init__(self)
        if len(crops) < batch_size:
            batch_size = len(crops)
        self.batch_size = batch_size
        self.crops = np.ascontiguousarray(crops[: len(crops) // batch_size * batch_size], np.float32)
        self.cache_file = cache_file
        self.index = 0
        self.buffer = _DeviceBuffer(self.crops[:batch_size].nbytes)

    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names: list[str]) -> list[int] | None:
        if self.index + self.batch_size > len(self.crops):
            return None
        batch = np.ascontiguousarray(self.crops[self.index : self.index + self.batch_size])
        _cuda(cudart.cudaMemcpy(self.buffer.ptr, batch.ctypes.data, batch.nbytes,
                                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
        self.index += self.batch_size
        return [self.buffer.ptr]

    def read_calibration_cache(self) -> bytes | None:
        if self.cache_file.is_file():
            LOG.info("using INT8 calibration table %s", self.cache_file)
            return self.cache_file.read_bytes()
        return None

    def write_calibration_cache(self, cache: Any) -> None:
        atomic_write_bytes(self.cache_file, bytes(cache))

    def free(self) -> None:
        self.buffer.free()


def network_profiles(onnx_path: Path, opt_batch: int, max_batch: int) -> tuple[InputProfile, ...]:
    """Optimisation profiles for every input of ``onnx_path``: the leading (batch)
    dimension spans 1..max_batch, every other dimension must be static."""
    builder = trt.Builder(_TRT_LOGGER)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    _parse(network, onnx_path)
    return _profiles_of(network, onnx_path, opt_batch, max_batch)


def _parse(network: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, _TRT_LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    return parser


def _profiles_of(network: Any, onnx_path: Path, opt_batch: int, max_batch: int) -> tuple[InputProfile, ...]:
    profiles = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ValueError(
                f"{onnx_path.name} input '{tensor.name}' has shape {shape}: only the batch dimension may be dynamic"
            )
        if shape[0] >= 0:  # static batch: the profile is that shape
            profiles.append(InputProfile(tensor.name, shape, shape, shape))
            continue
        rest = shape[1:]
        profiles.append(InputProfile(tensor.name, (1, *rest), (min(opt_batch, max_batch), *rest), (max_batch, *rest)))
    return tuple(profiles)


def build_serialized_engine(
    onnx_path: Path,
    precision: str,
    profiles: Sequence[InputProfile],
    *,
    calibrator: FaceCropCalibrator | None = None,
    workspace_bytes: int = 1 << 30,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine for ``precision``."""
    builder = trt.Builder(_TRT_LOGGER)
    network = builder.create_network(0)
    _parser = _parse(network, onnx_path)  # the parser must outlive the build
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    if precision == "fp32":
        # TensorRT enables TF32 by default on Ampere and newer (Orin included); fp32 means fp32 here.
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in later 10.x releases
            LOG.warning("this GPU has no fast FP16; %s engine may be slow", precision)
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibrator is None:
            raise ValueError("an INT8 engine needs a calibrator (face crops)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        # Calibration runs at one fixed shape: the calibrator's batch.
        calib = builder.create_optimization_profile()
        for p in profiles:
            shape = (calibrator.batch_size, *p.opt[1:])
            calib.set_shape(p.name, shape, shape, shape)
        config.set_calibration_profile(calib)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine from {onnx_path} (see the log above)")
    return bytes(serialized)


# -- running ---------------------------------------------------------------------------
class _EngineRunner:
    """One deserialized engine with its context and device buffers sized for the
    profile's largest shapes; inputs and outputs by tensor name."""

    def __init__(self, engine_bytes: bytes, stream: Any, label: str) -> None:
        self.label = label
        self.stream = stream
        self.runtime = trt.Runtime(_TRT_LOGGER)
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT could not deserialize the {label} engine (built by another TensorRT version or "
                "for another GPU?); rebuild it with force_engine_update=True"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.ranges = {}
        for n in self.inputs:
            lo, _opt, hi = self.engine.get_tensor_profile_shape(n, 0)
            self.ranges[n] = (tuple(lo), tuple(hi))
            self.context.set_input_shape(n, tuple(hi))
        self.buffers: dict[str, _DeviceBuffer] = {}
        for n in names:
            shape = tuple(self.context.get_tensor_shape(n))
            self.buffers[n] = _DeviceBuffer(math.prod(shape) * self.dtypes[n].itemsize)
            self.context.set_tensor_address(n, self.buffers[n].ptr)

    def specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(n: str) -> TensorSpec:
            shape = tuple("N" if d < 0 else int(d) for d in self.engine.get_tensor_shape(n))
            return TensorSpec(n, shape, self.dtypes[n].name)

        return [spec(n) for n in self.inputs], [spec(n) for n in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        staged = []  # host arrays must live until the stream is synchronised
        for n in self.inputs:
            arr = np.ascontiguousarray(feeds[n], dtype=self.dtypes[n])
            lo, hi = self.ranges[n]
            if len(arr.shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, arr.shape, hi, strict=True)):
                raise ValueError(
                    f"{self.label} input '{n}' of shape {arr.shape}: the engine was built for {lo}..{hi}; "
                    "split the batch or rebuild with a larger max_batch_size / max_windows"
                )
            if not self.context.set_input_shape(n, arr.shape):
                raise RuntimeError(f"{self.label}: TensorRT rejected input shape {arr.shape} for '{n}'")
            _cuda(cudart.cudaMemcpyAsync(self.buffers[n].ptr, arr.ctypes.data, arr.nbytes, h2d, self.stream))
            staged.append(arr)
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"{self.label}: execute_async_v3 failed (see the TensorRT log)")
        results = {}
        for n in self.outputs:
            host = np.empty(tuple(self.context.get_tensor_shape(n)), self.dtypes[n])
            _cuda(cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[n].ptr, host.nbytes, d2h, self.stream))
            results[n] = host
        _cuda(cudart.cudaStreamSynchronize(self.stream))
        return {n: a.astype(np.float32, copy=False) for n, a in results.items()}

    def close(self) -> None:
        for buf in self.buffers.values():
            buf.free()
        self.buffers.clear()
        self.context = None
        self.engine = None


def _ordered(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """Engine tensor names in ``wanted`` order when they match, else graph order."""
    return list(wanted) if set(wanted) <= set(names) and len(wanted) == len(names) else list(names)


class TensorRTBackend(InferenceBackend):
    name = "tensorrt"

    def __init__(self, bundle: ModelBundle, options: BackendOptions) -> None:
        device_index = _device_index(options.device)
        gpu_name, capability = gpu_identity(device_index)
        super().__init__(bundle.metadata, options.precision, f"cuda:{device_index} {gpu_name} (sm {capability})")
        self.bundle = bundle
        self.cache = EngineCache(options.cache_root, suffix=".engine")
        self.stream = _cuda(cudart.cudaStreamCreate())
        compiler = f"tensorrt {trt.__version__}"
        head_precision = "fp16" if options.precision == "int8" else options.precision
        self.engines: dict[str, CachedEngine] = {}
        runners = {}
        for graph, onnx_path, precision, max_batch in (
            ("encoder", bundle.encoder, options.precision, options.max_batch_size),
            ("temporal_head", bundle.temporal_head, head_precision, options.max_windows),
        ):
            opt = min(options.opt_batch_size, max_batch) if graph == "encoder" else 1
            profiles = network_profiles(onnx_path, opt, max_batch)
            source_hash = onnx_sha256(onnx_path)
            key = EngineKey(source_hash, precision, profiles, compiler, gpu_name, capability)
            stem = f"{bundle.directory.name}.{graph}"
            calibration: np.ndarray | None = None
            if precision == "int8":
                if options.calibration is None:
                    found = None if options.force_engine_update else self.cache.find_calibrated(key, stem)
                    if found is None:
                        raise ValueError(
                            "precision='int8' needs calibration face crops: pass calibration=<folder of face-crop "
                            "images>, or build the engine once with `abaw-affect build-engine MODEL --precision int8 "
                            f"--calibration DIR` into {self.cache.directory}"
                        )
                    self.engines[graph] = found
                    runners[graph] = _EngineRunner(found.read_bytes(), self.stream, graph)
                    continue
                calibration = self._calibration_crops(options)
                key = dataclasses.replace(
                    key, extra=(("calibration_sha256", hashlib.sha256(calibration.tobytes()).hexdigest()),)
                )

            def build(onnx_path=onnx_path, precision=precision, profiles=profiles, calibration=calibration,
                      key=key) -> bytes:
                calibrator = None
                if calibration is not None:
                    table = self.cache.directory / f"{onnx_path.stem}.{key.digest()[:16]}.calib"
                    calibrator = FaceCropCalibrator(calibration, min(8, options.max_batch_size), table)
                try:
                    return build_serialized_engine(onnx_path, precision, profiles, calibrator=calibrator,
                                                   workspace_bytes=options.workspace_bytes)
                finally:
                    if calibrator is not None:
                        calibrator.free()

            cached = self.cache.get_or_build(key, build, stem=stem, force=options.force_engine_update)
            self.engines[graph] = cached
            runners[graph] = _EngineRunner(cached.read_bytes(), self.stream, graph)
        self._encoder = runners["encoder"]
        self._head = runners["temporal_head"]
        meta = self.metadata
        self._encoder_outputs = _ordered(self._encoder.outputs, meta.feature_names)
        self._head_inputs = _ordered(self._head.inputs, meta.feature_names)

    def _calibration_crops(self, options: BackendOptions) -> np.ndarray:
        return preprocess_crops(as_crop_list(options.calibration, options.calibration_limit), self.metadata)

    def compiled_artifacts(self) -> dict[str, CachedEngine]:
        return dict(self.engines)

    def encode(self, crops: np.ndarray) -> list[np.ndarray]:
        crops = self.check_crops(crops)
        out = self._encoder.run({self._encoder.inputs[0]: crops})
        return [out[n] for n in self._encoder_outputs]

    def temporal(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        windows = self.check_windows(windows)
        out = self._head.run(dict(zip(self._head_inputs, windows, strict=True)))
        return out[self._head.outputs[0]]

    def input_specs(self) -> dict[str, list[TensorSpec]]:
        return {"encoder": self._encoder.specs()[0], "temporal_head": self._head.specs()[0]}

    def output_specs(self) -> dict[str, list[TensorSpec]]:
        return {"encoder": self._encoder.specs()[1], "temporal_head": self._head.specs()[1]}

    def close(self) -> None:
        for runner in (getattr(self, "_encoder", None), getattr(self, "_head", None)):
            if runner is not None:
                runner.close()
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may be gone already
            pass


def _device_index(device: str | None) -> int:
    if device in (None, "cuda", "gpu"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"device={device!r}: the TensorRT backend runs on 'cuda' or 'cuda:<index>'")


def check_available(options: BackendOptions) -> None:
    """Raise :class:`BackendUnavailableError` unless an engine can be built here."""
    gpu_identity(_device_index(options.device))


def create_backend(source: ModelSource, options: BackendOptions) -> TensorRTBackend:
    return TensorRTBackend(source.onnx_bundle(options.cache_root), options)
