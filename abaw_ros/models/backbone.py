"""MobileNetV4 feature backbone: timm model, freeze policies and weight loading from files.

The reference code builds timm ``mobilenetv4_conv_small`` with ``features_only=True`` and
uses its last three stages, which at 224x224 input give 64x28x28, 96x14x14 and 960x7x7
maps (strides 8, 16, 32). Weights come from files only (a timm checkpoint such as the
AffectNet-pretrained one published with the paper); nothing is fetched from a hub.
"""
from __future__ import annotations

import argparse
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abaw_ros._compat import import_timm
from abaw_ros.errors import one_line

__all__ = [
    "FREEZE_POLICIES",
    "OUT_INDICES",
    "BackboneLoadReport",
    "CheckpointReadError",
    "SAFE_CHECKPOINT_GLOBALS",
    "read_checkpoint",
    "select_state_dict",
    "create_backbone",
    "apply_freeze",
    "frozen_modules",
    "load_backbone_weights",
]

_logger = logging.getLogger(__name__)

# Stage indices of the three maps (strides 8, 16, 32).
OUT_INDICES: tuple[int, ...] = (2, 3, 4)

# Freeze policies: which backbone parts stop training (their BatchNorm statistics too).
#   none  every backbone parameter trains
#   stem  conv_stem + bn1 frozen (the reference code's choice, the default)
#   paper the paper's text: "all but the final layers of the backbone are frozen": the
#         stem and every stage but the last frozen, the last stage (mobilenetv4_conv_small:
#         blocks.4, the 1x1 conv to the 960-channel 7x7 map) trains
#   all   the whole backbone frozen (train the temporal head only)
FREEZE_POLICIES: tuple[str, ...] = ("none", "stem", "paper", "all")

# Keys of the full classification model that a features-only backbone does not have.
_CLASSIFIER_PREFIXES: tuple[str, ...] = ("conv_head.", "norm_head.", "classifier.", "head.")
# Wrappers that training scripts put in front of the backbone keys.
_KEY_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "backbone.", "model.", "encoder.backbone.")


@dataclass
class BackboneLoadReport:
    """What loading backbone weights from a file did."""

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored_classifier: list[str] = field(default_factory=list)
    stripped_prefix: str = ""
    source_key: str = ""  # checkpoint entry the weights came from ("": the file is a state dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)  # arch, epoch, metric, ... if stored

    def summary(self) -> str:
        source = f" [{self.source_key}]" if self.source_key else ""
        text = (
            f"backbone weights {self.path}{source}: {self.loaded} tensors loaded, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.ignored_classifier)} classifier keys ignored"
        )
        if self.stripped_prefix:
            text += f", key prefix {self.stripped_prefix!r} stripped"
        if self.missing:
            text += f"; missing: {_preview(self.missing)}"
        if self.unexpected:
            text += f"; unexpected: {_preview(self.unexpected)}"
        if self.checkpoint:
            text += "; " + ", ".join(f"{k} {v}" for k, v in self.checkpoint.items())
        return text


def _preview(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def create_backbone(variant: str = "mobilenetv4_conv_small", out_indices: tuple[int, ...] = OUT_INDICES) -> nn.Module:
    """Build the timm feature backbone with random weights (``pretrained=False``)."""
    timm = import_timm()
    if variant not in timm.list_models():
        close = timm.list_models(f"*{variant.split('_')[0]}*")[:10]
        raise ValueError(f"backbone={variant!r}: not a timm model; similar names: {close}")
    return timm.create_model(variant, pretrained=False, features_only=True, out_indices=out_indices)


def frozen_modules(backbone: nn.Module, policy: str) -> list[nn.Module]:
    """The backbone modules a freeze policy freezes."""
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"freeze={policy!r}: choose one of {list(FREEZE_POLICIES)}")
    if policy == "none":
        return []
    if policy == "all":
        return [backbone]
    stem = [getattr(backbone, name) for name in ("conv_stem", "bn1") if hasattr(backbone, name)]
    if not stem:
        raise ValueError(f"freeze={policy!r}: backbone {type(backbone).__name__} has no conv_stem/bn1")
    if policy == "stem":
        return stem
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) < 2:
        raise ValueError(f"freeze='paper': backbone {type(backbone).__name__} has no sequence of stages (blocks)")
    return stem + list(blocks[:-1])


def apply_freeze(backbone: nn.Module, policy: str) -> list[nn.Module]:
    """Stop gradients through the modules ``policy`` names; returns them.

    Frozen modules must also stay in eval mode so their BatchNorm statistics do not
    drift; the owning model re-applies that after every ``train()`` call.
    """
    modules = frozen_modules(backbone, policy)
    for p in backbone.parameters():
        p.requires_grad_(True)
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
    return modules


# The only non-container object a timm training-script checkpoint holds: timm's
# ``CheckpointSaver._save`` (timm/utils/checkpoint_saver.py) stores ``epoch``, ``arch``,
# ``optimizer`` (a state dict), ``version``, ``args`` (the train.py ``argparse.Namespace``),
# the AMP scaler's state dict, ``state_dict``, ``state_dict_ema`` and ``metric``. Lightning
# checkpoints hold plain dicts (``hyper_parameters`` is ``dict(hparams)``). Everything else
# stays refused: unpickling arbitrary globals can run arbitrary code.
SAFE_CHECKPOINT_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

