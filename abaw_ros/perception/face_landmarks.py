"""MediaPipe's face-landmark model (468-point face mesh) as a per-face landmark stage.

Model facts (MediaPipe ``mediapipe/modules/face_landmark/face_landmark_cpu.pbtxt`` and
``face_detection_front_detection_to_roi.pbtxt`` / ``face_landmark_landmarks_to_roi.pbtxt``;
the tensors checked with the LiteRT interpreter): input ``(N, 192, 192, 3)`` RGB float in
[0, 1], a square crop around the face rotated so that the eye line is horizontal, 1.5x
the face box (``scale_x: 1.5, scale_y: 1.5, square_long: true``); outputs ``(N, 1, 1,
1404)`` = 468 x (x, y, z) in crop pixels and ``(N, 1, 1, 1)`` a face-presence logit
(sigmoid; MediaPipe drops the landmarks below 0.5).

Five alignment points from the mesh, indices of MediaPipe's canonical face mesh
(``mediapipe/python/solutions/face_mesh_connections.py``: FACEMESH_RIGHT_EYE,
FACEMESH_LEFT_EYE, FACEMESH_LIPS; ``modules/face_geometry/data/canonical_face_model.obj``):
each eye centre is the mean of its 16 contour points (the subject's right eye, 33..133,
is the image's left one); the nose point is vertex 1, the tip on the nose's midline
(canonical model (0, -1.13, 7.48), just below the most forward vertex 4, and nearer
MTCNN's nose point, which the alignment template follows); the mouth corners are 61
(image left) and 291.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from abaw_ros.perception.detection import FaceDetection, LandmarkStage, carried_box
from abaw_ros.perception.mediapipe_models import TFLiteModel, mediapipe_model_dir

MODEL_FILE = "face_landmark.tflite"
INPUT_SIZE = 192
NUM_POINTS = 468
ROI_SCALE = 1.5
# Face-mesh indices (canonical face model); "right"/"left" are the subject's.
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
NOSE_TIP = 1
MOUTH_RIGHT_CORNER = 61  # the subject's right: the image's left
MOUTH_LEFT_CORNER = 291


def five_points(mesh: np.ndarray) -> np.ndarray:
    """``(..., 468, >=2)`` mesh -> ``(..., 5, 2)`` points in the detectors' order (image
    left eye, image right eye, nose, image-left and image-right mouth corner)."""
    xy = np.asarray(mesh)[..., :2]
    return np.stack([
        xy[..., list(RIGHT_EYE_CONTOUR), :].mean(axis=-2),
        xy[..., list(LEFT_EYE_CONTOUR), :].mean(axis=-2),
        xy[..., NOSE_TIP, :],
        xy[..., MOUTH_RIGHT_CORNER, :],
        xy[..., MOUTH_LEFT_CORNER, :],
    ], axis=-2)


@dataclass(frozen=True)
class FaceRoi:
    """A square, rotated region of the image: centre (x, y), side and angle (radians, the
    image's y axis pointing down) of its top edge."""

    centre: np.ndarray
    side: float
    angle: float

    @classmethod
    def around(cls, box: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray,
               scale: float = ROI_SCALE) -> FaceRoi:
        """MediaPipe's face ROI: the box's centre, ``scale`` x its longer side, rotated by
        the line from the image-left eye to the image-right eye."""
        box = np.asarray(box, dtype=np.float64)
        dx, dy = (np.asarray(right_eye, dtype=np.float64) - np.asarray(left_eye, dtype=np.float64))
        side = float(max(box[2] - box[0], box[3] - box[1])) * scale
        return cls(centre=(box[:2] + box[2:]) / 2, side=max(side, 1.0), angle=float(np.arctan2(dy, dx)))

    def to_crop(self, size: int) -> np.ndarray:
        """2x3 affine from image coordinates to ``size`` x ``size`` crop coordinates (both
        continuous: pixel i covers [i, i+1))."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        linear = (size / self.side) * np.array([[c, s], [-s, c]])  # rotate by -angle, scale
        offset = size / 2 - linear @ self.centre
        return np.hstack([linear, offset[:, None]])


def _invert(affine: np.ndarray) -> np.ndarray:
    linear_inv = np.linalg.inv(affine[:, :2])
    return np.hstack([linear_inv, -(linear_inv @ affine[:, 2])[:, None]])


def _index_map(affine: np.ndarray) -> np.ndarray:
    """The continuous affine as ``cv2.warpAffine`` wants it: on pixel indices (centres)."""
    out = affine.copy()
    out[:, 2] += affine[:, :2].sum(axis=1) * 0.5 - 0.5
    return out


def crop_rois(image_rgb: np.ndarray, rois: Sequence[FaceRoi], size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Crops ``(N, size, size, 3)`` uint8 and each crop's image->crop affine; outside the
    image the border pixels are repeated (as MediaPipe's crop does). A ROI more than twice
    the crop size is sampled from a downscaled copy (warpAffine does not anti-alias)."""
    crops = np.empty((len(rois), size, size, 3), dtype=np.uint8)
    affines = []
    height, width = image_rgb.shape[:2]
    shrunk: dict[int, np.ndarray] = {}
    for i, roi in enumerate(rois):
        affine = roi.to_crop(size)
        factor = int(roi.side // size)  # >= 2: shrink so the warp scales by 0.5-1
        source, from_source = image_rgb, affine
        if factor >= 2:
            if factor not in shrunk:
                shrunk[factor] = cv2.resize(image_rgb, (max(1, width // factor), max(1, height // factor)),
                                            interpolation=cv2.INTER_AREA)
            source = shrunk[factor]
            to_image = np.diag([width / source.shape[1], height / source.shape[0], 1.0])
            from_source = affine @ to_image
        crops[i] = cv2.warpAffine(source, _index_map(from_source), (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        affines.append(affine)
    return crops, affines


class FaceLandmarker:
    """The 468-point face mesh on face ROIs, batched: one interpreter call for all faces."""

    def __init__(self, num_threads: int = 1, model_dir: Path | None = None) -> None:
        directory = mediapipe_model_dir() if model_dir is None else Path(model_dir)
        self._model = TFLiteModel(directory / MODEL_FILE, num_threads)

    def mesh(self, image_rgb: np.ndarray, rois: Sequence[FaceRoi]) -> tuple[np.ndarray, np.ndarray]:
        """Mesh points ``(N, 468, 3)`` (x, y in image pixels, z in crop pixels) and
        face-presence scores ``(N,)`` in [0, 1]."""
        if not rois:
            return np.empty((0, NUM_POINTS, 3)), np.empty((0,))
        crops, affines = crop_rois(image_rgb, rois, INPUT_SIZE)
        points, flags = self._model.run(crops.astype(np.float32) * (1.0 / 255.0))
        points = points.reshape(len(rois), NUM_POINTS, 3).astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(flags.reshape(len(rois)).astype(np.float64), -100, 100)))
        for i, affine in enumerate(affines):
            back = _invert(affine)
            points[i, :, :2] = points[i, :, :2] @ back[:, :2].T + back[:, 2]
        return points, scores


class FaceMeshStage(LandmarkStage):
    """Refines tracked faces with the face mesh on each face's ROI: fresh five points, the
    box carried with them, and the model's face-presence score as the confidence."""

    def __init__(self, landmarker: FaceLandmarker) -> None:
        self.landmarker = landmarker

    def refine(self, image_bgr: np.ndarray, priors: Sequence[FaceDetection]) -> list[FaceDetection]:
        if not priors:
            return []
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        rois = [FaceRoi.around(p.box, p.landmarks[0], p.landmarks[1]) for p in priors]
        mesh, scores = self.landmarker.mesh(rgb, rois)
        points = five_points(mesh)
        return [FaceDetection(box=carried_box(p.box, p.landmarks, pts), score=float(s), landmarks=pts)
                for p, pts, s in zip(priors, points, scores, strict=True)]
