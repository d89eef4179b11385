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

from abaw_ros import metrics
from abaw_ros.data.dataset import ClipDataset
from abaw_ros.data.sources import load_split
from abaw_ros.data.transforms import ClipTransform
from abaw_ros.training.config import DataConfig, TrainConfig
from abaw_ros.training.evaluation import score

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


@pytest.mark.parametrize("name", [f"train_{t}_l{n}.yaml" for t in ("au", "va") for n in (1, 2, 3)])
def test_paper_configs_name_the_reference_protocol(name):
    from pathlib import Path

    from abaw_ros.training.config import load_train_config

    path = Path(__file__).resolve().parents[1] / "config" / name
    cfg = load_train_config(path)
    assert cfg.protocol == "reference" and cfg.grad_clip == 0.0 and cfg.data.missing_frames == "skip"
    assert cfg.model.freeze == "stem"  # the reference code's choice, kept as the default
    text = path.read_text()
    assert "backbone_weights" in text and "far below the paper" in text
    if "_va_" in name:
        assert "AU F1 0." not in text  # the paper reports AU F1 only
