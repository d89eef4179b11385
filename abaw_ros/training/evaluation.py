"""Predict every annotated frame of a validation set and score it with the official metrics.

``predict`` runs the evaluation windows (one prediction per annotated row, see
:mod:`abaw_ros.data.windows`), sharded over DDP ranks and gathered, so the metrics are
those of the whole set. ``score`` computes each task's metrics, ``metrics_table`` prints
them, ``write_submissions`` writes ABAW-style prediction files.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from abaw_ros.data.dataset import ClipDataset
from abaw_ros.metrics import PRIMARY_METRIC, VIDEO_SCORERS, heldout_tuned_f1, score_task, tune_threshold
from abaw_ros.models import activate, broadcast_to_frames
from abaw_ros.tasks import AU_NAMES, EMI_NAMES, TASKS, VA_NAMES, output_slices
from abaw_ros.training.distributed import DistContext, gather_objects

Forward = Callable[[torch.Tensor | list[torch.Tensor]], torch.Tensor]


@dataclass
class EvalResult:
    """``metrics[task]``: that task's official metrics; ``score``: mean of the tasks'
    primary metrics (model selection); thresholds as used/tuned."""

    metrics: dict[str, dict[str, float]]
    score: float
    au_thresholds: list[float] | None = None
    ah_threshold: float | None = None
    frames: dict[str, int] = field(default_factory=dict)  # valid frames (videos for EMI) scored
    au_f1_thresholded: dict[str, float] = field(default_factory=dict)  # per AU, at au_thresholds

    def to_dict(self) -> dict:
        return {
            "score": self.score,
            "primary": {t: PRIMARY_METRIC[t] for t in self.metrics},
            "tasks": self.metrics,
            "frames_scored": self.frames,
            "au_thresholds": self.au_thresholds,
            "ah_threshold": self.ah_threshold,
        }


def to_device(inputs, device: torch.device):
    if isinstance(inputs, list | tuple):
        return [x.to(device, non_blocking=True) for x in inputs]
    return inputs.to(device, non_blocking=True)


def autocast_for(device: torch.device, amp: bool | str):
    """``amp``: False / ``"none"`` (float32), True / ``"bf16"``, or ``"fp16"``."""
    if amp in (False, None, "none"):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


@torch.no_grad()
def predict(
    forward: Forward,
    dataset: ClipDataset,
    ctx: DistContext,
    batch_size: int = 32,
    num_workers: int = 0,
    amp: bool | str = False,
    progress: bool = True,
) -> list[np.ndarray]:
    """Activated predictions ``(N, D)`` for every row of every record of ``dataset``."""
    shard = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    videos, rows, values = [], [], []
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not (progress and ctx.is_main), leave=False):
        with autocast_for(ctx.device, amp):
            raw = forward(to_device(batch["inputs"], ctx.device))
        out = broadcast_to_frames(activate(raw.float(), dataset.tasks), dataset.window_length).cpu()
        write = batch["write"]
        b_idx, t_idx = torch.nonzero(write, as_tuple=True)
        videos.append(batch["video"][b_idx].numpy())
        rows.append(batch["rows"][b_idx, t_idx].numpy())
        values.append(out[b_idx, t_idx].numpy().astype(np.float32))
    mine = (
        np.concatenate(videos) if videos else np.zeros(0, np.int64),
        np.concatenate(rows) if rows else np.zeros(0, np.int64),
        np.concatenate(values) if values else np.zeros((0, dataset.size), np.float32),
    )
    preds = [np.zeros((len(r), dataset.size), dtype=np.float32) for r in dataset.records]
    covered = [np.zeros(len(r), dtype=bool) for r in dataset.records]
    for v, r, x in gather_objects(mine, ctx):
        for video in np.unique(v):
            sel = v == video
            preds[int(video)][r[sel]] = x[sel]
            covered[int(video)][r[sel]] = True
    for rec, p, c in zip(dataset.records, preds, covered, strict=True):
        if not c.all():
            raise RuntimeError(f"{rec.source}: {int((~c).sum())} rows got no prediction")
        if not np.isfinite(p).all():
            raise FloatingPointError(f"{rec.source}: the model predicted NaN/inf (diverged training?)")
    return preds


def score(
    dataset: ClipDataset,
    preds: Sequence[np.ndarray],
    tune_thresholds: bool = False,
    au_thresholds: Sequence[float] | None = None,
    ah_threshold: float | None = None,
) -> EvalResult:
    """Official metrics per task from per-row predictions (invalid rows excluded).

    The rows scored are ``dataset.scored_rows`` (the valid rows; under the reference
    protocol also the last window's padding copies). The primary metrics use threshold 0.5. Thresholds tuned on this set (when
    ``tune_thresholds``; optimistic on the set they were tuned on), else the given ones,
    add ``au_f1_mean_tuned`` and ``ah_f1_macro_tuned`` (optimistic when tuned here); AU and
    AH also get ``*_tuned_heldout``: each half of the videos labelled at thresholds tuned on
    the other half (:func:`abaw_ros.metrics.heldout_tuned_f1`).
    """
    slices = output_slices(dataset.tasks)
    metrics: dict[str, dict[str, float]] = {}
    frames: dict[str, int] = {}
    # the thresholds by task, as the result (and checkpoints) name them
    thresholds: dict[str, Any] = {"au": list(au_thresholds) if au_thresholds is not None else None,
                                  "ah": ah_threshold}
    au_f1_thresholded: dict[str, float] = {}
    for task in dataset.tasks:
        spec = TASKS[task]
        picked = [(r, p, dataset.scored_rows(i)) for i, (r, p) in enumerate(zip(dataset.records, preds, strict=True))
                  if r.task == task]
        if not picked:
            continue
        p = np.concatenate([pr[rows][:, slices[task]] for _, pr, rows in picked])
        t = np.concatenate([r.labels[rows] for r, _, rows in picked])
        ids = [r.name for r, _, rows in picked for _ in range(len(rows))]
        if p.shape[0] == 0:
            continue  # an unlabeled (test) set: predictions only
        if spec.threshold != "none" and tune_thresholds:
            thresholds[task] = tune_threshold(spec, p, t)
        metrics[task] = score_task(spec, p, t, video_ids=ids)
        used = thresholds.get(task)
        if spec.threshold != "none" and used is not None:
            at_th = score_task(spec, p, t, video_ids=ids, threshold=used)
            metrics[task][f"{spec.primary_metric}_tuned"] = at_th[spec.primary_metric]
            if spec.threshold == "per_output":
                au_f1_thresholded = {k: v for k, v in at_th.items() if k != spec.primary_metric}
        if spec.threshold != "none":  # a property of the predictions alone, whatever thresholds are used
            heldout = heldout_tuned_f1(task, p, t, ids)
            if heldout is not None:
                metrics[task][f"{spec.primary_metric}_tuned_heldout"] = heldout
        if spec.scorer in VIDEO_SCORERS:
            metrics[task].update(VIDEO_SCORERS[spec.scorer](
                spec, np.array([pr[rows][:, slices[task]].mean() for _, pr, rows in picked if len(rows)]),
                np.array([_video_label(r, rows) for r, _, rows in picked if len(rows)]), spec.default_threshold))
        frames[task] = len(set(ids)) if spec.unit == "video" else int(p.shape[0])
    primaries = [m[PRIMARY_METRIC[t]] for t, m in metrics.items()]
    total = float(np.mean(primaries)) if primaries else float("nan")
    return EvalResult(metrics, total, thresholds["au"], thresholds["ah"], frames, au_f1_thresholded)


def _video_label(record, rows: np.ndarray) -> float:
    """A BAH video's own label (the split file's column), else whether any scored frame is hesitant."""
    label = record.extra.get("video_label")
    return float(label) if label is not None else float(record.labels[rows].max())


def metrics_table(result: EvalResult) -> str:
    """Plain-text table: each task's primary metric, its parts, and F1 per AU."""
    lines = [f"{'task':<5} {'metric':<34} {'value':>8}", "-" * 49]
    for task, m in result.metrics.items():
        primary = PRIMARY_METRIC[task]
        lines.append(f"{task:<5} {primary + ' *':<34} {m[primary]:>8.4f}")
        for name, value in m.items():
            if name == primary:
                continue
            spec = TASKS[task]
            output = name.removeprefix(f"{task}_f1_")
            if spec.threshold == "per_output" and output in spec.outputs:
                line = f"{'':<5} {name + f' (th {spec.default_threshold:.2f})':<34} {value:>8.4f}"
                if result.au_thresholds is not None and name in result.au_f1_thresholded:
                    th = result.au_thresholds[spec.outputs.index(output)]
                    line += f"   at th {th:.2f}: {result.au_f1_thresholded[name]:.4f}"
                lines.append(line)
                continue
            note = "   (tuned on these frames: optimistic)" if name.endswith("_tuned") else ""
            lines.append(f"{'':<5} {name:<34} {value:>8.4f}{note}")
    lines.append("-" * 49)
    lines.append(f"{'all':<5} {'mean of primary metrics (*)':<34} {result.score:>8.4f}")
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    """Written beside ``path`` and renamed over it (:func:`abaw_ros.outputs.write_bytes`):
    a crash or a full disk leaves the earlier file whole."""
    from abaw_ros.outputs import write_bytes

    write_bytes(path, json.dumps(payload, indent=2, default=float).encode("utf-8"), path.name)


