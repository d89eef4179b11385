"""Box geometry shared by the detectors and the tracker.

Boxes are float arrays ``(N, 4)`` of corners ``x1, y1, x2, y2`` in pixels (x2/y2 exclusive).
"""
from __future__ import annotations

import numpy as np


def areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas, ``(len(a), len(b))``."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union, ``(len(a), len(b))``."""
    inter = intersections(a, b)
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    ``mode="union"`` compares IoU with ``threshold``; ``mode="min"`` compares the
    intersection over the smaller box (MTCNN's last stage, removes boxes nested in others).
    """
    if mode not in ("union", "min"):
        raise ValueError(f"mode={mode!r}: must be 'union' or 'min'")
    order = np.argsort(-scores, kind="stable")
    ordered = boxes[order]
    inter = intersections(ordered, ordered)
    box_areas = areas(ordered)
    if mode == "union":
        denominator = box_areas[:, None] + box_areas[None, :] - inter
    else:
        denominator = np.minimum(box_areas[:, None], box_areas[None, :])
    suppress = inter > threshold * np.maximum(denominator, 1e-9)
    # One overlap matrix, then a greedy pass that only visits the kept boxes.
    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    for i in range(len(order)):
        if alive[i]:
            keep.append(i)
            alive &= ~suppress[i]
    return order[np.asarray(keep, dtype=np.int64)]


def square(boxes: np.ndarray) -> np.ndarray:
    """The square box of side max(w, h) with the same centre."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out
