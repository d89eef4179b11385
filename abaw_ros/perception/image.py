"""Validation of the frames handed to the pipeline."""
from __future__ import annotations

import cv2
import numpy as np


def as_bgr_image(image: np.ndarray) -> np.ndarray:
    """A contiguous ``(H, W, 3)`` uint8 BGR view or copy of ``image``.

    Accepts BGR, BGRA and grey (``(H, W)`` or ``(H, W, 1)``) uint8 images; anything else
    (other dtypes, other channel counts, zero-size images, non-arrays) raises ValueError
    saying what was received and what is expected.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image of type {type(image).__name__}: expected a numpy array (H, W, 3) uint8 BGR")
    if image.dtype != np.uint8:
        raise ValueError(f"image of dtype {image.dtype}: expected uint8 (8-bit BGR, grey or BGRA)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image of shape {image.shape}: expected (H, W, 3) BGR, (H, W, 4) BGRA "
                         f"or (H, W) grey")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image of shape {image.shape} is empty: expected height and width >= 1")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)
