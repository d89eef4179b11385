"""Preprocessing on the training device: uint8 crops in, normalized network input out.

DataLoader workers only decode: a window is ``(T, H, W, 3)`` uint8 at the crops' stored
size (Aff-Wild2 ``cropped_aligned``: 112x112), 37 MB per 128-window batch instead of
588 MB of float32 at 224x224, and about 0.2 CPU-ms per frame instead of 2.75. The rest
runs batched where the network runs (GPU, or CPU where there is none), in the maths of
:mod:`abaw_ros.data.transforms`, in the same order:

    augment at stored size (flip, brightness, contrast, saturation, clamp, erase, 3x3
    Gaussian blur) -> bilinear resize to ``input_size`` -> ImageNet mean/std.

Evaluation runs the same module without augmentation.

Equality with the worker-side maths (``ClipTransform``), pinned by
``tests/test_training_device_preprocess.py``:

- without augmentation, cv2 resizes the uint8 crop in its bit-exact fixed-point mode,
  which is off the exact bilinear value by up to 0.625 intensity level (0.011 normalized),
  while the device resizes in float32 (cv2's float32 resize equals it bit for bit);
- with augmentation (same draws), both sides compute in float32 but sum in different
  orders (the contrast mean over a frame, the separable blur): within 1e-3 normalized.
- the random draws themselves come from a ``torch.Generator`` on the device, not from the
  workers' NumPy streams, so a run with device preprocessing sees other (equally
  distributed) augmentations than one with worker preprocessing, for the same seed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from abaw_ros.data.transforms import GREY_WEIGHTS, AugmentConfig, AugmentParams


@dataclass
class FrameDraws:
    """Per-frame augmentation parameters as tensors of shape ``(N,)`` (erase box: ``(N, 4)``
    as y, x, height, width; height 0 = no erasing)."""

    flip: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    erase: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def from_params(cls, params: Sequence[AugmentParams], device: torch.device | str = "cpu") -> FrameDraws:
        """The draws of :func:`abaw_ros.data.transforms.draw_augment`, one per frame."""
        def t(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype, device=device)
        return cls(
            flip=t([p.flip for p in params], torch.bool),
            brightness=t([p.brightness for p in params]),
            contrast=t([p.contrast for p in params]),
            saturation=t([p.saturation for p in params]),
            erase=t([p.erase if p.erase is not None else (0, 0, 0, 0) for p in params], torch.long),
            sigma=t([p.sigma for p in params]),
        )


def draw_frames(cfg: AugmentConfig, n: int, height: int, width: int, generator: torch.Generator,
                device: torch.device) -> FrameDraws:
    """``n`` frames' draws, with :func:`draw_augment`'s distributions, vectorized."""
    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)

    flip = torch.rand(n, generator=generator, device=device) < cfg.hflip
    brightness = uniform(1 - cfg.brightness, 1 + cfg.brightness)
    contrast = uniform(1 - cfg.contrast, 1 + cfg.contrast)
    saturation = uniform(1 - cfg.saturation, 1 + cfg.saturation)
    erase_on = torch.rand(n, generator=generator, device=device) < cfg.erase_p
    area = cfg.erase_area * height * width
    ratio = torch.exp(uniform(math.log(cfg.erase_ratio[0]), math.log(cfg.erase_ratio[1])))
    eh = torch.round(torch.sqrt(area * ratio)).long()
    ew = torch.round(torch.sqrt(area / ratio)).long()
    erase_on &= (eh > 0) & (eh < height) & (ew > 0) & (ew < width)
    # an integer in [0, size - e] (inclusive), as rng.integers(0, size - e + 1)
    y = (torch.rand(n, generator=generator, device=device) * (height - eh + 1)).long().clamp(max=height - 1)
    x = (torch.rand(n, generator=generator, device=device) * (width - ew + 1)).long().clamp(max=width - 1)
    erase = torch.stack([y, x, eh, ew], dim=1) * erase_on[:, None]
    sigma = uniform(*cfg.blur_sigma)
    return FrameDraws(flip, brightness, contrast, saturation, erase, sigma)


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def augment_frames(x: torch.Tensor, d: FrameDraws) -> torch.Tensor:
    """``(N, 3, H, W)`` float32 in [0, 255] -> augmented, :func:`apply_augment`'s maths."""
    n, _, h, w = x.shape
    weights = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = torch.where(_col(d.flip), x.flip(-1), x)
    x = x * _col(d.brightness)
    grey = (x * weights).sum(1, keepdim=True)
    mean = grey.clamp(0, 255).mean(dim=(2, 3), keepdim=True)
    x = x * _col(d.contrast) + (1 - _col(d.contrast)) * mean
    grey = (x * weights).sum(1, keepdim=True)
    x = x * _col(d.saturation) + (1 - _col(d.saturation)) * grey
    x = x.clamp(0, 255)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    y0, x0, eh, ew = (d.erase[:, i].view(n, 1, 1) for i in range(4))
    inside = (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew)
    x = x.masked_fill(inside[:, None], 0.0)
    return gaussian_blur3(x, d.sigma)


