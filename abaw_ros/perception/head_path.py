"""The pipeline's temporal-head stage: per-face windows and the head over them.

The path is chosen once, here, from the backend: every backend streams tubelets (the
encoder's maps of each frame projected by the tubelet-embedding slices right after
encoding, the ring buffers summing them per tubelet, the tubelet head on those sums); a
backend without the streaming graphs (a bundle exported before them, or with ``abaw-affect
export --graphs encoder temporal_head`` to run the fused head) buffers feature maps and
runs the fused head on whole windows. Both give the same outputs up to float rounding
(tests/test_perception_pipeline.py).

Besides the buffers it keeps, per face, the latest head output (faces not due keep it),
the stamps of the frames in its window and the stamp of the oldest frame behind the
latest output.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from abaw_ros.models.streaming import FaceWindows, newest_frame
from abaw_ros.runtime import InferenceBackend

LOG = logging.getLogger(__name__)

__all__ = ["HeadPath"]


def _as_is(maps: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    return maps


class HeadPath:
    """Per-face windows and the temporal head for one backend.

    ``streams_tubelets``: the path (see the module docstring); ``buffers``: the
    :class:`FaceWindows` of that path's kind.
    """

    def __init__(self, backend: InferenceBackend, window_length: int, head_interval: int) -> None:
        meta = backend.metadata
        self.window_length = window_length
        self.streams_tubelets = bool(getattr(backend, "streams_tubelets", False))
        self._per_frame: Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]
        if self.streams_tubelets:
            shapes = meta.projection_shapes
            self._per_frame, self._head = backend.project, backend.temporal_tubelets
        else:
            LOG.info("temporal head: the fused graph on whole windows of feature maps (%s has no streaming "
                     "graphs)", getattr(backend, "name", type(backend).__name__))
            shapes = meta.feature_shapes
            self._per_frame, self._head = _as_is, backend.temporal
        self.buffers = FaceWindows(shapes, window_length, head_interval=head_interval,
                                   projected=self.streams_tubelets)
        self._latest: dict[str, np.ndarray] = {}  # face id -> latest head output row
        # face id -> stamps of the frames in its window; -> oldest stamp behind its latest row
        self._stamps: dict[str, deque[int]] = {}
        self._window_start: dict[str, int] = {}

    def push(self, face_ids: Sequence[str], maps: Sequence[np.ndarray]) -> None:
        """Buffer one frame of each face from the encoder's batched ``maps`` (projected
        first on the streaming path: the head's per-frame share)."""
        self.buffers.push_batch(face_ids, self._per_frame(maps))

    def stamp(self, face_ids: Iterable[str], stamp_ns: int) -> None:
        """Record the stamp of the frame just pushed for these faces."""
        for face_id in face_ids:
            self._stamps.setdefault(face_id, deque(maxlen=self.window_length)).append(int(stamp_ns))

    def due(self, face_ids: Iterable[str]) -> list[str]:
        """The faces whose estimate is refreshed on this frame (``head_interval``)."""
        return [face_id for face_id in face_ids if self.buffers.due(face_id)]

    def run(self, face_ids: Sequence[str]) -> None:
        """One head call over these faces' windows; their latest outputs are replaced."""
        out = newest_frame(np.asarray(self._head(self.buffers.head_inputs(face_ids))))
        self.buffers.mark_run(face_ids)
        self._latest.update(zip(face_ids, out, strict=True))
        self._window_start.update((face_id, self._stamps[face_id][0]) for face_id in face_ids)

    def latest(self, face_id: str) -> np.ndarray:
        return self._latest[face_id]

    def window_start(self, face_id: str) -> int:
        """Stamp of the oldest frame in the window behind ``face_id``'s latest output."""
        return self._window_start.get(face_id, 0)

    def frames_observed(self, face_id: str) -> int:
        return self.buffers.frames_observed(face_id)

    def keep_only(self, face_ids: Iterable[str]) -> list[str]:
        """Forget the faces not in ``face_ids``; returns the ids dropped."""
        gone = self.buffers.keep_only(face_ids)
        for face_id in gone:
            self._latest.pop(face_id, None)
            self._stamps.pop(face_id, None)
            self._window_start.pop(face_id, None)
        return gone

    def reset(self) -> None:
        self.buffers.keep_only(())
        self._latest.clear()
        self._stamps.clear()
        self._window_start.clear()
