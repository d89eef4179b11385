"""Temporal aggregation module (TAM): a 3D MLP-Mixer over one scale of backbone features.

Paper: "Efficient spatiotemporal feature extraction using MobileNetV4 and a multi-scale 3D
MLP-Mixer temporal aggregation module" (ABAW8, CVPR 2025 workshop). One mixer per feature
scale turns a window of T feature maps into a 256-d vector:

1. tubelet tokens: ``pt`` frames x ``p`` x ``p`` pixels per token, so that a 28x28 map
   with p=4, a 14x14 map with p=2 and a 7x7 map with p=1 all give 7x7 x T/pt tokens;
2. ``Linear(p*p*pt*C -> dim)``;
3. ``depth`` x [pre-norm residual token-mixing MLP over all N space-time tokens
   (N -> 4N -> N, GELU); pre-norm residual channel MLP (dim -> dim/2 -> dim, GELU)];
4. LayerNorm, mean over tokens, ``Linear(dim -> out_dim)``.

Token order and token layout follow the public reference code: tokens are ordered
(h, w, t) and each token holds its values in (p_h, p_w, pt, C) order, so reference
weights map onto these layers one to one.

``time_resolved=True`` keeps the token time axis: the mean in step 4 runs over the 7x7
spatial tokens only and the mixer returns one vector per tubelet, ``(B, T/pt, out_dim)``.
The parameters are the same in both modes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mlp", "TokenMlp", "PreNormResidual", "MixerBlock3D", "TubeletEmbed", "TemporalMixer3D"]


class Mlp(nn.Module):
    """Linear -> activation -> Linear on the last axis."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenMlp(Mlp):
    """The same MLP applied along the token axis of ``(B, N, D)``: ``W @ x`` instead of
    transposing to ``(B, D, N)`` and back (same result, no transposes in the graph)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(torch.matmul(self.fc1.weight, x) + self.fc1.bias[:, None])
        return torch.matmul(self.fc2.weight, h) + self.fc2.bias[:, None]


class PreNormResidual(nn.Module):
    """``x + fn(norm(x))``."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.norm(x))


