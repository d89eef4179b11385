"""The ROS-free perception pipeline: one camera frame in, per-face affect out.

The node, ``bag-eval``, the demo and the benchmarks all call :meth:`PerceptionPipeline.process`,
so what is measured offline is what runs on the robot. Per frame:

1. detect faces (every ``detection_interval`` frames); in between, refine every tracked
   face with the detector's landmark stage (fresh box, landmarks and confidence), and run
   the detector on this frame after all when a face's confidence falls below
   ``refine_threshold``;
2. track them (stable ids);
3. align every visible face straight to the model's input size (5-point similarity) into
   one batch, normalised in place;
4. encode all crops in one batched encoder call;
5. project each face's feature maps by the head's tubelet-embedding slices (one batched
   call) and push them into its ring buffer (buffers of dead tracks are freed);
6. run the temporal head over the tubelet sums of the faces that are due
   (``head_interval``) in one batched call; the others keep their latest estimate;
7. split the activated outputs per task and apply the model's decision thresholds.

Steps 5-6 are :class:`~abaw_ros.perception.head_path.HeadPath`, the one place the head's
path is chosen: tubelet streaming on every backend, the fused head on whole windows of
feature maps only for a model exported without the streaming graphs.

Faces tracked elsewhere (a ROS4HRI face detector) replace steps 1-2: ``process(...,
given=faces, tracked=ids)`` skips our detector and tracker, takes landmarks inside each
given box (:mod:`abaw_ros.perception.given_faces`) and keeps the windows under the given
ids, so the results carry that system's ids.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from abaw_ros.config import ConfigError, PipelineConfig
from abaw_ros.models.streaming import FaceWindows, default_head_interval
from abaw_ros.perception.alignment import align_faces_into
from abaw_ros.perception.detection import FaceDetector
from abaw_ros.perception.detectors import create_detector
from abaw_ros.perception.given_faces import GivenFace, given_face_tracks
from abaw_ros.perception.head_path import HeadPath
from abaw_ros.perception.image import as_bgr_image
from abaw_ros.perception.tracking import DetectAndTrack, Track
from abaw_ros.runtime import InferenceBackend, normalize_crops
from abaw_ros.tasks import AU_NAMES, split_outputs

STAGES: tuple[str, ...] = ("detect", "refine", "track", "align", "encode", "temporal", "total")
# Most faces per backend call: the runtime's default TensorRT profiles take up to 8 windows
# per temporal-head call; more faces are split into several calls.
MAX_BATCH = 8


@dataclass
class FaceResult:
    """One tracked face, estimated from the window ending at this frame."""

    face_id: str
    box: tuple[int, int, int, int]  # x, y, w, h in pixels, inside the image
    confidence: float  # the latest detection's or landmark-stage refinement's confidence
    window_length: int  # T
    frames_observed: int  # real frames in the window (< T while warming up)
    outputs: dict[str, np.ndarray]  # task -> activated values (VA in [-1, 1], others [0, 1])
    au_active: np.ndarray  # (12,) bool: AU probability >= that AU's threshold
    hesitant: bool  # hesitancy probability >= the model's threshold
    landmarks: np.ndarray | None = None  # (5, 2) image pixels, for drawing
    window_start_ns: int = 0  # stamp of the oldest frame in the window behind ``outputs``


@dataclass
class FrameResult:
    stamp_ns: int
    faces: list[FaceResult]
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage (STAGES)
    # Every face id still tracked after this frame: those in ``faces`` and those kept through
    # a short miss (born tracks of our tracker, or the external tracker's list).
    tracked: list[str] = field(default_factory=list)


def _clipped_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x1 = int(np.clip(round(float(box[0])), 0, width))
    y1 = int(np.clip(round(float(box[1])), 0, height))
    x2 = int(np.clip(round(float(box[2])), x1, width))
    y2 = int(np.clip(round(float(box[3])), y1, height))
    return x1, y1, x2 - x1, y2 - y1


class PerceptionPipeline:
    """Detection, tracking, alignment, batched encoding, per-face windows, temporal head.

    ``backend`` is an :class:`abaw_ros.runtime.InferenceBackend`; when None it is loaded
    from ``config.model_file_path`` (an untrained network when that is empty).
    ``detector`` replaces the one ``config.detector`` names (until :meth:`reconfigure`
    changes the detection threshold or the face size, which builds ``config.detector``'s).
    """

    def __init__(self, config: PipelineConfig, backend: InferenceBackend | None = None,
                 detector: FaceDetector | None = None) -> None:
        config.validate(check_files=backend is None)
        self.config = config
        if backend is None:
            from abaw_ros.runtime.opening import open_backend

            backend = open_backend(config)
        else:
            from abaw_ros.runtime.opening import check_backend_fits

            check_backend_fits(config, backend)
        self.backend = backend
        self.metadata = backend.metadata
        self.faces = DetectAndTrack.from_config(config, detector if detector is not None else create_detector(config))
        t = self.metadata.window_length
        self.head = HeadPath(backend, t, config.head_interval or default_head_interval(t))
        self._au_thresholds = np.asarray(self.metadata.au_thresholds, dtype=np.float32)
        self._crops = np.empty((0, 0, 0, 3), np.uint8)
        self._batch = np.empty((0, 3, 0, 0), np.float32)

    @property
    def buffers(self) -> FaceWindows:
        """Every face's window (projected frames on the streaming path)."""
        return self.head.buffers

    @property
    def streams_tubelets(self) -> bool:
        """Whether the head runs on tubelet sums (every backend) rather than whole windows."""
        return self.head.streams_tubelets

    def reconfigure(self, config: PipelineConfig) -> None:
        """Apply a new config to the running pipeline, from the next frame on: the parameters
        the spec declares ``runtime`` (detection interval and threshold, face size and count,
        tracking thresholds; the node-only ones are kept in ``self.config``). The faces, their
        ids and windows stay. A change of any other parameter raises ConfigError naming it:
        those are read when the model loads."""
        config.validate(check_files=False)
        fixed = config.load_time_changes(self.config)
        if fixed:
            raise ConfigError(f"{', '.join(fixed)}: read when the model loads, cannot change in a "
                              f"running pipeline (build a new one)")
        old, self.config = self.config, config
        detector = None
        if (config.detection_threshold, config.min_face_size) != (old.detection_threshold, old.min_face_size):
            detector = create_detector(config)  # the detectors take both when built
        self.faces.reconfigure(config, detector)

    def model_summary(self) -> dict[str, Any]:
        """What a tool's report or sidecar says about the model: the backend's summary
        (:meth:`abaw_ros.runtime.InferenceBackend.summary`, the id the node publishes) with
        the metadata this pipeline runs with (thresholds given to it included)."""
        return self.backend.summary(self.metadata)

    def reset(self) -> None:
        """Forget all faces (e.g. after a jump in a recording)."""
        self.faces.reset()
        self.head.reset()

    def process(self, image_bgr: np.ndarray, stamp_ns: int, given: Sequence[GivenFace] | None = None,
                tracked: Iterable[str] | None = None) -> FrameResult:
        """Run every stage on one frame; raises ValueError for an invalid image.

        ``given``: the faces an external tracker found on this frame, under its ids (our
        detector and tracker are skipped; the ``max_faces`` largest are processed);
        ``tracked``: every id that tracker still tracks (default: those of ``given``), whose
        windows are kept while the face is missed; the others' windows are freed."""
        start = time.perf_counter()
        timings = dict.fromkeys(STAGES, 0.0)
        image = as_bgr_image(image_bgr)
        height, width = image.shape[:2]

        if given is None:
            tracks = self.faces.step(image, timings)
            keep = [track.face_id for track in self.faces.tracker.tracks]
            tracked_ids = [track.face_id for track in self.faces.tracker.tracks if track.confirmed]
        else:
            chosen = sorted(given, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)
            tracks = given_face_tracks(image, chosen[:self.config.max_faces], self.faces.stage,
                                       self.config.refine_threshold, timings)
            keep = list(dict.fromkeys([*(tracked if tracked is not None else ()), *(t.face_id for t in tracks)]))
            tracked_ids = keep
        self.head.keep_only(keep)

        faces: list[FaceResult] = []
        if tracks:
            t = time.perf_counter()
            batch = self.align(image, tracks)
            timings["align"] = _ms(t)
            ids = [track.face_id for track in tracks]
            self.encode(ids, batch, timings)
            self.head.stamp(ids, stamp_ns)
            outputs = self.temporal(ids, timings)
            faces = [self._face_result(track, row, width, height) for track, row in zip(tracks, outputs, strict=True)]
        timings["total"] = _ms(start)
        return FrameResult(stamp_ns=int(stamp_ns), faces=faces, timings=timings, tracked=tracked_ids)

    # -- per-frame stages after tracking -------------------------------------------------
    def align(self, image: np.ndarray, tracks: list[Track]) -> np.ndarray:
        """Every tracked face warped into the network-input batch ``(N, 3, S, S)``."""
        crops, batch = self._batch_buffers(len(tracks))
        align_faces_into(image, [track.landmarks for track in tracks], crops, self.config.crop_size)
        return normalize_crops(crops, self.metadata, out=batch, bgr=True)

    def encode(self, ids: list[str], batch: np.ndarray, timings: dict[str, float]) -> None:
        """Encode the faces (batched) and push each one's frame into its ring buffer
        (projected first on the streaming path, counted as head time)."""
        for first in range(0, len(ids), MAX_BATCH):
            chunk = slice(first, first + MAX_BATCH)
            t = time.perf_counter()
            features = self.backend.encode(batch[chunk])
            timings["encode"] += _ms(t)
            t = time.perf_counter()
            self.head.push(ids[chunk], features)
            timings["temporal"] += _ms(t)

    def temporal(self, ids: list[str], timings: dict[str, float]) -> list[np.ndarray]:
        """Run the head (batched) for the faces that are due; every face's latest output."""
        due = self.head.due(ids)
        for first in range(0, len(due), MAX_BATCH):
            t = time.perf_counter()
            self.head.run(due[first:first + MAX_BATCH])
            timings["temporal"] += _ms(t)
        return [self.head.latest(face_id) for face_id in ids]

    def _batch_buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The aligned-crop (uint8 BGR) and network-input (float32) batches for ``n`` faces:
        views of arrays kept across frames, grown when more faces appear."""
        if len(self._crops) < n:
            s = self.metadata.input_size
            self._crops = np.empty((n, s, s, 3), np.uint8)
            self._batch = np.empty((n, 3, s, s), np.float32)
        return self._crops[:n], self._batch[:n]

    def _face_result(self, track: Track, row: np.ndarray, width: int, height: int) -> FaceResult:
        outputs = {task: np.asarray(values, dtype=np.float32).copy()
                   for task, values in split_outputs(row, self.metadata.tasks).items()}
        au = outputs.get("au")
        au_active = au >= self._au_thresholds if au is not None else np.zeros(len(AU_NAMES), dtype=bool)
        ah = outputs.get("ah")
        hesitant = bool(ah is not None and ah[0] >= self.metadata.ah_threshold)
        return FaceResult(
            face_id=track.face_id,
            box=_clipped_box(track.box, width, height),
            confidence=float(track.score),
            window_length=self.metadata.window_length,
            frames_observed=self.head.frames_observed(track.face_id),
            outputs=outputs,
            au_active=au_active,
            hesitant=hesitant,
            landmarks=track.landmarks.copy(),
            window_start_ns=self.head.window_start(track.face_id),
        )


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1e3
