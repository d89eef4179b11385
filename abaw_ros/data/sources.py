"""Records of every selected task for one split, from the data-set locations.

Protocols (``train.protocol``, see docs/TRAINING.md):

- ``frames`` (default): every annotated row stays in its record (invalid rows masked,
  a row without its own image shows the nearest frame, ``data.missing_frames``), so the
  time axis is intact and every annotated frame is predicted, as the challenge scores;
- ``reference``: the reference code's data handling: rows without an image and invalid
  rows (``-5`` / ``-1``) are dropped before windowing, so windows run over the remaining
  rows only.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from abaw_ros.data.affwild2 import load_affwild2
from abaw_ros.data.bah import load_bah
from abaw_ros.data.hume import load_hume
from abaw_ros.data.records import DataFormatError, VideoRecord
from abaw_ros.tasks import normalize_tasks

log = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("frames", "reference")


class DataLocations(Protocol):
    affwild2_images: str | None
    affwild2_annotations: str | None
    hume_root: str | None
    hume_train_csv: str | None
    hume_val_csv: str | None
    bah_root: str | None
    bah_frames_root: str | None
    missing_frames: str


def _need(value: str | None, what: str, task: str) -> Path:
    if not value:
        raise ValueError(f"task {task!r} selected but data.{what} is not set")
    return Path(value)


def drop_invalid_rows(record: VideoRecord) -> VideoRecord:
    """The record without its invalid rows (the reference drops them before windowing)."""
    keep = record.valid
    return replace(record, frames=[f for f, k in zip(record.frames, keep, strict=True) if k],
                   labels=record.labels[keep], valid=record.valid[keep], frame_numbers=record.frame_numbers[keep])


def load_split(data: DataLocations, tasks: Sequence[str], split: str,
               protocol: str = "frames") -> dict[str, list[VideoRecord]]:
    """``{task: records}`` for ``split`` in ``("train", "val")`` under ``protocol``."""
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r}: choose train or val")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: choose one of {list(PROTOCOLS)}")
    if protocol == "reference":
        data = _Locations(data, missing_frames="skip")
    out: dict[str, list[VideoRecord]] = {}
    for task in normalize_tasks(tasks):
        if task not in LOADERS:
            raise ValueError(f"task {task!r} has no data loader: choose from {list(LOADERS)}")
        out[task] = LOADERS[task](data, task, split)
    if protocol == "reference":
        for task, records in out.items():
            kept = [drop_invalid_rows(r) for r in records]
            out[task] = [r for r in kept if len(r)]
            dropped = sum(len(r) for r in records) - sum(len(r) for r in out[task])
            log.info("protocol reference, %s %s: %d invalid rows dropped before windowing", task, split, dropped)
    return out


class _Locations:
    """``data`` with some fields overridden (the caller's config stays untouched)."""

    def __init__(self, data: DataLocations, **overrides: str) -> None:
        self._data, self._overrides = data, overrides

    def __getattr__(self, name: str):
        return self._overrides[name] if name in self._overrides else getattr(self._data, name)


def read_video_list(path: Path | str) -> list[str]:
    """An official test-set video list (``names_of_videos_in_each_test_set/*.txt``): one
    video name per line; blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video list {path}: no such file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataFormatError(f"{path}: no video names")
    return names


def read_sample_file(path: Path | str) -> dict[str, list[int]]:
    """An official sample submission file (header ``image_location,...``, then one
    ``<video>/<NNNNN>.jpg,...`` line per frame to predict) -> ``{video: frame numbers}`` in
    file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample file {path}: no such file")
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("image_location"):
        raise DataFormatError(f"{path}:1: expected a header starting with 'image_location'")
    out: dict[str, list[int]] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        location = line.split(",", 1)[0].strip()
        video, _, image = location.rpartition("/")
        stem = image.rsplit(".", 1)[0]
        if not video or not stem.isdigit():
            raise DataFormatError(f"{path}:{line_no}: {location!r} is not <video>/<NNNNN>.jpg")
        out.setdefault(video, []).append(int(stem))
    return out


def load_affwild2_test(images_root: Path | str, task: str, videos: Sequence[str],
                       frames: dict[str, list[int]] | None = None) -> list[VideoRecord]:
    """Unlabelled Aff-Wild2 test videos: one record per video, one row per frame to predict
    (``frames[video]``, else 1 .. the last frame with an image); a frame without its own
    image shows the nearest one, so every requested frame gets a prediction. Labels are
    zeros and no row is valid (nothing is scored)."""
    from abaw_ros.data.affwild2 import list_frames
    from abaw_ros.data.records import resolve_missing_frames
    from abaw_ros.tasks import TASKS

    images_root = Path(images_root)
    records = []
    for video in videos:
        folder = images_root / "cropped_aligned" / video
        if not folder.is_dir() and video.endswith(("_left", "_right")):
            folder = images_root / "cropped_aligned" / video.rsplit("_", 1)[0]
        images = list_frames(folder)
        if not images:
            raise DataFormatError(f"test video {video!r}: no images in {folder}")
        numbers = list(frames[video]) if frames is not None and video in frames else list(range(1, max(images) + 1))
        if max(images) > max(numbers):
            raise DataFormatError(f"test video {video!r}: image {max(images):05d}.jpg is beyond the {max(numbers)} "
                                  f"frames the frame list gives it: wrong frame list for these images?")
        paths, missing = resolve_missing_frames(images, numbers, "nearest", folder)
        n = len(numbers)
        records.append(VideoRecord(task=task, name=video, frames=[p for p in paths if p is not None],
                                   labels=np.zeros((n, TASKS[task].size), np.float32), valid=np.zeros(n, bool),
                                   frame_numbers=np.asarray(numbers, np.int64), source=folder, substituted=missing))
    return records


def _affwild2(data, task: str, split: str) -> list[VideoRecord]:
    return load_affwild2(_need(data.affwild2_images, "affwild2_images", task),
                         _need(data.affwild2_annotations, "affwild2_annotations", task),
                         task, split, data.missing_frames)


def _hume(data, task: str, split: str) -> list[VideoRecord]:
    csv = data.hume_train_csv if split == "train" else data.hume_val_csv
    return load_hume(_need(data.hume_root, "hume_root", task), split, csv,
                     "error" if data.missing_frames == "error" else "skip")


def _bah(data, task: str, split: str) -> list[VideoRecord]:
    return load_bah(_need(data.bah_root, "bah_root", task), split,
                    frames_root=data.bah_frames_root, missing_frames=data.missing_frames)


# The data set each task is read from: (locations, task, split) -> that split's records.
LOADERS: dict[str, Callable[[DataLocations, str, str], list[VideoRecord]]] = {
    "va": _affwild2, "au": _affwild2, "emi": _hume, "ah": _bah,
}
