"""Face detectors on real face pictures: MTCNN (ONNX Runtime), Haar, YuNet's missing-model error."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from abaw_ros.config import PipelineConfig
from abaw_ros.perception.boxes import iou_matrix, nms
from abaw_ros.perception.detectors import create_detector
from abaw_ros.perception.haar import HaarDetector
from abaw_ros.perception.mtcnn import MTCNNDetector

# Where the astronaut's face is in skimage.data.astronaut() (x1, y1, x2, y2), by eye.
ASTRONAUT_FACE = np.array([170.0, 50.0, 280.0, 185.0])


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector(min_face_size=40, score_threshold=0.9, num_threads=2)


@pytest.fixture(scope="module")
def lfw_face() -> np.ndarray:
    """One real 25x25 grey face (float 0..1) from Labeled Faces in the Wild."""
    from skimage import data

    return data.lfw_subset()[0]


def two_face_frame(astronaut_bgr: np.ndarray, lfw_face: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 640x480 frame with the astronaut's head on the left and a Labeled-Faces-in-the-Wild
    face (enlarged) on the right; returns the frame and where each face was pasted."""
    frame = np.full((480, 640, 3), 110, np.uint8)
    head = astronaut_bgr[20:240, 130:320]  # 220x190, face inside
    frame[100:320, 40:230] = head
    lfw = cv2.resize((lfw_face * 255).astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
    frame[150:300, 420:570] = lfw[..., None]
    return frame, [np.array([40, 100, 230, 320.0]), np.array([420, 150, 570, 300.0])]


def test_boxes_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    scores = np.array([0.5, 0.9, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert iou_matrix(boxes[:1], boxes[:1])[0, 0] == pytest.approx(1.0)
    nested = np.array([[0, 0, 100, 100], [10, 10, 30, 30]], dtype=float)
    assert nms(nested, np.array([0.9, 0.8]), 0.7, mode="union").tolist() == [0, 1]
    assert nms(nested, np.array([0.9, 0.8]), 0.7, mode="min").tolist() == [0]


def test_mtcnn_finds_the_astronauts_face_with_landmarks_inside(mtcnn, astronaut_bgr):
    faces = mtcnn.detect(astronaut_bgr)
    assert len(faces) == 1, [f.box for f in faces]
    face = faces[0]
    assert face.score > 0.95
    assert iou_matrix(face.box[None], ASTRONAUT_FACE[None])[0, 0] > 0.5, face.box
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2)), face.landmarks
    assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2)), face.landmarks
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]  # image-left eye first
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert mouth_left[0] < mouth_right[0]


def test_mtcnn_finds_two_pasted_faces(mtcnn, astronaut_bgr, lfw_face):
    frame, pasted = two_face_frame(astronaut_bgr, lfw_face)
    faces = mtcnn.detect(frame)
    assert len(faces) == 2, [(f.box, f.score) for f in faces]
    overlap = iou_matrix(np.stack(pasted), np.stack([f.box for f in faces]))
    # each pasted region holds exactly one detection
    assert (overlap > 0.1).sum(axis=1).tolist() == [1, 1], overlap


def test_mtcnn_follows_the_face_when_it_moves_and_scales(mtcnn, astronaut_bgr):
    for scale, (dx, dy) in [(0.6, (300, 200)), (1.0, (100, 0)), (1.4, (0, 0))]:
        small = cv2.resize(astronaut_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frame = np.full((max(720, small.shape[0] + dy), max(960, small.shape[1] + dx), 3), 80, np.uint8)
        frame[dy:dy + small.shape[0], dx:dx + small.shape[1]] = small
        faces = mtcnn.detect(frame)
        expected = ASTRONAUT_FACE * scale + np.array([dx, dy, dx, dy])
        assert len(faces) == 1
        assert iou_matrix(faces[0].box[None], expected[None])[0, 0] > 0.5, (scale, faces[0].box, expected)


@pytest.mark.parametrize("kind", ["blank", "noise", "gradient"])
def test_mtcnn_finds_no_face_where_there_is_none(mtcnn, kind):
    rng = np.random.default_rng(0)
    frame = {
        "blank": np.zeros((480, 640, 3), np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "gradient": np.broadcast_to(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 640, 3)).copy(),
    }[kind]
    assert mtcnn.detect(frame) == []


def test_mtcnn_min_face_size_bounds_the_pyramid(astronaut_bgr):
    # the astronaut's face is about 90 px wide: a 200 px minimum must skip it
    big_only = MTCNNDetector(min_face_size=200)
    assert big_only.scales(512, 512)[0] == pytest.approx(12 / 200)
    assert big_only.detect(astronaut_bgr) == []
    with pytest.raises(ValueError, match="min_face_size=8"):
        MTCNNDetector(min_face_size=8)


def test_mtcnn_handles_frames_smaller_than_its_window(mtcnn):
    assert mtcnn.detect(np.zeros((10, 10, 3), np.uint8)) == []


def test_haar_finds_the_astronauts_face_with_estimated_landmarks(astronaut_bgr):
    faces = HaarDetector(min_face_size=40).detect(astronaut_bgr)
    assert len(faces) == 1
    face = faces[0]
    assert iou_matrix(face.box[None], ASTRONAUT_FACE[None])[0, 0] > 0.4, face.box
    assert face.landmarks.shape == (5, 2)
    assert face.landmarks[0, 0] < face.landmarks[1, 0]
    assert HaarDetector().detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_yunet_without_a_model_file_names_the_parameter(tmp_path):
    config = PipelineConfig(detector="yunet", detector_model_path=str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError, match="detector_model_path=.*missing.onnx"):
        create_detector(config)


def test_create_detector_builds_the_configured_detector():
    assert create_detector(PipelineConfig(detector="mtcnn")).name == "mtcnn"
    assert create_detector(PipelineConfig(detector="haar")).name == "haar"
