"""AffectNet: MobileNetV4 frame encoder + multi-scale 3D MLP-Mixer temporal head.

Paper: "Efficient spatiotemporal feature extraction using MobileNetV4 and a multi-scale 3D
MLP-Mixer temporal aggregation module" (ABAW8, CVPR 2025 workshop); reference code
PRVSL/abaw-8th. Reported AU F1 on the Aff-Wild2 validation set: 0.5369 (3 levels),
0.5338 (2 levels), 0.5441 (1 level).

The network is split where streaming needs it:

- ``FrameEncoder``: one crop ``(N, 3, S, S)`` -> the feature maps the head uses, coarse to
  fine (``stride32`` 7x7, ``stride16`` 14x14, ``stride8`` 28x28 at S=224). Each frame is
  encoded once and kept in a per-face ring buffer (:mod:`abaw_ros.models.streaming`).
- ``TemporalHead``: one window of those maps ``(B, T, C, H, W)`` per level -> flat raw
  outputs, one TAM level per map, concatenated -> Dropout -> Linear.
  Its streaming form splits the tubelet embedding: ``project_frames`` projects one
  frame's maps by every time slice of the embedding weight once, when the frame is
  encoded; ``forward_tubelets`` takes the per-tubelet sums of those projections (summed
  by the ring buffer) and gives the same outputs as ``forward`` on the window.

Output modes:

- ``"window"`` (the paper's, default): one vector per window, ``(B, D)``; the reference
  copies it to all T frames (:func:`broadcast_to_frames`).
- ``"frame"``: ``(B, T, D)``. The mixers keep the token time axis (mean over the 7x7
  spatial tokens only), giving one 256-d vector per tubelet of ``pt`` frames per level,
  each already mixed with the whole window by the token-mixing MLP. The classifier maps a
  tubelet's concatenated vector to ``pt`` outputs, one per frame of that tubelet (a learned
  unfold, ``Linear(L*256 -> pt*D)``), so every frame gets its own prediction. Parameter
  count differs from window mode only in that classifier.

Outputs are flat raw values (logits / pre-tanh) in ``tasks.TASK_ORDER``;
:meth:`AffectNet.activate` applies each task's activation.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from abaw_ros import tasks as task_registry
from abaw_ros.models.backbone import (
    FREEZE_POLICIES,
    OUT_INDICES,
    BackboneLoadReport,
    apply_freeze,
    create_backbone,
    load_backbone_weights,
)
from abaw_ros.models.mixer import TemporalMixer3D

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LEVELS", "OUTPUT_MODES", "ModelConfig", "FrameEncoder",
           "TemporalHead", "AffectNet", "activate", "broadcast_to_frames", "create_affect_net"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
OUTPUT_MODES: tuple[str, ...] = ("window", "frame")


@dataclass(frozen=True)
class LevelSpec:
    """One backbone scale the head can use."""

    name: str
    stride: int  # feature map = input_size / stride
    patch_size: int  # spatial tubelet size: every level ends up with (S/32)^2 spatial tokens
    out_index: int  # position in the backbone's OUT_INDICES outputs


# Coarse to fine: n_levels=1 uses the 7x7 map only, 2 adds 14x14, 3 adds 28x28 (the
# paper's ablation).
LEVELS: tuple[LevelSpec, ...] = (
    LevelSpec("stride32", 32, 1, 2),
    LevelSpec("stride16", 16, 2, 1),
    LevelSpec("stride8", 8, 4, 0),
)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network, preprocessing included."""

    backbone: str = "mobilenetv4_conv_small"
    backbone_weights: str | None = None  # timm checkpoint file loaded at build time
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    n_levels: int = 3
    window_length: int = 8
    time_patch_size: int = 4
    depth: int = 1
    dim: int = 256
    out_dim: int = 256
    tasks: tuple[str, ...] = task_registry.ALL_TASKS
    output_mode: str = "window"
    freeze: str = "stem"
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):  # "va,au" from a command line or YAML
            self.tasks = tuple(t for t in self.tasks.split(",") if t.strip())
        self.tasks = task_registry.normalize_tasks(self.tasks)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if self.n_levels not in (1, 2, 3):
            raise ValueError(f"n_levels={self.n_levels}: must be 1 (7x7), 2 (14x14 + 7x7) or 3 (all three maps)")
        if self.time_patch_size < 1:
            raise ValueError(f"time_patch_size={self.time_patch_size}: must be >= 1")
        if self.window_length < self.time_patch_size or self.window_length % self.time_patch_size:
            raise ValueError(
                f"window_length={self.window_length}: must be a multiple of {self.time_patch_size} "
                f"(the tubelet time size), e.g. 8, 16 or 32"
            )
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"input_size={self.input_size}: must be a multiple of 32 (e.g. 224)")
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode={self.output_mode!r}: choose one of {list(OUTPUT_MODES)}")
        if self.freeze not in FREEZE_POLICIES:
            raise ValueError(f"freeze={self.freeze!r}: choose one of {list(FREEZE_POLICIES)}")
        if self.depth < 1:
            raise ValueError(f"depth={self.depth}: must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: must be in [0, 1)")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean={self.mean}, std={self.std}: need 3 values each, std > 0")

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        return LEVELS[: self.n_levels]

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the encoder outputs / temporal head inputs, coarse to fine."""
        return tuple(level.name for level in self.levels)

    @property
    def output_size(self) -> int:
        return task_registry.output_size(self.tasks)

    @property
    def output_names(self) -> list[str]:
        return task_registry.output_names(self.tasks)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists instead of tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}: known fields are {sorted(known)}")
        values = dict(data)
        for key in ("mean", "std", "tasks"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def activate(raw: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
    """Apply each task's activation to its slice of the last axis (tanh / sigmoid)."""
    parts = []
    for name, s in task_registry.output_slices(tasks).items():
        act = task_registry.TASKS[name].activation
        chunk = raw[..., s]
        parts.append(torch.tanh(chunk) if act == "tanh" else torch.sigmoid(chunk))
    return torch.cat(parts, dim=-1)


