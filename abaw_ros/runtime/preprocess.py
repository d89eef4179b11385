"""Inference preprocessing: the one place face crops become network input.

The input size and the normalisation come from the model's own metadata, so a model
trained with other settings is fed the way it was trained.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from abaw_ros.model_metadata import ModelMetadata

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def preprocess_crops(crops: Sequence[np.ndarray], metadata: ModelMetadata) -> np.ndarray:
    """Face crops (each ``HxWx3`` uint8 RGB, any size) -> ``(N, 3, S, S)`` float32:
    resized to the model's input size, scaled to [0, 1], normalised with its mean/std."""
    s = metadata.input_size
    mean = np.asarray(metadata.mean, np.float32)
    std = np.asarray(metadata.std, np.float32)
    out = np.empty((len(crops), 3, s, s), np.float32)
    for i, crop in enumerate(crops):
        crop = np.asarray(crop)
        if crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(f"crop {i} has shape {crop.shape}: expected HxWx3 RGB")
        if crop.dtype != np.uint8:
            raise ValueError(f"crop {i} has dtype {crop.dtype}: expected uint8 (0..255)")
        if crop.shape[0] == 0 or crop.shape[1] == 0:
            raise ValueError(f"crop {i} is empty ({crop.shape})")
        if crop.shape[:2] != (s, s):
            # Area averaging when shrinking avoids aliasing; bilinear when enlarging.
            shrink = crop.shape[0] > s or crop.shape[1] > s
            crop = cv2.resize(crop, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        x = crop.astype(np.float32) * (1.0 / 255.0)
        out[i] = ((x - mean) / std).transpose(2, 0, 1)
    return out


def normalize_crops(crops: np.ndarray, metadata: ModelMetadata, out: np.ndarray | None = None,
                    bgr: bool = False) -> np.ndarray:
    """A batch of crops already at the model's input size, ``(N, S, S, 3)`` uint8 (RGB, or
    BGR with ``bgr=True``: the channels are swapped while normalising) -> ``(N, 3, S, S)``
    float32 normalised like :func:`preprocess_crops`, written into ``out`` when given
    (no intermediate arrays)."""
    s = metadata.input_size
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or crops.dtype != np.uint8:
        raise ValueError(f"crops of shape {crops.shape} {crops.dtype}: expected (N, {s}, {s}, 3) uint8")
    if out is None:
        out = np.empty((len(crops), 3, s, s), np.float32)
    elif out.shape != (len(crops), 3, s, s) or out.dtype != np.float32:
        raise ValueError(f"out of shape {out.shape} {out.dtype}: expected ({len(crops)}, 3, {s}, {s}) float32")
    std = np.asarray(metadata.std, np.float32)
    scale = np.float32(1.0 / 255.0) / std
    offset = -np.asarray(metadata.mean, np.float32) / std
    for c in range(3):
        np.multiply(crops[..., 2 - c if bgr else c], scale[c], out=out[:, c])
        out[:, c] += offset[c]
    return out


def load_crop_images(folder: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Read a folder of face-crop images (jpg/png/bmp, sorted by name, searched
    recursively) as ``HxWx3`` uint8 RGB arrays, e.g. for int8 calibration."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"face-crop folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no face-crop images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    crops = []
    for path in files[:limit]:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {path}")
        crops.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return crops


def as_crop_list(source: str | Path | Iterable[np.ndarray], limit: int | None = None) -> list[np.ndarray]:
    """A folder of crops, or crops already in memory -> a list of ``HxWx3`` uint8 RGB."""
    if isinstance(source, (str, Path)):
        return load_crop_images(source, limit)
    crops = list(source)
    return crops[:limit] if limit is not None else crops