def _va_lines(pairs, _threshold) -> list[str]:
    lines = ["image_location," + ",".join(VA_NAMES)]
    for r, p in pairs:
        lines += [f"{r.name}/{n:05d}.jpg,{v[0]:.6f},{v[1]:.6f}" for n, v in zip(r.frame_numbers, p, strict=True)]
    return lines


def _au_lines(pairs, thresholds) -> list[str]:
    lines = ["image_location," + ",".join(AU_NAMES)]
    for r, p in pairs:
        on = (p >= np.asarray(thresholds)).astype(int)
        lines += [f"{r.name}/{n:05d}.jpg," + ",".join(map(str, o)) for n, o in zip(r.frame_numbers, on, strict=True)]
    return lines


def _emi_lines(pairs, _threshold) -> list[str]:
    return ["Filename," + ",".join(EMI_NAMES)] + [f"{int(r.name)}," + ",".join(f"{v:.6f}" for v in p.mean(0))
                                                 for r, p in pairs]


def _ah_lines(pairs, threshold) -> list[str]:
    lines = ["image_location," + TASKS["ah"].outputs[0]]
    for r, p in pairs:
        lines += [f"{r.name}/frame-{n}.jpg,{int(v[0] >= threshold)}" for n, v in zip(r.frame_numbers, p, strict=True)]
    return lines


