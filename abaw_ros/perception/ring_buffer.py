"""Per-face ring buffers of encoded frames for streaming inference.

Each face's crop is encoded once per frame; its feature maps go into that face's buffer,
and the temporal head runs on the buffer's last T frames. Memory is fixed per face
(``2T`` frames per feature level, allocated when the face appears) and freed when its
track dies.

Every frame is written twice, at slot ``i`` and ``i + T``, so the last T frames in time
order are always the contiguous slice ``[i + 1, i + 1 + T)``: a view, no copy per frame.
Before T frames have arrived the window is padded at the front with the face's first
frame; ``frames_observed`` says how many frames are real.

(This mirrors ``abaw_ros.models.streaming``, which cannot be imported here without
importing torch through ``abaw_ros.models``; the pipeline must run with ONNX Runtime alone.)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class FeatureRing:
    """The last ``window_length`` encoded frames of one face, one array per level."""

    def __init__(self, feature_shapes: Sequence[Sequence[int]], window_length: int,
                 dtype: np.dtype | type = np.float32) -> None:
        if window_length < 1:
            raise ValueError(f"window_length={window_length}: must be >= 1")
        self.window_length = int(window_length)
        self.feature_shapes = [tuple(int(v) for v in s) for s in feature_shapes]
        self._store = [np.zeros((2 * self.window_length, *s), dtype=dtype) for s in self.feature_shapes]
        self._newest = -1
        self.frames_pushed = 0

    @property
    def frames_observed(self) -> int:
        """Real frames in the current window (< T while warming up)."""
        return min(self.frames_pushed, self.window_length)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._store)

    def push(self, features: Sequence[np.ndarray]) -> None:
        """Append one frame: a ``(C, H, W)`` array per level."""
        if len(features) != len(self._store):
            raise ValueError(f"{len(features)} feature maps pushed: expected {len(self._store)}")
        for level, (x, shape) in enumerate(zip(features, self.feature_shapes, strict=True)):
            if x.shape != shape:
                raise ValueError(f"feature level {level} has shape {x.shape}: expected {shape}")
        t = self.window_length
        if self.frames_pushed == 0:
            for store, x in zip(self._store, features, strict=True):
                store[:] = x  # warm-up padding: the first frame fills the window
            self._newest = t - 1
        else:
            self._newest = (self._newest + 1) % t
            for store, x in zip(self._store, features, strict=True):
                store[self._newest] = x
                store[self._newest + t] = x
        self.frames_pushed += 1

    def window(self) -> list[np.ndarray]:
        """The last T frames, oldest first, ``(T, C, H, W)`` per level (views, valid
        until the next push)."""
        if self.frames_pushed == 0:
            raise RuntimeError("window() of an empty buffer: push a frame first")
        start = self._newest + 1
        return [store[start:start + self.window_length] for store in self._store]


class FaceBuffers:
    """One :class:`FeatureRing` per face id."""

    def __init__(self, feature_shapes: Sequence[Sequence[int]], window_length: int) -> None:
        self.feature_shapes = [tuple(int(v) for v in s) for s in feature_shapes]
        self.window_length = int(window_length)
        self._rings: dict[str, FeatureRing] = {}

    def __len__(self) -> int:
        return len(self._rings)

    def __contains__(self, face_id: str) -> bool:
        return face_id in self._rings

    @property
    def face_ids(self) -> list[str]:
        return list(self._rings)

    def frames_observed(self, face_id: str) -> int:
        ring = self._rings.get(face_id)
        return ring.frames_observed if ring is not None else 0

    def push_batch(self, face_ids: Sequence[str], features: Sequence[np.ndarray]) -> None:
        """Row ``i`` of every ``(N, C, H, W)`` level is one frame of ``face_ids[i]``."""
        for level, x in enumerate(features):
            if x.shape[0] != len(face_ids):
                raise ValueError(f"feature level {level} has {x.shape[0]} rows for {len(face_ids)} faces")
        for i, face_id in enumerate(face_ids):
            ring = self._rings.get(face_id)
            if ring is None:
                ring = self._rings[face_id] = FeatureRing(self.feature_shapes, self.window_length,
                                                          features[0].dtype)
            ring.push([x[i] for x in features])

    def windows(self, face_ids: Sequence[str]) -> list[np.ndarray]:
        """Stacked windows ``(B, T, C, H, W)`` per level, in ``face_ids`` order (for one
        face, views into its buffer: no copy)."""
        if len(face_ids) == 1:
            return [w[None] for w in self._rings[face_ids[0]].window()]
        per_face = [self._rings[f].window() for f in face_ids]
        return [np.stack(level) for level in zip(*per_face, strict=True)]

    def keep_only(self, face_ids: Iterable[str]) -> list[str]:
        """Free the buffers of faces not in ``face_ids``; returns the ids dropped."""
        keep = set(face_ids)
        gone = [f for f in self._rings if f not in keep]
        for f in gone:
            del self._rings[f]
        return gone
