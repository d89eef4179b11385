"""Faces tracked elsewhere (a ROS4HRI face detector) fed to the pipeline under their ids,
and the ROS4HRI field values of a face; no ROS. Real face frames, MTCNN, ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest
from test_perception_pipeline import scene

from abaw_ros.config import ConfigError, PipelineConfig
from abaw_ros.perception.given_faces import GivenFace
from abaw_ros.perception.pipeline import FaceResult, PerceptionPipeline
from abaw_ros.perception.ros4hri_values import (
    AU_FACS_NUMBERS,
    FACS_SIZE,
    affect_confidence,
    expression_values,
    facs_values,
    normalized_roi,
    pixel_box,
)
from abaw_ros.runtime import load_backend


@pytest.fixture(scope="module")
def backend(model_bundle):
    return load_backend(model_bundle, backend="onnxruntime", num_threads=2)


def pipeline(backend, **overrides) -> PerceptionPipeline:
    values = {"backend": "onnxruntime", "detector": "mtcnn", "detection_interval": 1, "track_min_hits": 1}
    values.update(overrides)
    return PerceptionPipeline(PipelineConfig(**values), backend=backend)


def own_faces(backend, frames):
    """Our detector's and tracker's faces on each frame (boxes as x1, y1, x2, y2)."""
    own = pipeline(backend)
    return [own.process(frame, i).faces for i, frame in enumerate(frames)]


def test_given_faces_keep_their_ids_and_fill_their_windows(backend, astronaut_bgr):
    frames = [scene(astronaut_bgr, i, faces=2) for i in range(6)]
    reference = own_faces(backend, frames)
    follow = pipeline(backend)
    for i, frame in enumerate(frames):
        given = [GivenFace(f"hri{k}", (x, y, x + w, y + h), 0.0)
                 for k, (x, y, w, h) in enumerate(f.box for f in sorted(reference[i], key=lambda f: f.box[0]))]
        result = follow.process(frame, i, given, tracked=["hri0", "hri1"])
        assert sorted(f.face_id for f in result.faces) == ["hri0", "hri1"]
        assert result.tracked == ["hri0", "hri1"]
        for face in result.faces:
            assert face.frames_observed == min(i + 1, face.window_length)
            # Aligned by our landmark stage inside their box: the landmarks our detector finds.
            mine = min(reference[i], key=lambda f: np.abs(f.landmarks - face.landmarks).max())
            assert np.abs(mine.landmarks - face.landmarks).max() < 0.05 * mine.box[2], (mine.landmarks, face.landmarks)
            assert face.box == mine.box or np.abs(np.subtract(face.box, mine.box)).max() <= 1
            assert 0.5 < face.confidence <= 1.0  # O-Net's face probability inside the box
    # Our own tracker was not used: it never saw a face.
    assert follow.faces.tracker.tracks == []


def test_a_tracked_but_unseen_face_keeps_its_window_and_a_dropped_id_frees_it(backend, astronaut_bgr):
    frames = [scene(astronaut_bgr, i) for i in range(4)]
    ((face0,),) = own_faces(backend, frames[:1])
    x, y, w, h = face0.box
    follow = pipeline(backend)
    given = [GivenFace("abcde", (x, y, x + w, y + h))]
    assert follow.process(frames[0], 0, given, ["abcde"]).faces[0].frames_observed == 1
    # Tracked but not seen on this frame: no result, the window is kept.
    result = follow.process(frames[1], 1, [], ["abcde"])
    assert result.faces == [] and result.tracked == ["abcde"]
    assert follow.process(frames[0], 2, given, ["abcde"]).faces[0].frames_observed == 2
    # No longer tracked: the window is freed, and the id starts again if it comes back.
    assert follow.process(frames[1], 3, [], []).tracked == []
    assert follow.process(frames[0], 4, given, ["abcde"]).faces[0].frames_observed == 1


def test_given_faces_beyond_max_faces_keep_the_largest(backend, astronaut_bgr):
    frame = scene(astronaut_bgr, 0, faces=2)
    faces = own_faces(backend, [frame])[0]
    boxes = sorted(((x, y, x + w, y + h) for x, y, w, h in (f.box for f in faces)), key=lambda b: b[0])
    small = (boxes[1][0] + 10, boxes[1][1] + 10, boxes[1][2] - 10, boxes[1][3] - 10)
    follow = pipeline(backend, max_faces=1)
    result = follow.process(frame, 0, [GivenFace("small", small), GivenFace("large", boxes[0])], ["small", "large"])
    assert [f.face_id for f in result.faces] == ["large"]


def test_a_given_box_outside_the_image_is_refused_with_its_id(backend, astronaut_bgr):
    follow = pipeline(backend)
    with pytest.raises(ValueError, match="'gone'.*no area"):
        follow.process(scene(astronaut_bgr, 0), 0, [GivenFace("gone", (700.0, 10.0, 800.0, 90.0))])


def face(**overrides) -> FaceResult:
    values = dict(face_id="f1", box=(64, 48, 128, 96), confidence=0.9, window_length=8, frames_observed=6,
                  outputs={"va": np.array([0.25, -0.5], np.float32),
                           "au": np.linspace(0.05, 0.95, 12, dtype=np.float32)},
                  au_active=np.zeros(12, bool), hesitant=False)
    values.update(overrides)
    return FaceResult(**values)


def test_confidence_is_window_fill_times_detection_and_zero_untrained():
    assert affect_confidence(face(), True) == pytest.approx(6 / 8 * 0.9)
    assert affect_confidence(face(frames_observed=8), True) == pytest.approx(0.9)
    assert affect_confidence(face(), False) == 0.0
    assert affect_confidence(face(confidence=1.7), True) == pytest.approx(6 / 8)


def test_facs_puts_our_aus_at_their_facs_numbers_and_zero_elsewhere():
    f = face()
    intensity, confidence = facs_values(f, True)
    assert intensity.shape == confidence.shape == (FACS_SIZE,)
    assert AU_FACS_NUMBERS == (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)
    np.testing.assert_array_equal(intensity[list(AU_FACS_NUMBERS)], f.outputs["au"])
    np.testing.assert_allclose(confidence[list(AU_FACS_NUMBERS)], 6 / 8 * 0.9, rtol=1e-6)
    others = np.setdiff1d(np.arange(FACS_SIZE), AU_FACS_NUMBERS)
    assert not intensity[others].any() and not confidence[others].any()
    assert facs_values(face(outputs={"va": np.zeros(2, np.float32)}), True) is None


def test_expression_carries_valence_arousal_and_no_category():
    values = expression_values(face(), True)
    assert values == {"expression": "", "valence": 0.25, "arousal": -0.5,
                      "confidence": pytest.approx(6 / 8 * 0.9)}
    assert expression_values(face(outputs={"au": np.zeros(12, np.float32)}), True) is None


def test_normalized_roi_round_trips_to_pixels():
    roi = normalized_roi((64, 48, 128, 96), (480, 640, 3))
    assert roi == pytest.approx((0.1, 0.1, 0.3, 0.3))
    assert pixel_box(roi, (480, 640)) == pytest.approx((64, 48, 192, 144))
    assert normalized_roi((600, -10, 100, 50), (480, 640)) == pytest.approx((600 / 640, 0.0, 1.0, 40 / 480))


@pytest.mark.parametrize(("values", "message"), [
    ({"ros4hri_faces": "follow"}, "ros4hri_faces='follow': needs publish_ros4hri=true"),
    ({"publish_ros4hri": True, "ros4hri_faces": "theirs"}, "ros4hri_faces='theirs': must be one of"),
    ({"ros4hri_roi_max_age": -0.1}, "ros4hri_roi_max_age=-0.1: must be 0 to 5 seconds"),
    ({"ros4hri_roi_max_age": float("nan")}, "ros4hri_roi_max_age=nan"),
])
def test_ros4hri_parameters_are_checked(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PipelineConfig(**values).validate(check_files=False)
