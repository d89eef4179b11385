"""Faces warped straight into the network's input batch and normalised in place: the same
values as the step-by-step path (align_face -> RGB -> preprocess_crops), and what warping
straight to 224 changes against sampling the face at 112 first."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from abaw_ros.perception.alignment import align_face, align_faces_into, align_faces_rgb
from abaw_ros.perception.mtcnn import MTCNNDetector
from abaw_ros.runtime import ModelMetadata, normalize_crops, preprocess_crops

META = ModelMetadata(tasks=("va",), window_length=8, input_size=224, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225), feature_names=("a",), feature_shapes=((1, 7, 7),))


@pytest.fixture(scope="module")
def two_faces(astronaut_bgr):
    """A frame with the astronaut and a smaller, rotated copy, and their MTCNN landmarks."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:300, :300] = cv2.resize(astronaut_bgr[:300, 80:380], (300, 300))
    small = cv2.resize(astronaut_bgr[20:240, 130:320], (114, 132))
    rot = cv2.warpAffine(small, cv2.getRotationMatrix2D((57, 66), 20, 1.0), (114, 132), borderValue=(90, 90, 90))
    frame[300:432, 420:534] = rot
    faces = MTCNNDetector(min_face_size=30, num_threads=2).detect(frame)
    assert len(faces) == 2
    return frame, [f.landmarks for f in faces]


def test_straight_warp_and_in_place_normalisation_equal_the_step_by_step_path(two_faces):
    frame, landmarks = two_faces
    out = np.full((3, 224, 224, 3), 7, np.uint8)  # one row more than faces: left untouched
    crops = align_faces_into(frame, landmarks, out)
    assert crops is out and np.all(out[2] == 7)
    for crop, points in zip(out, landmarks, strict=False):
        np.testing.assert_array_equal(crop, align_face(frame, points, 224))
    batch = np.empty((2, 3, 224, 224), np.float32)
    assert normalize_crops(out[:2], META, out=batch, bgr=True) is batch
    reference = preprocess_crops(align_faces_rgb(frame, landmarks, 224), META)
    np.testing.assert_allclose(batch, reference, rtol=0, atol=1e-5)
    # channel order matters: without the swap the same check fails
    assert np.abs(normalize_crops(out[:2], META) - reference).max() > 0.5


def test_sampling_at_112_first_reproduces_the_resized_training_resolution(two_faces):
    frame, landmarks = two_faces
    out = align_faces_into(frame, landmarks, np.empty((2, 224, 224, 3), np.uint8), sample_size=112)
    reference = preprocess_crops(align_faces_rgb(frame, landmarks, 112), META)  # resized inside
    np.testing.assert_allclose(normalize_crops(out, META, bgr=True), reference, rtol=0, atol=1e-5)


def test_straight_warp_has_the_same_geometry_and_more_detail(two_faces):
    """Same face, same template: the two crops differ only by resampling blur (measured
    here: mean |difference| 3.6 and 2.4 grey levels of 255 for the large and the small face;
    the straight crop's Laplacian variance 2.9x and 2.1x higher, i.e. sharper)."""
    frame, landmarks = two_faces
    straight = align_faces_into(frame, landmarks, np.empty((2, 224, 224, 3), np.uint8))
    via_112 = align_faces_into(frame, landmarks, np.empty((2, 224, 224, 3), np.uint8), sample_size=112)
    for a, b in zip(straight, via_112, strict=True):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.mean() < 8.0
        # same geometry: blurring the straight crop to 112's resolution brings it close
        blurred = cv2.resize(cv2.resize(a, (112, 112), interpolation=cv2.INTER_AREA), (224, 224))
        assert np.abs(blurred.astype(np.int16) - b).mean() < diff.mean()
        sharp = [cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() for x in (a, b)]
        assert sharp[0] > 1.3 * sharp[1]


def test_bad_batches_are_named():
    with pytest.raises(ValueError, match=r"expected \(N, 224, 224, 3\) uint8"):
        normalize_crops(np.zeros((1, 112, 112, 3), np.uint8), META)
    with pytest.raises(ValueError, match=r"expected \(1, 3, 224, 224\) float32"):
        normalize_crops(np.zeros((1, 224, 224, 3), np.uint8), META, out=np.empty((2, 3, 224, 224), np.float32))
    with pytest.raises(ValueError, match="3 faces for an output batch of 2"):
        align_faces_into(np.zeros((64, 64, 3), np.uint8), [np.eye(5, 2)] * 3, np.empty((2, 224, 224, 3), np.uint8))
