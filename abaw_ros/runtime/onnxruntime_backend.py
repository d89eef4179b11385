"""ONNX Runtime backend: CPU by default, the CUDA execution provider where installed.

Threading: one session per graph, ``intra_op_num_threads`` = ``num_threads`` (default:
the cores this process may run on), ``inter_op_num_threads`` = 1 and sequential
execution; the two graphs never run at the same time, so parallelism inside operators is
all there is to gain.

``int8``: the encoder and, in bundles with the streaming graphs, the per-frame projection
graph are statically quantized (QDQ: int8 weights per channel, uint8 activations;
:data:`~abaw_ros.runtime.precision_graphs.INT8_CPU`) with ranges calibrated on face crops
(the projection on the fp32 encoder's maps of those crops); the heads stay fp32 (a small
share of the work, and dynamic int8 is slower than fp32 for this network). The quantized
graphs are cached like engines, keyed by the fp32 graph, the calibration crops, the recipe
and the ONNX Runtime version. They are used only after the precision check
(:func:`abaw_ros.runtime.accuracy.enforce_precision`, which runs the streaming path when
the projection is quantized) passed against fp32, or was explicitly accepted
(``accept_precision``).

``device="cuda"`` (``auto`` tries it before the CPU) runs fp32 on the CUDA execution
provider of ``onnxruntime-gpu``; it counts as available only when the provider is in the
build and a session really starts on it (ONNX Runtime otherwise falls back to the CPU
silently).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .accuracy import enforce_precision, precision_check_crops
from .base import BackendOptions, BackendUnavailableError, InferenceBackend, TensorSpec
from .bundle import ModelBundle, ModelSource
from .engine_cache import CachedEngine, EngineCache, EngineKey, onnx_sha256
from .precision_graphs import INT8_CPU, quantize_int8, quantize_int8_batches
from .preprocess import as_crop_list, preprocess_crops

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise BackendUnavailableError(f"ONNX Runtime is not installed ({exc}): `pip install onnxruntime`") from exc

LOG = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def session_options(num_threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads or usable_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Several sessions (detector, encoder, temporal head) run back to back in one process;
    # idle-spinning thread pools would take the cores from each other (measured: about 4x
    # slower per frame on 2 cores with spinning on).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def choose_providers(device: str | None, precision: str) -> list[str]:
    available = ort.get_available_providers()
    if device in (None, "auto"):
        # QDQ int8 graphs are a CPU feature of ONNX Runtime; fp32 uses the GPU when present.
        use_cuda = CUDA_PROVIDER in available and precision == "fp32"
    elif device == "cpu":
        use_cuda = False
    elif device.startswith("cuda"):
        if CUDA_PROVIDER not in available:
            raise BackendUnavailableError(
                f"device={device!r}: ONNX Runtime has no CUDA provider here (onnxruntime {ort.__version__}, "
                f"providers {available}); install onnxruntime-gpu instead of onnxruntime, or use device='cpu'"
            )
        if precision == "int8":
            raise BackendUnavailableError(
                "ONNX Runtime's int8 (QDQ) encoder runs on the CPU: use device='cpu', or backend='tensorrt' "
                "for int8 on an NVIDIA GPU"
            )
        use_cuda = True
    else:
        raise ValueError(f"device={device!r}: choose 'cpu', 'cuda' or 'cuda:<index>'")
    return [CUDA_PROVIDER, CPU_PROVIDER] if use_cuda else [CPU_PROVIDER]


# -- static int8 quantization ------------------------------------------------------------
def quantize_encoder_int8(fp32_path: Path, calibration: np.ndarray, out_path: Path, batch_size: int = 8) -> Path:
    """The CPU recipe of :func:`abaw_ros.runtime.precision_graphs.quantize_int8`."""
    return quantize_int8(fp32_path, calibration, out_path, INT8_CPU, batch_size)


def int8_cache(options: BackendOptions) -> EngineCache:
    return EngineCache(options.cache_root, suffix=".onnx")


def _int8_key(graph: Path) -> EngineKey:
    """The cache key of an int8 CPU graph quantized from ``graph`` (calibration added later)."""
    return EngineKey(
        onnx_sha256=onnx_sha256(graph),
        precision="int8",
        profiles=(),
        compiler=f"onnxruntime {ort.__version__}",
        device_name="cpu",
        recipe=INT8_CPU.describe(),
    )


def calibration_crops(bundle: ModelBundle, options: BackendOptions) -> np.ndarray | None:
    """``options.calibration`` as preprocessed crops for the int8 graphs (read once for
    all of them); None without calibration."""
    if options.calibration is None:
        return None
    crops = preprocess_crops(as_crop_list(options.calibration, options.calibration_limit), bundle.metadata)
    if len(crops) == 0:
        raise ValueError(f"calibration {_describe(options.calibration)} holds no face crops")
    return crops


def _int8_graph(graph: Path, stem: str, crops: np.ndarray | None, options: BackendOptions, missing: str,
                quantize: Callable[[Path], Path]) -> CachedEngine:
    """The int8 graph quantized from ``graph``: from the cache, or made now by
    ``quantize(tmp_dir) -> path`` when there are calibration ``crops`` (keyed by their
    hash); without crops, the newest graph quantized earlier (else ValueError
    ``missing``, ``{cache}`` filled in)."""
    key = _int8_key(graph)
    cache = int8_cache(options)
    if crops is None:
        found = cache.find_calibrated(key, stem) if not options.force_engine_update else None
        if found is None:
            raise ValueError(missing.format(cache=cache.directory))
        return found
    key = dataclasses.replace(key, extra=(("calibration_sha256", hashlib.sha256(crops.tobytes()).hexdigest()),))

    def build() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return quantize(Path(tmp)).read_bytes()

    return cache.get_or_build(key, build, stem=stem, force=options.force_engine_update)


def quantized_encoder(bundle: ModelBundle, options: BackendOptions, crops: np.ndarray | None) -> CachedEngine:
    """The int8 encoder graph for ``bundle``: from the cache, or quantized now with the
    calibration ``crops``; without crops, the newest graph quantized earlier for this encoder."""
    return _int8_graph(
        bundle.encoder, f"{bundle.directory.name}.encoder", crops, options,
        "precision='int8' needs calibration face crops: pass calibration=<folder of face-crop images> "
        "(or a list of HxWx3 uint8 RGB crops), or quantize once with `abaw-affect build-engine MODEL "
        "--backend onnxruntime --precision int8 --calibration DIR` into {cache}",
        lambda tmp: quantize_encoder_int8(bundle.encoder, crops, tmp / "encoder.int8.onnx"))


def _describe(calibration: object) -> str:
    return str(calibration) if isinstance(calibration, (str, Path)) else f"({type(calibration).__name__})"


def _preload_cuda_libraries() -> None:
    """onnxruntime-gpu >= 1.21 finds the CUDA/cuDNN libraries of the nvidia-* pip wheels
    only after ``preload_dlls``; a system CUDA needs nothing (the call is then harmless)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # the session start below reports what is really missing
            LOG.debug("onnxruntime.preload_dlls: %s", exc)


