"""Checkpoint files that describe themselves: loading one is enough to rebuild and run.

A checkpoint is a ``torch.save`` dict:

- ``format`` / ``format_version``: ``"abaw_ros.affect_net"``, 1;
- ``config``: :meth:`ModelConfig.to_dict` (architecture, tasks, preprocessing);
- ``tasks``, ``preprocessing`` (``input_size``, ``mean``, ``std``): copies for readers that
  do not build the model;
- ``au_thresholds`` (12 floats, AU order of :data:`abaw_ros.tasks.AU_NAMES`),
  ``ah_threshold``: decision thresholds on the activated outputs;
- ``trained``: False for a randomly initialised network (tools warn about it);
- ``provenance``: what the weights come from (see :func:`provenance_summary`): ``source``
  (``"training"``, ``"reference"`` for an imported reference-code checkpoint), and for
  training ``data`` (the data roots), ``fixture`` (True when the data are generated
  fixtures), ``protocol``, ``git_commit``, ``tasks``, ``epochs``;
- ``state_dict``: the model weights;
- ``extra``: anything else the caller passed (optimizer state, epoch, metrics, ...).
"""
from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abaw_ros import tasks as task_registry
from abaw_ros.config import ModelFileError
from abaw_ros.models.affect_net import AffectNet, ModelConfig
from abaw_ros.models.provenance import provenance_summary
from abaw_ros.outputs import Staging, write_faults

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "DEFAULT_AU_THRESHOLD",
    "DEFAULT_AH_THRESHOLD",
    "default_thresholds",
    "validate_thresholds",
    "save_checkpoint",
    "load_checkpoint",
    "provenance_summary",
    "unwrap_model",
]

_logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "abaw_ros.affect_net"
CHECKPOINT_VERSION = 1
DEFAULT_AU_THRESHOLD = 0.5
DEFAULT_AH_THRESHOLD = 0.5
_RESERVED = ("format", "format_version", "config", "tasks", "preprocessing", "au_thresholds",
             "ah_threshold", "trained", "provenance", "state_dict", "extra")


def default_thresholds() -> dict[str, Any]:
    return {
        "au_thresholds": [DEFAULT_AU_THRESHOLD] * len(task_registry.AU_NAMES),
        "ah_threshold": DEFAULT_AH_THRESHOLD,
    }


def validate_thresholds(au_thresholds: Sequence[float] | None, ah_threshold: float | None) -> dict[str, Any]:
    """Fill defaults and check ranges; returns ``{"au_thresholds": [...], "ah_threshold": x}``."""
    values = default_thresholds()
    if au_thresholds is not None:
        au = [float(v) for v in au_thresholds]
        if len(au) != len(task_registry.AU_NAMES):
            raise ValueError(
                f"au_thresholds has {len(au)} values: need {len(task_registry.AU_NAMES)}, one per "
                f"{', '.join(task_registry.AU_NAMES)}"
            )
        bad = [v for v in au if not 0.0 < v < 1.0]
        if bad:
            raise ValueError(f"au_thresholds {bad}: probabilities must lie in (0, 1)")
        values["au_thresholds"] = au
    if ah_threshold is not None:
        if not 0.0 < float(ah_threshold) < 1.0:
            raise ValueError(f"ah_threshold={ah_threshold}: must lie in (0, 1)")
        values["ah_threshold"] = float(ah_threshold)
    return values


