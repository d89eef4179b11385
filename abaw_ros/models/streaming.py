"""Per-face ring buffers of encoded frames, feeding the temporal head while streaming.

Each frame's crop goes through the encoder once, and the frame enters that face's ring
buffer; the temporal head then runs on the buffer's last T frames, so a new frame costs
one encoder pass plus one head pass, whatever T is, instead of T encoder passes. What
the head sees is exactly the clip the fused window model would see, so both give the
same outputs (tested). :class:`FaceWindows` keeps one buffer per face, all of one kind:

- :class:`TubeletRingBuffer` (projected frames, below): the path the pipeline runs on
  every backend;
- :class:`FeatureRingBuffer` (the feature maps themselves, whole windows for the fused
  head): only for bundles without the streaming graphs.

Storage trick (feature maps): each level keeps ``2T`` slots and every frame is written twice, at slot
``i`` and ``i + T``; the last T frames in time order are then always the contiguous slice
``[i + 1, i + 1 + T)``, a zero-copy view, instead of a roll/concatenate per frame.

Head interval: the head's cost grows with T (the token-mixing MLP spans all T/4 * 49
tokens; at T=32 one head pass costs several encoder passes), the encoder's does not.
``FaceWindows(head_interval=k)`` marks a face due for a head pass every k-th frame only;
every frame is still encoded and buffered, so no frame is lost, only the estimate is
refreshed less often. :func:`default_head_interval` (T/8: every frame at T=8, every 4th
frame = one tubelet at T=32) keeps the per-frame cost flat in T; docs/MODEL.md has the
measurements. k=1 runs the head on every frame.

Warm-up: before T frames have arrived, the window is padded at the front with copies of
the face's first frame (``frames_observed`` says how many are real), so a face gets an
estimate from its first frame on.

Projected frames (:class:`TubeletRingBuffer`, ``FaceWindows(projected=True)``): the head's
first layer, the tubelet embedding, is a Linear over the ``pt`` frames of a tubelet, i.e.
the sum over those frames of each frame projected by the weight slice of its position in
the tubelet, plus the bias. The backend projects each frame once, by all ``pt`` slices
(the frame's position in its tubelet changes as the window slides), right after encoding
it; the buffer keeps those projections ``(pt, dim, h, w)`` per level instead of the
feature maps and hands the head the per-tubelet sums ``(T/pt, dim, h, w)``: tubelet ``g``
of the window sums slice ``k`` of its frame ``g*pt + k``. The embedding then costs the
same per frame at any T (``pt`` slices per frame instead of T with the fused window), and
the outputs equal the fused window model's up to float rounding (tested).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["FeatureRingBuffer", "TubeletRingBuffer", "FaceWindows", "default_head_interval", "newest_frame"]


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _one_frame(levels: Sequence, shapes: Sequence[tuple[int, ...]], what: str, plural: str) -> list[np.ndarray]:
    """One frame's arrays, one per level, checked against ``shapes`` (a leading batch axis
    of 1 is dropped)."""
    if len(levels) != len(shapes):
        raise ValueError(f"{len(levels)} {plural} pushed: expected {len(shapes)} (one per level)")
    arrays = []
    for level, (x, shape) in enumerate(zip(levels, shapes, strict=True)):
        a = _as_numpy(x)
        if a.ndim == len(shape) + 1 and a.shape[0] == 1:
            a = a[0]
        if a.shape != shape:
            raise ValueError(f"{what} level {level}: shape {a.shape}, expected {shape} (one frame)")
        arrays.append(a)
    return arrays


def default_head_interval(window_length: int) -> int:
    """Frames between head passes that keep the streaming cost per frame flat in T: T/8
    (1 at T=8, 2 at T=16, 4 at T=32), so consecutive estimates share 7/8 of their window."""
    return max(1, window_length // 8)


class _RingBuffer:
    """What both per-face ring buffers share: ``window_length``, ``_store`` (one array per
    level), ``_slot`` (the newest frame's slot) and ``frames_pushed``."""

    window_length: int
    _store: list[np.ndarray]
    _slot: int
    frames_pushed: int

    @property
    def frames_observed(self) -> int:
        """Real frames in the current window (< T while warming up)."""
        return min(self.frames_pushed, self.window_length)

    @property
    def is_full(self) -> bool:
        return self.frames_pushed >= self.window_length

    def __len__(self) -> int:
        return self.frames_observed

    @property
    def nbytes(self) -> int:
        """Memory held by this face's buffer (fixed at creation)."""
        return sum(s.nbytes for s in self._store)

    def reset(self) -> None:
        self._slot = -1
        self.frames_pushed = 0

    # What FaceWindows asks of every kind of buffer: the temporal head's input per level.
    @property
    def head_input_shapes(self) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def head_input(self, out: Sequence[np.ndarray]) -> None:
        """Write this face's head input into ``out`` (one array per level, of
        :attr:`head_input_shapes`)."""
        raise NotImplementedError


class FeatureRingBuffer(_RingBuffer):
    """The last ``window_length`` encoded frames of one face, one array per feature level.

    Args:
        feature_shapes: ``(C, H, W)`` of each level, in the encoder's output order.
        window_length: T.
        dtype: storage dtype (the encoder's output dtype).
    """

    def __init__(self, feature_shapes: Sequence[Sequence[int]], window_length: int,
                 dtype: np.dtype | type = np.float32) -> None:
        if window_length < 1:
            raise ValueError(f"window_length={window_length}: must be >= 1")
        if not feature_shapes:
            raise ValueError("feature_shapes is empty: need the (C, H, W) of at least one level")
        self.feature_shapes = [tuple(int(v) for v in s) for s in feature_shapes]
        self.window_length = window_length
        self._store = [np.zeros((2 * window_length, *s), dtype=dtype) for s in self.feature_shapes]
        self._slot = -1  # slot of the newest frame
        self.frames_pushed = 0

    def push(self, features: Sequence) -> None:
        """Append one frame: one ``(C, H, W)`` array (or ``(1, C, H, W)``) per level."""
        arrays = _one_frame(features, self.feature_shapes, "feature", "feature maps")
        t = self.window_length
        if self.frames_pushed == 0:
            for store, a in zip(self._store, arrays, strict=True):
                store[:] = a  # warm-up padding: the first frame fills the whole window
            self._slot = t - 1
        else:
            self._slot = (self._slot + 1) % t
            for store, a in zip(self._store, arrays, strict=True):
                store[self._slot] = a
                store[self._slot + t] = a
        self.frames_pushed += 1

    def window(self) -> list[np.ndarray]:
        """The last T frames in time order, ``(T, C, H, W)`` per level (views, valid until
        the next push)."""
        if self.frames_pushed == 0:
            raise RuntimeError("window() before any push: the buffer is empty")
        start = self._slot + 1
        return [store[start:start + self.window_length] for store in self._store]

    @property
    def head_input_shapes(self) -> list[tuple[int, ...]]:
        return [(self.window_length, *s) for s in self.feature_shapes]

    def head_input(self, out: Sequence[np.ndarray]) -> None:
        for dst, src in zip(out, self.window(), strict=True):
            np.copyto(dst, src)


class TubeletRingBuffer(_RingBuffer):
    """The per-frame tubelet-embedding projections of one face's last ``window_length``
    frames, one array per level, summed per tubelet for the head.

    Args:
        projection_shapes: ``(pt, dim, h, w)`` of one frame's projections per level (the
            backend's ``metadata.projection_shapes``).
        window_length: T, a multiple of pt.
        dtype: storage dtype.
    """

    def __init__(self, projection_shapes: Sequence[Sequence[int]], window_length: int,
                 dtype: np.dtype | type = np.float32) -> None:
        if not projection_shapes:
            raise ValueError("projection_shapes is empty: need the (pt, dim, h, w) of at least one level")
        self.projection_shapes = [tuple(int(v) for v in s) for s in projection_shapes]
        if any(len(s) != 4 for s in self.projection_shapes):
            raise ValueError(f"projection_shapes {self.projection_shapes}: each must be (pt, dim, h, w)")
        pts = {s[0] for s in self.projection_shapes}
        if len(pts) != 1:
            raise ValueError(f"projection_shapes {self.projection_shapes}: levels disagree on pt")
        self.time_patch_size = pts.pop()
        if window_length < self.time_patch_size or window_length % self.time_patch_size:
            raise ValueError(f"window_length={window_length}: must be a multiple of {self.time_patch_size} (pt)")
        self.window_length = window_length
        self._store = [np.zeros((window_length, *s), dtype=dtype) for s in self.projection_shapes]
        self._slot = -1  # slot of the newest frame; slots hold frames in arrival order mod T
        self.frames_pushed = 0
        t, pt = window_length, self.time_patch_size
        # _gather[k] + start: slots of the frames at position k of each tubelet
        self._gather = [np.arange(t // pt) * pt + k for k in range(pt)]

    @property
    def tubelet_shapes(self) -> list[tuple[int, ...]]:
        """``(T/pt, dim, h, w)`` per level: what :meth:`tubelet_sums` returns."""
        return [(self.window_length // s[0], *s[1:]) for s in self.projection_shapes]

    def push(self, projections: Sequence) -> None:
        """Append one frame: its ``(pt, dim, h, w)`` projections (or ``(1, pt, ...)``) per level."""
        arrays = _one_frame(projections, self.projection_shapes, "projection", "projections")
        if self.frames_pushed == 0:
            for store, a in zip(self._store, arrays, strict=True):
                store[:] = a  # warm-up padding: the first frame fills the whole window
            self._slot = self.window_length - 1
        else:
            self._slot = (self._slot + 1) % self.window_length
            for store, a in zip(self._store, arrays, strict=True):
                store[self._slot] = a
        self.frames_pushed += 1

    def tubelet_sums(self, out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Per level ``(T/pt, dim, h, w)``: tubelet ``g`` of the last-T window (oldest
        first) sums slice ``k`` of the window's frame ``g*pt + k``. ``out``: arrays of that
        shape to write into (e.g. rows of a batch)."""
        if self.frames_pushed == 0:
            raise RuntimeError("tubelet_sums() before any push: the buffer is empty")
        if out is None:
            out = [np.empty(s, dtype=store.dtype) for s, store in zip(self.tubelet_shapes, self._store, strict=True)]
        start = self._slot + 1  # slot of the oldest frame of the window
        t = self.window_length
        slots = [(g + start) % t for g in self._gather]
        for store, dst in zip(self._store, out, strict=True):
            np.copyto(dst, store[slots[0], 0])
            for k in range(1, len(slots)):
                dst += store[slots[k], k]
        return list(out)

    @property
    def head_input_shapes(self) -> list[tuple[int, ...]]:
        return self.tubelet_shapes

    def head_input(self, out: Sequence[np.ndarray]) -> None:
        self.tubelet_sums(out)


class FaceWindows:
    """One ring buffer per face id, all of one kind, batched for the temporal head.

    The kind is fixed at construction: the pipeline's path is projected frames
    (``projected=True``, :class:`TubeletRingBuffer`, the head takes :meth:`tubelet_sums`);
    feature maps (:class:`FeatureRingBuffer`, the head takes :meth:`windows`) serve only the
    fused head on whole windows, for bundles without the streaming graphs.
    :meth:`head_inputs` gives whichever the kind feeds the head.

    Args:
        feature_shapes: ``(C, H, W)`` per level (``ModelMetadata``/``model.feature_shapes``);
            with ``projected=True``, the per-frame projection shapes ``(pt, dim, h, w)``
            (``ModelMetadata.projection_shapes``).
        window_length: T.
        head_interval: a face is :meth:`due` for a head pass once this many frames arrived
            since its last :meth:`mark_run` (its first frame is always due).
        projected: keep per-frame tubelet projections instead of feature maps.
    """

    def __init__(self, feature_shapes: Sequence[Sequence[int]], window_length: int,
                 dtype: np.dtype | type = np.float32, head_interval: int = 1, projected: bool = False) -> None:
        if head_interval < 1:
            raise ValueError(f"head_interval={head_interval}: must be >= 1 (1 = head on every frame)")
        self.feature_shapes = [tuple(s) for s in feature_shapes]
        self.window_length = window_length
        self.dtype = dtype
        self.head_interval = head_interval
        self.projected = projected
        self._kind: type[FeatureRingBuffer] | type[TubeletRingBuffer] = (
            TubeletRingBuffer if projected else FeatureRingBuffer)
        # validates the shapes now, not at the first face, and gives the head's input shapes
        self.head_input_shapes = self._kind(self.feature_shapes, window_length, dtype).head_input_shapes
        self._buffers: dict[str, FeatureRingBuffer | TubeletRingBuffer] = {}
        self._last_run: dict[str, int] = {}  # face id -> frames_pushed at its last head pass

    def __contains__(self, face_id: str) -> bool:
        return face_id in self._buffers

    def __len__(self) -> int:
        return len(self._buffers)

    @property
    def face_ids(self) -> list[str]:
        return list(self._buffers)

    def buffer(self, face_id: str) -> FeatureRingBuffer | TubeletRingBuffer:
        if face_id not in self._buffers:
            self._buffers[face_id] = self._kind(self.feature_shapes, self.window_length, self.dtype)
        return self._buffers[face_id]

    def push(self, face_id: str, features: Sequence) -> None:
        """Append one frame of one face (one array per level)."""
        self.buffer(face_id).push(features)

    def push_batch(self, face_ids: Sequence[str], batch_features: Sequence) -> None:
        """Append a batch computed together: row ``i`` of each level's ``(N, ...)`` array
        is ``face_ids[i]``'s frame."""
        arrays = [_as_numpy(x) for x in batch_features]
        for level, a in enumerate(arrays):
            if a.shape[0] != len(face_ids):
                raise ValueError(f"feature level {level} has {a.shape[0]} rows for {len(face_ids)} face ids")
        for i, face_id in enumerate(face_ids):
            self.push(face_id, [a[i] for a in arrays])

    def frames_observed(self, face_id: str) -> int:
        return self._buffers[face_id].frames_observed if face_id in self._buffers else 0

    def head_inputs(self, face_ids: Sequence[str]) -> list[np.ndarray]:
        """What the temporal head takes for these faces, stacked ``(B, ...)`` per level and
        written straight into the batch arrays: tubelet sums for projected frames, whole
        windows for feature maps."""
        missing = [f for f in face_ids if f not in self._buffers]
        if missing:
            raise KeyError(f"no frames pushed for face ids {missing}")
        out = [np.empty((len(face_ids), *s), dtype=self.dtype) for s in self.head_input_shapes]
        for row, face_id in enumerate(face_ids):
            self._buffers[face_id].head_input([level[row] for level in out])
        return out

    def windows(self, face_ids: Sequence[str]) -> list[np.ndarray]:
        """Stacked windows ``(B, T, C, H, W)`` per level (feature-map buffers)."""
        if self.projected:
            raise TypeError("these buffers hold projected frames: use tubelet_sums(), not windows()")
        return self.head_inputs(face_ids)

    def tubelet_sums(self, face_ids: Sequence[str]) -> list[np.ndarray]:
        """Stacked tubelet sums ``(B, T/pt, dim, h, w)`` per level (``projected=True``)."""
        if not self.projected:
            raise TypeError("these buffers hold feature maps: use windows(), not tubelet_sums()")
        return self.head_inputs(face_ids)

    def due(self, face_id: str) -> bool:
        """Whether ``face_id`` needs a head pass now (see ``head_interval``)."""
        buf = self._buffers.get(face_id)
        if buf is None or buf.frames_pushed == 0:
            return False
        last = self._last_run.get(face_id)
        return last is None or buf.frames_pushed - last >= self.head_interval

    def mark_run(self, face_ids: Iterable[str]) -> None:
        """Record that the head just ran on these faces' current windows."""
        for face_id in face_ids:
            self._last_run[face_id] = self._buffers[face_id].frames_pushed

    def drop(self, face_id: str) -> None:
        self._buffers.pop(face_id, None)
        self._last_run.pop(face_id, None)

    def keep_only(self, face_ids: Iterable[str]) -> list[str]:
        """Forget faces not in ``face_ids`` (lost tracks); returns the ids dropped."""
        keep = set(face_ids)
        gone = [f for f in self._buffers if f not in keep]
        for f in gone:
            self.drop(f)
        return gone


def newest_frame(outputs):
    """The estimate for the newest frame of each window: ``(B, D)`` window outputs as they
    are, ``(B, T, D)`` frame outputs' last frame."""
    return outputs[:, -1] if outputs.ndim == 3 else outputs
