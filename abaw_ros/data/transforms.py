"""Image preprocessing for training and evaluation, as in the reference code.

Reference (train): horizontal flip (p 0.5), colour jitter (brightness 0.5, contrast 0.25,
saturation 0.25), random erasing (p 0.5, area 10 %, aspect 0.7..1.3, zeros), Gaussian blur
(3x3, sigma 0.1..1.0), then resize 112 -> 224 and ImageNet mean/std. Evaluation: resize
and mean/std only. The reference draws the random parameters for each frame separately
(``per_frame=True``, default); ``per_frame=False`` draws them once per clip so the clip
stays temporally coherent. The jitter factors are applied in a fixed order
(brightness, contrast, saturation) rather than torchvision's random order.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    brightness: float = 0.5
    contrast: float = 0.25
    saturation: float = 0.25
    erase_p: float = 0.5
    erase_area: float = 0.1
    erase_ratio: tuple[float, float] = (0.7, 1.3)
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    per_frame: bool = True


def read_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB; a file that cannot be decoded is an error naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot read image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class AugmentParams:
    """The random draws of one frame's augmentation (what :func:`draw_augment` picks and
    :func:`apply_augment` applies), so that another implementation of the same maths (the
    batched one in ``training/device_preprocess.py``) can be checked on the same draws."""

    flip: bool
    brightness: float  # factor, 1 = unchanged
    contrast: float
    saturation: float
    erase: tuple[int, int, int, int] | None  # (y, x, height, width), None = no erasing
    sigma: float  # Gaussian blur sigma (3x3 kernel)


def draw_augment(cfg: AugmentConfig, rng: np.random.Generator, height: int, width: int) -> AugmentParams:
    """One frame's random parameters, drawn in the reference's order."""
    flip = bool(rng.random() < cfg.hflip)
    brightness = float(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)) if cfg.brightness else 1.0
    contrast = float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)) if cfg.contrast else 1.0
    saturation = float(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)) if cfg.saturation else 1.0
    erase = None
    if rng.random() < cfg.erase_p:
        area = cfg.erase_area * height * width
        ratio = np.exp(rng.uniform(*np.log(cfg.erase_ratio)))
        eh, ew = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < eh < height and 0 < ew < width:
            y, x = int(rng.integers(0, height - eh + 1)), int(rng.integers(0, width - ew + 1))
            erase = (y, x, eh, ew)
    sigma = float(rng.uniform(*cfg.blur_sigma))
    return AugmentParams(flip, brightness, contrast, saturation, erase, sigma)


GREY_WEIGHTS = (0.299, 0.587, 0.114)


def apply_augment(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """HxWx3 uint8 (or float) RGB -> HxWx3 float32 augmented, values in [0, 255]."""
    weights = np.array(GREY_WEIGHTS, dtype=np.float32)
    img = image.astype(np.float32)
    if params.flip:
        img = img[:, ::-1]
    img = img * np.float32(params.brightness)
    grey = img @ weights
    f = np.float32(params.contrast)
    img = img * f + (1 - f) * np.float32(np.clip(grey, 0, 255).mean())
    f = np.float32(params.saturation)
    grey = img @ weights
    img = img * f + (1 - f) * grey[..., None]
    img = np.clip(img, 0, 255)
    if params.erase is not None:
        y, x, eh, ew = params.erase
        img = img.copy()
        img[y:y + eh, x:x + ew] = 0
    return cv2.GaussianBlur(np.ascontiguousarray(img), (3, 3), params.sigma)


def _augment(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    return apply_augment(image, draw_augment(cfg, rng, *image.shape[:2]))


class ClipTransform:
    """List of HxWx3 uint8 RGB frames -> ``(T, 3, S, S)`` float32 normalized tensor."""

    def __init__(
        self,
        input_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: AugmentConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.input_size = int(input_size)
        self.mean = np.asarray(mean, dtype=np.float32) * 255.0
        self.std = np.asarray(std, dtype=np.float32) * 255.0
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def frame(self, image: np.ndarray) -> np.ndarray:
        s = self.input_size
        img = image if image.shape[:2] == (s, s) else cv2.resize(image, (s, s), interpolation=cv2.INTER_LINEAR)
        img = (img.astype(np.float32) - self.mean) / self.std
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        if self.augment is not None:
            if self.augment.per_frame:
                images = [_augment(im, self.augment, self.rng) for im in images]
            else:
                state = self.rng.bit_generator.state
                out = []
                for im in images:  # same draws for every frame of the clip
                    self.rng.bit_generator.state = state
                    out.append(_augment(im, self.augment, self.rng))
                images = out
        return torch.from_numpy(np.stack([self.frame(im) for im in images]))


class CropBytes:
    """List of HxWx3 uint8 RGB frames -> ``(T, size, size, 3)`` uint8 tensor: what a
    DataLoader worker returns when the device does the preprocessing
    (``abaw_ros.training.device_preprocess``). Crops already at ``size`` (Aff-Wild2's
    112x112) are only stacked; others are first resized to it (INTER_AREA when shrinking)."""

    def __init__(self, size: int = 112) -> None:
        self.size = int(size)

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        s = self.size
        out = np.empty((len(images), s, s, 3), dtype=np.uint8)
        for i, im in enumerate(images):
            if im.shape[:2] == (s, s):
                out[i] = im
            else:
                shrink = im.shape[0] > s or im.shape[1] > s
                out[i] = cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return torch.from_numpy(out)