def gaussian_blur3(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """3x3 Gaussian blur with a per-frame sigma, as ``cv2.GaussianBlur(img, (3, 3), sigma)``:
    taps ``exp(-x^2 / (2 sigma^2))`` normalized, separable (rows, then columns), border
    reflected without repeating the edge (OpenCV's default BORDER_REFLECT_101 is
    ``F.pad(mode="reflect")``)."""
    side = torch.exp(-0.5 / sigma.to(x.dtype) ** 2)
    side = _col(side / (1 + 2 * side))
    centre = 1 - 2 * side
    p = F.pad(x, (1, 1, 0, 0), mode="reflect")
    x = side * p[..., :-2] + centre * p[..., 1:-1] + side * p[..., 2:]
    p = F.pad(x, (0, 0, 1, 1), mode="reflect")
    return side * p[..., :-2, :] + centre * p[..., 1:-1, :] + side * p[..., 2:, :]


class DevicePreprocess(torch.nn.Module):
    """``(B, T, H, W, 3)`` uint8 crops (on the device) -> ``(B, T, 3, S, S)`` float32 normalized.

    With ``augment`` set, augments while the module is in training mode (``train()``) and
    never in ``eval()``, drawing per frame (``augment.per_frame``) or once per clip from its
    own generator, seeded with ``seed`` on the device where the first batch arrives.
    """

    def __init__(self, input_size: int, mean: Sequence[float], std: Sequence[float],
                 augment: AugmentConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0,
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0,
                             persistent=False)
        self.augment = augment
        self.seed = int(seed)
        self._generator: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        """Start the draws over from ``seed``: the training loop seeds each step by (seed,
        epoch, step, rank), so a resumed run draws what the uninterrupted one drew."""
        self.seed = int(seed)
        self._generator = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def draws(self, b: int, t: int, h: int, w: int, device: torch.device) -> FrameDraws:
        assert self.augment is not None
        per_clip = not self.augment.per_frame
        d = draw_frames(self.augment, b if per_clip else b * t, h, w, self.generator(device), device)
        if per_clip:  # the clip's draws for each of its frames
            d = FrameDraws(*(v.repeat_interleave(t, dim=0) for v in vars(d).values()))
        return d

    def forward(self, clips: torch.Tensor, draws: FrameDraws | None = None) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != torch.uint8:
            raise ValueError(f"clips {tuple(clips.shape)} {clips.dtype}: expected (B, T, H, W, 3) uint8 crops")
        b, t, h, w, _ = clips.shape
        x = clips.flatten(0, 1).permute(0, 3, 1, 2).float()
        if self.augment is not None and self.training:
            x = augment_frames(x, draws if draws is not None else self.draws(b, t, h, w, x.device))
        elif draws is not None:
            x = augment_frames(x, draws)
        s = self.input_size
        if (h, w) != (s, s):
            # half-pixel centres, no antialiasing: cv2.INTER_LINEAR's interpolation
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        x = (x - self.mean) / self.std
        return x.view(b, t, 3, s, s)
