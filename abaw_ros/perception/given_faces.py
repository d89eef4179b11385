"""Faces detected and tracked elsewhere (a ROS4HRI face detector), fed to the pipeline
under their own ids instead of our detector's and tracker's.

The other system gives, per frame, a box and an id per face; the pipeline still needs five
landmarks to align the face the way the model was trained. They come from our detector's
landmark stage run inside the given box (BlazeFace's face mesh, MTCNN's O-Net), seeded
with typical frontal landmarks for that box; where there is no landmark stage, or the
stage does not find a face inside the box, the typical landmarks are used as they are.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from abaw_ros.perception.detection import FaceDetection, LandmarkStage, landmarks_from_box
from abaw_ros.perception.tracking import Track


@dataclass(frozen=True)
class GivenFace:
    """One face from an external tracker on this frame."""

    face_id: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float = 0.0  # the external detector's confidence in [0, 1]; 0: it gave none


def given_face_tracks(image_bgr: np.ndarray, faces: Sequence[GivenFace], stage: LandmarkStage | None,
                      refine_threshold: float, timings: dict[str, float] | None = None) -> list[Track]:
    """``faces`` as :class:`Track` s with landmarks of this frame, under their own ids.

    A track's score is the landmark stage's face-presence confidence inside the box when
    the stage accepts it (at least ``refine_threshold``), else the external detector's own
    confidence, else 1.0 (the detector reported the face without a confidence). Raises
    ValueError naming the face whose box has no area inside the image."""
    height, width = image_bgr.shape[:2]
    priors = []
    for face in faces:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        box = np.array([np.clip(x1, 0, width), np.clip(y1, 0, height),
                        np.clip(x2, 0, width), np.clip(y2, 0, height)], dtype=np.float64)
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise ValueError(f"face {face.face_id!r}: box {face.box} has no area inside the "
                             f"{width}x{height} image")
        given = float(face.score) if 0.0 < face.score <= 1.0 else 1.0
        priors.append(FaceDetection(box=box, score=given, landmarks=landmarks_from_box(box)))
    refined: list[FaceDetection] = list(priors)
    if stage is not None and priors:
        start = time.perf_counter()
        found = stage.refine(image_bgr, priors)
        refined = [f if f.score >= refine_threshold else p for p, f in zip(priors, found, strict=True)]
        if timings is not None:
            timings["refine"] = timings.get("refine", 0.0) + (time.perf_counter() - start) * 1e3
    # The box stays the external detector's (it is that system's face); landmarks and
    # the confidence are ours where the stage found the face.
    return [Track(face_id=face.face_id, box=prior.box, score=float(found.score),
                  landmarks=np.asarray(found.landmarks, dtype=np.float64), confirmed=True)
            for face, prior, found in zip(faces, priors, refined, strict=True)]
