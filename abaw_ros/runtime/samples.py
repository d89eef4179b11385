"""Real face crops shipped with scikit-image, for calibration and accuracy checks when no
crops of the deployment camera are at hand (tests, ``abaw-affect bench``)."""
from __future__ import annotations

import cv2
import numpy as np


def lfw_face_crops(limit: int | None = None, size: int = 112) -> list[np.ndarray]:
    """Up to 200 Labeled-Faces-in-the-Wild crops (``skimage.data.lfw_subset``), as
    ``size x size x 3`` uint8 RGB (grey replicated; 112 px like Aff-Wild2's aligned crops)."""
    try:
        from skimage import data
    except ImportError as exc:
        raise RuntimeError(
            f"scikit-image is needed for the sample face crops ({exc}); pass a folder of face crops instead"
        ) from exc
    images = np.asarray(data.lfw_subset())  # (200, 25, 25) grey in [0, 1]
    crops = []
    for grey in images[:limit]:
        u8 = np.clip(np.asarray(grey) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        u8 = cv2.resize(u8, (size, size), interpolation=cv2.INTER_CUBIC)
        crops.append(np.repeat(u8[:, :, None], 3, axis=2))
    return crops
