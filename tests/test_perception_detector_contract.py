"""Every registered face detector keeps the contract of ``perception.detection.FaceDetector``,
checked the same way for each (as timm's tests run every registered model): boxes with
x1 < x2, y1 < y2 inside the image where the face is in view, scores in [0, 1] sorted
descending, five landmarks per face, no face on a blank frame, at least one on a real face.

A detector whose package or model file is missing here is skipped with the reason. YuNet's
model file is never shipped (docs/PERCEPTION.md): set ABAW_YUNET_MODEL to its path to run it.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from abaw_ros.config import DETECTORS, PipelineConfig
from abaw_ros.perception.detection import FaceDetection, FaceDetector
from abaw_ros.perception.detectors import DETECTOR_FACTORIES, create_detector

# Where the astronaut's face is in skimage.data.astronaut() (x1, y1, x2, y2), by eye.
ASTRONAUT_FACE = np.array([170.0, 50.0, 280.0, 185.0])


def _variants() -> list[tuple[str, dict]]:
    """Every registry entry, BlazeFace in both of its ranges."""
    variants = []
    for name in sorted(DETECTOR_FACTORIES):
        if name == "blazeface":
            variants += [(name, {"blazeface_range": "full"}), (name, {"blazeface_range": "short"})]
        elif name == "yunet":
            variants.append((name, {"detector_model_path": os.environ.get("ABAW_YUNET_MODEL", "")}))
        else:
            variants.append((name, {}))
    return variants


VARIANTS = _variants()
IDS = [name + "".join(f"-{v}" for k, v in options.items() if k == "blazeface_range") for name, options in VARIANTS]


@pytest.fixture(scope="module", params=VARIANTS, ids=IDS)
def detector(request) -> FaceDetector:
    name, options = request.param
    if name == "yunet" and not options["detector_model_path"]:
        pytest.skip("YuNet's model file is supplied by the user (no package ships it): "
                    "set ABAW_YUNET_MODEL=<face_detection_yunet_2023mar.onnx> to run its contract")
    try:
        return create_detector(PipelineConfig(detector=name, min_face_size=40, num_threads=2, **options))
    except (ImportError, FileNotFoundError) as exc:  # an optional package or its model file
        pytest.skip(f"detector {name!r} cannot be built here: {exc}")


def check_contract(faces: list[FaceDetection], image: np.ndarray) -> None:
    """What every detector promises about its output, whatever the frame."""
    height, width = image.shape[:2]
    assert isinstance(faces, list)
    for face in faces:
        assert isinstance(face, FaceDetection)
        box = np.asarray(face.box, dtype=np.float64)
        assert box.shape == (4,) and np.isfinite(box).all(), face.box
        assert box[0] < box[2] and box[1] < box[3], f"empty or inverted box {box}"
        # The box overlaps the picture (a face cut by the edge may reach past it: the pipeline
        # clips what it publishes).
        assert box[0] < width and box[1] < height and box[2] > 0 and box[3] > 0, (box, width, height)
        assert 0.0 <= face.score <= 1.0, face.score
        landmarks = np.asarray(face.landmarks)
        assert landmarks.shape == (5, 2) and np.isfinite(landmarks).all(), landmarks
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True), f"scores not most confident first: {scores}"


def _inside(box: np.ndarray, width: int, height: int, tolerance: float = 1.0) -> bool:
    return bool(box[0] >= -tolerance and box[1] >= -tolerance
                and box[2] <= width + tolerance and box[3] <= height + tolerance)


def test_registry_lists_every_configurable_detector():
    assert sorted(DETECTOR_FACTORIES) == sorted(DETECTORS)
    for name in DETECTOR_FACTORIES:
        assert name in IDS or any(i.startswith(name + "-") for i in IDS)


def test_detector_is_a_face_detector_named_after_its_registry_entry(detector):
    assert isinstance(detector, FaceDetector)
    assert detector.name in DETECTOR_FACTORIES


def test_real_face_gives_a_face_over_it_with_five_landmarks_in_order(detector, astronaut_bgr):
    faces = detector.detect(astronaut_bgr)
    check_contract(faces, astronaut_bgr)
    assert faces, f"{detector.name} found no face in skimage.data.astronaut()"
    height, width = astronaut_bgr.shape[:2]
    assert all(_inside(face.box, width, height) for face in faces), [f.box for f in faces]
    best = faces[0]
    centre = (best.box[:2] + best.box[2:]) / 2
    assert ASTRONAUT_FACE[0] < centre[0] < ASTRONAUT_FACE[2] and ASTRONAUT_FACE[1] < centre[1] < ASTRONAUT_FACE[3]
    left_eye, right_eye, nose, mouth_left, mouth_right = best.landmarks
    # Image left first; eyes above the nose, the nose above the mouth (a frontal, upright face).
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_faces_in_a_large_frame_keep_the_contract(detector, astronaut_bgr):
    frame = cv2.resize(astronaut_bgr, (1280, 1280), interpolation=cv2.INTER_LINEAR)
    faces = detector.detect(frame)
    check_contract(faces, frame)
    assert faces and all(_inside(face.box, 1280, 1280) for face in faces)


def test_face_cut_by_the_edge_gives_a_box_that_overlaps_the_image(detector, astronaut_bgr):
    # The astronaut's face with its top-left part outside the frame.
    frame = np.ascontiguousarray(astronaut_bgr[90:400, 200:500])
    check_contract(detector.detect(frame), frame)


@pytest.mark.parametrize("kind", ["blank", "grey", "tiny"])
def test_frame_without_a_face_gives_none(detector, kind):
    frame = {
        "blank": np.zeros((480, 640, 3), np.uint8),
        "grey": np.full((480, 640, 3), 110, np.uint8),
        "tiny": np.zeros((10, 10, 3), np.uint8),  # smaller than any detector's window
    }[kind]
    assert detector.detect(frame) == []


def test_same_frame_gives_the_same_faces(detector, astronaut_bgr):
    first, second = detector.detect(astronaut_bgr), detector.detect(astronaut_bgr.copy())
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)
        assert a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("bad", ["unsorted", "four_landmarks", "outside", "inverted", "score_above_one"])
def test_contract_check_rejects_each_broken_promise(bad):
    image = np.zeros((100, 100, 3), np.uint8)

    def face(box=(10, 10, 50, 50), score=0.9, points=5):
        return FaceDetection(box=np.array(box, float), score=score, landmarks=np.zeros((points, 2)))

    faces = {
        "unsorted": [face(score=0.5), face(score=0.9)],
        "four_landmarks": [face(points=4)],
        "outside": [face(box=(120, 10, 160, 50))],
        "inverted": [face(box=(50, 10, 10, 50))],
        "score_above_one": [face(score=1.5)],
    }[bad]
    check_contract([face()], image)
    with pytest.raises(AssertionError):
        check_contract(faces, image)
