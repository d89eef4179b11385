"""Five-point similarity alignment to face crops like Aff-Wild2's ``cropped_aligned`` ones.

The training crops are 112x112 faces aligned by their landmarks; at inference every face
is warped the same way (eyes, nose and mouth corners onto a fixed template by the
least-squares similarity transform of Umeyama 1991). The pipeline warps each face
straight to the network's input size (:func:`align_faces_into`, the template scaled to
it: the same geometry as a 112 crop resized to that size, one resampling instead of two,
no intermediate crops) into one batch array that ``runtime.normalize_crops`` then
normalises in place.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

REFERENCE_SIZE = 112
# Five-point template of 112x112 aligned faces (the ArcFace / InsightFace convention):
# left eye, right eye, nose, left and right mouth corners, image left first.
TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])


def template(size: int = REFERENCE_SIZE) -> np.ndarray:
    """The landmark template for a ``size`` x ``size`` crop."""
    return TEMPLATE_112 * (size / REFERENCE_SIZE)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping ``src`` points onto
    ``dst`` points (both ``(N, 2)``), as a 2x3 matrix for ``cv2.warpAffine``.

    Umeyama's (1991) least-squares similarity without reflection, in its closed 2-D form:
    with the centred points as complex numbers ``s`` and ``d``, the optimal
    ``scale * rotation`` is the complex number ``a = sum(conj(s) d) / sum(|s|^2)`` (the
    least-squares fit of ``d = a s``), which equals the SVD solution with the reflection
    correction to float rounding (tested) at a third of its cost per face."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"points of shapes {src.shape} and {dst.shape}: need two equal (N>=2, 2) sets")
    s = src[:, 0] + 1j * src[:, 1]
    d = dst[:, 0] + 1j * dst[:, 1]
    mean_s, mean_d = s.mean(), d.mean()
    s_c, d_c = s - mean_s, d - mean_d
    var_s = float((s_c.real**2 + s_c.imag**2).sum())
    if var_s < 1e-12 * len(src):
        raise ValueError("source points coincide: no similarity transform exists")
    a = (np.conj(s_c) @ d_c) / var_s
    t = mean_d - a * mean_s
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = REFERENCE_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` aligned crop of the face with these five landmarks (image
    pixels, in the detectors' order, perception/detection.py); same channel order as
    ``image``, black outside it."""
    matrix = similarity_transform(landmarks, template(size))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_faces_rgb(image_bgr: np.ndarray, landmarks: Sequence[np.ndarray],
                    size: int = REFERENCE_SIZE) -> list[np.ndarray]:
    """Aligned RGB crops (the runtime's input format) of every face of a BGR frame."""
    return [cv2.cvtColor(align_face(image_bgr, lm, size), cv2.COLOR_BGR2RGB) for lm in landmarks]


def align_faces_into(image: np.ndarray, landmarks: Sequence[np.ndarray], out: np.ndarray,
                     sample_size: int = 0) -> np.ndarray:
    """Warp every face of ``image`` into ``out[i]`` (``(N, S, S, 3)`` uint8, same channel
    order as ``image``), aligned on the template scaled to S; returns ``out``.

    ``sample_size`` 0 (or S): straight to S. Otherwise the face is first aligned at
    ``sample_size`` x ``sample_size`` (e.g. 112, the resolution of the training crops) and
    then resized to S, as :func:`align_face` + ``runtime.preprocess_crops`` do."""
    if out.ndim != 4 or out.shape[1] != out.shape[2] or out.shape[3] != 3 or out.dtype != np.uint8:
        raise ValueError(f"out of shape {out.shape} {out.dtype}: expected (N, S, S, 3) uint8")
    if len(landmarks) > len(out):
        raise ValueError(f"{len(landmarks)} faces for an output batch of {len(out)}")
    size = out.shape[1]
    if sample_size and sample_size != size:
        shrink = sample_size > size
        for i, points in enumerate(landmarks):
            crop = align_face(image, points, sample_size)
            cv2.resize(crop, (size, size), dst=out[i], interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return out
    dst = template(size)
    for i, points in enumerate(landmarks):
        cv2.warpAffine(image, similarity_transform(points, dst), (size, size), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out