def quantize_projection_int8(fp32_path: Path, maps: list[np.ndarray], out_path: Path, batch_size: int = 8) -> Path:
    """Statically quantize the per-frame projection graph (the encoder's CPU recipe) with
    activation ranges from encoder maps ``maps`` (one ``(N, C, H, W)`` per level)."""
    names = [i.name for i in ort.InferenceSession(str(fp32_path), providers=[CPU_PROVIDER]).get_inputs()]
    batches = [{n: m[i:i + batch_size] for n, m in zip(names, maps, strict=True)}
               for i in range(0, len(maps[0]), batch_size)]
    return quantize_int8_batches(fp32_path, batches, out_path, INT8_CPU, pre_process=False)


def quantized_projection(bundle: ModelBundle, options: BackendOptions, crops: np.ndarray | None) -> CachedEngine:
    """The int8 per-frame projection graph (a linear map of the encoder's outputs, about
    two thirds of the encoder's FLOPs per frame), calibrated on the fp32 encoder's maps of
    the calibration ``crops``; cached and found like :func:`quantized_encoder`."""

    def quantize(tmp: Path) -> Path:
        encoder = ort.InferenceSession(str(bundle.encoder), sess_options=session_options(options.num_threads),
                                       providers=[CPU_PROVIDER])
        parts = [encoder.run(None, {encoder.get_inputs()[0].name: crops[i:i + 8]}) for i in range(0, len(crops), 8)]
        maps = [np.concatenate(level) for level in zip(*parts, strict=True)]
        return quantize_projection_int8(bundle.projection, maps, tmp / "projection.int8.onnx")

    return _int8_graph(
        bundle.projection, f"{bundle.directory.name}.projection", crops, options,
        "precision='int8' needs calibration face crops for the projection graph too: "
        "pass calibration=<folder of face-crop images>",
        quantize)


