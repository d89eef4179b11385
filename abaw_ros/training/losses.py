"""Training losses. All take the network's raw outputs and a validity mask: rows whose
mask is False (invalid Aff-Wild2 frames, other tasks' rows in a multi-task batch) never
contribute. A task with no valid row in a batch contributes an exact zero that still
touches the graph (so DDP sees a gradient for every parameter).

- VA: ``1 - mean(CCC_valence, CCC_arousal)`` on ``tanh`` outputs (reference), plus a
  pull-back of pre-activations beyond +-2.5 (:func:`saturation_penalty`; zero while the
  outputs stay where tanh responds, which a learning network does).
- AU: sigmoid focal loss, alpha 0.75, gamma 2 (reference), or BCE with ``pos_weight`` =
  negatives/positives per AU from the training labels.
- EMI: MSE + (1 - Pearson r) per dimension on sigmoid outputs (r across the batch).
- AH: BCE on the logit.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from abaw_ros.tasks import TASKS, normalize_tasks, output_slices


def _zero(x: torch.Tensor) -> torch.Tensor:
    return x.sum() * 0.0


def batch_ccc(pred: torch.Tensor, true: torch.Tensor, eps: float = 1e-8, unbiased: bool = False) -> torch.Tensor:
    """CCC of each column of ``(N, D)`` tensors -> ``(D,)``; ``unbiased``: the variances
    divide by N - 1 (``torch.var``'s default, as the reference code's loss computes them)."""
    mp, mt = pred.mean(0), true.mean(0)
    vp, vt = pred.var(0, unbiased=unbiased), true.var(0, unbiased=unbiased)
    cov = ((pred - mp) * (true - mt)).mean(0)
    return 2 * cov / (vp + vt + (mp - mt) ** 2 + eps)


def batch_pearson(pred: torch.Tensor, true: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    dp, dt = pred - pred.mean(0), true - true.mean(0)
    # eps inside the root: a constant column (e.g. one window copied to its T frames) has a
    # zero norm, and sqrt's gradient at 0 is infinite.
    return (dp * dt).sum(0) / torch.sqrt((dp * dp).sum(0) * (dt * dt).sum(0) + eps)


def ccc_loss(raw: torch.Tensor, true: torch.Tensor, mask: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """``1 - mean CCC`` over the valid rows of ``(N, 2)`` raw VA outputs."""
    if int(mask.sum()) < 2:
        return _zero(raw)
    return 1.0 - batch_ccc(torch.tanh(raw[mask]), true[mask], unbiased=unbiased).mean()


def saturation_penalty(raw: torch.Tensor, mask: torch.Tensor, margin: float) -> torch.Tensor:
    """``mean(relu(|raw| - margin)^2)`` over the valid rows: zero while the pre-activations
    stay within ``margin`` (tanh(2.5) = 0.987), a pull back towards it beyond.

    Why: once the VA pre-activations leave the range where tanh responds, the CCC gradient
    vanishes (tanh' ~ 0, and a constant prediction has zero covariance, so even the mean
    term gets no gradient) and VA stays dead for the rest of the run. Adam's first steps
    move all weights by about lr in a common direction and can get there in a few steps.
    This term acts on the pre-activations directly, so its gradient does not vanish.
    """
    if not bool(mask.any()):
        return _zero(raw)
    return F.relu(raw[mask].abs() - margin).square().mean()


def sigmoid_focal_loss(
    raw: torch.Tensor, true: torch.Tensor, mask: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0
) -> torch.Tensor:
    if not bool(mask.any()):
        return _zero(raw)
    x, t = raw[mask], true[mask]
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * ce * (1 - p_t) ** gamma).mean()


def weighted_bce(
    raw: torch.Tensor, true: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    if not bool(mask.any()):
        return _zero(raw)
    return F.binary_cross_entropy_with_logits(raw[mask], true[mask], pos_weight=pos_weight)


def pos_weight_from_labels(labels: np.ndarray, valid: np.ndarray, max_weight: float = 50.0) -> np.ndarray:
    """negatives / positives of each column over the valid rows, clipped to [1/max, max]."""
    lab = np.asarray(labels, dtype=np.float64)[np.asarray(valid, dtype=bool)]
    pos = lab.sum(0)
    neg = lab.shape[0] - pos
    return np.clip(neg / np.maximum(pos, 1.0), 1.0 / max_weight, max_weight).astype(np.float32)


def emi_loss(raw: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not bool(mask.any()):
        return _zero(raw)
    p, t = torch.sigmoid(raw[mask]), true[mask]
    loss = F.mse_loss(p, t)
    if p.shape[0] >= 2:
        loss = loss + (1.0 - batch_pearson(p, t)).mean()
    return loss


def ah_loss(raw: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not bool(mask.any()):
        return _zero(raw)
    return F.binary_cross_entropy_with_logits(raw[mask], true[mask])


@dataclass
class LossConfig:
    au_loss: str = "focal"  # "focal" | "bce" (weighted by label frequencies)
    focal_alpha: float = 0.75
    focal_gamma: float = 2.0
    weights: dict[str, float] = field(default_factory=dict)  # per task, default 1.0
    # VA pre-activations beyond +-va_margin are pulled back (see saturation_penalty); 0 = off.
    # None: the protocol's choice (frames 1.0; reference 0, as the reference trains on plain 1 - CCC)
    va_margin: float = 2.5
    va_margin_weight: float | None = None
    # VA CCC variances over N - 1 (the reference's torch.var) or N; None: unbiased under
    # protocol reference, else biased (the metric's definition)
    va_unbiased: bool | None = None


class MultiTaskLoss(torch.nn.Module):
    """Weighted sum of the selected tasks' losses on flat raw outputs.

    ``forward(raw (B, D) or (B, T, D), target (B, T, D), mask (B, T, K))``: a window-mode
    output ``(B, D)`` is compared with each of its T frames' labels, as the reference does.
    """

    def __init__(self, tasks: Sequence[str], cfg: LossConfig | None = None,
                 au_pos_weight: np.ndarray | None = None) -> None:
        super().__init__()
        self.tasks = normalize_tasks(tasks)
        self.cfg = cfg or LossConfig()
        if self.cfg.au_loss not in ("focal", "bce"):
            raise ValueError(f"au_loss={self.cfg.au_loss!r}: choose 'focal' or 'bce'")
        unknown = set(self.cfg.weights) - set(TASKS)
        if unknown:
            raise ValueError(f"loss weights for unknown task(s) {sorted(unknown)}")
        for task in self.tasks:
            if TASKS[task].loss not in LOSSES:
                raise ValueError(f"task {task!r}: loss {TASKS[task].loss!r}, choose from {list(LOSSES)}")
        self.slices = output_slices(self.tasks)
        pw = torch.as_tensor(au_pos_weight, dtype=torch.float32) if au_pos_weight is not None else None
        self.register_buffer("au_pos_weight", pw, persistent=False)

    def forward(self, raw: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raw = raw.float()
        if raw.dim() == 2:
            raw = raw[:, None, :].expand(-1, target.shape[1], -1)
        raw, target, mask = raw.flatten(0, 1), target.flatten(0, 1), mask.flatten(0, 1)
        parts: dict[str, torch.Tensor] = {}
        for k, task in enumerate(self.tasks):
            s, m = self.slices[task], mask[:, k]
            parts[task] = LOSSES[TASKS[task].loss](self, raw[:, s], target[:, s], m)
        total = sum(self.cfg.weights.get(t, 1.0) * v for t, v in parts.items())
        return total, {t: float(v.detach()) for t, v in parts.items()}


def _ccc_family(fn: MultiTaskLoss, r: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    loss = ccc_loss(r, t, m, unbiased=bool(fn.cfg.va_unbiased))
    margin_weight = 1.0 if fn.cfg.va_margin_weight is None else fn.cfg.va_margin_weight
    if margin_weight > 0:
        loss = loss + margin_weight * saturation_penalty(r, m, fn.cfg.va_margin)
    return loss


def _multilabel_family(fn: MultiTaskLoss, r: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    if fn.cfg.au_loss == "focal":
        return sigmoid_focal_loss(r, t, m, fn.cfg.focal_alpha, fn.cfg.focal_gamma)
    return weighted_bce(r, t, m, fn.au_pos_weight)


# Loss families on one task's raw outputs, targets and validity mask; a task names its
# family (Task.loss). A new family is one entry here.
LOSSES: dict[str, Callable[[MultiTaskLoss, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ccc": _ccc_family,  # 1 - mean CCC on tanh outputs, plus the saturation pull-back
    "multilabel": _multilabel_family,  # focal loss or weighted BCE (LossConfig.au_loss)
    "mse_pearson": lambda fn, r, t, m: emi_loss(r, t, m),
    "bce": lambda fn, r, t, m: ah_loss(r, t, m),
}
