"""Records of every selected task for one split, from the data-set locations."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from abaw_ros.data.affwild2 import load_affwild2
from abaw_ros.data.bah import load_bah
from abaw_ros.data.hume import load_hume
from abaw_ros.data.records import VideoRecord
from abaw_ros.tasks import normalize_tasks


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


def load_split(data: DataLocations, tasks: Sequence[str], split: str) -> dict[str, list[VideoRecord]]:
    """``{task: records}`` for ``split`` in ``("train", "val")``."""
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r}: choose train or val")
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
    return out
