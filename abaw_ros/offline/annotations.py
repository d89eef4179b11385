"""Ground truth for the frames of a bag.

Two ways to give labels:

- **by frame index**, in the official per-frame layouts: an Aff-Wild2 VA file
  (``valence,arousal``, invalid ``-5``) and/or AU file (12 columns, invalid ``-1``), read
  by the same parser as training (:func:`abaw_ros.data.affwild2.parse_annotation_file`);
  for hesitancy a one-column file in the same style (header ``hesitancy``, rows 0/1,
  invalid ``-1``) or the BAH ``annotation.yml`` entry of one video. Row ``i`` (1-based)
  belongs to the ``i``-th message on the image topic (``first_frame`` shifts this when
  the bag starts later in the video); BAH's ``frame-<N>.jpg`` is 0-based.
- **by image stamp**: a CSV with a ``stamp_ns`` column (or ``stamp`` in seconds) and any
  of the columns ``valence, arousal, AU1 .. AU26, Admiration .. Joy, hesitancy`` (task
  columns may also be written ``va/valence``, ``au/AU12``, ...). A task counts when all of
  its columns are present; empty cells and the invalid markers mark a row invalid.

Either way the result is a :class:`FrameLabels`; :meth:`FrameLabels.align` maps it onto
the frames that were processed.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from abaw_ros.data.records import DataFormatError, read_lines, read_text
from abaw_ros.tasks import AH_NAMES, TASK_ORDER, TASKS

KEY_INDEX = "index"
KEY_STAMP = "stamp"
# Aff-Wild2 numbers frames from 1, BAH from 0.
AFFWILD2_FIRST_FRAME = 1
BAH_FIRST_FRAME = 0


@dataclass
class FrameLabels:
    """Per-frame labels of some tasks, keyed by frame index (0-based position on the image
    topic) or by image stamp (ns).

    ``values[task]`` is ``(N, TASKS[task].size)`` float32 and ``valid[task]`` ``(N,)`` bool,
    both in the order of ``keys``.
    """

    key: str  # KEY_INDEX or KEY_STAMP
    keys: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    valid: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.key not in (KEY_INDEX, KEY_STAMP):
            raise ValueError(f"key={self.key!r}: must be {KEY_INDEX!r} or {KEY_STAMP!r}")
        n = len(self.keys)
        for task, values in self.values.items():
            size = TASKS[task].size
            if values.shape != (n, size) or self.valid[task].shape != (n,):
                raise ValueError(f"labels of task {task!r}: shape {values.shape}, expected ({n}, {size})")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASK_ORDER if t in self.values)

    def align(self, indices: np.ndarray, stamps_ns: np.ndarray, stamp_tolerance_ns: int = 1_000_000,
              ) -> AlignedLabels:
        """Labels of the given frames (their topic indices and stamps). Frames without a
        label row, or farther than ``stamp_tolerance_ns`` from the nearest labelled stamp,
        are invalid."""
        indices = np.asarray(indices, dtype=np.int64)
        stamps_ns = np.asarray(stamps_ns, dtype=np.int64)
        wanted = indices if self.key == KEY_INDEX else stamps_ns
        rows = np.full(len(wanted), -1, dtype=np.int64)
        if len(self.keys):
            order = np.argsort(self.keys, kind="stable")
            sorted_keys = self.keys[order]
            pos = np.clip(np.searchsorted(sorted_keys, wanted), 0, len(sorted_keys) - 1)
            if self.key == KEY_INDEX:
                hit = sorted_keys[pos] == wanted
            else:
                # nearest labelled stamp, before or after
                before = np.clip(pos - 1, 0, len(sorted_keys) - 1)
                use_before = np.abs(sorted_keys[before] - wanted) < np.abs(sorted_keys[pos] - wanted)
                pos = np.where(use_before, before, pos)
                hit = np.abs(sorted_keys[pos] - wanted) <= stamp_tolerance_ns
            rows[hit] = order[pos[hit]]
        found = rows >= 0
        values, valid = {}, {}
        for task in self.tasks:
            size = TASKS[task].size
            values[task] = np.zeros((len(wanted), size), dtype=np.float32)
            valid[task] = np.zeros(len(wanted), dtype=bool)
            values[task][found] = self.values[task][rows[found]]
            valid[task][found] = self.valid[task][rows[found]]
        return AlignedLabels(values=values, valid=valid, matched=found, sources=dict(self.sources))


@dataclass
class AlignedLabels:
    """Labels in the order of the processed frames."""

    values: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    matched: np.ndarray  # (M,) frame has a label row at all
    sources: dict[str, str]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASK_ORDER if t in self.values)


def coverage_warnings(labels: FrameLabels, aligned: AlignedLabels, frames_in_bag: int) -> list[str]:
    """Say when the labels and the bag do not fit each other: a label file far shorter than
    the bag (most frames go unscored) or far longer (most rows unused: another video, or a
    wrong ``--first-frame``). Scoring goes on either way; these lines go to the log and
    the report."""
    sources = ", ".join(sorted(set(labels.sources.values()))) or "labels"
    rows, frames = len(labels.keys), len(aligned.matched)
    matched = int(aligned.matched.sum())
    out = []
    if frames and matched < 0.9 * frames:
        out.append(f"{sources}: only {matched} of the {frames} processed frames have a label row "
                   f"({rows} rows): a shorter label file, another video, or a wrong "
                   f"{'--first-frame' if labels.key == KEY_INDEX else 'stamp clock / --stamp-tolerance'}?")
    if rows > 2 * max(frames_in_bag, 1):
        out.append(f"{sources}: {rows} label rows for a bag of {frames_in_bag} frames: "
                   f"{max(rows - matched, 0)} rows are not used")
    return out


# ---------------------------------------------------------------------------------------
# Frame-index files
# ---------------------------------------------------------------------------------------
def _parse_ah_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One-column per-frame hesitancy file: header, then rows of 0, 1 or -1 (invalid)."""
    lines = read_lines(path)
    if not lines:
        raise DataFormatError(f"{path}:1: empty file, expected header {AH_NAMES[0]!r}")
    if lines[0].strip().lower() not in (AH_NAMES[0], "ah", "label"):
        raise DataFormatError(f"{path}:1: header {lines[0]!r}, expected {AH_NAMES[0]!r}")
    if len(lines) == 1:
        raise DataFormatError(f"{path}:2: no rows after the header: the file has one row per frame")
    labels = np.zeros((len(lines) - 1, 1), dtype=np.float32)
    valid = np.ones(len(lines) - 1, dtype=bool)
    for row, line in enumerate(lines[1:]):
        text = line.strip()
        if text not in ("0", "1", "-1"):
            raise DataFormatError(f"{path}:{row + 2}: {line!r}: hesitancy must be 0, 1 or -1")
        value = int(text)
        valid[row] = value >= 0
        labels[row, 0] = max(value, 0)
    return labels, valid


