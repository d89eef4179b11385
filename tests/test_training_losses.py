"""Losses: agree with the metric formulas, ignore masked rows, focal loss as defined,
pos_weight from label frequencies, multi-task weighting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from abaw_ros import metrics
from abaw_ros.tasks import output_size, output_slices
from abaw_ros.training.losses import (
    LossConfig,
    MultiTaskLoss,
    ccc_loss,
    emi_loss,
    pos_weight_from_labels,
    sigmoid_focal_loss,
)


def test_ccc_loss_is_one_minus_metric_and_ignores_masked_rows():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(50, 2, generator=g)
    true = torch.rand(50, 2, generator=g) * 2 - 1
    mask = torch.ones(50, dtype=torch.bool)
    mask[::5] = False
    loss = ccc_loss(raw, true, mask)
    pred = torch.tanh(raw)[mask].numpy()
    expected = 1 - metrics.va_metrics(pred, true[mask].numpy())["va_ccc_mean"]
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    garbage = true.clone()
    garbage[~mask] = -5.0  # invalid markers must not change anything
    assert ccc_loss(raw, garbage, mask).item() == pytest.approx(loss.item(), abs=1e-6)


def test_focal_loss_matches_its_definition():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 12, generator=g)
    t = (torch.rand(30, 12, generator=g) > 0.7).float()
    mask = torch.ones(30, dtype=torch.bool)
    p = torch.sigmoid(x)
    pt = torch.where(t > 0, p, 1 - p)
    at = torch.where(t > 0, 0.75, 0.25)
    expected = (-at * (1 - pt) ** 2 * torch.log(pt)).mean()
    assert sigmoid_focal_loss(x, t, mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_pos_weight_from_label_frequencies():
    labels = np.array([[1, 0], [0, 0], [0, 0], [1, 1], [-1, -1]], dtype=float)
    valid = np.array([1, 1, 1, 1, 0], bool)
    np.testing.assert_allclose(pos_weight_from_labels(labels, valid), [1.0, 3.0])


def test_emi_loss_constant_window_has_finite_gradient():
    raw = torch.zeros(8, 6, requires_grad=True)  # one window copied to 8 frames
    loss = emi_loss(raw, torch.rand(8, 6), torch.ones(8, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(raw.grad).all()


@pytest.mark.parametrize("au_loss", ["focal", "bce"])
def test_multitask_loss_masks_tasks_and_weights_them(au_loss):
    tasks = ("va", "au", "emi", "ah")
    s = output_slices(tasks)
    g = torch.Generator().manual_seed(2)
    raw = torch.randn(4, output_size(tasks), generator=g, requires_grad=True)  # window mode
    target = torch.rand(4, 8, output_size(tasks), generator=g).round()
    mask = torch.zeros(4, 8, 4, dtype=torch.bool)
    mask[:2, :, 0] = True  # windows 0-1: VA rows
    mask[2:, :, 3] = True  # windows 2-3: AH rows
    fn = MultiTaskLoss(tasks, LossConfig(au_loss=au_loss, weights={"ah": 2.0}), np.full(12, 2.0, np.float32))
    total, parts = fn(raw, target, mask)
    assert parts["au"] == 0.0 and parts["emi"] == 0.0
    assert total.item() == pytest.approx(parts["va"] + 2.0 * parts["ah"], rel=1e-5)
    total.backward()
    assert raw.grad[:, s["au"]].abs().sum() == 0 and raw.grad[:, s["emi"]].abs().sum() == 0
    assert raw.grad[:2, s["va"]].abs().sum() > 0 and raw.grad[2:, s["va"]].abs().sum() == 0


def test_unknown_loss_settings_are_errors():
    with pytest.raises(ValueError, match="au_loss='mse'"):
        MultiTaskLoss(("au",), LossConfig(au_loss="mse"))
    with pytest.raises(ValueError, match="unknown task"):
        MultiTaskLoss(("au",), LossConfig(weights={"expr": 1.0}))
