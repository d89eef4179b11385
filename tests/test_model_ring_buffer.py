"""Per-face feature ring buffers as the pipeline uses them: order, warm-up padding,
bounded memory, dropping faces."""
from __future__ import annotations

import numpy as np
import pytest

from abaw_ros.models.streaming import FaceWindows, FeatureRingBuffer

SHAPES = [(3, 2, 2), (5, 1, 1)]


def frame(value: float) -> list[np.ndarray]:
    return [np.full(s, value, np.float32) for s in SHAPES]


def firsts(window: list[np.ndarray]) -> list[float]:
    return [float(x[0, 0, 0]) for x in window[0]]


def test_warm_up_pads_with_the_first_frame_then_slides():
    ring = FeatureRingBuffer(SHAPES, window_length=4)
    ring.push(frame(1))
    assert ring.frames_observed == 1 and firsts(ring.window()) == [1, 1, 1, 1]
    ring.push(frame(2))
    ring.push(frame(3))
    assert ring.frames_observed == 3 and firsts(ring.window()) == [1, 1, 2, 3]
    for v in range(4, 11):
        ring.push(frame(v))
    assert ring.frames_observed == 4 and firsts(ring.window()) == [7, 8, 9, 10]
    assert [w.shape for w in ring.window()] == [(4, *s) for s in SHAPES]
    np.testing.assert_array_equal(ring.window()[1][:, 0, 0, 0], [7, 8, 9, 10])


def test_memory_is_fixed_whatever_the_stream_length():
    ring = FeatureRingBuffer(SHAPES, window_length=8)
    size = ring.nbytes
    for v in range(1000):
        ring.push(frame(v))
    assert ring.nbytes == size == 2 * 8 * sum(int(np.prod(s)) for s in SHAPES) * 4


def test_shape_errors_name_the_level():
    ring = FeatureRingBuffer(SHAPES, window_length=4)
    with pytest.raises(ValueError, match=r"feature level 1: shape \(4, 1, 1\), expected \(5, 1, 1\)"):
        ring.push([np.zeros(SHAPES[0], np.float32), np.zeros((4, 1, 1), np.float32)])
    with pytest.raises(RuntimeError, match="empty"):
        ring.window()


def test_face_buffers_batch_per_face_and_drop_dead_faces():
    buffers = FaceWindows(SHAPES, window_length=4)
    batch = [np.stack([np.full(s, v, np.float32) for v in (1, 100)]) for s in SHAPES]
    buffers.push_batch(["a", "b"], batch)
    buffers.push_batch(["b"], [x[1:] + 1 for x in batch])
    assert (buffers.frames_observed("a"), buffers.frames_observed("b"), buffers.frames_observed("c")) == (1, 2, 0)
    windows = buffers.windows(["b", "a"])
    assert [w.shape for w in windows] == [(2, 4, *s) for s in SHAPES]
    assert windows[0][0, :, 0, 0, 0].tolist() == [100, 100, 100, 101]
    assert windows[0][1, :, 0, 0, 0].tolist() == [1, 1, 1, 1]
    assert buffers.keep_only(["b"]) == ["a"]
    assert buffers.face_ids == ["b"] and "a" not in buffers


def test_a_single_face_window_is_a_contiguous_view():
    buffers = FaceWindows(SHAPES, window_length=4)
    for v in range(6):
        buffers.push_batch(["a"], [np.full((1, *s), v, np.float32) for s in SHAPES])
    (first, second) = buffers.windows(["a"])
    assert first.shape == (1, 4, *SHAPES[0]) and first.flags["C_CONTIGUOUS"]
    assert first[0, :, 0, 0, 0].tolist() == [2, 3, 4, 5] and second[0, :, 0, 0, 0].tolist() == [2, 3, 4, 5]
