"""Windows of T frames over a video, for training and for evaluation.

Training (reference): consecutive non-overlapping windows, the last one edge-padded by
repeating the video's last row. Evaluation: windows every ``stride`` rows so that every
annotated row gets exactly one prediction; ``stride == T`` is the reference's own scheme
(non-overlapping, one window vector copied to its T frames), ``stride == 1`` is what the
robot does (each frame predicted from the window ending at it, the start edge-padded by
repeating the first row).

Under ``protocol: reference`` the scores also count the last window's padding copies, as
the reference code does (:func:`reference_scored_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """``rows``: the T record rows shown; ``write[t]``: this window gives row ``rows[t]``
    its prediction (every row of a video is written by exactly one window)."""

    video: int
    rows: np.ndarray
    write: np.ndarray


def _check(window_length: int) -> None:
    if window_length < 1:
        raise ValueError(f"window_length={window_length}: must be >= 1")


def training_windows(lengths: list[int], window_length: int) -> list[Window]:
    """Non-overlapping windows of ``window_length`` rows; the last is edge-padded."""
    _check(window_length)
    windows = []
    for video, n in enumerate(lengths):
        for start in range(0, n, window_length):
            rows = np.arange(start, start + window_length)
            write = rows < n
            windows.append(Window(video, np.minimum(rows, n - 1), write))
    return windows


def reference_scored_rows(n: int, window_length: int) -> np.ndarray:
    """The rows the reference code scores for a video of ``n`` rows: every row of its
    non-overlapping windows, the last window's edge padding included (copies of the last
    row, each scored with the window's prediction)."""
    _check(window_length)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    padded = -(-n // window_length) * window_length
    return np.minimum(np.arange(padded), n - 1)


def evaluation_windows(lengths: list[int], window_length: int, stride: int | None = None) -> list[Window]:
    """Windows every ``stride`` rows (default ``window_length``) covering every row once.

    With ``stride < window_length`` a window ends at rows ``stride-1, 2*stride-1, ...``
    (and at the last row) and writes the rows since the previous window's end.
    """
    _check(window_length)
    stride = window_length if stride is None else stride
    if not 1 <= stride <= window_length:
        raise ValueError(f"stride={stride}: must be in [1, window_length={window_length}]")
    if stride == window_length:
        return training_windows(lengths, window_length)
    windows = []
    for video, n in enumerate(lengths):
        ends = list(range(stride - 1, n, stride))
        if not ends or ends[-1] != n - 1:
            ends.append(n - 1)
        previous = -1
        for end in ends:
            rows = np.arange(end - window_length + 1, end + 1)
            write = rows > previous
            rows = np.maximum(rows, 0)
            # Start padding repeats row 0: only its last copy writes.
            write &= np.append(rows[1:] != rows[:-1], True)
            windows.append(Window(video, rows, write))
            previous = end
    return windows
