"""Five-point similarity alignment: exact on synthetic points, eyes on the template for a real face."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from abaw_ros.perception.alignment import align_face, align_faces_rgb, similarity_transform, template
from abaw_ros.perception.mtcnn import MTCNNDetector


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector(min_face_size=30, num_threads=2)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_similarity_transform_recovers_a_known_transform():
    angle, scale, shift = np.deg2rad(25), 1.7, np.array([12.0, -40.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.random.default_rng(1).uniform(0, 200, (5, 2))
    dst = scale * src @ rotation.T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-7)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), dst)
    with pytest.raises(ValueError, match="shapes"):
        similarity_transform(src[:4], dst)


def test_reflection_is_never_used():
    src = template()
    mirrored = src * np.array([-1.0, 1.0])  # a mirror image cannot be matched by rotation + scale
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_template_scales_with_crop_size():
    np.testing.assert_allclose(template(224), 2 * template(112))


@pytest.mark.parametrize("angle", [0.0, 20.0, -30.0])
def test_real_face_lands_on_the_template(mtcnn, astronaut_bgr, angle):
    # rotate the whole picture, detect, align: the eyes must end up on the template's eyes
    centre = (256.0, 256.0)
    rotated = cv2.warpAffine(astronaut_bgr, cv2.getRotationMatrix2D(centre, angle, 1.0), (512, 512))
    (face,) = mtcnn.detect(rotated)
    matrix = similarity_transform(face.landmarks, template(112))
    mapped = apply(matrix, face.landmarks)
    assert np.abs(mapped[:2] - template(112)[:2]).max() < 4.0  # eyes
    crop = align_face(rotated, face.landmarks, 112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    # independent check: detect again inside the (enlarged) aligned crop
    big = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_CUBIC)
    canvas = np.zeros((448, 448, 3), np.uint8)
    canvas[112:336, 112:336] = big
    (again,) = mtcnn.detect(canvas)
    eyes = (again.landmarks[:2] - 112) / 2
    assert np.abs(eyes - template(112)[:2]).max() < 5.0, eyes
    assert abs(eyes[0, 1] - eyes[1, 1]) < 3.0  # eye line horizontal whatever the head roll


def test_align_faces_rgb_swaps_channels(astronaut_bgr, mtcnn):
    (face,) = mtcnn.detect(astronaut_bgr)
    (rgb,) = align_faces_rgb(astronaut_bgr, [face.landmarks], 112)
    np.testing.assert_array_equal(rgb, align_face(astronaut_bgr, face.landmarks, 112)[..., ::-1])


def umeyama_svd(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama 1991 by SVD, with the reflection correction: an independent reference."""
    mean_s, mean_d = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mean_s, dst - mean_d
    u, sigma, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(sigma) @ d) / ((src_c**2).sum() / len(src))
    return np.hstack([scale * rotation, (mean_d - scale * rotation @ mean_s)[:, None]])


def test_closed_form_equals_umeyamas_svd_solution_on_noisy_and_mirrored_points():
    rng = np.random.default_rng(7)
    for _ in range(200):
        src = rng.uniform(0, 640, (5, 2))
        dst = template(224) + rng.normal(0, rng.uniform(0.1, 30), (5, 2))
        if rng.random() < 0.2:
            dst = dst * np.array([-1.0, 1.0])  # reflections must not be fitted
        np.testing.assert_allclose(similarity_transform(src, dst), umeyama_svd(src, dst), atol=1e-9, rtol=1e-9)
