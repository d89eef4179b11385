"""The frozen part of the network and what follows it, for the feature cache.

``FrozenTrunk`` runs the frozen part of the backbone (``freeze: paper``: stem and stages
``blocks.0`` - ``blocks.3``; ``freeze: all``: the whole encoder) and returns what a cache
stores (``CachePlan``); ``CachedForward`` runs the rest (``blocks.4`` where a level needs
it, then the temporal head) on those stored outputs and gives what ``AffectNet.forward``
gives on the crops they came from.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from abaw_ros.models import AffectNet

DTYPE = np.float16  # how the outputs are stored


@dataclass(frozen=True)
class CachePlan:
    """What a model's frozen part hands to its trainable part: stored outputs in order."""

    freeze: str
    outputs: tuple[str, ...]  # backbone module names ("blocks.3"), or level names under freeze all
    shapes: tuple[tuple[int, int, int], ...]

    @property
    def frame_bytes(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes)) * np.dtype(DTYPE).itemsize


def _stage_of(module_name: str) -> int:
    return int(module_name.split(".")[1])


def cache_plan(model: AffectNet) -> CachePlan:
    """The stored outputs for the model's freeze policy and levels."""
    cfg = model.cfg
    backbone = model.encoder.backbone
    if cfg.freeze == "all":
        return CachePlan("all", tuple(cfg.feature_names), tuple(model.encoder.feature_shapes))
    if cfg.freeze != "paper":
        raise ValueError(f"freeze={cfg.freeze!r}: a feature cache needs freeze paper or all (a frozen part to store)")
    last = len(backbone.blocks) - 1
    names = backbone.feature_info.module_name()
    probe = torch.zeros(1, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        outs = FrozenTrunk(model, (f"blocks.{last - 1}",))._stages(probe.to(_device_of(model)))
    outputs = [f"blocks.{last - 1}"]
    for level in cfg.levels:
        stage = _stage_of(names[level.out_index])
        if stage != last and f"blocks.{stage}" not in outputs:
            outputs.append(f"blocks.{stage}")
    shapes = tuple(tuple(outs[_stage_of(n)].shape[1:]) for n in outputs)
    return CachePlan("paper", tuple(outputs), shapes)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class FrozenTrunk(nn.Module):
    """Normalized crops ``(N, 3, S, S)`` -> the stored outputs of the frozen part."""

    def __init__(self, model: AffectNet, outputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.outputs = tuple(outputs)

    def _stages(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        b = self.model.encoder.backbone
        x = b.act1(b.bn1(b.conv_stem(x)))
        out = {}
        for i, block in enumerate(b.blocks[:-1]):
            x = block(x)
            out[i] = x
        return out

    def forward(self, crops: torch.Tensor) -> list[torch.Tensor]:
        if self.model.cfg.freeze == "all":
            return self.model.encoder(crops)
        stages = self._stages(crops)
        return [stages[_stage_of(n)] for n in self.outputs]


class CachedForward(nn.Module):
    """The trainable part on stored outputs: windows ``[(B, T, C, H, W), ...]`` (plan order)
    -> raw outputs, as ``AffectNet.forward`` gives on the crops they came from."""

    def __init__(self, model: AffectNet, plan: CachePlan) -> None:
        super().__init__()
        self.plan = plan
        self.head = model.head
        backbone = model.encoder.backbone
        self.last = backbone.blocks[-1] if plan.freeze == "paper" else None
        names = backbone.feature_info.module_name()
        last = len(backbone.blocks) - 1
        # per level: index into the stored outputs, and whether the last stage runs on it
        self.sources: list[tuple[int, bool]] = []
        for k, level in enumerate(model.cfg.levels):
            if plan.freeze == "all":
                self.sources.append((k, False))
                continue
            stage = _stage_of(names[level.out_index])
            if stage == last:
                self.sources.append((plan.outputs.index(f"blocks.{last - 1}"), True))
            else:
                self.sources.append((plan.outputs.index(f"blocks.{stage}"), False))

    def forward(self, stored: Sequence[torch.Tensor]) -> torch.Tensor:
        windows = []
        for index, run_last in self.sources:
            x = stored[index].float()
            if run_last:
                assert self.last is not None
                b, t = x.shape[:2]
                y = self.last(x.flatten(0, 1))
                x = y.reshape(b, t, *y.shape[1:])
            windows.append(x)
        return self.head(windows)
