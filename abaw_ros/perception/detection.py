"""The face detector interface: what every detector returns and the landmark stage that
refreshes tracked faces between detector runs.

Every detector returns, per face, a box, a confidence and five landmarks in the order
left eye, right eye, nose, left mouth corner, right mouth corner, where "left" is the
image's left (the subject's right). Each detector lives in its own module; the registry
that builds one from the config is ``perception/detectors.py``. This module imports no
detector.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaceDetection:
    """One detected face in image pixels."""

    box: np.ndarray  # (4,) float: x1, y1, x2, y2
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray  # (5, 2) float: x, y of the five points in the order above

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


class LandmarkStage(ABC):
    """Refreshes known faces on a new frame: cheaper than a detector run, and it only
    looks where each face was (a tracked face moves little between frames)."""

    @abstractmethod
    def refine(self, image_bgr: np.ndarray, priors: Sequence[FaceDetection]) -> list[FaceDetection]:
        """One detection per prior, in the same order: the face's box and landmarks on this
        frame and the stage's confidence in [0, 1] that a face is still there."""


class FaceDetector(ABC):
    """Finds faces in a BGR uint8 image ``(H, W, 3)`` of any size.

    The contract every detector keeps (tests/test_perception_detector_contract.py checks
    each registered one): ``detect`` returns a list, most confident first; each face has a
    box ``x1 < x2, y1 < y2`` in pixels, inside the image when the face is in view (a face cut
    by the edge may reach past it; the pipeline clips what it publishes), a score in [0, 1]
    and five landmarks in the order above; a frame without a face, or smaller than the
    detector's window, gives an empty list. ``name`` is the detector's registry name.
    """

    name: str = "detector"

    @abstractmethod
    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """Faces in the image, most confident first (see the class's contract)."""

    def landmark_stage(self) -> LandmarkStage | None:
        """The detector's cheap per-face stage for frames between detector runs, or None
        when it has none (the tracks then keep their last landmarks)."""
        return None


def landmarks_from_box(box: np.ndarray) -> np.ndarray:
    """Typical five-point positions inside a frontal face box, for detectors without
    landmarks (MTCNN's landmarks on a frontal face, relative to the Haar cascade's box)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    relative = np.array([[0.29, 0.37], [0.71, 0.37], [0.50, 0.62], [0.32, 0.79], [0.68, 0.79]])
    return np.stack([x1 + relative[:, 0] * (x2 - x1), y1 + relative[:, 1] * (y2 - y1)], axis=1)


def carried_box(box: np.ndarray, old_landmarks: np.ndarray, new_landmarks: np.ndarray) -> np.ndarray:
    """``box`` moved and scaled with the face: its centre follows the landmarks' mean and
    its size their spread, so a refined face keeps its detector's box style."""
    old_landmarks = np.asarray(old_landmarks, dtype=np.float64)
    new_landmarks = np.asarray(new_landmarks, dtype=np.float64)
    old_mean, new_mean = old_landmarks.mean(axis=0), new_landmarks.mean(axis=0)
    old_spread = np.sqrt(((old_landmarks - old_mean) ** 2).sum(axis=1).mean())
    new_spread = np.sqrt(((new_landmarks - new_mean) ** 2).sum(axis=1).mean())
    scale = new_spread / old_spread if old_spread > 1e-6 else 1.0
    box = np.asarray(box, dtype=np.float64)
    centre = (box[:2] + box[2:]) / 2
    half = (box[2:] - box[:2]) / 2 * scale
    centre = new_mean + (centre - old_mean) * scale
    return np.concatenate([centre - half, centre + half])
