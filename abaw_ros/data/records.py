"""What every loader returns: one ``VideoRecord`` per annotated video, frame by frame.

A record lists, for each annotated row, the image to show (``frames``), the label vector
(``labels``, in the task's output order from :mod:`abaw_ros.tasks`) and whether the row
counts (``valid``). Invalid rows (Aff-Wild2 ``-5`` / ``-1``) stay in the record so that the
time axis is intact, and are masked out of losses and metrics.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from abaw_ros.tasks import TASKS

log = logging.getLogger(__name__)

MISSING_FRAME_POLICIES = ("nearest", "skip", "error")


class DataFormatError(ValueError):
    """A data file does not follow the official layout; the message names file and line."""


def read_text(path: Path) -> str:
    """A UTF-8 text file (a leading byte-order mark, as spreadsheet tools write, is dropped).

    Bytes that are not UTF-8 raise :class:`DataFormatError` naming the file, the line and
    the byte, instead of a bare ``UnicodeDecodeError``.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(f"{path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8 text "
                              f"(save the file as UTF-8)") from None


def read_lines(path: Path) -> list[str]:
    """:func:`read_text` split into lines, trailing blank lines dropped."""
    lines = read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


@dataclass
class VideoRecord:
    """One annotated video of one task.

    ``frames[i]`` is the image shown for row ``i``; ``frame_numbers[i]`` is the row's frame
    number as the annotation gives it (Aff-Wild2: ``%05d.jpg`` number, BAH: ``frame-<N>``,
    HUME: the ``<k>.jpg`` number). ``labels`` has shape ``(N, TASKS[task].size)``.
    """

    task: str
    name: str
    frames: list[Path]
    labels: np.ndarray
    valid: np.ndarray
    frame_numbers: np.ndarray
    source: Path
    substituted: int = 0  # rows whose own image is missing and show a neighbour's
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.frames)
        size = TASKS[self.task].size
        if self.labels.shape != (n, size):
            raise ValueError(f"{self.source}: labels shape {self.labels.shape}, expected ({n}, {size})")
        if self.valid.shape != (n,) or self.frame_numbers.shape != (n,):
            raise ValueError(f"{self.source}: valid/frame_numbers must have shape ({n},)")

    def __len__(self) -> int:
        return len(self.frames)


def resolve_missing_frames(
    images: dict[int, Path],
    numbers: list[int],
    policy: str,
    source: Path,
    line_of: dict[int, int] | None = None,
) -> tuple[list[Path | None], int]:
    """Image for each annotated frame number under a missing-frame policy.

    - ``nearest``: a row without its own image shows the closest earlier frame that exists
      (the closest later one at the start of a video); the row keeps its label, so metrics
      still cover every annotated frame as the challenge scores them.
    - ``skip``: the row gets ``None`` and the caller drops it.
    - ``error``: :class:`DataFormatError` naming the annotation file and line.

    Returns the per-row paths and the number of rows without their own image.
    """
    if policy not in MISSING_FRAME_POLICIES:
        raise ValueError(f"missing_frames={policy!r}: choose from {MISSING_FRAME_POLICIES}")
    out: list[Path | None] = []
    missing = 0
    available = np.array(sorted(images), dtype=np.int64)
    for number in numbers:
        path = images.get(number)
        if path is not None:
            out.append(path)
            continue
        missing += 1
        if policy == "error":
            line = (line_of or {}).get(number)
            where = f"{source}:{line}" if line is not None else str(source)
            raise DataFormatError(f"{where}: annotated frame {number} has no image")
        if policy == "skip" or available.size == 0:
            out.append(None)
            continue
        pos = int(np.searchsorted(available, number))  # first available > number
        out.append(images[int(available[pos - 1] if pos > 0 else available[0])])
    return out, missing


def summarize(records: list[VideoRecord], what: str) -> None:
    rows = sum(len(r) for r in records)
    valid = sum(int(r.valid.sum()) for r in records)
    substituted = sum(r.substituted for r in records)
    log.info("%s: %d videos, %d rows, %d valid, %d shown with a neighbouring frame",
             what, len(records), rows, valid, substituted)
