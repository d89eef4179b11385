"""What training derives per task from the training labels, by each task's :class:`~abaw_ros.tasks.Task`:
the BCE positive weights and the never-positive outputs of the multi-label tasks, the label
priors the sigmoid outputs start at, and the spread of the validation predictions.
"""
from __future__ import annotations

import numpy as np
import torch

from abaw_ros.data.dataset import ClipDataset
from abaw_ros.models import AffectNet
from abaw_ros.tasks import TASKS, output_slices
from abaw_ros.training.losses import pos_weight_from_labels


def _multilabel_records(ds: ClipDataset) -> list:
    """The records of the tasks trained with the multi-label loss (the AUs)."""
    return [r for r in ds.records if TASKS[r.task].loss == "multilabel"]


def au_pos_weight(ds: ClipDataset) -> np.ndarray | None:
    au = _multilabel_records(ds)
    if not au:
        return None
    return pos_weight_from_labels(np.concatenate([r.labels for r in au]), np.concatenate([r.valid for r in au]))


def aus_never_positive(ds: ClipDataset) -> list[str]:
    """The AUs no valid training frame has active. The network cannot learn them, their
    threshold cannot be tuned, and their F1 is 0 on any split: said once at start and
    recorded in metrics.json, so a 0.0 in the report is not read as a result."""
    au = _multilabel_records(ds)
    if not au:
        return []
    labels = np.concatenate([r.labels[r.valid] for r in au])
    if not len(labels):
        return []
    names = TASKS[au[0].task].outputs
    return [name for name, positives in zip(names, (labels > 0.5).sum(0), strict=True) if positives == 0]


def label_priors(ds: ClipDataset) -> dict[str, np.ndarray]:
    """Mean training label of each sigmoid task's outputs (AU, EMI, AH), over valid rows."""
    priors = {}
    for task in ds.tasks:
        recs = [r for r in ds.records if r.task == task]
        if TASKS[task].activation != "sigmoid" or not recs:
            continue
        labels = np.concatenate([r.labels[r.valid] for r in recs])
        if len(labels):
            priors[task] = labels.mean(0)
    return priors


def init_output_biases(model: AffectNet, ds: ClipDataset, au_loss: str = "focal") -> dict[str, list[float]]:
    """Start each sigmoid task at its label prior (bias = log-odds of the training mean),
    so that the first steps learn the cue rather than the base rate; VA keeps bias 0, and
    so does AU under the ``pos_weight`` BCE, whose weighting makes every AU's effective
    prior 1/2."""
    done = {}
    for task, prior in label_priors(ds).items():
        if TASKS[task].loss == "multilabel" and au_loss == "bce":
            continue
        p = np.clip(prior.astype(np.float64), 0.01, 0.99)
        logit = np.log(p / (1 - p))
        model.head.set_output_bias(task, torch.as_tensor(logit, dtype=torch.float32))
        done[task] = [round(float(v), 3) for v in logit]
    return done


def output_spread(dataset: ClipDataset, preds: list[np.ndarray]) -> dict[str, float]:
    """Per task, the mean over its outputs of the std of the activated predictions across
    the validation rows: about 0 when the task's outputs stopped varying."""
    slices = output_slices(dataset.tasks)
    spread = {}
    for task in dataset.tasks:
        rows = [p[:, slices[task]] for r, p in zip(dataset.records, preds, strict=True) if r.task == task]
        if rows:
            spread[task] = float(np.concatenate(rows).std(0).mean())
    return spread
