"""TensorRT backend for Jetson (JetPack 6.1+, 7.x) and x86 NVIDIA GPUs: TensorRT 10.3,
10.13, 10.16 and 11.x through one code path.

Precision comes from the graph, never from builder flags (strongly typed networks; see
:mod:`abaw_ros.runtime.tensorrt_api` for what each TensorRT version offers):

- ``fp32``: the exported graphs as they are (TF32 off).
- ``fp16``: every graph converted to mixed fp16 with fp32 inputs/outputs and the
  sensitive ops (LayerNorm, reductions, softmax) kept fp32
  (:func:`~abaw_ros.runtime.precision_graphs.convert_fp16`).
- ``int8``: the per-frame encoder as a Q/DQ graph (symmetric int8,
  :data:`~abaw_ros.runtime.precision_graphs.INT8_TENSORRT`) quantized with the same
  calibration crops and preprocessing as the ONNX Runtime int8 encoder; the projection
  and the head as fp16 graphs. TensorRT's implicit calibrators (deprecated in 10.1,
  removed in 11) are not used on any version.

The temporal head runs the streaming form, as on every backend: per frame the encoder and
the projection engine, per due window the tubelet-head engine on the tubelet sums
(:mod:`abaw_ros.runtime.tensorrt_plan` says which engines a bundle gets; a bundle without
the streaming graphs gets the fused temporal-head engine instead). ``temporal`` on whole
windows is then computed through the same two engines (each frame projected, summed per
tubelet), so no fourth engine is built.

Engines are cached by :class:`EngineCache` under a key of the source ONNX hash,
precision, profiles, TensorRT version, GPU name and compute capability and the precision
recipe; every fp16/int8 configuration is checked against fp32 (ONNX Runtime, CPU) before
it is used (:func:`abaw_ros.runtime.accuracy.enforce_precision`: all engines of the
configuration together, through the projection and the tubelet sums when they stream).

Importing this module imports TensorRT and cuda-python (:mod:`.tensorrt_api`); it is
imported only when the TensorRT backend is tried, and raises
:class:`BackendUnavailableError` with the fix when either is missing or unusable.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .accuracy import enforce_precision, precision_check_crops, tubelet_sums
from .base import BackendOptions, BackendUnavailableError, InferenceBackend, TensorSpec
from .bundle import ModelBundle, ModelSource
from .engine_cache import CachedEngine, EngineCache, EngineKey, onnx_sha256
from .precision_graphs import INT8_TENSORRT, convert_fp16, fp16_recipe, quantize_int8
from .preprocess import as_crop_list, preprocess_crops
from .tensorrt_api import FEATURES, INSTALL_HELP, gpu_identity, trt
from .tensorrt_build import build_serialized_engine
from .tensorrt_plan import EngineStep, engine_plan
from .tensorrt_run import EngineRunner, create_stream, destroy_stream

LOG = logging.getLogger(__name__)

__all__ = ["INSTALL_HELP", "TensorRTBackend", "check_available", "create_backend", "graph_recipe"]


def graph_recipe(precision: str) -> str:
    """How the graph an engine of ``precision`` is built from is made (part of the key)."""
    made = {"fp32": lambda: "fp32 graph as exported", "fp16": lambda: fp16_recipe().describe(),
            "int8": INT8_TENSORRT.describe}[precision]()
    return f"{made}; strongly typed, TF32 off"


def _prepare_graph(source: Path, precision: str, out_dir: Path, calibration: np.ndarray | None) -> Path:
    """The ONNX graph TensorRT builds for ``precision``, written under ``out_dir``."""
    if precision == "fp32":
        return source
    if precision == "fp16":
        return convert_fp16(source, out_dir / f"{source.stem}.fp16.onnx")
    if calibration is None:
        raise ValueError("an int8 graph needs calibration crops")
    return quantize_int8(source, calibration, out_dir / f"{source.stem}.int8.onnx", INT8_TENSORRT)


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
        self.plan: dict[str, EngineStep] = {step.graph: step for step in engine_plan(bundle, options)}
        self.stream = create_stream()
        self.engines: dict[str, CachedEngine] = {}
        self.runners: dict[str, EngineRunner] = {}
        self.precision_verdict: dict[str, object] | None = None
        LOG.info("%s on %s; engines %s", FEATURES.describe(), self.device, ", ".join(self.plan))
        calibration: Callable[[], np.ndarray] = _memo(lambda: preprocess_crops(
            as_crop_list(options.calibration, options.calibration_limit), bundle.metadata))
        try:
            self._start(options, gpu_name, capability, calibration)
        except BaseException:  # free the GPU memory and stream of what did start
            self.close()
            raise

    def _start(self, options: BackendOptions, gpu_name: str, capability: str,
               calibration: Callable[[], np.ndarray]) -> None:
        for step in self.plan.values():
            entry = self._engine(step, options, gpu_name, capability, calibration)
            self.engines[step.graph] = entry
            self.runners[step.graph] = EngineRunner(entry.read_bytes(), self.stream, step.graph)
        names = self.metadata.feature_names
        self._encoder_outputs = _ordered(self.runners["encoder"].outputs, names)
        if self.streams_tubelets:
            projection, tubelets = self.runners["projection"], self.runners["tubelet_head"]
            self._projection_inputs = _ordered(projection.inputs, names)
            self._projection_outputs = _ordered(projection.outputs, [f"{n}_projection" for n in names])
            self._tubelet_inputs = _ordered(tubelets.inputs, [f"{n}_tubelets" for n in names])
        else:
            LOG.info("bundle %s has no streaming graphs (frame_projection.onnx, tubelet_head.onnx): the fused "
                     "temporal head runs on whole windows; re-export it with every graph (the default) for per-frame "
                     "projections",
                     self.bundle.directory)
            self._head_inputs = _ordered(self.runners["temporal_head"].inputs, names)
        if options.precision != "fp32":
            self.precision_verdict = enforce_precision(
                self, self.engines, self.cache,
                reference=lambda: _fp32_reference(self.bundle, options),
                crops=lambda: precision_check_crops(self.metadata, options.calibration),
                accept=options.accept_precision,
                chunk=min(options.max_batch_size, options.max_windows),
            )

    def _engine(self, step: EngineStep, options: BackendOptions, gpu_name: str, capability: str,
                calibration: Callable[[], np.ndarray]) -> CachedEngine:
        """The cached engine of one graph: reused when its key matches, built otherwise."""
        key = EngineKey(onnx_sha256(step.source), step.precision, step.profiles, f"tensorrt {trt.__version__}",
                        gpu_name, capability, recipe=graph_recipe(step.precision))
        stem = f"{self.bundle.directory.name}.{step.graph}"
        crops: np.ndarray | None = None
        if step.precision == "int8":
            if options.calibration is None:
                found = None if options.force_engine_update else self.cache.find_calibrated(key, stem)
                if found is None:
                    raise ValueError(
                        "precision='int8' needs calibration face crops: pass calibration=<folder of face-crop "
                        "images>, or build the engine once with `abaw-affect build-engine MODEL --precision int8 "
                        f"--calibration DIR` into {self.cache.directory}"
                    )
                return found
            crops = calibration()
            if len(crops) == 0:
                raise ValueError("calibration holds no face crops")
            key = dataclasses.replace(
                key, extra=(("calibration_sha256", hashlib.sha256(crops.tobytes()).hexdigest()),))

        def build() -> bytes:
            with tempfile.TemporaryDirectory(prefix="abaw-trt-") as tmp:
                prepared = _prepare_graph(step.source, step.precision, Path(tmp), crops)
                return build_serialized_engine(prepared, step.profiles, workspace_bytes=options.workspace_bytes,
                                               label=f"{step.graph} {step.precision}")

        return self.cache.get_or_build(key, build, stem=stem, force=options.force_engine_update)

    def compiled_artifacts(self) -> dict[str, CachedEngine]:
        return dict(self.engines)

    def encode(self, crops: np.ndarray) -> list[np.ndarray]:
        crops = self.check_crops(crops)
        encoder = self.runners["encoder"]
        out = encoder.run({encoder.inputs[0]: crops})
        return [out[n] for n in self._encoder_outputs]

    @property
    def streams_tubelets(self) -> bool:
        return "tubelet_head" in self.plan

    def project(self, maps: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not self.streams_tubelets:
            raise NotImplementedError(self._no_tubelets())
        maps = self.check_projection_inputs(maps)
        out = self.runners["projection"].run(dict(zip(self._projection_inputs, maps, strict=True)))
        return [out[n] for n in self._projection_outputs]

    def temporal_tubelets(self, sums: Sequence[np.ndarray]) -> np.ndarray:
        if not self.streams_tubelets:
            raise NotImplementedError(self._no_tubelets())
        sums = self.check_tubelets(sums)
        head = self.runners["tubelet_head"]
        return head.run(dict(zip(self._tubelet_inputs, sums, strict=True)))[head.outputs[0]]

    def temporal(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Whole windows: through the fused head engine where the bundle has no streaming
        graphs, else each frame projected (in batches the projection engine takes) and
        summed per tubelet, then the tubelet-head engine (the same outputs up to rounding)."""
        windows = self.check_windows(windows)
        if not self.streams_tubelets:
            head = self.runners["temporal_head"]
            return head.run(dict(zip(self._head_inputs, windows, strict=True)))[head.outputs[0]]
        b, t = windows[0].shape[:2]
        most = self.plan["tubelet_head"].max_batch
        if b > most:  # refused before projecting every frame
            raise ValueError(f"{b} windows: the tubelet_head engine was built for 1..{most} per call; split the "
                             "batch or rebuild with a larger max_windows")
        frames = [w.reshape(b * t, *w.shape[2:]) for w in windows]
        step = self.plan["projection"].max_batch
        parts = [self.project([f[i:i + step] for f in frames]) for i in range(0, b * t, step)]
        projections = [np.concatenate(level) for level in zip(*parts, strict=True)]
        return self.temporal_tubelets(tubelet_sums(projections, list(range(0, b * t, t)), t))

    def input_specs(self) -> dict[str, list[TensorSpec]]:
        return {graph: runner.specs()[0] for graph, runner in self.runners.items()}

    def output_specs(self) -> dict[str, list[TensorSpec]]:
        return {graph: runner.specs()[1] for graph, runner in self.runners.items()}

    def close(self) -> None:
        for runner in getattr(self, "runners", {}).values():
            runner.close()
        if getattr(self, "stream", None) is not None:
            destroy_stream(self.stream)
            self.stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may be gone already
            pass


