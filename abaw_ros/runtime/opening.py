"""The backend a :class:`~abaw_ros.config.PipelineConfig` asks for, with every "auto"
resolved here: the backend (:func:`~abaw_ros.runtime.loading.load_backend`), the
precision (int8 where it passes the accuracy gate), the untrained stand-in for an empty
``model_file_path`` and the engine directory of ``engine_file_path``. The pipeline, the
node and the offline tools call :func:`open_backend` and decide none of it themselves.
"""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path

from abaw_ros.config import ConfigError, ModelFileError, PipelineConfig
from abaw_ros.errors import one_line

from .base import BackendUnavailableError, InferenceBackend
from .engine_cache import default_cache_dir
from .identity import ModelIdentity
from .loading import load_backend

__all__ = ["UNTRAINED_WARNING", "check_backend_fits", "engine_cache_dir", "load_auto_precision", "open_backend",
           "untrained_checkpoint"]

LOG = logging.getLogger(__name__)
UNTRAINED_WARNING = (
    "model_file_path is empty: running an UNTRAINED network built on the fly. Its affect "
    "values are placeholders, not estimates. Set model_file_path to a trained checkpoint "
    "(.pt) or an exported model bundle directory."
)
_UNTRAINED_SEED = 0


def untrained_checkpoint(window_length: int, cache_dir: Path | None = None) -> Path:
    """A checkpoint of a randomly initialised network (fixed seed) for this window length,
    written once under the cache and reused (needs torch and timm).

    The file's SHA-256 is recorded beside it when it is written and checked before every
    use; a file that no longer matches is logged and written again. Several processes
    may call this at once: the check and the write happen under a file lock, and the
    file is written under a unique temporary name and renamed into place."""
    from .bundle import file_lock
    from .engine_cache import file_sha256

    root = cache_dir or default_cache_dir()
    path = root / "untrained" / f"affect_net_T{window_length}.pt"
    record = path.with_name(path.name + ".sha256")
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root / "locks" / f"untrained-{path.name}.lock"):
        if path.is_file():
            try:
                recorded = record.read_text(encoding="utf-8").strip()
            except OSError:
                recorded = ""
            if recorded and file_sha256(path) == recorded:
                return path
            LOG.warning("cached untrained checkpoint %s is not used: %s; writing it again", path,
                        "it does not match the SHA-256 recorded when it was written" if recorded
                        else f"no SHA-256 was recorded for it ({record.name} missing)")
        _write_untrained(path, record, window_length)
    return path


def _write_untrained(path: Path, record: Path, window_length: int) -> None:
    import torch

    from abaw_ros.models import create_affect_net, save_checkpoint

    from .engine_cache import file_sha256

    with torch.random.fork_rng():  # fixed weights without touching the caller's RNG
        torch.manual_seed(_UNTRAINED_SEED)
        model = create_affect_net(window_length=window_length).eval()
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_checkpoint(tmp, model, trained=False)
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{record.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(digest + "\n")
    os.replace(tmp_name, record)


def engine_cache_dir(config: PipelineConfig) -> Path | None:
    """``engine_file_path`` names where compiled engines live: a directory, or a file whose
    directory is used (engine files are named by their cache key)."""
    if not config.engine_file_path:
        return None
    path = Path(config.engine_file_path).expanduser()
    return path.parent if path.suffix else path


def open_backend(config: PipelineConfig) -> InferenceBackend:
    """The backend for ``config`` (an untrained network when ``model_file_path`` is
    empty), warmed up when ``config.warmup``; its ``identity`` names the model the same
    way for every tool. Raises ConfigError when the model's window length differs from
    the config's, ModelFileError when the model file cannot be run."""
    if config.model_file_path:
        model_path = Path(config.model_file_path).expanduser()
    else:
        LOG.warning(UNTRAINED_WARNING)
        model_path = untrained_checkpoint(config.window_length)
    try:
        options = {"backend": config.backend, "engine_cache_dir": engine_cache_dir(config),
                   "force_engine_update": config.force_engine_update, "num_threads": config.num_threads}
        if config.precision == "auto":
            backend = load_auto_precision(model_path, **options)
        else:
            backend = load_backend(model_path, precision=config.precision, **options)
        backend.identity = ModelIdentity(config.model_file_path, backend.identity.loaded)
        check_backend_fits(config, backend)
        if config.warmup:
            backend.warmup()
    except Exception as exc:
        if not _is_model_file_fault(exc):
            raise
        shown = config.model_file_path or str(model_path)
        raise ModelFileError(f"model_file_path={shown!r}: cannot be loaded "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
    return backend


def _is_model_file_fault(exc: Exception) -> bool:
    """Errors that mean "this model file cannot be run", raised by the runtimes' own
    parsers: ONNX Runtime's InvalidProtobuf / InvalidGraph / Fail (plain Exceptions of
    ``onnxruntime.capi``), protobuf's DecodeError, a damaged file's OSError or EOFError, an
    impossible allocation. Our own errors (ModelFileError, ConfigError, a missing backend)
    already name the value and pass through unchanged."""
    if isinstance(exc, (ModelFileError, ConfigError, FileNotFoundError)):
        return False
    if isinstance(exc, (EOFError, pickle.UnpicklingError, MemoryError, OSError)):
        return True
    module = type(exc).__module__ or ""
    return module.startswith(("onnxruntime", "onnx", "google.protobuf"))


def default_calibration_crops() -> list:
    """Face crops to calibrate int8 with when the user gives none: the sample faces after
    the ones the accuracy gate checks on (runtime/samples.py), so the check does not only
    see faces the ranges were fitted to. RuntimeError without scikit-image."""
    from .samples import lfw_face_crops

    return lfw_face_crops()[AUTO_CHECK_CROPS:]


AUTO_CHECK_CROPS = 48  # the sample faces the accuracy gate runs on come first


def load_auto_precision(model_path: Path, **options) -> InferenceBackend:
    """``precision: auto``: int8 where the backend offers it and the build passes the
    accuracy gate against fp32 (the backends run the gate when they build or load an int8
    graph and refuse a build that misses it), otherwise fp32. Logs which and why."""
    try:
        calibration = default_calibration_crops()
    except RuntimeError as exc:  # without sample faces, only an int8 graph built earlier can serve
        LOG.info("precision auto: no sample faces to calibrate int8 with (%s)", exc)
        calibration = None
    try:
        backend = load_backend(model_path, precision="int8", calibration=calibration, **options)
    except ModelFileError:
        raise  # the model file itself cannot be used: no precision would help
    except (ValueError, BackendUnavailableError, ImportError) as exc:
        # the gate's refusal is a ValueError; an install without the quantizer's packages
        # (onnx, as in the torch-free offline install) cannot build int8 at all
        LOG.warning("precision auto: running fp32, int8 is not used here: %s", one_line(exc))
        return load_backend(model_path, precision="fp32", **options)
    if backend.precision == "int8":
        LOG.info("precision auto: int8 (%s), within the accuracy gate against fp32", backend.name)
    else:
        LOG.info("precision auto: %s offers no int8 here; running %s", backend.name, backend.precision)
    return backend


def check_backend_fits(config: PipelineConfig, backend: InferenceBackend) -> None:
    model_t = backend.metadata.window_length
    if model_t != config.window_length:
        raise ConfigError(f"window_length={config.window_length}: the model "
                          f"{config.model_file_path or '(untrained)'} was built for window_length={model_t}; "
                          f"set window_length: {model_t}")
