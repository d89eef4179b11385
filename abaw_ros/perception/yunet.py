"""YuNet face detector through OpenCV's ``cv2.FaceDetectorYN``.

The model file (``face_detection_yunet_2023mar.onnx`` from the OpenCV model zoo) is not
shipped; the user supplies it with the ``detector_model_path`` parameter.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from abaw_ros.config import ModelFileError
from abaw_ros.perception.detection import FaceDetection, FaceDetector


class YuNetDetector(FaceDetector):
    """YuNet: boxes, scores and five landmarks (same order as MTCNN) in one network."""

    name = "yunet"

    def __init__(self, model_path: str | Path, score_threshold: float = 0.9, min_face_size: int = 40,
                 nms_threshold: float = 0.3, top_k: int = 50) -> None:
        path = Path(model_path) if str(model_path) else None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"detector_model_path={str(model_path)!r}: YuNet model file not found; download "
                f"face_detection_yunet_2023mar.onnx from the OpenCV model zoo and give its path")
        self.min_face_size = int(min_face_size)
        try:
            self._detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), float(score_threshold),
                                                       float(nms_threshold), int(top_k))
        except cv2.error as exc:  # not an ONNX graph OpenCV's DNN module can read
            reason = " ".join(str(exc).split("error:", 1)[-1].split())[:200]
            raise ModelFileError(f"detector_model_path={str(model_path)!r}: OpenCV cannot load it as a "
                                 f"YuNet ONNX model ({path.stat().st_size} bytes; {reason})") from None
        self._input_size: tuple[int, int] = (320, 320)

    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        size = (image_bgr.shape[1], image_bgr.shape[0])
        if size != self._input_size:
            self._detector.setInputSize(size)
            self._input_size = size
        _, faces = self._detector.detect(image_bgr)
        if faces is None:
            return []
        detections = []
        # Row: x, y, w, h, 5 x (x, y) landmarks (right eye, left eye of the subject = image
        # left then right, nose, mouth corners in the same order), score.
        for row in sorted(faces, key=lambda r: -float(r[14])):
            x, y, w, h = (float(v) for v in row[:4])
            detections.append(FaceDetection(box=np.array([x, y, x + w, y + h]), score=float(row[14]),
                                            landmarks=np.asarray(row[4:14], dtype=np.float64).reshape(5, 2)))
        return detections
