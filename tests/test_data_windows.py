"""Training windows (non-overlapping, last edge-padded), evaluation windows (one prediction
per annotated row), preprocessing and the window data set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from abaw_ros.data import (
    AugmentConfig,
    ClipDataset,
    ClipTransform,
    VideoRecord,
    evaluation_windows,
    training_windows,
)
from abaw_ros.data.fixtures import write_jpg
from abaw_ros.tasks import output_slices


def test_training_windows_non_overlapping_last_edge_padded():
    ws = training_windows([20, 8, 3], 8)
    assert [w.video for w in ws] == [0, 0, 0, 1, 2]
    np.testing.assert_array_equal(ws[0].rows, np.arange(8))
    np.testing.assert_array_equal(ws[2].rows, [16, 17, 18, 19, 19, 19, 19, 19])
    np.testing.assert_array_equal(ws[2].write, [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ws[4].rows, [0, 1, 2, 2, 2, 2, 2, 2])


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 5, 8, 21])
def test_evaluation_windows_write_every_row_exactly_once(n, stride):
    ws = evaluation_windows([n, 3], 8, stride)
    for video, length in enumerate([n, 3]):
        written = np.concatenate([w.rows[w.write] for w in ws if w.video == video])
        np.testing.assert_array_equal(np.sort(written), np.arange(length))
        for w in ws:
            assert len(w.rows) == 8 and w.rows.min() >= 0 and w.rows.max() < [n, 3][w.video]


def test_stride_one_is_causal_window_ending_at_each_frame():
    ws = evaluation_windows([10], 8, 1)
    assert len(ws) == 10
    for end, w in enumerate(ws):
        np.testing.assert_array_equal(w.rows, np.maximum(np.arange(end - 7, end + 1), 0))
        assert w.write.sum() == 1 and w.write[-1]


def test_bad_stride_is_an_error():
    with pytest.raises(ValueError, match="stride=9"):
        evaluation_windows([10], 8, 9)


def test_transform_resizes_112_to_224_and_normalizes():
    img = np.full((112, 112, 3), 128, dtype=np.uint8)
    img[:, :56] = 255
    out = ClipTransform(224)([img, img])
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float32
    expected = (255 / 255 - 0.485) / 0.229
    assert out[0, 0, 10, 10].item() == pytest.approx(expected, abs=1e-5)
    assert out[0, 0, 10, 200].item() == pytest.approx((128 / 255 - 0.485) / 0.229, abs=1e-5)


def test_augmentation_changes_images_reproducibly():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(4)]
    plain = ClipTransform(224)(frames)
    a = ClipTransform(224, augment=AugmentConfig(), seed=3)(frames)
    b = ClipTransform(224, augment=AugmentConfig(), seed=3)(frames)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, plain)
    clip = ClipTransform(224, augment=AugmentConfig(per_frame=False, blur_sigma=(0.1, 0.1)), seed=1)
    same = clip([frames[0]] * 4)  # one draw per clip: identical frames stay identical
    for t in range(1, 4):
        torch.testing.assert_close(same[t], same[0])


def _record(tmp_path, task, n, size, valid=None, name="v"):
    paths = []
    for i in range(n):
        p = tmp_path / name / f"{i + 1:05d}.jpg"
        write_jpg(p, np.full((112, 112, 3), 10 * i, dtype=np.uint8))
        paths.append(p)
    labels = np.arange(n * size, dtype=np.float32).reshape(n, size) / (n * size)
    return VideoRecord(task, name, paths, labels, np.ones(n, bool) if valid is None else valid,
                       np.arange(1, n + 1), tmp_path / f"{name}.txt")


def test_clip_dataset_targets_masks_and_frames(tmp_path):
    valid = np.ones(10, bool)
    valid[3] = False
    va = _record(tmp_path, "va", 10, 2, valid, "a")
    ah = _record(tmp_path, "ah", 5, 1, None, "b")
    ds = ClipDataset([va, ah], ("ah", "va"), 8, train=True, transform=ClipTransform(224))
    assert ds.tasks == ("va", "ah") and len(ds) == 3
    s = output_slices(("va", "ah"))
    first = ds[0]
    assert first["inputs"].shape == (8, 3, 224, 224)
    np.testing.assert_allclose(first["target"][:, s["va"]].numpy(), va.labels[:8])
    assert first["target"][:, s["ah"]].abs().sum() == 0
    np.testing.assert_array_equal(first["mask"][:, 0].numpy(), valid[:8])
    assert not first["mask"][:, 1].any()
    last = ds[2]  # the AH video: 5 rows, edge-padded to 8
    np.testing.assert_array_equal(last["rows"].numpy(), [0, 1, 2, 3, 4, 4, 4, 4])
    assert last["mask"][:, 1].all() and not last["mask"][:, 0].any()
    # frame i shows grey level 10*i: the window shows the rows it claims
    means = last["inputs"][:, 0].mean((1, 2)) * 0.229 + 0.485
    np.testing.assert_allclose(means.numpy() * 255, 10 * last["rows"].numpy(), atol=2)


def test_clip_dataset_rejects_records_of_other_tasks(tmp_path):
    rec = _record(tmp_path, "au", 4, 12)
    with pytest.raises(ValueError, match=r"task\(s\) \['au'\]"):
        ClipDataset([rec], ("va",), 8, train=True, transform=ClipTransform(224))
