"""The official ABAW metrics, in plain numpy.

| task | score | how |
|---|---|---|
| VA  | ``va_ccc_mean``      | CCC of valence and of arousal over all valid frames, mean of the two |
| AU  | ``au_f1_mean``       | F1 of each of the 12 AUs over all valid frames at threshold 0.5, mean |
| EMI | ``emi_pearson_mean`` | one prediction per video; Pearson r of each dimension across videos, mean of 6 |
| AH  | ``ah_f1_macro``      | F1 of "hesitant" vs "not" over all frames, macro (and weighted) average |

Edge cases (defined so that a score is always a number; never NaN):

- CCC: if both series are constant the CCC is 1.0 when they are equal and 0.0 otherwise
  (the formula's 0/0); a constant prediction against a varying truth gives 0.0 as the
  formula does.
- Pearson r: 0.0 when either series is constant (scipy returns NaN there).
- F1: 0.0 when a class has no true and no predicted positives (scikit-learn's
  ``zero_division=0``); averages over AUs/classes include such zeros, as the challenge's
  scikit-learn-based scripts do. AH macro/weighted average over the classes present in the
  truth or the predictions, as ``sklearn.metrics.f1_score`` does.
- No frame at all (or NaN/inf in the inputs) is a ``ValueError`` naming the input.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from abaw_ros.tasks import AU_NAMES, EMI_NAMES, TASKS, VA_NAMES, Task


class _PrimaryMetric(Mapping):
    """``PRIMARY_METRIC[task]``: the key of a task's headline metric, read from the task
    registry (so a registered task has one too)."""

    def __getitem__(self, task: str) -> str:
        return TASKS[task].primary_metric

    def __iter__(self):
        return iter(TASKS)

    def __len__(self) -> int:
        return len(TASKS)


PRIMARY_METRIC: Mapping[str, str] = _PrimaryMetric()
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def _as_array(x, name: str, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: no values to score")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def _check_pair(pred: np.ndarray, true: np.ndarray) -> None:
    if pred.shape != true.shape:
        raise ValueError(f"predictions shape {pred.shape} != labels shape {true.shape}")


def ccc(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Concordance correlation coefficient ``2 cov / (var_p + var_t + (mean_p - mean_t)^2)``
    with population (1/N) moments."""
    p, t = _as_array(pred, "pred", 1), _as_array(true, "true", 1)
    _check_pair(p, t)
    mp, mt = p.mean(), t.mean()
    vp, vt = p.var(), t.var()
    cov = np.mean((p - mp) * (t - mt))
    denom = vp + vt + (mp - mt) ** 2
    if denom <= 0.0:
        return 1.0 if np.array_equal(p, t) else 0.0
    return float(2.0 * cov / denom)


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson r; 0.0 when either series is constant."""
    a, b = _as_array(x, "x", 1), _as_array(y, "y", 1)
    _check_pair(a, b)
    da, db = a - a.mean(), b - b.mean()
    norm = np.sqrt(np.sum(da * da) * np.sum(db * db))
    if norm <= 0.0:
        return 0.0
    return float(np.clip(np.sum(da * db) / norm, -1.0, 1.0))


def f1_binary(pred_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """F1 of the positive class of 0/1 arrays; 0.0 when there is no true or predicted positive."""
    p = np.asarray(pred_labels).astype(bool).ravel()
    t = np.asarray(true_labels).astype(bool).ravel()
    _check_pair(p, t)
    tp = np.sum(p & t)
    denom = p.sum() + t.sum()
    return float(2.0 * tp / denom) if denom > 0 else 0.0


def ccc_metrics(pred: np.ndarray, true: np.ndarray, prefix: str, names: Sequence[str]) -> dict[str, float]:
    """CCC of each column (``{prefix}_ccc_{name}``) and their mean (``{prefix}_ccc_mean``)."""
    p, t = _as_array(pred, f"{prefix} pred", 2), _as_array(true, f"{prefix} labels", 2)
    _check_pair(p, t)
    out = {f"{prefix}_ccc_{name}": ccc(p[:, i], t[:, i]) for i, name in enumerate(names)}
    out[f"{prefix}_ccc_mean"] = float(np.mean(list(out.values())))
    return out


def f1_metrics(probs: np.ndarray, true: np.ndarray, prefix: str, names: Sequence[str],
               thresholds: float | Sequence[float] | np.ndarray = 0.5) -> dict[str, float]:
    """F1 of each column at ``thresholds`` (one or one per column) and the mean (``{prefix}_f1_mean``)."""
    p, t = _as_array(probs, f"{prefix} probabilities", 2), _as_array(true, f"{prefix} labels", 2)
    _check_pair(p, t)
    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (p.shape[1],))
    per = {f"{prefix}_f1_{name}": f1_binary(p[:, i] >= th[i], t[:, i] > 0.5) for i, name in enumerate(names)}
    return {f"{prefix}_f1_mean": float(np.mean(list(per.values()))), **per}


def va_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """``pred``/``true``: ``(N, 2)`` valence, arousal of the valid frames."""
    return ccc_metrics(pred, true, "va", VA_NAMES)


def au_metrics(
    probs: np.ndarray, true: np.ndarray, thresholds: float | Sequence[float] | np.ndarray = 0.5
) -> dict[str, float]:
    """``probs``/``true``: ``(N, 12)``; F1 per AU at ``thresholds`` (one or one per AU) and the mean."""
    return f1_metrics(probs, true, "au", AU_NAMES, thresholds)


def tune_au_thresholds(probs: np.ndarray, true: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """Per-AU threshold from ``grid`` that maximizes that AU's F1 (ties: closest to 0.5)."""
    p, t = _as_array(probs, "au probabilities", 2), _as_array(true, "au labels", 2)
    _check_pair(p, t)
    grid = np.asarray(grid, dtype=np.float64)
    order = np.argsort(np.abs(grid - 0.5), kind="stable")  # prefer thresholds near 0.5 on ties
    best = np.full(p.shape[1], 0.5)
    for i in range(p.shape[1]):
        scores = [f1_binary(p[:, i] >= grid[j], t[:, i] > 0.5) for j in order]
        best[i] = grid[order[int(np.argmax(scores))]]
    return best