# Where a checkpoint dict keeps its weights, in timm's order of preference
# (``timm.models._helpers.load_state_dict(use_ema=True)``), then other trainers' names.
STATE_DICT_KEYS: tuple[str, ...] = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state")


class CheckpointReadError(ValueError):
    """A weights file that cannot be read safely; the message names the file and why."""


def read_checkpoint(path: str | Path, what: str = "weights") -> Any:
    """Load a ``torch.save`` file or a ``.safetensors`` file without running code from it.

    ``torch.load(weights_only=True)`` with exactly :data:`SAFE_CHECKPOINT_GLOBALS` allowed;
    a file that needs any other global, or is not a checkpoint at all, raises
    :class:`CheckpointReadError` with one line naming the file and the refused globals.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointReadError(f"{what} {path}: not a readable .safetensors file ({one_line(exc, 160)})") from None
    try:
        with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            refused = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)
                       if g not in {f"{t.__module__}.{t.__qualname__}" for t in SAFE_CHECKPOINT_GLOBALS}]
        except Exception:  # noqa: BLE001 - not a zip checkpoint: report the load error itself
            refused = []
        if refused:
            raise CheckpointReadError(
                f"{what} {path}: refusing to unpickle {', '.join(refused)} (only tensors, plain containers "
                f"and argparse.Namespace load safely); re-save the weights as a state dict or .safetensors"
            ) from None
        raise CheckpointReadError(f"{what} {path}: not a PyTorch checkpoint ({one_line(exc, 160)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, ImportError) as exc:
        raise CheckpointReadError(f"{what} {path}: not a PyTorch checkpoint ({one_line(exc, 160)})") from None


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def select_state_dict(obj: Any, path: Path | str) -> tuple[dict[str, torch.Tensor], str]:
    """The weights inside a loaded checkpoint and where they were found (``""``: the file is
    the state dict itself). EMA weights first, as timm's ``load_state_dict`` does."""
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if _is_tensor_dict(inner):
                return dict(inner), key
        if _is_tensor_dict(obj):
            return dict(obj), ""
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointReadError(
            f"{path}: no state dict found (top-level keys {keys}); expected a dict of tensors or a checkpoint "
            f"with {' / '.join(repr(k) for k in STATE_DICT_KEYS)}"
        )
    raise CheckpointReadError(f"{path}: holds a {type(obj).__name__}, not a state dict or checkpoint dict")


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the ``module.`` prefix that DataParallel / DDP training adds."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def checkpoint_summary(obj: Any) -> dict[str, Any]:
    """What a training-script checkpoint says about itself: timm's ``arch``/``epoch``/
    ``metric`` (and ``args.model``), Lightning's ``epoch``/``global_step``/version."""
    if not isinstance(obj, Mapping):
        return {}
    out = {k: obj[k] for k in ("arch", "epoch", "metric", "global_step", "pytorch-lightning_version")
           if isinstance(obj.get(k), str | int | float)}
    args = obj.get("args")
    if isinstance(args, argparse.Namespace) and isinstance(getattr(args, "model", None), str):
        out["args.model"] = args.model
    return out


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> BackboneLoadReport:
    """Load timm weights from a file into the features-only backbone.

    Accepts a plain state dict, ``.safetensors``, a timm training-script checkpoint
    (``model_best.pth.tar``: ``state_dict`` / ``state_dict_ema`` / ``args`` as an
    ``argparse.Namespace``; EMA weights preferred, as timm loads them), a Lightning
    checkpoint (``state_dict`` with ``backbone.`` keys beside other modules' keys), full
    classification-model keys (``conv_head``/``classifier`` keys are ignored and listed
    apart) and keys behind a wrapper prefix (``module.``, ``backbone.``, ``model.``).
    Loading never runs code from the file (see :func:`read_checkpoint`). Missing and
    unexpected keys are logged and returned; a file that matches no key at all raises,
    since that is never a usable backbone.
    """
    path = Path(path)
    obj = read_checkpoint(path, "backbone weights")
    state, source = select_state_dict(obj, f"backbone weights {path}")
    own = backbone.state_dict()

    stripped = ""
    if any(k.startswith("module.") for k in state):  # DataParallel / DDP, as timm's clean_state_dict
        state, stripped = clean_state_dict(state), "module."
    for prefix in _KEY_PREFIXES:
        if not any(k in own for k in state) and any(k.startswith(prefix) for k in state):
            matching = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if any(k in own for k in matching):
                state, stripped = matching, stripped + prefix
    ignored = sorted(k for k in state if k not in own and k.startswith(_CLASSIFIER_PREFIXES))
    for k in ignored:
        del state[k]
    shape_mismatch = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if shape_mismatch:
        details = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape_mismatch[:5])
        raise ValueError(f"backbone weights {path}: shapes do not match this backbone: {details}")
    result = backbone.load_state_dict(state, strict=False)
    report = BackboneLoadReport(
        path=str(path),
        loaded=len(state) - len(result.unexpected_keys),
        missing=sorted(result.missing_keys),
        unexpected=sorted(result.unexpected_keys),
        ignored_classifier=ignored,
        stripped_prefix=stripped,
        source_key=source,
        checkpoint=checkpoint_summary(obj),
    )
    if report.loaded == 0:
        raise ValueError(f"{report.summary()}: no key matches this backbone; is it a {type(backbone).__name__} checkpoint?")
    level = logging.WARNING if report.missing or report.unexpected else logging.INFO
    _logger.log(level, report.summary())
    return report