def load_frame_labels(
    va: str | Path | None = None,
    au: str | Path | None = None,
    ah: str | Path | None = None,
    ah_yaml: str | Path | None = None,
    ah_video: str | None = None,
    first_frame: int = AFFWILD2_FIRST_FRAME,
) -> FrameLabels:
    """Labels keyed by frame index from Aff-Wild2-style per-frame files (any of them).

    ``first_frame`` is the annotation's frame number of the first image message (1 for a
    bag made from the whole video). ``ah_yaml``/``ah_video`` read one video of a BAH
    ``annotation.yml`` (frame numbers 0-based, so ``frame-<N>.jpg`` is message ``N``).
    """
    from abaw_ros.data.affwild2 import parse_annotation_file

    per_task: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]] = {}
    for task, path in (("va", va), ("au", au)):
        if path is not None:
            path = _existing(path, task)
            labels, valid = parse_annotation_file(path, task)
            numbers = np.arange(1, len(labels) + 1, dtype=np.int64)
            per_task[task] = (numbers - first_frame, labels, valid, str(path))
    if ah is not None and ah_yaml is not None:
        raise ValueError("give hesitancy labels once: a per-frame file (ah) or a BAH annotation.yml (ah_yaml)")
    if ah is not None:
        path = _existing(ah, "ah")
        labels, valid = _parse_ah_file(path)
        numbers = np.arange(1, len(labels) + 1, dtype=np.int64)
        per_task["ah"] = (numbers - first_frame, labels, valid, str(path))
    if ah_yaml is not None:
        per_task["ah"] = _bah_video(_existing(ah_yaml, "ah"), ah_video)
    if not per_task:
        raise ValueError("no annotation file given: pass va, au, ah or ah_yaml")
    return _merge(per_task)


