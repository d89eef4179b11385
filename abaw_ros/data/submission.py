"""ABAW test-set submissions: which frames a file must list, how its lines read, and a
check that a written submission lists them all.

The organisers score every frame of every test video (their sample files list them), but
``cropped_aligned/<video>/`` holds images only where a face was found, and some videos
end with frames that have none: images alone cannot say how many frames a video has. The
frames therefore come from one of

- the organisers' sample submission file (frames and their order),
- a frame-count list (``<video>,<frames>`` per line; frames ``1 .. frames``),
- the test videos themselves (frames counted by decoding each file),

and nothing is written without one of them. Formats:

- VA: ``image_location,valence,arousal``, one ``<video>/<NNNNN>.jpg,v,a`` line per frame;
- AU: ``image_location,AU1,...,AU26``, 0/1 per AU;
- EMI: ``Filename,<6 dimensions>``, one row per video;
- AH: ``video,hesitancy`` (0/1), one row per video: the 10th ABAW (CVPR 2026) recognises
  ambivalence/hesitancy per video and ranks by the macro F1 over videos (Kollias et al.,
  "From Affect to Complex Behavior ... 10th ABAW", arXiv 2605.27451; team reports such as
  arXiv 2603.12848 give "average MF1" per video); the per-frame probabilities are written
  beside it (``AH_frames.txt``) for inspection.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from abaw_ros.data.records import DataFormatError, read_text
from abaw_ros.tasks import AU_NAMES, EMI_NAMES, TASKS, VA_NAMES

HEADERS: dict[str, str] = {
    "va": "image_location," + ",".join(VA_NAMES),
    "au": "image_location," + ",".join(AU_NAMES),
    "emi": "Filename," + ",".join(EMI_NAMES),
    "ah": "video,hesitancy",
}
COMBINED_FILES: dict[str, str] = {"va": "VA_predictions.txt", "au": "AU_predictions.txt",
                                  "emi": "EMI_predictions.csv", "ah": "AH_predictions.txt"}
# The challenge files' layouts: one row per frame (plus one file per video) or one row per video.
FRAME_FILES: frozenset[str] = frozenset({"va", "au"})
PER_VIDEO_FILES: frozenset[str] = frozenset({"emi", "ah"})
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
OFFICIAL_THRESHOLD = 0.5


def read_frame_counts(path: Path | str) -> dict[str, int]:
    """``<video>,<frames>`` per line (a ``video,frames`` header and blank lines allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame-count list {path}: no such file")
    out: dict[str, int] = {}
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        video, _, count = (part.strip() for part in line.partition(","))
        if line_no == 1 and not count.isdigit():
            continue  # header
        if not video or not count.isdigit() or int(count) < 1:
            raise DataFormatError(f"{path}:{line_no}: {line!r} is not <video>,<number of frames>")
        if video in out:
            raise DataFormatError(f"{path}:{line_no}: video {video!r} is listed twice")
        out[video] = int(count)
    if not out:
        raise DataFormatError(f"{path}: no <video>,<frames> line")
    return out


def count_video_frames(path: Path) -> int:
    """Frames of a video file, counted by reading them: the container's frame-count field
    (``CAP_PROP_FRAME_COUNT``) is an estimate for many codecs."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataFormatError(f"{path}: cannot be opened as a video")
        n = 0
        while cap.grab():
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise DataFormatError(f"{path}: no frame could be read")
    return n


def find_video_file(folder: Path, video: str) -> Path:
    """``<folder>/<video>.<ext>``; two-subject entries (``_left``/``_right``) share one file."""
    stems = [video] + ([video.rsplit("_", 1)[0]] if video.endswith(("_left", "_right")) else [])
    for stem in stems:
        for suffix in VIDEO_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    raise FileNotFoundError(f"test video {video!r}: no {stem}{{{','.join(VIDEO_SUFFIXES)}}} in {folder}")


def frame_counts_from_videos(folder: Path | str, videos: Sequence[str]) -> dict[str, int]:
    folder = Path(folder)
    return {video: count_video_frames(find_video_file(folder, video)) for video in videos}


def expected_frames(videos: Sequence[str] | None, sample: Mapping[str, list[int]] | None = None,
                    counts: Mapping[str, int] | None = None) -> dict[str, list[int]]:
    """``{video: frame numbers}`` a VA/AU submission must list, in order.

    ``sample`` (the organisers' file) wins; else ``counts`` give frames ``1 .. count``.
    Every video of ``videos`` (default: the sample's or the counts' videos) must be covered.
    """
    if sample is None and counts is None:
        raise ValueError("no frame list: give the organisers' sample file (--sample), a frame-count list "
                         "(--frame-counts) or the test videos (--raw-videos); images alone end at each video's "
                         "last face, so the files would be short")
    source: Mapping[str, object] = sample if sample is not None else counts  # type: ignore[assignment]
    order = list(videos) if videos is not None else list(source)
    missing = [v for v in order if v not in source]
    if missing:
        what = "sample file" if sample is not None else "frame-count list"
        raise DataFormatError(f"test video(s) {missing[:5]} not in the {what} ({len(missing)} of {len(order)})")
    if sample is not None:
        return {v: list(sample[v]) for v in order}
    return {v: list(range(1, int(counts[v]) + 1)) for v in order}  # type: ignore[index]


def frame_lines(task: str, video: str, numbers: Sequence[int], values: np.ndarray,
                au_thresholds: Sequence[float] | None = None) -> list[str]:
    """VA/AU lines of one video: ``<video>/<NNNNN>.jpg,...``."""
    spec = TASKS[task]
    if spec.threshold == "none":  # the values themselves
        return [f"{video}/{int(n):05d}.jpg," + ",".join(f"{x:.6f}" for x in v)
                for n, v in zip(numbers, values, strict=True)]
    th = np.asarray(au_thresholds if au_thresholds is not None else [OFFICIAL_THRESHOLD] * spec.size)
    return [f"{video}/{int(n):05d}.jpg," + ",".join(str(int(x)) for x in (v >= th))
            for n, v in zip(numbers, values, strict=True)]


def write_lines(path: Path, header: str, lines: Sequence[str]) -> Path:
    """Write through a staging name and rename (:func:`abaw_ros.outputs.write_bytes`): a
    crash or a full disk never leaves a half-written file, and two runs never share one."""
    from abaw_ros.outputs import write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, ("\n".join([header, *lines]) + "\n").encode("utf-8"), path.name)
    return path


_COUNTS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _rows(path: Path) -> list[list[str]]:
    text = read_text(path)
    return [row for row in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in row)]


def check_frame_file(path: Path, task: str, expected: Mapping[str, list[int]], videos: Sequence[str] | None = None,
                     limit: int = 5) -> list[str]:
    """Problems of one VA/AU file against the expected frames (all videos, or ``videos``),
    at most ``limit`` of them; ``[]`` when the file is valid."""
    if not path.is_file():
        return [f"{path}: missing"]
    rows = _rows(path)
    if not rows or ",".join(c.strip() for c in rows[0]) != HEADERS[task]:
        return [f"{path}:1: header {','.join(rows[0]) if rows else 'nothing'!r}, expected {HEADERS[task]!r}"]
    want = [f"{v}/{n:05d}.jpg" for v in (videos if videos is not None else expected) for n in expected[v]]
    problems: list[str] = []
    spec = TASKS[task]  # the value kind and range: tasks.Task
    low, high = spec.value_range
    width = len(HEADERS[task].split(","))
    for i, row in enumerate(rows[1:]):
        line = i + 2
        if i >= len(want):
            problems.append(f"{path}:{line}: {row[0]!r} is beyond the {len(want)} expected frames")
            break
        if row[0].strip() != want[i]:
            problems.append(f"{path}:{line}: {row[0]!r}, expected {want[i]!r}")
        elif len(row) != width:
            problems.append(f"{path}:{line}: {len(row)} fields, expected {width}")
        else:
            try:
                values = [float(x) for x in row[1:]]
            except ValueError:
                values = None
            if values is None or not all(np.isfinite(values)):
                problems.append(f"{path}:{line}: not a number in {row[1:]}")
            elif spec.kind == "regression" and not all(low <= x <= high for x in values):
                problems.append(f"{path}:{line}: {'/'.join(spec.outputs)} {values} outside [{low:g}, {high:g}]")
            elif spec.kind == "binary" and not all(x in (0.0, 1.0) for x in values):
                problems.append(f"{path}:{line}: {task.upper()} values {row[1:]} must be 0 or 1")
        if len(problems) >= limit:
            return problems
    if len(rows) - 1 < len(want) and len(problems) < limit:
        problems.append(f"{path}: {len(rows) - 1} frames, expected {len(want)} (first missing: "
                        f"{want[len(rows) - 1]})")
    return problems


def check_video_file(path: Path, task: str, videos: Sequence[str], limit: int = 5) -> list[str]:
    """Problems of an EMI or AH per-video file: one row per video, in order."""
    if not path.is_file():
        return [f"{path}: missing"]
    rows = _rows(path)
    if not rows or ",".join(c.strip() for c in rows[0]) != HEADERS[task]:
        return [f"{path}:1: header {','.join(rows[0]) if rows else 'nothing'!r}, expected {HEADERS[task]!r}"]
    problems = []
    spec = TASKS[task]  # the value kind and range: tasks.Task
    low, high = spec.value_range
    if [r[0].strip() for r in rows[1:]] != list(videos):
        problems.append(f"{path}: lists {len(rows) - 1} videos, expected the {len(videos)} test videos in order")
    for i, row in enumerate(rows[1:]):
        try:
            values = [float(x) for x in row[1:]]
        except ValueError:
            values = []
        ok = (len(values) == len(HEADERS[task].split(",")) - 1
              and (all(low <= x <= high for x in values) if spec.kind == "regression" else values in ([0.0], [1.0])))
        if not ok:
            what = f"{_COUNTS.get(spec.size, spec.size)} values in [{low:g}, {high:g}]"
            problems.append(f"{path}:{i + 2}: {row[1:]} is not {what if spec.kind == 'regression' else '0 or 1'}")
        if len(problems) >= limit:
            break
    return problems


def check_submission(folder: Path | str, task: str, expected: Mapping[str, list[int]] | Sequence[str]) -> list[str]:
    """Problems of a submission folder written by ``predict-abaw`` (its combined file, and
    for VA/AU every per-video file ``<TASK>/<video>.txt``); ``[]`` when it is complete.
    ``expected``: ``{video: frames}`` for VA/AU, the video names for EMI/AH."""
    folder = Path(folder)
    combined = folder / COMBINED_FILES[task]
    if task in PER_VIDEO_FILES:
        return check_video_file(combined, task, [str(v) for v in expected])
    assert isinstance(expected, Mapping)
    problems = check_frame_file(combined, task, expected)
    for video in expected:
        if len(problems) >= 5:
            break
        problems += check_frame_file(folder / task.upper() / f"{video}.txt", task, expected, [video])
    return problems[:5]
