"""Face tracking by detection: stable string ids across frames, and detect-then-track.

Each detector run is matched to the live tracks by box overlap (IoU) and centre distance
(Hungarian assignment). A new face is published only after ``min_hits`` frames in a row
on which it was found, by the detector or the landmark stage (birth hysteresis), and a
track survives ``max_misses`` detector runs without a match before it is dropped (death
hysteresis), so a face that the detector misses for a frame keeps its id and its
temporal buffer; at most ``max_faces`` such hidden tracks are kept (the longest-missed
go first), which bounds their memory whatever ``max_misses`` is. Between detector runs (``update(None)``) tracks keep
their last box unless ``refine`` gave them a fresh one from a landmark stage.

:class:`DetectAndTrack` schedules the two: the full detector every ``detection_interval``
frames, the detector's cheap landmark stage on every tracked face in between, and the
detector again at once when a face's refinement confidence falls below the threshold. A
published face that a detector run misses is looked for by the landmark stage on that same
frame and stays published when it is found there (the detector then only adds faces and
re-anchors boxes; a detector that misses a small face on some runs no longer makes it blink).
"""
from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from abaw_ros.config import PipelineConfig
from abaw_ros.perception.boxes import iou_matrix
from abaw_ros.perception.detection import FaceDetection, FaceDetector, LandmarkStage

_FORBIDDEN = 1e6


@dataclass
class Track:
    """One tracked face; box, landmarks and score are those of its latest matched detection
    or, between detector runs, of its latest accepted refinement."""

    face_id: str
    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)
    hits: int = 1  # consecutive frames found (detector matches and accepted refinements)
    misses: int = 0  # consecutive detector runs without a match
    confirmed: bool = False

    def as_detection(self) -> FaceDetection:
        return FaceDetection(box=self.box, score=self.score, landmarks=self.landmarks)

    @property
    def visible(self) -> bool:
        """Published: born and matched by the latest detector run."""
        return self.confirmed and self.misses == 0

    def update(self, detection: FaceDetection, min_hits: int) -> None:
        self.box = detection.box.astype(np.float64)
        self.score = detection.score
        self.landmarks = detection.landmarks.astype(np.float64)
        self.hits += 1
        self.misses = 0
        self.confirmed = self.confirmed or self.hits >= min_hits


def select_faces(detections: Sequence[FaceDetection], min_face_size: float,
                 max_faces: int) -> list[FaceDetection]:
    """Drop faces smaller than ``min_face_size`` (shorter side) and keep the ``max_faces``
    largest, most confident ones (ranked by area x score)."""
    large = [d for d in detections if min(d.width, d.height) >= min_face_size]
    large.sort(key=lambda d: d.width * d.height * d.score, reverse=True)
    return large[:max_faces]


@functools.cache
def _hungarian() -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """scipy's Hungarian solver, or None where scipy is not installed (it is optional in
    the core install); imported once, at tracker construction, not on a frame."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return None
    return linear_sum_assignment


def _assign(cost: np.ndarray, hungarian: bool = True) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs (row, col) among the allowed costs: Hungarian when
    scipy is there, else greedy on sorted costs (the same for the few faces of a frame
    unless two candidate pairings tie closely)."""
    if cost.size == 0:
        return []
    solver = _hungarian() if hungarian else None
    if solver is not None:
        rows, cols = solver(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _FORBIDDEN]
    pairs: list[tuple[int, int]] = []
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    for flat in np.argsort(cost, axis=None, kind="stable"):
        r, c = divmod(int(flat), cost.shape[1])
        if r not in used_rows and c not in used_cols and cost[r, c] < _FORBIDDEN:
            pairs.append((r, c))
            used_rows.add(r)
            used_cols.add(c)
    return pairs


