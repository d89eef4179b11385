"""Aff-Wild2 (ABAW) valence/arousal and action-unit annotations.

Layout (DESIGN §2)::

    <images_root>/cropped_aligned/<video>/00001.jpg ...      (1-based, gaps where no face)
    <annotations_root>/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt
    <annotations_root>/AU_Detection_Challenge/{Train_Set,Validation_Set}/<video>.txt

Row ``i`` after the header belongs to frame ``%05d.jpg`` = ``i``. Invalid rows (VA ``-5``,
AU ``-1``) stay in the record with ``valid=False``. Two-subject videos are separate
annotation files named ``<video>_left`` / ``<video>_right``; both read the frames of
``cropped_aligned/<video>_left`` (resp. ``_right``) when that folder exists, else of
``cropped_aligned/<video>``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from abaw_ros.data.records import (
    DataFormatError,
    VideoRecord,
    read_lines,
    resolve_missing_frames,
    summarize,
)
from abaw_ros.tasks import AU_NAMES, TASKS, VA_NAMES

log = logging.getLogger(__name__)

CHALLENGE_DIRS = {"va": "VA_Estimation_Challenge", "au": "AU_Detection_Challenge"}
SPLIT_DIRS = {"train": "Train_Set", "val": "Validation_Set"}
HEADERS = {"va": ",".join(VA_NAMES), "au": ",".join(AU_NAMES)}


def split_dir_name(split: str) -> str:
    """``train``/``val`` or the official folder name -> the official folder name."""
    if split in SPLIT_DIRS:
        return SPLIT_DIRS[split]
    if split in SPLIT_DIRS.values():
        return split
    raise ValueError(f"split={split!r}: choose from {list(SPLIT_DIRS)} or {list(SPLIT_DIRS.values())}")


def parse_annotation_file(path: Path, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one VA or AU annotation file -> ``(labels (N, D) float32, valid (N,) bool)``.

    Raises :class:`DataFormatError` naming the file and line for bytes that are not UTF-8,
    a wrong header, no row after the header, a row with the wrong number of fields, a value
    that is not a number, or a value outside the task's range that is not the invalid
    marker. Trailing blank lines are ignored.
    """
    if task not in HEADERS:
        raise ValueError(f"task={task!r}: Aff-Wild2 has 'va' and 'au'")
    lines = read_lines(path)
    if not lines:
        raise DataFormatError(f"{path}:1: empty file, expected header {HEADERS[task]!r}")
    header = lines[0].strip().replace(" ", "")
    if header != HEADERS[task]:
        raise DataFormatError(f"{path}:1: header {lines[0]!r}, expected {HEADERS[task]!r}")
    if len(lines) == 1:
        raise DataFormatError(f"{path}:2: no rows after the header: an annotation file has one row "
                              f"per frame of the video")
    width = len(HEADERS[task].split(","))
    spec = TASKS[task]  # the invalid marker, value kind and range: tasks.Task
    low, high = spec.value_range
    labels = np.zeros((len(lines) - 1, width), dtype=np.float32)
    valid = np.ones(len(lines) - 1, dtype=bool)
    for row, line in enumerate(lines[1:]):
        line_no = row + 2
        fields = line.strip().split(",")
        if len(fields) != width:
            raise DataFormatError(f"{path}:{line_no}: {len(fields)} fields in {line!r}, expected {width}")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise DataFormatError(f"{path}:{line_no}: not a number in {line!r}") from None
        if not all(np.isfinite(values)):
            raise DataFormatError(f"{path}:{line_no}: {line!r}: values must be finite numbers")
        if spec.kind == "binary" and any(v not in (0.0, 1.0, spec.invalid_label) for v in values):
            raise DataFormatError(f"{path}:{line_no}: {line!r}: {task.upper()} values must be 0, 1 or "
                                  f"{spec.invalid_label:g}")
        if any(v == spec.invalid_label for v in values):
            valid[row] = False
        elif any(not low <= v <= high for v in values):
            raise DataFormatError(f"{path}:{line_no}: {line!r} outside [{low:g}, {high:g}] and not the "
                                  f"{spec.invalid_label:g} marker")
        labels[row] = values
    labels[~valid] = 0.0
    return labels, valid


def list_frames(folder: Path) -> dict[int, Path]:
    """``{frame number: path}`` of the numbered ``.jpg`` files in a folder (others ignored)."""
    if not folder.is_dir():
        return {}
    return {int(p.stem): p for p in folder.iterdir() if p.suffix.lower() == ".jpg" and p.stem.isdigit()}


def load_affwild2(
    images_root: Path | str,
    annotations_root: Path | str,
    task: str,
    split: str,
    missing_frames: str = "nearest",
) -> list[VideoRecord]:
    """All annotated videos of one Aff-Wild2 task and split, sorted by name.

    ``missing_frames`` decides what an annotated row without its own image shows (see
    :func:`abaw_ros.data.records.resolve_missing_frames`); the number of such rows is
    logged. A video with no image at all is an error, except under ``skip`` where it is
    left out and counted. An empty or missing split folder is an error.
    """
    images_root, annotations_root = Path(images_root), Path(annotations_root)
    ann_dir = annotations_root / CHALLENGE_DIRS[task] / split_dir_name(split)
    files = sorted(ann_dir.glob("*.txt")) if ann_dir.is_dir() else []
    if not files:
        raise DataFormatError(f"{ann_dir}: no annotation files (*.txt) for task {task!r}")
    records: list[VideoRecord] = []
    skipped_videos = 0
    for path in files:
        labels, valid = parse_annotation_file(path, task)
        video = path.stem
        folder = images_root / "cropped_aligned" / video
        if not folder.is_dir() and video.endswith(("_left", "_right")):
            folder = images_root / "cropped_aligned" / video.rsplit("_", 1)[0]
        images = list_frames(folder)
        if not images:
            if missing_frames == "skip":
                skipped_videos += 1
                log.warning("%s: no images in %s, video skipped", path, folder)
                continue
            raise DataFormatError(f"{path}: no images for video {video!r} in {folder}")
        numbers = list(range(1, len(labels) + 1))
        frames, missing = resolve_missing_frames(
            images, numbers, missing_frames, path, line_of={n: n + 1 for n in numbers}
        )
        keep = np.array([f is not None for f in frames])
        if missing:
            log.debug("%s: %d of %d annotated frames have no image (%s)", path, missing, len(numbers),
                     "skipped" if missing_frames == "skip" else "nearest frame shown")
        records.append(
            VideoRecord(
                task=task,
                name=video,
                frames=[f for f in frames if f is not None],
                labels=labels[keep],
                valid=valid[keep],
                frame_numbers=np.asarray(numbers, dtype=np.int64)[keep],
                source=path,
                substituted=0 if missing_frames == "skip" else missing,
            )
        )
    if skipped_videos:
        log.warning("%s: %d videos without images skipped", ann_dir, skipped_videos)
    if not records:
        raise DataFormatError(f"{ann_dir}: no video with images under {images_root / 'cropped_aligned'}")
    summarize(records, f"Aff-Wild2 {task} {split}")
    return records
