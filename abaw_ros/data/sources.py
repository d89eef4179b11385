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
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from abaw_ros.data.affwild2 import load_affwild2
from abaw_ros.data.bah import load_bah
from abaw_ros.data.hume import load_hume
from abaw_ros.data.records import VideoRecord
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
        if task in ("va", "au"):
            out[task] = load_affwild2(
                _need(data.affwild2_images, "affwild2_images", task),
                _need(data.affwild2_annotations, "affwild2_annotations", task),
                task, split, data.missing_frames,
            )
        elif task == "emi":
            csv = data.hume_train_csv if split == "train" else data.hume_val_csv
            out[task] = load_hume(_need(data.hume_root, "hume_root", task), split, csv,
                                  "error" if data.missing_frames == "error" else "skip")
        else:
            out[task] = load_bah(_need(data.bah_root, "bah_root", task), split,
                                 frames_root=data.bah_frames_root, missing_frames=data.missing_frames)
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