def _memo(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """Call ``fn`` once, on first use (the crops are read only if an int8 build needs them)."""
    cell: list[np.ndarray] = []

    def get() -> np.ndarray:
        if not cell:
            cell.append(fn())
        return cell[0]

    return get


def _fp32_reference(bundle: ModelBundle, options: BackendOptions) -> InferenceBackend:
    """What the precision check compares with: the exported fp32 graphs in ONNX Runtime."""
    try:
        from .onnxruntime_backend import OnnxRuntimeBackend
    except BackendUnavailableError as exc:
        raise ValueError(f"checking a {options.precision} engine needs ONNX Runtime as the fp32 reference: {exc}") \
            from exc
    return OnnxRuntimeBackend(bundle, dataclasses.replace(options, precision="fp32", device="cpu", calibration=None))


def _device_index(device: str | None) -> int:
    if device in (None, "cuda", "gpu"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"device={device!r}: the TensorRT backend runs on 'cuda' or 'cuda:<index>'")


def check_available(options: BackendOptions) -> None:
    """Raise :class:`BackendUnavailableError` unless engines of ``options.precision``
    can be built here (a GPU, and the fp16 converter for fp16/int8)."""
    gpu_identity(_device_index(options.device))
    if options.precision in ("fp16", "int8"):
        try:
            fp16_recipe()
        except ValueError as exc:
            raise BackendUnavailableError(str(exc)) from exc


def create_backend(source: ModelSource, options: BackendOptions) -> TensorRTBackend:
    return TensorRTBackend(source.onnx_bundle(options.cache_root), options)