def _existing(path: str | Path, task: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{task} annotation file {str(path)!r} does not exist")
    return path


def _bah_video(path: Path, video: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    from abaw_ros.data.bah import load_annotation_yaml, normalize_video_path

    videos = load_annotation_yaml(path)
    if video is None:
        if len(videos) != 1:
            raise ValueError(f"{path} holds {len(videos)} videos: name the one in the bag "
                             f"(e.g. {sorted(videos)[:3]})")
        video = next(iter(videos))
    key = normalize_video_path(video)
    if key not in videos:
        raise KeyError(f"video {video!r} is not in {path} (videos: {sorted(videos)[:5]}"
                       f"{' ...' if len(videos) > 5 else ''})")
    frames = videos[key]
    numbers = np.array([n for n, _ in frames], dtype=np.int64)
    labels = np.array([[v] for _, v in frames], dtype=np.float32).reshape(-1, 1)
    return numbers - BAH_FIRST_FRAME, labels, np.ones(len(frames), dtype=bool), f"{path}#{key}"


def _merge(per_task: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]]) -> FrameLabels:
    """Put every task on the union of their frame indices (absent rows invalid)."""
    keys = np.unique(np.concatenate([k for k, *_ in per_task.values()]))
    labels = FrameLabels(KEY_INDEX, keys)
    for task, (task_keys, values, valid, source) in per_task.items():
        pos = np.searchsorted(keys, task_keys)
        labels.values[task] = np.zeros((len(keys), TASKS[task].size), dtype=np.float32)
        labels.valid[task] = np.zeros(len(keys), dtype=bool)
        labels.values[task][pos] = values
        labels.valid[task][pos] = valid
        labels.sources[task] = source
    labels.__post_init__()
    return labels


# ---------------------------------------------------------------------------------------
# Stamp-keyed CSV
# ---------------------------------------------------------------------------------------
def _column_aliases(task: str, output: str) -> tuple[str, ...]:
    return (output, f"{task}/{output}", output.replace(" ", "_"), f"{task}/{output.replace(' ', '_')}")


INT64_MAX = 2**63 - 1


