"""Loading a backend by name or ``auto``, driven by the backend registry
(:mod:`abaw_ros.backend_registry`).

Each backend lives in its own module, imported only when chosen, so a machine without
TensorRT (or without torch) still runs the others. ``auto`` tries TensorRT (needs the
package and a GPU), then ONNX Runtime's CUDA execution provider, then ONNX Runtime on CPU,
then PyTorch, and logs which one it took and why it skipped the others. Whatever fails
while a backend module is imported or checked (a missing package, a TensorRT whose API
differs, a library that does not load) makes that backend unavailable with the reason in
one line; it never breaks ``auto``.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from abaw_ros.backend_registry import AUTO_CANDIDATES, AUTO_ORDER, BACKENDS, backend_spec
from abaw_ros.errors import one_line

from .base import (
    BACKEND_MODULE_FUNCTIONS,
    BackendModule,
    BackendOptions,
    BackendUnavailableError,
    InferenceBackend,
)
from .bundle import ModelSource, resolve_model_path
from .identity import ModelIdentity

__all__ = ["available_backends", "backend_module", "load_backend"]

LOG = logging.getLogger(__name__)


def backend_module(name: str) -> BackendModule:
    """Import a backend's module. Whatever goes wrong there (a missing package, a
    TensorRT whose API lacks what the module uses, a shared library that fails to load)
    becomes BackendUnavailableError with the reason, so ``auto`` can always go on."""
    spec = backend_spec(name)
    try:
        module = importlib.import_module(spec.module)
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(
            one_line(f"backend {name!r} cannot be imported: {type(exc).__name__}: {exc} (it needs {spec.needs})")
        ) from exc
    missing = [f for f in BACKEND_MODULE_FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        raise BackendUnavailableError(f"backend {name!r}: module {spec.module} lacks {missing} "
                                      "(the BackendModule interface, runtime/base.py)")
    return module  # type: ignore[return-value]


def _check_available(name: str, module: BackendModule, options: BackendOptions) -> None:
    """``module.check_available``; an unexpected exception becomes BackendUnavailableError.
    A ValueError (a bad setting, such as device='cpu' for TensorRT) stays a ValueError:
    an explicitly named backend reports it, ``auto`` skips the backend with it."""
    try:
        module.check_available(options)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(one_line(str(exc))) from exc
    except ValueError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(
            one_line(f"backend {name!r} availability check failed: {type(exc).__name__}: {exc}")
        ) from exc


def _candidate_options(candidate: str, options: BackendOptions) -> BackendOptions:
    """The options ``auto`` tries ``candidate`` with, or BackendUnavailableError when the
    device asked for rules it out."""
    _backend, device = AUTO_CANDIDATES[candidate]
    if device is None:
        return options
    asked = options.device
    if asked is None or asked == "auto":
        return replace(options, device=device)
    if asked.split(":")[0] == device:
        return options
    raise BackendUnavailableError(f"device={asked!r} asked")


def available_backends(precision: str = "fp32", device: str | None = None) -> dict[str, str | None]:
    """``{candidate: None if it can run here, else the reason}``, in ``auto`` order
    (``tensorrt``, ``onnxruntime-cuda``, ``onnxruntime-cpu``, ``torch``)."""
    result: dict[str, str | None] = {}
    for candidate in AUTO_ORDER:
        name = AUTO_CANDIDATES[candidate][0]
        try:
            opts = _candidate_options(candidate, BackendOptions(precision=precision, device=device))
            _check_available(name, backend_module(name), opts)
            result[candidate] = None
        except (BackendUnavailableError, ValueError) as exc:
            result[candidate] = one_line(str(exc))
    return result


def _identified(instance: InferenceBackend, source: ModelSource, model_path: str | Path) -> InferenceBackend:
    instance.identity = ModelIdentity(str(model_path), source.path)
    return instance


def load_backend(
    model_path: str | Path,
    backend: str = "auto",
    precision: str = "fp32",
    *,
    engine_cache_dir: str | Path | None = None,
    force_engine_update: bool = False,
    num_threads: int | None = None,
    device: str | None = None,
    calibration: str | Path | Sequence[np.ndarray] | None = None,
    **options: Any,
) -> InferenceBackend:
    """Load ``model_path`` (checkpoint ``.pt`` or bundle directory) on ``backend``.

    ``precision``: fp32 | fp16 (TensorRT; torch on CUDA) | int8 (TensorRT, ONNX Runtime;
    needs ``calibration``, a folder of face crops or a list of HxWx3 uint8 RGB crops).
    ``engine_cache_dir``: where engines, quantized graphs and exports of checkpoints are
    kept (default ``~/.cache/abaw_ros/engines``); ``force_engine_update`` rebuilds them.
    Further keywords are :class:`BackendOptions` fields (``max_batch_size``, ...).
    The backend's ``identity`` names ``model_path`` and the content it was loaded from.
    """
    if backend != "auto":
        backend_spec(backend)  # an unknown name is refused before anything is read
    opts = BackendOptions(
        precision=precision,
        device=device,
        engine_cache_dir=Path(engine_cache_dir) if engine_cache_dir is not None else None,
        force_engine_update=force_engine_update,
        num_threads=num_threads,
        calibration=calibration,
        **options,
    )
    source = resolve_model_path(model_path)
    if backend != "auto":
        module = backend_module(backend)
        _check_available(backend, module, opts)
        instance = module.create_backend(source, opts)
        LOG.info("inference backend: %s (%s, %s)", instance.name, instance.precision, instance.device)
        return _identified(instance, source, model_path)

    skipped: list[str] = []
    for candidate in AUTO_ORDER:
        name = AUTO_CANDIDATES[candidate][0]
        spec = BACKENDS[name]
        fallback = spec.auto_fallback.get(precision)
        try:
            chosen = _candidate_options(candidate, opts)
            module = backend_module(name)
            try:
                _check_available(name, module, chosen)
            except (BackendUnavailableError, ValueError):
                if fallback is None:
                    raise
                chosen = replace(chosen, precision=fallback)
                _check_available(name, module, chosen)
        except (BackendUnavailableError, ValueError) as exc:
            reason = one_line(str(exc))
            skipped.append(f"{candidate}: {reason}")
            # The install hint is long and the next backend usually runs: say it once, short.
            LOG.info("auto backend: skipping %s: %s (to install it: docs/RUNTIME.md)", candidate,
                     reason.split(". ")[0].rstrip("."))
            continue
        if spec.checkpoint_only and source.checkpoint is None:
            skipped.append(f"{name}: needs a checkpoint, got an ONNX bundle")
            continue
        if chosen.precision != precision:
            LOG.warning("auto backend: %s offers no %s here; running %s", candidate, precision, chosen.precision)
        try:
            instance = module.create_backend(source, chosen)
        except BackendUnavailableError as exc:  # e.g. the CUDA provider could not start
            reason = one_line(str(exc))
            skipped.append(f"{candidate}: {reason}")
            LOG.info("auto backend: skipping %s: %s", candidate, reason)
            continue
        passed = ", ".join(entry.split(":")[0] for entry in skipped)
        LOG.info("auto backend: using %s (%s, %s); %s", candidate, instance.precision, instance.device,
                 f"skipped {passed}" if skipped else "first choice available")
        return _identified(instance, source, model_path)
    raise BackendUnavailableError("no inference backend can run here: " + "; ".join(skipped))
