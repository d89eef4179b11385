"""Running a TensorRT engine: device buffers, the execution context, one CUDA stream.

The name-based tensor API of TensorRT 10 and 11 (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``); buffers are sized once for the profile's
largest shapes and bound once, and every call copies inputs in, enqueues, copies outputs
out and synchronises the stream. CUDA memory and the stream go through cuda-python.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import TensorSpec
from .tensorrt_api import FEATURES, TRT_LOGGER, cuda_call, cudart, stream_handle, trt


class DeviceBuffer:
    """One ``cudaMalloc`` allocation, freed by :meth:`free` (safe twice)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int | None = int(cuda_call(cudart.cudaMalloc(self.nbytes)))

    def free(self) -> None:
        if self.ptr is not None:
            cudart.cudaFree(self.ptr)
            self.ptr = None


class EngineRunner:
    """One deserialized engine with its context and device buffers sized for the
    profile's largest shapes; inputs and outputs by tensor name."""

    def __init__(self, engine_bytes: bytes, stream: Any, label: str) -> None:
        self.label = label
        self.stream = stream
        self.runtime = trt.Runtime(TRT_LOGGER)
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT {FEATURES.version} could not deserialize the {label} engine (built by another TensorRT "
                "version or for another GPU?); rebuild it with force_engine_update=True"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for n in self.inputs:
            lo, _opt, hi = self.engine.get_tensor_profile_shape(n, 0)
            self.ranges[n] = (tuple(lo), tuple(hi))
            if not self.context.set_input_shape(n, tuple(hi)):
                raise RuntimeError(f"{label}: TensorRT rejected the profile's largest shape {tuple(hi)} for '{n}'")
        self.buffers: dict[str, DeviceBuffer] = {}
        for n in names:
            shape = tuple(self.context.get_tensor_shape(n))
            self.buffers[n] = DeviceBuffer(math.prod(shape) * self.dtypes[n].itemsize)
            if not self.context.set_tensor_address(n, self.buffers[n].ptr):
                raise RuntimeError(f"{label}: TensorRT refused the device address for tensor '{n}'")

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
            cuda_call(cudart.cudaMemcpyAsync(self.buffers[n].ptr, arr.ctypes.data, arr.nbytes, h2d, self.stream))
            staged.append(arr)
        if not self.context.execute_async_v3(stream_handle(self.stream)):
            raise RuntimeError(f"{self.label}: execute_async_v3 failed (see the TensorRT log)")
        results = {}
        for n in self.outputs:
            host = np.empty(tuple(self.context.get_tensor_shape(n)), self.dtypes[n])
            cuda_call(cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[n].ptr, host.nbytes, d2h, self.stream))
            results[n] = host
        cuda_call(cudart.cudaStreamSynchronize(self.stream))
        return {n: a.astype(np.float32, copy=False) for n, a in results.items()}

    def close(self) -> None:
        for buf in self.buffers.values():
            buf.free()
        self.buffers.clear()
        self.context = None
        self.engine = None


def create_stream() -> Any:
    return cuda_call(cudart.cudaStreamCreate())


def destroy_stream(stream: Any) -> None:
    cudart.cudaStreamDestroy(stream)