# -- the backend -------------------------------------------------------------------------
def _ordered(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    return list(wanted) if set(wanted) <= set(names) and len(wanted) == len(names) else list(names)


def _specs(items: Sequence[ort.NodeArg]) -> list[TensorSpec]:
    def dim(d: object) -> int | str:
        return d if isinstance(d, int) else str(d or "?")

    def dtype(onnx_type: str) -> str:
        name = onnx_type.removeprefix("tensor(").rstrip(")")
        return {"float": "float32", "double": "float64", "float16": "float16"}.get(name, name)

    return [TensorSpec(a.name, tuple(dim(d) for d in a.shape), dtype(a.type)) for a in items]


class OnnxRuntimeBackend(InferenceBackend):
    name = "onnxruntime"

    def __init__(self, bundle: ModelBundle, options: BackendOptions) -> None:
        if options.precision == "fp16":
            raise ValueError(
                "precision='fp16' is not offered by the ONNX Runtime backend: use 'fp32' or 'int8' "
                "(static QDQ, CPU), or backend='tensorrt' for fp16"
            )
        providers = choose_providers(options.device, options.precision)
        device = "cuda" if providers[0] == CUDA_PROVIDER else f"cpu x{options.num_threads or usable_cores()}"
        super().__init__(bundle.metadata, options.precision, device)
        self.bundle = bundle
        self.quantized: CachedEngine | None = None
        encoder_path = bundle.encoder
        crops = None
        if options.precision == "int8":
            crops = calibration_crops(bundle, options)  # read once for both int8 graphs
            self.quantized = quantized_encoder(bundle, options, crops)
            encoder_path = self.quantized.path
        opts = session_options(options.num_threads)
        if providers[0] == CUDA_PROVIDER:
            _preload_cuda_libraries()
        self._encoder = ort.InferenceSession(str(encoder_path), sess_options=opts, providers=providers)
        if providers[0] == CUDA_PROVIDER and CUDA_PROVIDER not in self._encoder.get_providers():
            raise BackendUnavailableError(
                f"ONNX Runtime's CUDA provider did not start (session providers {self._encoder.get_providers()}; "
                "no GPU, driver, CUDA or cuDNN libraries: see ONNX Runtime's log above); use device='cpu'"
            )
        self._head = ort.InferenceSession(str(bundle.temporal_head), sess_options=opts, providers=providers)
        self._enc_in = self._encoder.get_inputs()[0].name
        self._enc_out = _ordered([o.name for o in self._encoder.get_outputs()], self.metadata.feature_names)
        self._head_in = _ordered([i.name for i in self._head.get_inputs()], self.metadata.feature_names)
        self._head_out = self._head.get_outputs()[0].name
        # streaming graphs (bundles exported before them run encode + temporal only)
        self._projection = self._tubelet_head = None
        self.quantized_projection: CachedEngine | None = None
        if bundle.streams_tubelets:
            projection_path = bundle.projection
            if options.precision == "int8":
                self.quantized_projection = quantized_projection(bundle, options, crops)
                projection_path = self.quantized_projection.path
            self._projection = ort.InferenceSession(str(projection_path), sess_options=opts, providers=providers)
            self._tubelet_head = ort.InferenceSession(str(bundle.tubelet_head), sess_options=opts, providers=providers)
            self._proj_in = [i.name for i in self._projection.get_inputs()]
            self._proj_out = [o.name for o in self._projection.get_outputs()]
            self._tub_in = [i.name for i in self._tubelet_head.get_inputs()]
        else:
            LOG.info("bundle %s has no streaming graphs (%s, %s): the head runs on whole windows of "
                     "feature maps; re-export it with every graph (the default) for per-frame projections", bundle.directory,
                     "frame_projection.onnx", "tubelet_head.onnx")
        LOG.info("onnxruntime %s: providers %s, %s", ort.__version__, self._encoder.get_providers(), self.device)
        self.precision_verdict: dict[str, object] | None = None
        if self.quantized is not None:
            fp32 = dataclasses.replace(options, precision="fp32", device="cpu", calibration=None)
            self.precision_verdict = enforce_precision(
                self, self.compiled_artifacts(), int8_cache(options),
                reference=lambda: OnnxRuntimeBackend(bundle, fp32),
                crops=lambda: precision_check_crops(self.metadata, options.calibration),
                accept=options.accept_precision,
            )

    def compiled_artifacts(self) -> dict[str, CachedEngine]:
        artifacts = {"encoder": self.quantized, "projection": self.quantized_projection}
        return {graph: entry for graph, entry in artifacts.items() if entry is not None}

    def encode(self, crops: np.ndarray) -> list[np.ndarray]:
        crops = self.check_crops(crops)
        return self._encoder.run(self._enc_out, {self._enc_in: crops})

    def temporal(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        windows = self.check_windows(windows)
        return self._head.run([self._head_out], dict(zip(self._head_in, windows, strict=True)))[0]

    @property
    def streams_tubelets(self) -> bool:
        return self._projection is not None

    def project(self, maps: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._projection is None:
            raise NotImplementedError(self._no_tubelets())
        maps = self.check_projection_inputs(maps)
        return self._projection.run(self._proj_out, dict(zip(self._proj_in, maps, strict=True)))

    def temporal_tubelets(self, sums: Sequence[np.ndarray]) -> np.ndarray:
        if self._tubelet_head is None:
            raise NotImplementedError(self._no_tubelets())
        sums = self.check_tubelets(sums)
        return self._tubelet_head.run(None, dict(zip(self._tub_in, sums, strict=True)))[0]

    def _sessions(self) -> dict[str, ort.InferenceSession]:
        sessions = {"encoder": self._encoder, "temporal_head": self._head}
        if self._projection is not None:
            sessions.update(projection=self._projection, tubelet_head=self._tubelet_head)
        return sessions

    def input_specs(self) -> dict[str, list[TensorSpec]]:
        return {graph: _specs(s.get_inputs()) for graph, s in self._sessions().items()}

    def output_specs(self) -> dict[str, list[TensorSpec]]:
        return {graph: _specs(s.get_outputs()) for graph, s in self._sessions().items()}


def check_available(options: BackendOptions) -> None:
    choose_providers(options.device, options.precision)
    if options.precision == "fp16":
        raise BackendUnavailableError("ONNX Runtime backend offers fp32 and int8, not fp16")


def create_backend(source: ModelSource, options: BackendOptions) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(source.onnx_bundle(options.cache_root), options)
