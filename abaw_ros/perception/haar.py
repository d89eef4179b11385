"""Haar cascade face detector (OpenCV 4.x wheels ship the cascades in ``cv2.data``).

A fallback: frontal faces only, no landmarks (estimated from the box) and no calibrated
confidence (every accepted detection scores 1.0; acceptance is the cascade's own vote of
``min_neighbors`` overlapping windows).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from abaw_ros.perception.detection import FaceDetection, FaceDetector, landmarks_from_box

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


def cascade_path(name: str = DEFAULT_CASCADE) -> Path:
    data = getattr(cv2, "data", None)
    if data is None:
        raise FileNotFoundError("this OpenCV build ships no Haar cascades (cv2.data is missing; "
                                "OpenCV 5 wheels dropped them): install opencv-python-headless<5")
    path = Path(data.haarcascades) / name
    if not path.is_file():
        raise FileNotFoundError(f"Haar cascade {path} not found")
    return path


class HaarDetector(FaceDetector):
    name = "haar"

    def __init__(self, min_face_size: int = 40, min_neighbors: int = 5, scale_factor: float = 1.1,
                 cascade: Path | None = None) -> None:
        path = cascade or cascade_path()
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FileNotFoundError(f"could not load the Haar cascade {path}")
        self.min_face_size = int(min_face_size)
        self.min_neighbors = int(min_neighbors)
        self.scale_factor = float(scale_factor)

    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        grey = cv2.equalizeHist(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))
        found = self._cascade.detectMultiScale(grey, scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors,
                                               minSize=(self.min_face_size, self.min_face_size))
        detections = []
        for x, y, w, h in sorted((tuple(r) for r in found), key=lambda r: -r[2] * r[3]):
            box = np.array([x, y, x + w, y + h], dtype=np.float64)
            detections.append(FaceDetection(box=box, score=1.0, landmarks=landmarks_from_box(box)))
        return detections
