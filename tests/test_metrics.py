"""The official metrics agree with independent implementations (scikit-learn, scipy, the
CCC formula written out) on random data, and the edge cases behave as documented."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import f1_score

from abaw_ros import metrics
from abaw_ros.tasks import AU_NAMES, EMI_NAMES


def ccc_reference(x: np.ndarray, y: np.ndarray) -> float:
    # Lin (1989): 2 rho sx sy / (sx^2 + sy^2 + (mx - my)^2), population moments.
    rho = np.corrcoef(x, y)[0, 1]
    sx, sy = np.std(x), np.std(y)
    return 2 * rho * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", range(5))
def test_ccc_matches_formula(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, 500)
    x = 0.6 * y + rng.normal(0.1, 0.3, 500)
    assert metrics.ccc(x, y) == pytest.approx(ccc_reference(x, y), abs=1e-10)
    assert metrics.ccc(y, y) == pytest.approx(1.0)
    assert metrics.ccc(-y, y) < -0.9


def test_ccc_edge_cases():
    y = np.linspace(-1, 1, 50)
    assert metrics.ccc(np.zeros(50), y) == 0.0  # constant prediction: formula gives 0
    assert metrics.ccc(np.full(5, 0.3), np.full(5, 0.3)) == 1.0  # both constant and equal
    assert metrics.ccc(np.full(5, 0.3), np.full(5, 0.1)) == 0.0  # both constant, different
    with pytest.raises(ValueError, match="no values"):
        metrics.ccc([], [])
    with pytest.raises(ValueError, match="NaN"):
        metrics.ccc([0.1, np.nan], [0.1, 0.2])


def test_va_metrics_mean_of_valence_and_arousal():
    rng = np.random.default_rng(1)
    true = rng.uniform(-1, 1, (300, 2))
    pred = np.clip(true + rng.normal(0, 0.4, true.shape), -1, 1)
    m = metrics.va_metrics(pred, true)
    v, a = ccc_reference(pred[:, 0], true[:, 0]), ccc_reference(pred[:, 1], true[:, 1])
    assert m["va_ccc_valence"] == pytest.approx(v)
    assert m["va_ccc_arousal"] == pytest.approx(a)
    assert m["va_ccc_mean"] == pytest.approx((v + a) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_pearson_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=40)
    y = 0.3 * x + rng.normal(size=40)
    assert metrics.pearson(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-10)


def test_pearson_constant_is_zero():
    assert metrics.pearson(np.ones(10), np.arange(10)) == 0.0
    assert metrics.pearson(np.arange(10), np.ones(10)) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_au_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    true = (rng.random((400, 12)) < rng.uniform(0.05, 0.6, 12)).astype(float)
    probs = np.clip(0.5 * true + rng.random((400, 12)) * 0.7, 0, 1)
    m = metrics.au_metrics(probs, true)
    ref = f1_score(true, probs >= 0.5, average=None, zero_division=0)
    assert [m[f"au_f1_{n}"] for n in AU_NAMES] == pytest.approx(list(ref))
    assert m["au_f1_mean"] == pytest.approx(f1_score(true, probs >= 0.5, average="macro", zero_division=0))
    th = rng.uniform(0.2, 0.8, 12)
    tuned = metrics.au_metrics(probs, true, th)
    assert tuned["au_f1_mean"] == pytest.approx(f1_score(true, probs >= th, average="macro", zero_division=0))


def test_au_f1_no_positives_and_constant_predictions():
    true = np.zeros((20, 12))
    true[:10, 0] = 1  # only AU1 has positives
    all_zero = metrics.au_metrics(np.zeros((20, 12)), true)
    assert all_zero["au_f1_AU1"] == 0.0 and all_zero["au_f1_AU2"] == 0.0  # zero_division = 0
    all_one = metrics.au_metrics(np.ones((20, 12)), true)
    assert all_one["au_f1_AU1"] == pytest.approx(f1_score(true[:, 0], np.ones(20)))
    assert all_one["au_f1_mean"] == pytest.approx(f1_score(true, np.ones((20, 12)), average="macro",
                                                           zero_division=0))


def test_tuned_thresholds_never_worse_than_half():
    rng = np.random.default_rng(3)
    true = (rng.random((300, 12)) < 0.3).astype(float)
    probs = 0.3 * true + rng.random((300, 12)) * 0.3  # separable at 0.3, not at 0.5
    th = metrics.tune_au_thresholds(probs, true)
    assert th.shape == (12,) and np.all((th > 0) & (th < 1))
    assert metrics.au_metrics(probs, true, th)["au_f1_mean"] >= metrics.au_metrics(probs, true)["au_f1_mean"]
    assert np.all(th < 0.5)  # the low calibration is found
    assert metrics.au_metrics(probs, true, th)["au_f1_mean"] > 0.95


def test_emi_pearson_per_video_matches_scipy():
    rng = np.random.default_rng(4)
    n_videos, frames = 15, 7
    true_v = rng.uniform(0, 1, (n_videos, 6))
    frame_pred = np.repeat(true_v, frames, axis=0) + rng.normal(0, 0.3, (n_videos * frames, 6))
    ids = [f"{v:05d}" for v in range(n_videos) for _ in range(frames)]
    m = metrics.task_metrics("emi", frame_pred, np.repeat(true_v, frames, axis=0), video_ids=ids)
    pred_v = frame_pred.reshape(n_videos, frames, 6).mean(1)
    for i, name in enumerate(EMI_NAMES):
        assert m[f"emi_pearson_{name.replace(' ', '_')}"] == pytest.approx(pearsonr(pred_v[:, i], true_v[:, i])[0])
    assert m["emi_pearson_mean"] == pytest.approx(np.mean([pearsonr(pred_v[:, i], true_v[:, i])[0] for i in range(6)]))
    with pytest.raises(ValueError, match="video_ids"):
        metrics.task_metrics("emi", frame_pred, frame_pred)


@pytest.mark.parametrize("seed", range(5))
def test_ah_f1_macro_weighted_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    true = (rng.random(300) < 0.35).astype(float)
    probs = np.clip(0.4 * true + rng.random(300) * 0.7, 0, 1)
    m = metrics.ah_metrics(probs, true)
    assert m["ah_f1_macro"] == pytest.approx(f1_score(true, probs >= 0.5, average="macro", zero_division=0))
    assert m["ah_f1_weighted"] == pytest.approx(f1_score(true, probs >= 0.5, average="weighted", zero_division=0))


@pytest.mark.parametrize(
    "true, pred",
    [(np.zeros(10), np.zeros(10)), (np.zeros(10), np.ones(10)), (np.ones(10), np.zeros(10)),
     (np.r_[np.ones(3), np.zeros(7)], np.zeros(10))],
)
def test_ah_f1_edge_cases_match_sklearn(true, pred):
    m = metrics.ah_metrics(pred, true)
    assert m["ah_f1_macro"] == pytest.approx(f1_score(true, pred, average="macro", zero_division=0))
    assert m["ah_f1_weighted"] == pytest.approx(f1_score(true, pred, average="weighted", zero_division=0))
    assert all(np.isfinite(v) for v in m.values())


def test_shape_mismatch_and_unknown_task_are_errors():
    with pytest.raises(ValueError, match="shape"):
        metrics.va_metrics(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="task='xx'"):
        metrics.task_metrics("xx", np.zeros((2, 1)), np.zeros((2, 1)))


def test_tuned_ah_threshold_finds_the_separating_value():
    rng = np.random.default_rng(6)
    true = (rng.random(200) < 0.4).astype(float)
    probs = 0.2 * true + rng.random(200) * 0.2  # separable at 0.2, all "not hesitant" at 0.5
    th = metrics.tune_ah_threshold(probs, true)
    assert th == pytest.approx(0.2)
    assert metrics.ah_metrics(probs, true, th)["ah_f1_macro"] == pytest.approx(1.0)
    assert metrics.ah_metrics(probs, true)["ah_f1_macro"] < 0.5


def test_ah_is_also_scored_per_video_with_the_split_label(tmp_path):
    """10th ABAW: one 0/1 per video (mean frame probability at 0.5), macro F1 over videos."""
    from pathlib import Path

    from abaw_ros.data.dataset import ClipDataset
    from abaw_ros.data.records import VideoRecord
    from abaw_ros.data.transforms import ClipTransform
    from abaw_ros.training.evaluation import score

    frame_probs = ([0.9, 0.5], [0.1, 0.3], [0.3, 0.5, 0.4])  # means 0.7, 0.2, 0.4 -> 1, 0, 0
    video_labels = (1, 0, 1)
    records = [VideoRecord("ah", f"v{i}", [Path(f"v{i}/frame-{k}.jpg") for k in range(len(p))],
                           np.full((len(p), 1), lab, np.float32), np.ones(len(p), bool), np.arange(len(p)),
                           Path("annotation.yml"), extra={"video_label": lab})
               for i, (p, lab) in enumerate(zip(frame_probs, video_labels, strict=True))]
    ds = ClipDataset(records, ["ah"], 4, train=False, transform=ClipTransform(64))
    result = score(ds, [np.asarray(p, np.float32)[:, None] for p in frame_probs])
    # videos: class 1 F1 = 2/3 (1 of 2 found, no false alarm), class 0 F1 = 2/3
    assert result.metrics["ah"]["ah_f1_macro_video"] == pytest.approx(2 / 3)
    assert result.metrics["ah"]["ah_f1_macro"] != pytest.approx(2 / 3)  # the per-frame score differs
    # reported whatever thresholds the caller uses (evaluate passes the checkpoint's)
    assert "ah_f1_macro_tuned_heldout" in result.metrics["ah"]


def test_heldout_tuned_f1_labels_each_half_at_the_other_halfs_thresholds():
    # video a: 0.9 hesitant, 0.1 not (tuned threshold 0.5); video b: 0.35 hesitant, 0.2 not
    # (tuned threshold in (0.2, 0.35]): a at b's threshold is right, b at a's misses its positive
    probs = np.array([0.9, 0.1, 0.35, 0.2])
    true = np.array([1.0, 0.0, 1.0, 0.0])
    ids = ["a", "a", "b", "b"]
    heldout = metrics.heldout_tuned_f1("ah", probs, true, ids)
    # pooled labels 1 0 0 0: hesitant F1 2/3, not hesitant F1 0.8
    assert heldout == pytest.approx((2 / 3 + 0.8) / 2)
    optimistic = metrics.ah_metrics(probs, true, metrics.tune_ah_threshold(probs, true))["ah_f1_macro"]
    assert optimistic == pytest.approx(1.0) and heldout < optimistic
    assert metrics.heldout_tuned_f1("ah", probs, true, ["a"] * 4) is None
