"""Import a checkpoint of the paper's reference code into an :class:`AffectNet` checkpoint.

The reference code (PyTorch Lightning, ``ModelCheckpoint(save_weights_only=True)``) saves
a dict with ``epoch``, ``global_step``, ``pytorch-lightning_version``, ``state_dict``,
``loops``, ``hparams_name`` and ``hyper_parameters`` (``dict(hparams)``; Lightning's
``_CheckpointConnector.dump_checkpoint``). Its ``state_dict`` (DESIGN §7):

- ``backbone.*``: timm ``mobilenetv4_conv_small`` ``features_only`` -> our
  ``encoder.backbone.*`` unchanged;
- ``mid_mixer.*`` (28x28, 64 channels, patch 4), ``low_mixer.*`` (14x14, 96, 2),
  ``last_mixer.*`` (7x7, 960, 1): each an ``nn.Sequential``

  ====  ===================================================  =========================
  idx   reference                                            ours (``head.mixers[i]``)
  ====  ===================================================  =========================
  0, 1  Rearranges (no parameters)                           (tubelet layout, same order)
  2     ``Linear(p*p*pt*C, 256)``                            ``embed.proj``
  3+j   ``[0]`` PreNormResidual(norm, fn=Sequential(         ``blocks[j].token_mix``
        Conv1d(N, 4N, 1), GELU, Dropout, Conv1d(4N, N, 1),   (``fc1``/``fc2`` = the Conv1d
        Dropout)); ``[1]`` the same with Linear(256, 128) /  weights without their kernel
        Linear(128, 256) over channels                       axis); ``blocks[j].channel_mix``
  3+d   ``LayerNorm(256)``                                   ``norm``
  4+d   mean over tokens                                     (``forward_head``)
  5+d   ``Linear(256, 256)``                                 ``proj``
  ====  ===================================================  =========================

- ``classifier.*``: ``Linear(256 * levels, outputs)`` over the levels concatenated fine to
  coarse (``[28, 14, 7]``); ours concatenates coarse to fine (``[7, 14, 28]``), so the
  weight's column blocks are reordered.

VA goes through tanh, AU through sigmoid in both. The imported network computes the same
function; only float32 rounding differs (our tubelet projection runs as a strided
convolution and the token MLP as a matmul, summing in another order): the import test
asserts 1e-5 on the activated outputs.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from abaw_ros.models.affect_net import LEVELS, AffectNet, ModelConfig
from abaw_ros.models.backbone import read_checkpoint, select_state_dict
from abaw_ros.models.checkpoint import save_checkpoint, validate_thresholds

__all__ = ["REFERENCE_MIXERS", "ReferenceImport", "convert_reference_state", "import_reference"]

_logger = logging.getLogger(__name__)

# Reference mixer name per level of ours (LEVELS is coarse to fine).
REFERENCE_MIXERS: dict[str, str] = {"stride32": "last_mixer", "stride16": "low_mixer", "stride8": "mid_mixer"}
_TASKS = {"au": "au", "va": "va"}
_OUTPUTS = {2: "va", 12: "au"}


class ReferenceFormatError(ValueError):
    """The file is not a reference-code checkpoint we can convert; the message says why."""


@dataclass
class ReferenceImport:
    """What :func:`import_reference` found and wrote."""

    model: AffectNet
    config: ModelConfig
    au_thresholds: list[float] | None
    hyper_parameters: dict[str, Any]
    source: dict[str, Any]  # epoch, global_step, Lightning version of the file
    ignored_keys: list[str]

    def summary(self) -> str:
        cfg = self.config
        text = (f"task {cfg.tasks[0]}, {cfg.n_levels} level(s) {list(cfg.feature_names)}, T={cfg.window_length}, "
                f"depth {cfg.depth}")
        if self.au_thresholds is not None:
            text += f", AU thresholds {sorted(set(round(v, 4) for v in self.au_thresholds))}"
        if self.ignored_keys:
            text += f", {len(self.ignored_keys)} other keys ignored ({', '.join(self.ignored_keys[:4])})"
        return text


def _hp(hparams: Mapping[str, Any], *names: str) -> Any:
    lowered = {str(k).lower(): v for k, v in hparams.items()}
    for name in names:
        if name in lowered and lowered[name] is not None:
            return lowered[name]
    return None


def _mixer_depth(state: Mapping[str, torch.Tensor], mixer: str) -> int:
    blocks = {int(m.group(1)) for k in state if (m := re.match(rf"{mixer}\.(\d+)\.0\.fn\.0\.weight$", k))}
    if not blocks or blocks != set(range(3, 3 + len(blocks))):
        raise ReferenceFormatError(f"{mixer}: expected token-mixing blocks at {mixer}.3.0.fn.0.weight, "
                                   f"{mixer}.4.0... (found block indices {sorted(blocks)})")
    return len(blocks)


def _classifier_weight_keys(state: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    weights = [k for k, v in state.items() if k.startswith("classifier.") and k.endswith("weight") and v.ndim == 2]
    if len(weights) != 1:
        raise ReferenceFormatError(f"expected one Linear under classifier.*, found weights {weights}")
    bias = weights[0].removesuffix("weight") + "bias"
    if bias not in state:
        raise ReferenceFormatError(f"{weights[0]} has no bias {bias}")
    return weights[0], bias


def infer_config(state: Mapping[str, torch.Tensor], hparams: Mapping[str, Any],
                 backbone: str = "mobilenetv4_conv_small") -> ModelConfig:
    """Our model config for a reference state dict (levels, T, depth from the tensors;
    task and T cross-checked with ``hyper_parameters``)."""
    present = [lvl for lvl in LEVELS if any(k.startswith(REFERENCE_MIXERS[lvl.name] + ".") for k in state)]
    n_levels = len(present)
    if n_levels == 0 or [lvl.name for lvl in present] != [lvl.name for lvl in LEVELS[:n_levels]]:
        raise ReferenceFormatError(
            f"mixers {[REFERENCE_MIXERS[lvl.name] for lvl in present]}: expected last_mixer (1 level), "
            f"+ low_mixer (2), + mid_mixer (3)"
        )
    n_mixer = _hp(hparams, "n_mixer", "n_mixers", "num_mixer")
    if n_mixer is not None and int(n_mixer) != n_levels:
        raise ReferenceFormatError(f"hyper_parameters n_mixer={n_mixer} but the state dict holds {n_levels} mixer(s)")
    depths = {_mixer_depth(state, REFERENCE_MIXERS[lvl.name]) for lvl in present}
    if len(depths) != 1:
        raise ReferenceFormatError(f"mixers of different depths {sorted(depths)}")
    depth = depths.pop()
    last = REFERENCE_MIXERS["stride32"]
    tokens = int(state[f"{last}.3.0.fn.0.weight"].shape[1])
    dim = int(state[f"{last}.2.weight"].shape[0])
    out_dim = int(state[f"{last}.{5 + depth}.weight"].shape[0])
    spatial = 49  # 7x7 tokens at 224 input, every level (patch 4 / 2 / 1)
    if tokens % spatial:
        raise ReferenceFormatError(f"{last}: {tokens} tokens is not a multiple of 49 (7x7 at 224 input)")
    time_tokens = tokens // spatial
    time_patch = 4
    window = time_tokens * time_patch
    seq_len = _hp(hparams, "seq_len", "window_length", "num_frames", "t")
    if seq_len is not None and int(seq_len) != window:
        raise ReferenceFormatError(f"hyper_parameters seq_len={seq_len} but the token-mixing MLP has {tokens} "
                                   f"tokens = 49 x T/4, i.e. T={window}")
    w_key, _ = _classifier_weight_keys(state)
    n_out = int(state[w_key].shape[0])
    task_hp = _hp(hparams, "task")
    task = _TASKS.get(str(task_hp).lower()) if task_hp is not None else _OUTPUTS.get(n_out)
    if task is None:
        raise ReferenceFormatError(f"hyper_parameters task={task_hp!r}: expected AU or VA")
    expected_out = {"va": 2, "au": 12}[task]
    if n_out != expected_out:
        raise ReferenceFormatError(f"task {task.upper()} needs {expected_out} outputs, the classifier has {n_out}")
    return ModelConfig(backbone=str(_hp(hparams, "backbone", "model_name", "backbone_name") or backbone),
                       n_levels=n_levels, window_length=window, time_patch_size=time_patch, depth=depth,
                       dim=dim, out_dim=out_dim, tasks=(task,), output_mode="window", freeze="stem")


def convert_reference_state(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference ``state_dict`` -> our ``AffectNet`` state dict (and the keys left unused)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(src: str, dst: str, squeeze: bool = False) -> None:
        if src not in state:
            raise ReferenceFormatError(f"missing {src} (for {dst})")
        value = state[src]
        if squeeze:  # Conv1d(N, 4N, 1) weight (4N, N, 1) -> Linear weight (4N, N)
            if value.ndim != 3 or value.shape[-1] != 1:
                raise ReferenceFormatError(f"{src}: shape {tuple(value.shape)}, expected a kernel-size-1 Conv1d")
            value = value[..., 0]
        out[dst] = value.detach().clone()
        used.add(src)

    for key in state:
        if key.startswith("backbone."):
            take(key, "encoder.backbone." + key.removeprefix("backbone."))
    for i, level in enumerate(cfg.levels):
        src, dst = REFERENCE_MIXERS[level.name], f"head.mixers.{i}"
        for p in ("weight", "bias"):
            take(f"{src}.2.{p}", f"{dst}.embed.proj.{p}")
            for j in range(cfg.depth):
                block = f"{src}.{3 + j}"
                for part, name in ((0, "token_mix"), (1, "channel_mix")):
                    take(f"{block}.{part}.norm.{p}", f"{dst}.blocks.{j}.{name}.norm.{p}")
                    take(f"{block}.{part}.fn.0.{p}", f"{dst}.blocks.{j}.{name}.fn.fc1.{p}", squeeze=part == 0 and p == "weight")
                    take(f"{block}.{part}.fn.3.{p}", f"{dst}.blocks.{j}.{name}.fn.fc2.{p}", squeeze=part == 0 and p == "weight")
            take(f"{src}.{3 + cfg.depth}.{p}", f"{dst}.norm.{p}")
            take(f"{src}.{5 + cfg.depth}.{p}", f"{dst}.proj.{p}")
    w_key, b_key = _classifier_weight_keys(state)
    weight = state[w_key]
    width = cfg.out_dim
    if weight.shape[1] != width * cfg.n_levels:
        raise ReferenceFormatError(f"{w_key}: {weight.shape[1]} inputs, expected {width} x {cfg.n_levels} levels")
    # reference columns: finest level first; ours: coarsest first
    blocks = list(weight.split(width, dim=1))[::-1]
    out["head.classifier.weight"] = torch.cat(blocks, dim=1).detach().clone()
    out["head.classifier.bias"] = state[b_key].detach().clone()
    used.update((w_key, b_key))
    return out, sorted(set(state) - used)


def _thresholds(hparams: Mapping[str, Any]) -> list[float] | None:
    value = _hp(hparams, "threshold", "thresholds", "au_threshold", "au_thresholds")
    if value is None:
        return None
    values = [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)] * 12
    return validate_thresholds(values, None)["au_thresholds"]


def import_reference(path: str | Path, output: str | Path | None = None,
                     backbone: str = "mobilenetv4_conv_small") -> ReferenceImport:
    """Convert a reference-code checkpoint; write it as our checkpoint to ``output`` if given.

    Raises :class:`ReferenceFormatError` (a ``ValueError``) with one line naming what does
    not fit; loading never runs code from the file.
    """
    path = Path(path)
    obj = read_checkpoint(path, "reference checkpoint")
    try:
        state, _source = select_state_dict(obj, f"reference checkpoint {path}")
        state = {k.removeprefix("model."): v for k, v in state.items()} if not any(
            k.startswith("backbone.") for k in state) else state
        hparams = dict(obj.get("hyper_parameters") or {}) if isinstance(obj, Mapping) else {}
        if not any(k.startswith("last_mixer.") for k in state):
            raise ReferenceFormatError("no last_mixer.* keys: not a checkpoint of the reference code")
        cfg = infer_config(state, hparams, backbone)
        converted, ignored = convert_reference_state(state, cfg)
    except ReferenceFormatError as exc:
        raise ReferenceFormatError(f"reference checkpoint {path}: {exc}") from None
    model = AffectNet(cfg)
    result = model.load_state_dict(converted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ReferenceFormatError(
            f"reference checkpoint {path}: does not fit {cfg.backbone} + the TAM: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    model.eval()
    thresholds = _thresholds(hparams) if cfg.tasks == ("au",) else None
    source = {k: obj[k] for k in ("epoch", "global_step", "pytorch-lightning_version")
              if isinstance(obj, Mapping) and isinstance(obj.get(k), int | float | str)}
    imported = ReferenceImport(model, cfg, thresholds, hparams, source, ignored)
    if ignored:
        _logger.warning("reference checkpoint %s: %d keys not part of the network ignored: %s",
                        path, len(ignored), ", ".join(ignored[:8]))
    if output is not None:
        plain_hp = {str(k): v for k, v in hparams.items() if isinstance(v, int | float | str | bool | type(None))}
        save_checkpoint(
            output, model, au_thresholds=thresholds, trained=True,
            provenance={"source": "reference", "reference_checkpoint": str(path), **source,
                        "hyper_parameters": plain_hp},
        )
    return imported