def broadcast_to_frames(outputs: torch.Tensor, window_length: int) -> torch.Tensor:
    """``(B, D)`` window outputs -> ``(B, T, D)`` (the reference copies them to every frame).

    Frame-mode outputs ``(B, T, D)`` are returned unchanged.
    """
    if outputs.ndim == 3:
        if outputs.shape[1] != window_length:
            raise ValueError(f"outputs {tuple(outputs.shape)}: time axis is not window_length={window_length}")
        return outputs
    if outputs.ndim != 2:
        raise ValueError(f"outputs {tuple(outputs.shape)}: expected (B, D) or (B, T, D)")
    return outputs.unsqueeze(1).expand(-1, window_length, -1)


class FrameEncoder(nn.Module):
    """Crops ``(N, 3, S, S)`` (normalized) -> the feature maps the head uses, coarse to fine."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_size = cfg.input_size
        self.feature_names = cfg.feature_names
        self.backbone = create_backbone(cfg.backbone, OUT_INDICES)
        channels = self.backbone.feature_info.channels()
        reductions = self.backbone.feature_info.reduction()
        self._out_indices = [level.out_index for level in cfg.levels]
        for level in cfg.levels:
            if reductions[level.out_index] != level.stride:
                raise ValueError(
                    f"backbone={cfg.backbone!r}: output {level.out_index} has stride "
                    f"{reductions[level.out_index]}, expected {level.stride}"
                )
        self.feature_shapes: list[tuple[int, int, int]] = [
            (channels[level.out_index], cfg.input_size // level.stride, cfg.input_size // level.stride)
            for level in cfg.levels
        ]

    def forward(self, crops: torch.Tensor) -> list[torch.Tensor]:
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"crops shape {tuple(crops.shape)}: expected (N, 3, {self.input_size}, {self.input_size})"
            )
        maps = self.backbone(crops)
        return [maps[i] for i in self._out_indices]


class TemporalHead(nn.Module):
    """Windows of feature maps (one ``(B, T, C, H, W)`` per level) -> flat raw outputs."""

    def __init__(self, cfg: ModelConfig, feature_shapes: Sequence[tuple[int, int, int]]) -> None:
        super().__init__()
        if len(feature_shapes) != cfg.n_levels:
            raise ValueError(f"{len(feature_shapes)} feature shapes given for n_levels={cfg.n_levels}")
        self.window_length = cfg.window_length
        self.time_patch_size = cfg.time_patch_size
        self.output_mode = cfg.output_mode
        self.output_size = cfg.output_size
        self.output_tasks = cfg.tasks
        self.feature_names = cfg.feature_names
        self.feature_shapes = [tuple(s) for s in feature_shapes]
        self.mixers = nn.ModuleList([
            TemporalMixer3D(
                channels=c,
                map_size=h,
                patch_size=level.patch_size,
                window_length=cfg.window_length,
                time_patch_size=cfg.time_patch_size,
                dim=cfg.dim,
                depth=cfg.depth,
                out_dim=cfg.out_dim,
                time_resolved=cfg.output_mode == "frame",
            )
            for level, (c, h, _w) in zip(cfg.levels, feature_shapes, strict=True)
        ])
        self.num_features = cfg.out_dim * cfg.n_levels
        self.drop = nn.Dropout(cfg.dropout)
        per_token = cfg.time_patch_size if cfg.output_mode == "frame" else 1
        self.classifier = nn.Linear(self.num_features, per_token * self.output_size)
        self.reset_classifier()

    def reset_classifier(self) -> None:
        """Zero bias (the weights keep nn.Linear's fan-in scaled init, which gives
        pre-activations of about 0.3 on the LayerNorm-ed mixer outputs): every output
        starts at the centre of its activation (tanh 0, sigmoid 0.5), far from saturation.
        Training then sets the sigmoid tasks' biases to their label priors
        (:meth:`set_output_bias`)."""
        nn.init.zeros_(self.classifier.bias)

    def set_output_bias(self, task: str, raw_values: Sequence[float] | torch.Tensor) -> None:
        """Set the classifier bias of one task's outputs (raw, pre-activation values; in
        frame mode every frame slot gets the same values)."""
        s = task_registry.output_slices(self.output_tasks)[task]
        values = torch.as_tensor(raw_values, dtype=self.classifier.bias.dtype).reshape(-1)
        if values.numel() != s.stop - s.start:
            raise ValueError(f"{values.numel()} bias values for task {task!r}: expected {s.stop - s.start}")
        per_token = self.classifier.bias.numel() // self.output_size
        with torch.no_grad():
            bias = self.classifier.bias.view(per_token, self.output_size)
            bias[:, s] = values.to(bias.device)

    def forward_features(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, L*out_dim)`` in window mode, ``(B, T/pt, L*out_dim)`` in frame mode."""
        if len(windows) != len(self.mixers):
            raise ValueError(
                f"{len(windows)} feature windows given: expected {len(self.mixers)} ({list(self.feature_names)})"
            )
        return torch.cat([mixer(x) for mixer, x in zip(self.mixers, windows, strict=True)], dim=-1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.drop(features))
        if self.output_mode == "frame":
            b, time_tokens, _ = out.shape
            # each tubelet's vector holds its pt frames' outputs, in frame order
            out = out.reshape(b, time_tokens * self.time_patch_size, self.output_size)
        return out

    def forward(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_head(self.forward_features(windows))

    # -- streaming form: per-frame projections, summed per tubelet ---------------------
    @property
    def projection_shapes(self) -> list[tuple[int, int, int, int]]:
        """Per level, the projections of one frame ``(pt, dim, h, w)``."""
        return [mixer.projection_shape for mixer in self.mixers]

    @property
    def tubelet_shapes(self) -> list[tuple[int, int, int, int]]:
        """Per level, the tubelet sums of one window ``(T/pt, dim, h, w)``."""
        return [mixer.tubelet_shape for mixer in self.mixers]

    def project_frames(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One frame's feature maps ``(N, C, H, W)`` per level -> its tubelet-embedding
        projections ``(N, pt, dim, h, w)`` per level (all ``pt`` weight slices, no bias)."""
        if len(maps) != len(self.mixers):
            raise ValueError(f"{len(maps)} feature maps given: expected {len(self.mixers)} ({list(self.feature_names)})")
        return [mixer.embed.project_frames(x) for mixer, x in zip(self.mixers, maps, strict=True)]

    def forward_tubelets(self, sums: Sequence[torch.Tensor]) -> torch.Tensor:
        """Tubelet sums ``(B, T/pt, dim, h, w)`` per level -> the raw outputs :meth:`forward`
        gives for the window they were summed from."""
        if len(sums) != len(self.mixers):
            raise ValueError(f"{len(sums)} tubelet sums given: expected {len(self.mixers)} ({list(self.feature_names)})")
        features = torch.cat([mixer.forward_tubelets(x) for mixer, x in zip(self.mixers, sums, strict=True)], dim=-1)
        return self.forward_head(features)


class AffectNet(nn.Module):
    """Per-frame encoder + temporal head; ``forward(clips (B, T, 3, S, S)) -> raw outputs``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg)
        self.head = TemporalHead(cfg, self.encoder.feature_shapes)
        self.backbone_report: BackboneLoadReport | None = None
        if cfg.backbone_weights:
            self.backbone_report = load_backbone_weights(self.encoder.backbone, cfg.backbone_weights)
        self._frozen = apply_freeze(self.encoder.backbone, cfg.freeze)

    @property
    def feature_shapes(self) -> list[tuple[int, int, int]]:
        return list(self.encoder.feature_shapes)

    @property
    def output_names(self) -> list[str]:
        return self.cfg.output_names

    def train(self, mode: bool = True) -> AffectNet:
        super().train(mode)
        for module in self._frozen:  # frozen BatchNorm keeps its statistics
            module.eval()
        return self

    def convert_sync_batchnorm(self) -> AffectNet:
        """Every BatchNorm (timm's BatchNormAct2d included) computes its training statistics
        over all DDP processes; the freeze policy is applied again to the new layers (state
        dict keys and values are unchanged)."""
        from abaw_ros._compat import import_timm

        import_timm().layers.convert_sync_batchnorm(self)
        self._frozen = apply_freeze(self.encoder.backbone, self.cfg.freeze)
        return self

    def forward_features(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """``(B, T, 3, S, S)`` -> one ``(B, T, C, H, W)`` window per level."""
        if clips.ndim != 5 or clips.shape[1] != self.cfg.window_length:
            raise ValueError(
                f"clips shape {tuple(clips.shape)}: expected (B, {self.cfg.window_length}, 3, "
                f"{self.cfg.input_size}, {self.cfg.input_size})"
            )
        b, t = clips.shape[:2]
        maps = self.encoder(clips.flatten(0, 1))
        return [m.reshape(b, t, *m.shape[1:]) for m in maps]

    def forward_head(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(windows)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(clips))

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw outputs -> published ranges (VA tanh, the rest sigmoid)."""
        return activate(raw, self.cfg.tasks)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-task views of the last axis."""
        return task_registry.split_outputs(flat, self.cfg.tasks)


def create_affect_net(cfg: ModelConfig | None = None, **overrides: Any) -> AffectNet:
    """Build an AffectNet from a config and/or field overrides (random weights unless
    ``backbone_weights`` names a file)."""
    cfg = replace(cfg, **overrides) if cfg is not None else ModelConfig(**overrides)
    return AffectNet(cfg)