# The challenges' prediction files, per task: (file name, (records and predictions, thresholds) -> lines).
# A task without an entry has no challenge file.
SUBMISSION_WRITERS: dict[str, tuple[str, Callable[[list, Any], list[str]]]] = {
    "va": ("VA_predictions.txt", _va_lines),
    "au": ("AU_predictions.txt", _au_lines),
    "emi": ("EMI_predictions.csv", _emi_lines),
    "ah": ("AH_predictions.txt", _ah_lines),
}


def write_submissions(
    out_dir: Path,
    dataset: ClipDataset,
    preds: Sequence[np.ndarray],
    au_thresholds: Sequence[float] | None = None,
    ah_threshold: float | None = None,
) -> dict[str, Path]:
    """ABAW-style prediction files, one per task, every annotated row of every video:

    - ``VA_predictions.txt``: ``image_location,valence,arousal`` (``<video>/00001.jpg``);
    - ``AU_predictions.txt``: ``image_location,AU1,...,AU26`` as 0/1 at the thresholds;
    - ``EMI_predictions.csv``: ``Filename,<6 dimensions>``, one row per video (frame mean);
    - ``AH_predictions.txt``: ``image_location,hesitancy`` (``<video id>/frame-<N>.jpg``, 0/1).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    slices = output_slices(dataset.tasks)
    given = {"au": au_thresholds, "ah": ah_threshold}
    written: dict[str, Path] = {}
    for task in dataset.tasks:
        pairs = [(r, p[:, slices[task]]) for r, p in zip(dataset.records, preds, strict=True) if r.task == task]
        if not pairs or task not in SUBMISSION_WRITERS:
            continue
        name, lines_of = SUBMISSION_WRITERS[task]
        threshold = given.get(task)
        path = out_dir / name
        path.write_text("\n".join(lines_of(pairs, TASKS[task].default_thresholds() if threshold is None
                                            else threshold)) + "\n")
        written[task] = path
    return written