class FaceTracker:
    """Assigns stable ids to detected faces (``face_1``, ``face_2``, ...)."""

    def __init__(self, iou_threshold: float = 0.3, distance_threshold: float = 0.5, min_hits: int = 2,
                 max_misses: int = 5, max_faces: int = 4, min_face_size: float = 40) -> None:
        self.iou_threshold = float(iou_threshold)
        self.distance_threshold = float(distance_threshold)
        self.min_hits = int(min_hits)
        self.max_misses = int(max_misses)
        self.max_faces = int(max_faces)
        self.min_face_size = float(min_face_size)
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)
        _hungarian()

    def reconfigure(self, config: PipelineConfig) -> None:
        """Take the thresholds and limits of ``config``; the tracks and their ids stay."""
        self.iou_threshold = float(config.track_iou_threshold)
        self.distance_threshold = float(config.track_distance_threshold)
        self.min_hits, self.max_misses = int(config.track_min_hits), int(config.track_max_misses)
        self.max_faces, self.min_face_size = int(config.max_faces), float(config.min_face_size)

    @classmethod
    def from_config(cls, config: PipelineConfig) -> FaceTracker:
        return cls(iou_threshold=config.track_iou_threshold,
                   distance_threshold=config.track_distance_threshold,
                   min_hits=config.track_min_hits, max_misses=config.track_max_misses,
                   max_faces=config.max_faces, min_face_size=config.min_face_size)

    @property
    def visible(self) -> list[Track]:
        return [t for t in self.tracks if t.visible]

    def reset(self) -> None:
        self.tracks.clear()

    @property
    def live(self) -> list[Track]:
        """Tracks matched by the latest detector run (published or still being born): the
        ones a landmark stage can follow between detector runs."""
        return [t for t in self.tracks if t.misses == 0]

    def refine(self, tracks: Sequence[Track], refined: Sequence[FaceDetection], threshold: float) -> bool:
        """Take each track's refinement whose confidence is at least ``threshold`` (box,
        landmarks, score); the others keep their last ones. True when every track held,
        False when one fell below the threshold (the face may be lost: time for a detector
        run). An accepted refinement is one more frame the face was seen, so it counts
        towards birth (``min_hits``); misses (death) count detector runs only."""
        held = True
        for track, face in zip(tracks, refined, strict=True):
            if face.score >= threshold:
                track.box = np.asarray(face.box, dtype=np.float64)
                track.landmarks = np.asarray(face.landmarks, dtype=np.float64)
                track.score = float(face.score)
                track.hits += 1
                track.confirmed = track.confirmed or track.hits >= self.min_hits
            else:
                held = False
        return held

    def hold(self, tracks: Sequence[Track]) -> bool:
        """Clear the miss of ``tracks`` (missed by the latest detector run, found on this
        frame by a landmark stage), except those overlapping a track that run matched or
        started (IoU >= ``iou_threshold``). True when one was held."""
        detected = [t.box for t in self.tracks if t.misses == 0]
        held = False
        for track in tracks:
            if detected and iou_matrix(track.box[None], np.stack(detected)).max() >= self.iou_threshold:
                continue
            track.misses = 0
            held = True
        return held

    def update(self, detections: Sequence[FaceDetection] | None) -> list[Track]:
        """Advance one frame. ``detections`` is None on frames without a detector run.
        Returns the visible tracks, oldest first."""
        if detections is None:
            return self.visible
        faces = select_faces(detections, self.min_face_size, self.max_faces)
        pairs = _assign(self._cost(faces))
        matched_tracks = {r for r, _ in pairs}
        matched_faces = {c for _, c in pairs}
        for r, c in pairs:
            self.tracks[r].update(faces[c], self.min_hits)
        survivors = []
        for i, track in enumerate(self.tracks):
            if i not in matched_tracks:
                track.misses += 1
                track.hits = 0
                # A face not yet born dies on its first miss; a born one after max_misses.
                if not track.confirmed or track.misses > self.max_misses:
                    continue
            survivors.append(track)
        survivors = self._bound_hidden(survivors)
        for c, face in enumerate(faces):
            if c not in matched_faces:
                survivors.append(Track(face_id=f"face_{next(self._ids)}", box=face.box.astype(np.float64),
                                       score=face.score, landmarks=face.landmarks.astype(np.float64),
                                       confirmed=self.min_hits <= 1))
        self.tracks = survivors
        return self.visible

    def _bound_hidden(self, tracks: list[Track]) -> list[Track]:
        """At most ``max_faces`` hidden tracks (missed by the latest detector run, waiting
        out ``max_misses``); beyond that the longest-missed go first. Each hidden track
        keeps its window of features (megabytes), so in a crowd whose faces come and go
        a large ``max_misses`` would otherwise hold every face that ever passed."""
        hidden = [t for t in tracks if t.misses > 0]
        if len(hidden) <= self.max_faces:
            return tracks
        dropped = {id(t) for t in sorted(hidden, key=lambda t: t.misses)[self.max_faces:]}
        return [t for t in tracks if id(t) not in dropped]

    def _cost(self, faces: Sequence[FaceDetection]) -> np.ndarray:
        """(tracks x faces) association cost: (1 - IoU) + centre distance / track size;
        pairs that pass neither gate are forbidden."""
        if not self.tracks or not faces:
            return np.zeros((len(self.tracks), len(faces)))
        track_boxes = np.stack([t.box for t in self.tracks])
        face_boxes = np.stack([f.box for f in faces])
        iou = iou_matrix(track_boxes, face_boxes)
        centres_t = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2
        centres_f = (face_boxes[:, :2] + face_boxes[:, 2:]) / 2
        size_t = np.sqrt(np.prod(np.clip(track_boxes[:, 2:] - track_boxes[:, :2], 1e-6, None), axis=1))
        distance = np.linalg.norm(centres_t[:, None] - centres_f[None], axis=2) / size_t[:, None]
        allowed = ((iou > 0) & (iou >= self.iou_threshold)) | (distance <= self.distance_threshold)
        return np.where(allowed, (1.0 - iou) + distance, _FORBIDDEN)


