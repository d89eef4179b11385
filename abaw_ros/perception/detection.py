"""The face detector interface and the factory that picks one from the config.

Every detector returns, per face, a box, a confidence and five landmarks in the order
left eye, right eye, nose, left mouth corner, right mouth corner, where "left" is the
image's left (the subject's right). Each detector lives in its own module and is
imported only when chosen.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from abaw_ros.config import PipelineConfig

LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class FaceDetection:
    """One detected face in image pixels."""

    box: np.ndarray  # (4,) float: x1, y1, x2, y2
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray  # (5, 2) float: x, y in LANDMARK_NAMES order

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


class FaceDetector(ABC):
    """Finds faces in a BGR uint8 image ``(H, W, 3)``."""

    name: str = "detector"

    @abstractmethod
    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """Faces in the image, most confident first."""


def landmarks_from_box(box: np.ndarray) -> np.ndarray:
    """Typical five-point positions inside a frontal face box, for detectors without
    landmarks (MTCNN's landmarks on a frontal face, relative to the Haar cascade's box)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    relative = np.array([[0.29, 0.37], [0.71, 0.37], [0.50, 0.62], [0.32, 0.79], [0.68, 0.79]])
    return np.stack([x1 + relative[:, 0] * (x2 - x1), y1 + relative[:, 1] * (y2 - y1)], axis=1)


def create_detector(config: PipelineConfig) -> FaceDetector:
    """The detector named by ``config.detector``, set up from the config."""
    if config.detector == "mtcnn":
        from abaw_ros.perception.mtcnn import MTCNNDetector

        return MTCNNDetector(min_face_size=config.min_face_size,
                             score_threshold=config.detection_threshold,
                             num_threads=config.num_threads)
    if config.detector == "yunet":
        from abaw_ros.perception.yunet import YuNetDetector

        return YuNetDetector(config.detector_model_path,
                             score_threshold=config.detection_threshold,
                             min_face_size=config.min_face_size)
    if config.detector == "haar":
        from abaw_ros.perception.haar import HaarDetector

        return HaarDetector(min_face_size=config.min_face_size)
    raise ValueError(f"detector={config.detector!r}: must be one of 'mtcnn', 'yunet', 'haar'")
