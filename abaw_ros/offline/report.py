"""Official ABAW metrics of a bag's predictions, with the functions training uses
(:mod:`abaw_ros.metrics`), and the JSON report of a ``bag-eval`` run.

Frames without a prediction for the followed face are, by ``missing`` policy, left out
(``exclude``, the default; coverage is reported) or scored as a neutral prediction
(``neutral``: valence/arousal 0, probabilities and intensities 0), which is how the
challenge counts a frame the system did not answer.

A bag is one video, so EMI (officially one Pearson r across videos) is scored here
across the frames of the bag, and said so in the report.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from abaw_ros import metrics
from abaw_ros.offline.annotations import AlignedLabels
from abaw_ros.offline.outputs import write_file_atomically
from abaw_ros.offline.track import PredictionTrack
from abaw_ros.tasks import TASKS

MISSING_POLICIES: tuple[str, ...] = ("exclude", "neutral")
NEUTRAL_OUTPUT = 0.0


def compute_metrics(track: PredictionTrack, labels: AlignedLabels, missing: str = "exclude") -> dict[str, Any]:
    """Per labelled task: frame counts, coverage and the official scores. Also the scores
    of the node's own on/off decisions (``au_active`` with the model's per-AU thresholds,
    ``hesitant``), next to the official threshold 0.5."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r}: choose from {list(MISSING_POLICIES)}")
    if len(track) != len(labels.matched):
        raise ValueError(f"{len(track)} predicted frames but {len(labels.matched)} aligned label rows")
    out: dict[str, Any] = {}
    for task in labels.tasks:
        valid = labels.valid[task]
        true = labels.values[task]
        pred = track.output(task)
        estimated = track.estimated(task)
        if missing == "exclude":
            use = valid & estimated
        else:
            use = valid
            pred = np.where(estimated[:, None], pred, NEUTRAL_OUTPUT).astype(np.float32)
        entry: dict[str, Any] = {
            "frames_labelled": int(valid.sum()),
            "frames_predicted": int((valid & estimated).sum()),
            "frames_scored": int(use.sum()),
            "coverage": float((valid & estimated).sum() / valid.sum()) if valid.any() else 0.0,
        }
        if not use.any():
            entry["error"] = ("no frame has both a valid label and a prediction"
                              if valid.any() else "no valid label among the processed frames")
            out[task] = entry
            continue
        spec = TASKS[task]
        # a bag is one video: a per-video metric is scored across its frames (each frame its own "video")
        scores = metrics.score_task(spec, pred[use], true[use], video_ids=np.arange(int(use.sum())),
                                    threshold=spec.default_thresholds())
        note = frames_note(task, "the bag (one video)")
        if note:
            entry["note"] = note
        if spec.threshold != "none" and spec.flag_field:
            flags = track.flags(task)[use].astype(np.float64)
            plural = "s" if spec.threshold == "per_output" else ""
            scores[f"{spec.primary_metric}_node_threshold{plural}"] = metrics.score_task(
                spec, flags, true[use])[spec.primary_metric]
        entry["primary"] = metrics.PRIMARY_METRIC[task]
        entry["scores"] = scores
        out[task] = entry
    return out


def frames_note(task: str, where: str) -> str | None:
    """What a per-video metric means when scored across the frames of ``where``; None for
    a per-frame metric."""
    spec = TASKS[task]
    if spec.unit != "video":
        return None
    return f"{metrics.SCORER_LABELS.get(spec.scorer, spec.scorer)} across the frames of {where}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Write ``report`` as indented JSON (NaN as null, paths as strings), replacing the file
    in one step (a reader never sees half a report). Whether ``path`` may be replaced is
    the caller's check (:func:`abaw_ros.offline.outputs.check_file_output`)."""
    text = json.dumps(_jsonable(report), indent=2) + "\n"
    return write_file_atomically(path, text.encode("utf-8"))