class DetectAndTrack:
    """The detector every ``interval`` frames and a landmark stage in between, feeding one
    :class:`FaceTracker`. Every frame's tracks have landmarks of that frame, unless there
    is no landmark stage (``stage=None``: between detector runs tracks keep their last)."""

    def __init__(self, detector: FaceDetector, tracker: FaceTracker, interval: int = 1,
                 stage: LandmarkStage | None = None, refine_threshold: float = 0.5) -> None:
        if interval < 1:
            raise ValueError(f"detection_interval={interval}: must be >= 1")
        self.detector = detector
        self.tracker = tracker
        self.interval = int(interval)
        self.stage = stage
        self.refine_threshold = float(refine_threshold)
        self.detector_runs = 0
        self._since_detection = self.interval  # the first frame is a detector frame

    @classmethod
    def from_config(cls, config: PipelineConfig, detector: FaceDetector) -> DetectAndTrack:
        stage = detector.landmark_stage() if config.refine_landmarks else None
        return cls(detector, FaceTracker.from_config(config), config.detection_interval, stage,
                   config.refine_threshold)

    def reconfigure(self, config: PipelineConfig, detector: FaceDetector | None = None) -> None:
        """Take the interval and tracker settings of ``config``, and ``detector`` (with its
        landmark stage) when given; the tracks stay."""
        if config.detection_interval < 1:
            raise ValueError(f"detection_interval={config.detection_interval}: must be >= 1")
        self.interval = int(config.detection_interval)
        self.tracker.reconfigure(config)
        if detector is not None:  # swapped whole: a frame in progress finishes with the old one
            self.stage = detector.landmark_stage() if config.refine_landmarks else None
            self.detector = detector

    def reset(self) -> None:
        self.tracker.reset()
        self._since_detection = self.interval

    def step(self, image_bgr: np.ndarray, timings: dict[str, float] | None = None) -> list[Track]:
        """Advance one frame; returns the visible tracks. ``timings`` (if given) receives
        milliseconds under ``detect``, ``refine`` and ``track``."""
        timings = {} if timings is None else timings
        run_detector = self._since_detection >= self.interval
        tried: dict[int, bool] = {}  # id(track) -> its refinement on this frame held
        if not run_detector and self.stage is not None:
            live = self.tracker.live
            if live:
                start = time.perf_counter()
                refined = self.stage.refine(image_bgr, [track.as_detection() for track in live])
                run_detector = not self.tracker.refine(live, refined, self.refine_threshold)
                tried = {id(t): f.score >= self.refine_threshold for t, f in zip(live, refined, strict=True)}
                timings["refine"] = _ms(start)
        detections = None
        if run_detector:
            start = time.perf_counter()
            detections = self.detector.detect(image_bgr)
            timings["detect"] = _ms(start)
            self._since_detection = 0
            self.detector_runs += 1
        self._since_detection += 1
        start = time.perf_counter()
        visible = self.tracker.update(detections)
        timings["track"] = _ms(start)
        if detections is not None and self.stage is not None:
            if self._hold_missed(image_bgr, tried, timings):
                visible = self.tracker.visible
        return visible

    def _hold_missed(self, image_bgr: np.ndarray, tried: dict[int, bool], timings: dict[str, float]) -> bool:
        """Keep the published faces that this detector run missed but the landmark stage
        still finds on this frame (as MediaPipe's face mesh keeps a face between detector
        runs): a detector that misses a small face on one run in three would otherwise
        make it blink out of the output until the next run. A face the stage already lost
        on this frame stays missed, and so does one whose refined box overlaps a face this
        run did detect (that face is the same person under another track). True when a
        face was held."""
        missed = [t for t in self.tracker.tracks if t.confirmed and t.misses == 1 and tried.get(id(t), True)]
        if not missed:
            return False
        to_refine = [t for t in missed if id(t) not in tried]  # held earlier on this frame: box is fresh
        if to_refine:
            start = time.perf_counter()
            refined = self.stage.refine(image_bgr, [t.as_detection() for t in to_refine])
            self.tracker.refine(to_refine, refined, self.refine_threshold)
            held_now = {id(t) for t, f in zip(to_refine, refined, strict=True) if f.score >= self.refine_threshold}
            timings["refine"] = timings.get("refine", 0.0) + _ms(start)
            missed = [t for t in missed if id(t) in tried or id(t) in held_now]
        return self.tracker.hold(missed)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1e3