def unwrap_model(model: nn.Module) -> AffectNet:
    """The AffectNet inside DDP / torch.compile wrappers."""
    inner: nn.Module = model
    for _ in range(4):
        if isinstance(inner, AffectNet):
            return inner
        inner = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None) or inner
    raise TypeError(f"save_checkpoint: expected an AffectNet (or a DDP/compiled wrapper of one), got {type(model).__name__}")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    au_thresholds: Sequence[float] | None = None,
    ah_threshold: float | None = None,
    trained: bool = False,
    provenance: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model`` with its config, preprocessing and thresholds to ``path``.

    Extra keyword arguments (``optimizer=``, ``epoch=``, ``metrics=`` ...) are stored under
    ``extra`` and come back in ``load_checkpoint``'s info; objects with a ``state_dict()``
    (optimizers, schedulers, scalers) are stored as their state dict. The file is written
    to a temporary name and renamed, so an interrupted save never leaves a broken file.
    """
    net = unwrap_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"save_checkpoint: extra keys {clash} are reserved; rename them")
    stored_extra = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in extra.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": net.cfg.to_dict(),
        "tasks": list(net.cfg.tasks),
        "preprocessing": net.cfg.preprocessing,
        **validate_thresholds(au_thresholds, ah_threshold),
        "trained": bool(trained),
        "provenance": dict(provenance or {}),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": stored_extra,
    }
    # written beside the target and renamed over it: an interrupted or failed save (disk
    # full) leaves the earlier file whole; the caller decided it may be replaced
    with Staging(path, "checkpoint", replace=True) as staging, write_faults(path, "checkpoint"):
        # serialized in memory (tens of MB for this network) and written by Python: torch's
        # zip writer turns a full disk into a RuntimeError about stream positions
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        staging.path.write_bytes(buffer.getbuffer())
        return staging.commit()


def is_our_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a checkpoint :func:`save_checkpoint` wrote, told from the
    head of its pickle (its first key is ``format``) without unpickling anything."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if name is None:
                return False
            with archive.open(name) as handle:
                head = handle.read(256)
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return b"\x06\x00\x00\x00format" in head and CHECKPOINT_FORMAT.encode() in head


def _torch_load(path: Path, map_location: str | torch.device, weights_only: bool) -> Any:
    """``torch.load``, with every way a file can fail to be a checkpoint turned into one
    :class:`ModelFileError` naming the file: empty or cut short (EOFError), not a pickle
    or zip (UnpicklingError, RuntimeError), or refused by ``weights_only`` because it
    holds Python objects whose loading would run code (PyTorch's message names them)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except EOFError:
        raise ModelFileError(f"checkpoint {path}: the file is empty or cut short "
                             f"({path.stat().st_size} bytes)") from None
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # torch names a refused object, e.g. "Trying to load unsupported GLOBAL posix.system
        # whose module posix is blocked"; random bytes give "Unsupported operand 189".
        found = next((" ".join(line.split())[:200] for line in text.splitlines() if "GLOBAL" in line), "")
        if "Weights only load failed" in text and found:
            raise ModelFileError(
                f"checkpoint {path}: refused, it holds Python objects that loading would run "
                f"as code ({found}); abaw_ros checkpoints hold only "
                f"tensors and plain values (save it with save_checkpoint)") from None
        raise ModelFileError(f"checkpoint {path}: not a PyTorch checkpoint (torch.load cannot "
                             f"unpickle its {path.stat().st_size} bytes)") from None
    except Exception as exc:  # noqa: BLE001 - random bytes fail in the unpickler in any way at all
        # (IndexError, KeyError, UnicodeDecodeError, a damaged zip's RuntimeError, ...)
        raise ModelFileError(f"checkpoint {path}: cannot be read as a PyTorch checkpoint "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    weights_only: bool = True,
) -> tuple[AffectNet, dict[str, Any]]:
    """Rebuild the model stored in ``path`` (in eval mode) and return it with its info.

    info keys: ``config`` (ModelConfig), ``tasks``, ``preprocessing``, ``au_thresholds``,
    ``ah_threshold``, ``thresholds`` (both, as :func:`export_onnx` takes them), ``trained``,
    ``provenance``, ``path``, ``format_version``, plus every extra passed to :func:`save_checkpoint`
    (``optimizer``, ``epoch``, ...). The backbone weights come from the checkpoint, never
    from ``config.backbone_weights``. ``weights_only=False`` is needed only for extras that
    are not plain tensors / containers / numbers, and only for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    payload = _torch_load(path, map_location, weights_only)
    if not isinstance(payload, Mapping) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise ModelFileError(
            f"{path}: not an abaw_ros checkpoint (format={found!r}, expected {CHECKPOINT_FORMAT!r}); "
            f"plain backbone weights go to ModelConfig.backbone_weights (backbone_weights in a training "
            f"config), a reference-code Lightning checkpoint to abaw-affect import-reference"
        )
    version = int(payload.get("format_version", 0))
    if version > CHECKPOINT_VERSION:
        raise ModelFileError(f"{path}: format_version={version} is newer than this code ({CHECKPOINT_VERSION})")
    cfg = ModelConfig.from_dict(payload["config"])
    model = AffectNet(replace(cfg, backbone_weights=None))
    model.load_state_dict(payload["state_dict"], strict=True)
    model.to(map_location).eval()
    thresholds = validate_thresholds(payload.get("au_thresholds"), payload.get("ah_threshold"))
    info: dict[str, Any] = {
        **dict(payload.get("extra") or {}),
        "config": cfg,
        "tasks": list(cfg.tasks),
        "preprocessing": cfg.preprocessing,
        **thresholds,
        "thresholds": thresholds,
        "trained": bool(payload.get("trained", False)),
        "provenance": dict(payload.get("provenance") or {}),
        "path": path,
        "format_version": version,
    }
    if not info["trained"]:
        _logger.warning("checkpoint %s holds an untrained network: its outputs are meaningless", path)
    return model, info

