"""``protocol: reference`` scores exactly the frames the reference code scores; ``frames``
(the default) scores every annotated frame once.

One hand-made Aff-Wild2 video (VA, T=4): 11 annotated frames, frames 2, 6 and 10
invalid (``-5,-5``), frames 3 and 6 without an image.

- reference: invalid rows and rows without an image are dropped before windowing,
  leaving frames 1 4 5 7 8 9 11; windows [1 4 5 7] [8 9 11 11]: the last window is
  padded with a copy of frame 11, and the copy is scored too.
- frames: every valid annotated frame once, frame 3 shown with frame 2's image.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from abaw_ros import metrics
from abaw_ros.data.dataset import ClipDataset
from abaw_ros.data.sources import load_split
from abaw_ros.data.transforms import ClipTransform
from abaw_ros.training.config import DataConfig, TrainConfig
from abaw_ros.training.evaluation import score
from abaw_ros.training.losses import LossConfig, batch_ccc

ROWS = [  # frame number, valence, arousal, has an image
    (1, 0.1, 0.2, True),
    (2, -5, -5, True),
    (3, 0.3, 0.1, False),
    (4, 0.2, 0.2, True),
    (5, 0.5, 0.4, True),
    (6, -5, -5, False),
    (7, -0.1, 0.1, True),
    (8, 0.4, -0.4, True),
    (9, 0.0, 0.3, True),
    (10, -5, -5, True),
    (11, 0.2, -0.3, True),
]
REFERENCE_SCORED = [1, 4, 5, 7, 8, 9, 11, 11]
FRAMES_SCORED = [1, 3, 4, 5, 7, 8, 9, 11]


@pytest.fixture
def data(tmp_path):
    import cv2

    images = tmp_path / "cropped_aligned" / "video1"
    images.mkdir(parents=True)
    for number, _v, _a, has_image in ROWS:
        if has_image:
            cv2.imwrite(str(images / f"{number:05d}.jpg"), np.full((112, 112, 3), 10 * number, np.uint8))
    for split in ("Train_Set", "Validation_Set"):
        ann = tmp_path / "annotations" / "VA_Estimation_Challenge" / split
        ann.mkdir(parents=True)
        (ann / "video1.txt").write_text("valence,arousal\n" + "".join(f"{v},{a}\n" for _n, v, a, _i in ROWS))
    return DataConfig(affwild2_images=str(tmp_path), affwild2_annotations=str(tmp_path / "annotations"))


def dataset(data: DataConfig, protocol: str) -> ClipDataset:
    records = load_split(data, ["va"], "val", protocol)["va"]
    return ClipDataset(records, ["va"], 4, train=False, transform=ClipTransform(64),
                       score_padding=protocol == "reference")


@pytest.mark.parametrize("protocol,expected", [("reference", REFERENCE_SCORED), ("frames", FRAMES_SCORED)])
def test_scored_frames(data, protocol, expected):
    ds = dataset(data, protocol)
    assert ds.scored_frames() == [("video1", n) for n in expected]
    # the metrics count exactly these frames: score a known prediction and recompute by hand
    preds = [np.stack([np.linspace(-0.5, 0.5, len(r)), np.linspace(0.3, -0.2, len(r))], axis=1).astype(np.float32)
             for r in ds.records]
    result = score(ds, preds)
    assert result.frames["va"] == len(expected)
    by_frame = dict(zip(ds.records[0].frame_numbers.tolist(), preds[0], strict=True))
    labels = {n: (v, a) for n, v, a, _ in ROWS}
    p = np.array([by_frame[n] for n in expected])
    t = np.array([labels[n] for n in expected], dtype=np.float32)
    assert result.metrics["va"]["va_ccc_mean"] == pytest.approx(metrics.va_metrics(p, t)["va_ccc_mean"], abs=1e-6)


def test_reference_windows_show_the_kept_frames_and_pad_with_the_last(data):
    ds = dataset(data, "reference")
    rows = [ds.records[0].frame_numbers[w.rows].tolist() for w in ds.windows]
    assert rows == [[1, 4, 5, 7], [8, 9, 11, 11]]
    assert [ds.records[0].frames[r].name for r in ds.windows[1].rows] == ["00008.jpg", "00009.jpg", "00011.jpg",
                                                                          "00011.jpg"]


def test_reference_protocol_settings():
    assert TrainConfig().protocol == "frames"
    with pytest.raises(ValueError, match="protocol='paper'"):
        TrainConfig(protocol="paper")
    with pytest.raises(ValueError, match="eval_stride=1"):
        TrainConfig(protocol="reference", eval_stride=1)
    # the reference: nn.Linear's output init, plain 1 - CCC with unbiased variances
    ref = TrainConfig(protocol="reference")
    assert (ref.output_bias_init, ref.loss.va_margin_weight, ref.loss.va_unbiased) == ("default", 0.0, True)
    frames = TrainConfig()
    assert (frames.output_bias_init, frames.loss.va_margin_weight, frames.loss.va_unbiased) == ("prior", 1.0, False)
    # a preset fills what was left open, never a value given
    given = TrainConfig(protocol="reference", output_bias_init="prior", loss=LossConfig(va_margin_weight=0.5))
    assert (given.output_bias_init, given.loss.va_margin_weight) == ("prior", 0.5)


def test_unbiased_ccc_divides_the_variances_by_n_minus_1():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(9, 2)), rng.normal(size=(9, 2))
    ccc = batch_ccc(torch.as_tensor(p), torch.as_tensor(t), unbiased=True).numpy()
    cov = ((p - p.mean(0)) * (t - t.mean(0))).mean(0)
    expected = 2 * cov / (p.var(0, ddof=1) + t.var(0, ddof=1) + (p.mean(0) - t.mean(0)) ** 2)
    np.testing.assert_allclose(ccc, expected, rtol=1e-6)
    assert not np.allclose(ccc, batch_ccc(torch.as_tensor(p), torch.as_tensor(t)).numpy())


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("protocol", ["reference", "frames"])
def test_a_run_reports_its_frames_and_starts_from_its_protocols_init(data, tmp_path, protocol):
    """lr 0: the head keeps its initial bias. Under reference the frames the organisers
    score are evaluated and reported beside the reference's own."""
    import json

    from abaw_ros.models import load_checkpoint
    from abaw_ros.training import load_train_config, train

    cfg = load_train_config(None, [
        f"data.affwild2_images={data.affwild2_images}", f"data.affwild2_annotations={data.affwild2_annotations}",
        "model.tasks=va", "model.n_levels=1", "model.window_length=4", "model.input_size=64", "model.freeze=all",
        "train.epochs=1", "train.batch_size=2", "train.lr=0", "train.min_lr=0", "train.num_workers=0",
        "train.device=cpu", "train.augment=false", f"train.protocol={protocol}", f"train.out_dir={tmp_path / 'run'}"])
    train(cfg)
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    model, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    bias = model.head.classifier.bias.detach()
    if protocol == "reference":
        assert report["best"]["frames_scored"] == {"va": len(REFERENCE_SCORED)}
        assert report["best_frames"]["frames_scored"] == {"va": len(FRAMES_SCORED)}
        assert report["best_frames"]["tasks"]["va"] != report["best"]["tasks"]["va"]  # other frames, other numbers
        bound = 1 / np.sqrt(model.head.classifier.in_features)
        assert bool((bias != 0).all()) and float(bias.abs().max()) <= bound  # nn.Linear's uniform init
    else:
        assert "best_frames" not in report
        assert report["best"]["frames_scored"] == {"va": len(FRAMES_SCORED)}
        assert bool((bias == 0).all())


@pytest.mark.parametrize("name", [f"train_{t}_l{n}.yaml" for t in ("au", "va") for n in (1, 2, 3)])
def test_paper_configs_select_on_the_organisers_frames(name):
    from pathlib import Path

    from abaw_ros.training.config import load_train_config

    path = Path(__file__).resolve().parents[1] / "config" / name
    cfg = load_train_config(path)
    assert cfg.protocol == "frames" and cfg.data.missing_frames == "nearest"
    assert cfg.grad_clip == 0.0 and cfg.model.freeze == "stem"  # the reference code's recipe
    assert load_train_config(path, ["train.protocol=reference"]).output_bias_init == "default"
    text = path.read_text()
    assert "backbone_weights" in text and "far below the paper" in text
    if "_va_" in name:
        assert "AU F1 0." not in text  # the paper reports AU F1 only
