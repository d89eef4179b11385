"""Metrics pooled over a batch: per task, the official metrics over the frames of every bag
labelled for it (the frames of all bags one after the other)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from abaw_ros.offline.annotations import AlignedLabels, FrameLabels
from abaw_ros.offline.batch_executors import BagOutcome
from abaw_ros.offline.report import compute_metrics, frames_note
from abaw_ros.offline.track import PredictionTrack
from abaw_ros.tasks import TASK_ORDER


def concatenate_tracks(tracks: Sequence[PredictionTrack]) -> PredictionTrack:
    """One track holding the frames of ``tracks`` one after the other."""
    out = PredictionTrack(tracks[0].face_policy if tracks else PredictionTrack().face_policy)
    for track in tracks:
        out.extend(track)
    return out


def pooled_metrics(outcomes: Sequence[BagOutcome], labels: dict[int, FrameLabels], missing: str,
                   tolerance_ns: int) -> dict[str, Any]:
    """Per task, the official metrics over the frames of every bag labelled for it."""
    import numpy as np

    per_task: dict[str, list[tuple[PredictionTrack, AlignedLabels]]] = {}
    for o in outcomes:
        if o.result is None or o.result.track is None or o.position not in labels:
            continue
        track = o.result.track
        aligned = labels[o.position].align(track.index_array, track.stamp_array, tolerance_ns)
        for task in aligned.tasks:
            per_task.setdefault(task, []).append((track, aligned))
    pooled: dict[str, Any] = {}
    for task in TASK_ORDER:
        parts = per_task.get(task)
        if not parts:
            continue
        track = concatenate_tracks([t for t, _ in parts])
        aligned = AlignedLabels(
            values={task: np.concatenate([a.values[task] for _, a in parts])},
            valid={task: np.concatenate([a.valid[task] for _, a in parts])},
            matched=np.concatenate([a.matched for _, a in parts]),
            sources={task: f"{len(parts)} bags"},
        )
        entry = compute_metrics(track, aligned, missing)[task]
        entry["bags"] = len(parts)
        note = frames_note(task, "all bags")
        if note:
            entry["note"] = note
        pooled[task] = entry
    return pooled
