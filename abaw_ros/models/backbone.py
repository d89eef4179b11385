"""MobileNetV4 feature backbone: timm model, freeze policies and weight loading from files.

The reference code builds timm ``mobilenetv4_conv_small`` with ``features_only=True`` and
uses its last three stages, which at 224x224 input give 64x28x28, 96x14x14 and 960x7x7
maps (strides 8, 16, 32). Weights come from files only (a timm checkpoint such as the
AffectNet-pretrained one published with the paper); nothing is fetched from a hub.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from abaw_ros._compat import import_timm

__all__ = [
    "FREEZE_POLICIES",
    "OUT_INDICES",
    "BackboneLoadReport",
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
#   all   the whole backbone frozen (train the temporal head only)
FREEZE_POLICIES: tuple[str, ...] = ("none", "stem", "all")

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

    def summary(self) -> str:
        text = (
            f"backbone weights {self.path}: {self.loaded} tensors loaded, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.ignored_classifier)} classifier keys ignored"
        )
        if self.stripped_prefix:
            text += f", key prefix {self.stripped_prefix!r} stripped"
        if self.missing:
            text += f"; missing: {_preview(self.missing)}"
        if self.unexpected:
            text += f"; unexpected: {_preview(self.unexpected)}"
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
        raise ValueError(f"freeze='stem': backbone {type(backbone).__name__} has no conv_stem/bn1")
    return stem


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


def _state_dict_from_file(path: Path) -> Mapping[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping):
        for key in ("state_dict_ema", "state_dict", "model", "model_state"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ValueError(
        f"{path}: no state dict found; expected a timm checkpoint (a dict of tensors, or a dict "
        f"with 'state_dict' / 'state_dict_ema' / 'model')"
    )


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> BackboneLoadReport:
    """Load timm weights from a file into the features-only backbone.

    Accepts a plain state dict, a timm training checkpoint (``state_dict`` /
    ``state_dict_ema``; EMA weights preferred as timm's ``model_best`` does), full
    classification-model keys (``conv_head``/``classifier`` keys are ignored and listed
    apart) and keys behind a wrapper prefix (``module.``, ``backbone.``, ``model.``).
    Missing and unexpected keys are logged and returned; a file that matches no key at
    all raises, since that is never a usable backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path}: no such file")
    state = dict(_state_dict_from_file(path))
    own = backbone.state_dict()

    stripped = ""
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
    )
    if report.loaded == 0:
        raise ValueError(f"{report.summary()}: no key matches this backbone; is it a {type(backbone).__name__} checkpoint?")
    level = logging.WARNING if report.missing or report.unexpected else logging.INFO
    _logger.log(level, report.summary())
    return report