def _parse_stamp(text: str, seconds: bool, where: str) -> int:
    """A ``stamp_ns`` (integer ns) or ``stamp`` (decimal seconds, read exactly) cell -> ns."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise DataFormatError(f"{where}: stamp {text!r} is not a number") from None
    if not value.is_finite():
        raise DataFormatError(f"{where}: stamp {text!r} is not a finite number")
    if seconds:
        ns = int((value * 1_000_000_000).to_integral_value())  # nearest nanosecond
    elif value != value.to_integral_value():
        raise DataFormatError(f"{where}: stamp_ns {text!r} is not a whole number of nanoseconds")
    else:
        ns = int(value)
    if not -INT64_MAX - 1 <= ns <= INT64_MAX:
        raise DataFormatError(f"{where}: stamp {text!r} is {ns} ns, outside the 64-bit range of a ROS time")
    return ns


def load_stamp_csv(path: str | Path) -> FrameLabels:
    """Labels keyed by image stamp from a CSV (see the module docstring).

    Every row must have as many fields as the header; a row with more or fewer, a stamp
    that is not a finite number within 64-bit nanoseconds, and a stamp given twice are
    errors naming the file and line (and bytes that are not UTF-8).
    """
    path = _existing(path, "CSV")
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    records: list[tuple[int, list[str]]] = []
    for row in reader:
        if any(cell.strip() for cell in row):
            records.append((reader.line_num, row))
    if not records:
        raise DataFormatError(f"{path}:1: empty file, expected a header with 'stamp_ns' or 'stamp'")
    header_line, header_row = records[0]
    header = [h.strip() for h in header_row]
    if "stamp_ns" in header:
        stamp_col, seconds = "stamp_ns", False
    elif "stamp" in header:
        stamp_col, seconds = "stamp", True
    else:
        raise DataFormatError(f"{path}:{header_line}: no 'stamp_ns' (integer ns) or 'stamp' (seconds) column "
                              f"in {header}")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataFormatError(f"{path}:{header_line}: columns {repeated} appear more than once in the header")
    if len(records) == 1:
        raise DataFormatError(f"{path}:{header_line + 1}: no rows after the header")
    rows: list[tuple[int, dict[str, str]]] = []
    for line, row in records[1:]:
        if len(row) != len(header):
            raise DataFormatError(f"{path}:{line}: {len(row)} fields, but the header has {len(header)} "
                                  f"({','.join(header)})")
        rows.append((line, dict(zip(header, (c.strip() for c in row), strict=True))))
    columns: dict[str, list[str]] = {}
    for task in TASK_ORDER:
        found = []
        for output in TASKS[task].outputs:
            name = next((a for a in _column_aliases(task, output) if a in header), None)
            found.append(name)
        present = [n for n in found if n is not None]
        if present and len(present) != len(found):
            missing = [o for o, n in zip(TASKS[task].outputs, found, strict=True) if n is None]
            raise DataFormatError(f"{path}:{header_line}: task {task!r} has columns {present} but lacks {missing}")
        if present:
            columns[task] = [n for n in found if n is not None]
    if not columns:
        raise DataFormatError(f"{path}:{header_line}: no label columns in {header}: expected e.g. "
                              f"valence,arousal or AU1..AU26 or hesitancy")
    stamps = np.zeros(len(rows), dtype=np.int64)
    values = {t: np.zeros((len(rows), TASKS[t].size), dtype=np.float32) for t in columns}
    valid = {t: np.ones(len(rows), dtype=bool) for t in columns}
    first_line: dict[int, int] = {}
    for i, (line, row) in enumerate(rows):
        stamps[i] = _parse_stamp(row[stamp_col], seconds, f"{path}:{line}")
        if int(stamps[i]) in first_line:
            raise DataFormatError(f"{path}:{line}: stamp {row[stamp_col]!r} again (line "
                                  f"{first_line[int(stamps[i])]}): each image stamp may have one label row")
        first_line[int(stamps[i])] = line
        for task, names in columns.items():
            cells = [row[n] for n in names]
            if any(c == "" for c in cells):
                valid[task][i] = False
                continue
            try:
                numbers = [float(c) for c in cells]
            except ValueError:
                raise DataFormatError(f"{path}:{line}: not a number among {task} values {cells}") from None
            if any(v == TASKS[task].invalid_label for v in numbers):
                valid[task][i] = False
                continue
            low, high = TASKS[task].value_range
            if any(not low <= v <= high for v in numbers):
                raise DataFormatError(f"{path}:{line}: {task} values {cells} outside [{low:g}, {high:g}] and not "
                                      f"the invalid marker {TASKS[task].invalid_label:g}")
            values[task][i] = numbers
    return FrameLabels(KEY_STAMP, stamps, values, valid, {t: str(path) for t in columns})


def write_stamp_csv(path: str | Path, stamps_ns: np.ndarray, labels: FrameLabels) -> Path:
    """Write index-keyed labels as a stamp-keyed CSV, ``stamps_ns[i]`` being the stamp of
    frame index ``i`` (how ``video-to-bag`` stores a video's annotations next to its bag)."""
    if labels.key != KEY_INDEX:
        raise ValueError("write_stamp_csv converts index-keyed labels")
    path = Path(path)
    stamps_ns = np.asarray(stamps_ns, dtype=np.int64)
    keep = (labels.keys >= 0) & (labels.keys < len(stamps_ns))
    header = ["stamp_ns"] + [o for t in labels.tasks for o in TASKS[t].outputs]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in np.flatnonzero(keep):
            cells: list[str] = [str(int(stamps_ns[labels.keys[row]]))]
            for task in labels.tasks:
                if labels.valid[task][row]:
                    cells += [f"{v:.6g}" for v in labels.values[task][row]]
                else:
                    cells += [f"{TASKS[task].invalid_label:g}"] * TASKS[task].size
            writer.writerow(cells)
    return path