def tune_ah_threshold(probs: np.ndarray, true: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> float:
    """Threshold from ``grid`` that maximizes the AH macro F1 (ties: closest to 0.5)."""
    p, t = _as_array(probs, "ah probabilities").ravel(), _as_array(true, "ah labels").ravel()
    _check_pair(p, t)
    order = sorted(np.asarray(grid, dtype=np.float64), key=lambda g: abs(g - 0.5))
    scores = [ah_metrics(p, t, g)["ah_f1_macro"] for g in order]
    return float(order[int(np.argmax(scores))])


def tune_threshold(task: Task, probs: np.ndarray, true: np.ndarray) -> list[float] | float:
    """The threshold(s) of ``task`` (its threshold kind) that maximize its primary metric on these frames."""
    if task.threshold == "per_output":
        return tune_au_thresholds(probs, true).tolist()
    if task.threshold == "single":
        return tune_ah_threshold(probs, true)
    raise ValueError(f"task {task.name!r} has no threshold to tune")


def heldout_tuned_f1(task: str, probs: np.ndarray, true: np.ndarray, video_ids: Sequence) -> float | None:
    """F1 at thresholds tuned on other videos: the videos split into two halves (alternating,
    in order), each half labelled at the thresholds tuned on the other, the F1 (AU: mean
    over the 12; AH: macro) computed over all frames. Thresholds tuned and scored on the same
    frames are optimistic; this is the honest figure. None with fewer than two videos."""
    videos = list(dict.fromkeys(video_ids))
    if len(videos) < 2:
        return None
    fold_of = {v: i % 2 for i, v in enumerate(videos)}
    fold = np.array([fold_of[v] for v in video_ids])
    p = np.asarray(probs, dtype=np.float64).reshape(len(fold), -1)
    t = np.asarray(true, dtype=np.float64).reshape(len(fold), -1)
    spec = TASKS[task]
    labelled = np.zeros_like(p)
    for k in (0, 1):
        tune, apply = fold != k, fold == k
        th = np.asarray(tune_threshold(spec, p[tune], t[tune]))
        labelled[apply] = (p[apply] >= th).astype(np.float64)
    return score_task(spec, labelled, t)[spec.primary_metric]


def video_means(frame_values: np.ndarray, video_ids: Sequence) -> tuple[list, np.ndarray]:
    """Mean of frame rows per video, videos in first-seen order -> ``(ids, (V, D))``."""
    values = np.asarray(frame_values, dtype=np.float64)
    ids = list(dict.fromkeys(video_ids))
    where = {v: i for i, v in enumerate(ids)}
    index = np.array([where[v] for v in video_ids])
    sums = np.zeros((len(ids), values.shape[1]))
    np.add.at(sums, index, values)
    counts = np.bincount(index, minlength=len(ids))[:, None]
    return ids, sums / counts


def pearson_metrics(pred: np.ndarray, true: np.ndarray, prefix: str, names: Sequence[str]) -> dict[str, float]:
    """Pearson r of each column (``{prefix}_pearson_{name}``, spaces as ``_``) and the mean."""
    p, t = _as_array(pred, f"{prefix} predictions", 2), _as_array(true, f"{prefix} labels", 2)
    _check_pair(p, t)
    per = {f"{prefix}_pearson_{name.replace(' ', '_')}": pearson(p[:, i], t[:, i]) for i, name in enumerate(names)}
    return {f"{prefix}_pearson_mean": float(np.mean(list(per.values()))), **per}


def emi_metrics(pred_videos: np.ndarray, true_videos: np.ndarray) -> dict[str, float]:
    """``(V, 6)`` one prediction and one label vector per video; Pearson r per dimension
    across videos and their mean."""
    return pearson_metrics(pred_videos, true_videos, "emi", EMI_NAMES)


def class_f1_metrics(probs: np.ndarray, true: np.ndarray, prefix: str, positive: str,
                     threshold: float = 0.5) -> dict[str, float]:
    """``(N,)`` probabilities and 0/1 labels of one binary output: F1 of each class
    (``{prefix}_f1_{positive}``, ``{prefix}_f1_not_{positive}``), macro and weighted."""
    p = _as_array(probs, f"{prefix} probabilities").ravel() >= threshold
    t = _as_array(true, f"{prefix} labels").ravel() > 0.5
    _check_pair(p, t)
    f1_pos, f1_neg = f1_binary(p, t), f1_binary(~p, ~t)
    present = [c for c, on in ((0, np.any(~t) or np.any(~p)), (1, np.any(t) or np.any(p))) if on]
    scores = {0: f1_neg, 1: f1_pos}
    support = {0: float(np.sum(~t)), 1: float(np.sum(t))}
    macro = float(np.mean([scores[c] for c in present]))
    total = sum(support[c] for c in present)
    weighted = float(sum(scores[c] * support[c] for c in present) / total) if total > 0 else 0.0
    return {f"{prefix}_f1_macro": macro, f"{prefix}_f1_weighted": weighted, f"{prefix}_f1_{positive}": f1_pos,
            f"{prefix}_f1_not_{positive}": f1_neg}


def ah_metrics(probs: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """``(N,)`` hesitancy probabilities and 0/1 labels: F1 of each class, macro and weighted."""
    return class_f1_metrics(probs, true, "ah", TASKS["ah"].flag_field, threshold)


def ah_video_metrics(video_probs: np.ndarray, video_labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Ambivalence/hesitancy per video, as the 10th ABAW (CVPR 2026) ranks it: one
    probability (the mean over the video's frames) and one 0/1 label per video, macro F1
    over the videos (arXiv 2605.27451)."""
    return VIDEO_SCORERS["f1_classes"](TASKS["ah"], video_probs, video_labels, threshold)


def _video_scores(scores: Callable[[np.ndarray, np.ndarray], dict[str, float]]):
    def run(pred: np.ndarray, true: np.ndarray, video_ids: Sequence | None, name: str) -> dict[str, float]:
        if video_ids is None:
            raise ValueError(f"{name} metrics need the video of each frame (video_ids)")
        _, p = video_means(pred, video_ids)
        _, t = video_means(true, video_ids)
        return scores(p, t)
    return run


def _score_ccc(task: Task, pred, true, video_ids, threshold) -> dict[str, float]:
    return ccc_metrics(pred, true, task.name, task.outputs)


def _score_f1(task: Task, pred, true, video_ids, threshold) -> dict[str, float]:
    return f1_metrics(pred, true, task.name, task.outputs, task.default_threshold if threshold is None else threshold)


def _score_pearson(task: Task, pred, true, video_ids, threshold) -> dict[str, float]:
    scores = _video_scores(lambda p, t: pearson_metrics(p, t, task.name, task.outputs))
    return scores(pred, true, video_ids, task.name) if task.unit == "video" else pearson_metrics(
        pred, true, task.name, task.outputs)


def _score_class_f1(task: Task, pred, true, video_ids, threshold) -> dict[str, float]:
    return class_f1_metrics(pred, true, task.name, task.flag_field or "positive",
                            task.default_threshold if threshold is None else threshold)


# Metric families: scorer(task, pred, true, video_ids, threshold) -> {metric: value}; a
# task names its family (Task.scorer). A new family is one entry here.
SCORERS: dict[str, Callable[..., dict[str, float]]] = {
    "ccc": _score_ccc,
    "f1": _score_f1,
    "pearson": _score_pearson,
    "f1_classes": _score_class_f1,
}
# Families with a per-video score beside the per-frame one (one probability per video, the
# frame mean; the 10th ABAW's AH ranking): (video probabilities, video labels, threshold) -> metrics
VIDEO_SCORERS: dict[str, Callable[[Task, np.ndarray, np.ndarray, float], dict[str, float]]] = {
    "f1_classes": lambda task, p, t, th: {f"{k}_video": v for k, v in _score_class_f1(task, p, t, None, th).items()
                                          if k.endswith(("_macro", "_weighted"))},
}
SCORER_LABELS: dict[str, str] = {"ccc": "CCC", "f1": "F1", "pearson": "Pearson r", "f1_classes": "F1"}


def score_task(task: Task, pred: np.ndarray, true: np.ndarray, video_ids: Sequence | None = None,
               threshold: Any = None) -> dict[str, float]:
    """The official metrics of ``task`` (its ``scorer`` family) from per-frame activated
    predictions and labels of the valid frames; ``threshold``: the threshold(s) the family
    labels at (default the task's)."""
    if task.scorer not in SCORERS:
        raise ValueError(f"task {task.name!r}: scorer {task.scorer!r}, choose from {list(SCORERS)}")
    return SCORERS[task.scorer](task, pred, true, video_ids, threshold)


def task_metrics(
    task: str,
    pred: np.ndarray,
    true: np.ndarray,
    video_ids: Sequence | None = None,
    au_thresholds: Sequence[float] | np.ndarray | None = None,
    ah_threshold: float = 0.5,
) -> dict[str, float]:
    """Official metrics of one task from per-frame activated predictions and labels of
    the valid frames. EMI needs ``video_ids`` (one per frame) to average per video.
    AU adds ``au_f1_mean_tuned`` when ``au_thresholds`` are given."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}: choose from {list(TASKS)}")
    spec = TASKS[task]
    if spec.threshold == "single":
        return score_task(spec, pred, true, video_ids, ah_threshold)
    out = score_task(spec, pred, true, video_ids)
    if spec.threshold == "per_output" and au_thresholds is not None:
        out[f"{spec.primary_metric}_tuned"] = score_task(spec, pred, true, video_ids, au_thresholds)[spec.primary_metric]
    return out
