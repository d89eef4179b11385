"""The metrics table says at which threshold each per-AU F1 was computed."""
from __future__ import annotations

import numpy as np

from abaw_ros import metrics
from abaw_ros.tasks import AU_NAMES
from abaw_ros.training.evaluation import EvalResult, metrics_table


def test_per_au_lines_name_their_threshold():
    rng = np.random.default_rng(0)
    truth = (rng.random((200, 12)) < 0.3).astype(np.float32)
    probs = np.clip(truth * 0.3 + rng.random((200, 12)) * 0.5, 0, 1)
    thresholds = [0.35] * 12
    at_half = metrics.au_metrics(probs, truth)
    at_tuned = metrics.au_metrics(probs, truth, thresholds)
    result = EvalResult({"au": at_half}, at_half["au_f1_mean"], thresholds,
                        au_f1_thresholded={k: v for k, v in at_tuned.items() if k != "au_f1_mean"})
    line = next(x for x in metrics_table(result).splitlines() if "au_f1_AU1 " in x)
    assert "(th 0.50)" in line and f"{at_half['au_f1_AU1']:.4f}" in line
    assert f"at th 0.35: {at_tuned['au_f1_AU1']:.4f}" in line
    assert at_half["au_f1_AU1"] != at_tuned["au_f1_AU1"]
    assert len([x for x in metrics_table(result).splitlines() if "at th" in x]) == len(AU_NAMES)