class MixerBlock3D(nn.Module):
    """Token mixing over all space-time tokens, then channel mixing."""

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        token_expansion: float = 4.0,
        channel_expansion: float = 0.5,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.token_mix = PreNormResidual(dim, TokenMlp(num_tokens, int(num_tokens * token_expansion), act_layer))
        self.channel_mix = PreNormResidual(dim, Mlp(dim, int(dim * channel_expansion), act_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mix(self.token_mix(x))


class TubeletEmbed(nn.Module):
    """``(B, T, C, H, W)`` feature maps -> ``(B, N, dim)`` tubelet tokens, N = (H/p)(W/p)(T/pt).

    The parameters are the reference's ``Linear(p*p*pt*C -> dim)`` over tokens laid out
    (p, p, pt, C). Tubelets do not overlap, so the same projection is computed as a
    stride-p convolution over frames folded into channels, with the Linear weight viewed
    as its kernel: this never materialises the token matrix, whose 8-D transpose is the
    slowest op of the head in ONNX Runtime.
    """

    def __init__(self, channels: int, patch_size: int, time_patch_size: int, dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.patch_size = patch_size
        self.time_patch_size = time_patch_size
        self.dim = dim
        self.proj = nn.Linear(patch_size * patch_size * time_patch_size * channels, dim)

    def conv_weight(self) -> torch.Tensor:
        """The Linear weight as a ``(dim, pt*C, p, p)`` kernel (channel index = k*C + c)."""
        p, pt, c = self.patch_size, self.time_patch_size, self.channels
        w = self.proj.weight.reshape(self.dim, p, p, pt, c)
        return w.permute(0, 3, 4, 1, 2).reshape(self.dim, pt * c, p, p)

    def frame_weight(self) -> torch.Tensor:
        """The Linear weight as ``pt`` per-frame kernels stacked on the output channels,
        ``(pt*dim, C, p, p)`` (output channel index = k*dim + d for a frame at position k
        of its tubelet)."""
        p, pt, c = self.patch_size, self.time_patch_size, self.channels
        w = self.proj.weight.reshape(self.dim, p, p, pt, c)
        return w.permute(3, 0, 4, 1, 2).reshape(pt * self.dim, c, p, p)

    def project_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Single frames ``(N, C, H, W)`` -> their projections by each of the ``pt`` weight
        slices, ``(N, pt, dim, H/p, W/p)``, without the bias.

        A tubelet's embedding is the sum over its frames of the slice matching each
        frame's position, plus the bias (:meth:`embed_tubelets`): computing these once per
        frame makes the embedding cost per frame independent of the window length."""
        n, _c, h, w = x.shape
        p = self.patch_size
        y = F.conv2d(x, self.frame_weight(), None, stride=p)
        return y.reshape(n, self.time_patch_size, self.dim, h // p, w // p)

    @staticmethod
    def sum_tubelets(projections: torch.Tensor) -> torch.Tensor:
        """Windows of per-frame projections ``(B, T, pt, dim, h, w)`` -> tubelet sums
        ``(B, T/pt, dim, h, w)``: frame ``g*pt + k`` contributes its slice ``k``."""
        b, t, pt = projections.shape[:3]
        grouped = projections.reshape(b, t // pt, pt, pt, *projections.shape[3:])
        return torch.diagonal(grouped, dim1=2, dim2=3).sum(dim=-1)

    def embed_tubelets(self, sums: torch.Tensor) -> torch.Tensor:
        """Tubelet sums ``(B, T/pt, dim, h, w)`` -> tokens ``(B, N, dim)`` (bias added, tokens
        ordered (h, w, t) as in :meth:`forward`)."""
        b, gt, d, gh, gw = sums.shape
        tokens = sums.permute(0, 3, 4, 1, 2).reshape(b, gh * gw * gt, d)
        return tokens + self.proj.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        p, pt = self.patch_size, self.time_patch_size
        gt, gh, gw = t // pt, h // p, w // p
        y = F.conv2d(x.reshape(b * gt, pt * c, h, w), self.conv_weight(), self.proj.bias, stride=p)
        # (b gt) dim gh gw -> b (gh gw gt) dim
        return y.reshape(b, gt, self.dim, gh, gw).permute(0, 3, 4, 1, 2).reshape(b, gh * gw * gt, self.dim)


class TemporalMixer3D(nn.Module):
    """One TAM level: a window of one scale's feature maps -> one vector (or one per tubelet).

    Args:
        channels: C of the feature map.
        map_size: H = W of the feature map (28, 14 or 7 at 224 input).
        patch_size: spatial tubelet size p (H must be divisible by it).
        window_length: T, frames per window (divisible by ``time_patch_size``).
        time_patch_size: pt, frames per tubelet.
        dim: token width.
        depth: number of mixer blocks.
        out_dim: width of the returned vector.
        time_resolved: return ``(B, T/pt, out_dim)`` instead of ``(B, out_dim)``.
    """

    def __init__(
        self,
        channels: int,
        map_size: int,
        patch_size: int,
        window_length: int,
        time_patch_size: int = 4,
        dim: int = 256,
        depth: int = 1,
        out_dim: int = 256,
        token_expansion: float = 4.0,
        channel_expansion: float = 0.5,
        time_resolved: bool = False,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if map_size % patch_size:
            raise ValueError(f"map_size={map_size}: must be divisible by patch_size={patch_size}")
        if window_length < time_patch_size or window_length % time_patch_size:
            raise ValueError(
                f"window_length={window_length}: must be a multiple of {time_patch_size} "
                f"(the tubelet time size)"
            )
        self.channels = channels
        self.map_size = map_size
        self.patch_size = patch_size
        self.window_length = window_length
        self.time_patch_size = time_patch_size
        self.time_tokens = window_length // time_patch_size
        self.spatial_tokens = (map_size // patch_size) ** 2
        self.num_tokens = self.spatial_tokens * self.time_tokens
        self.time_resolved = time_resolved

        self.embed = TubeletEmbed(channels, patch_size, time_patch_size, dim)
        self.blocks = nn.Sequential(*[
            MixerBlock3D(self.num_tokens, dim, token_expansion, channel_expansion, act_layer)
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim)

    @property
    def tubelet_shape(self) -> tuple[int, int, int, int]:
        """Tubelet sums of one window, ``(T/pt, dim, H/p, W/p)`` (see :meth:`forward_tubelets`)."""
        g = self.map_size // self.patch_size
        return (self.time_tokens, self.embed.dim, g, g)

    @property
    def projection_shape(self) -> tuple[int, int, int, int]:
        """Per-frame projections of one frame, ``(pt, dim, H/p, W/p)``."""
        g = self.map_size // self.patch_size
        return (self.time_patch_size, self.embed.dim, g, g)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> normalized tokens ``(B, N, dim)``."""
        expected = (self.window_length, self.channels, self.map_size, self.map_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"input shape {tuple(x.shape)}: expected (B, {', '.join(map(str, expected))})")
        return self.norm(self.blocks(self.embed(x)))

    def forward_tubelets(self, sums: torch.Tensor) -> torch.Tensor:
        """The streaming form of :meth:`forward`: tubelet sums of per-frame projections
        ``(B, T/pt, dim, H/p, W/p)`` (:meth:`TubeletEmbed.sum_tubelets`) -> the same output."""
        if sums.ndim != 5 or tuple(sums.shape[1:]) != self.tubelet_shape:
            raise ValueError(
                f"tubelet sums of shape {tuple(sums.shape)}: expected (B, {', '.join(map(str, self.tubelet_shape))})"
            )
        return self.forward_head(self.norm(self.blocks(self.embed.embed_tubelets(sums))))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.time_resolved:
            b, _n, d = tokens.shape
            # tokens are ordered (h w t): average the spatial tokens of each time slot
            pooled = tokens.reshape(b, self.spatial_tokens, self.time_tokens, d).mean(dim=1)
        else:
            pooled = tokens.mean(dim=1)
        return self.proj(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
