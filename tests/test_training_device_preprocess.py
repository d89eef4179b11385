"""Preprocessing on the device (uint8 crops from the workers; resize, augmentation and
normalization batched in the training step) computes what the workers' NumPy/OpenCV
pipeline computes, on the fixture's real face crops.

Tolerances (why not bit-equal, see ``abaw_ros/training/device_preprocess.py``): without
augmentation cv2 resizes the uint8 crop in its bit-exact fixed-point mode, which is off
the exact bilinear value by up to 0.625 intensity level (0.625 / (255 * std) normalized;
cv2's float32 resize equals torch's bilinear resize bit for bit); with augmentation both
sides resize float32 and differ only by summation order (contrast mean, blur): 1e-3.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from abaw_ros.data import load_affwild2
from abaw_ros.data.dataset import ClipDataset
from abaw_ros.data.fixtures import FixtureSpec, make_fixtures
from abaw_ros.data.transforms import (
    IMAGENET_STD,
    AugmentConfig,
    ClipTransform,
    CropBytes,
    apply_augment,
    draw_augment,
    read_rgb,
)
from abaw_ros.training.device_preprocess import DevicePreprocess, FrameDraws, draw_frames
from abaw_ros.training.input_pipeline import check_shared_memory, shared_memory_need

CV2_UINT8_RESIZE_TOL = 0.625 / (255 * min(IMAGENET_STD)) + 1e-5
AUGMENTED_TOL = 1e-3


@pytest.fixture(scope="module")
def au_records(tmp_path_factory):
    spec = FixtureSpec(frames_per_video=12, affwild2_videos=(2, 1), hume_videos=(1, 1), bah_videos=(1, 1))
    paths = make_fixtures(tmp_path_factory.mktemp("dev_pre"), spec)
    return load_affwild2(paths.affwild2_images, paths.affwild2_annotations, "au", "train")


def test_device_preprocess_without_augmentation_matches_the_worker_pipeline_within_cv2s_fixed_point_error(au_records):
    worker = ClipDataset(au_records, ["au"], 8, False, transform=ClipTransform(224))
    crops = ClipDataset(au_records, ["au"], 8, False, transform=CropBytes(112))
    pre = DevicePreprocess(224, (0.485, 0.456, 0.406), IMAGENET_STD).eval()
    for i in range(len(worker)):
        expected = worker[i]["inputs"]
        raw = crops[i]["inputs"]
        assert raw.dtype == torch.uint8 and raw.shape == (8, 112, 112, 3)
        got = pre(raw[None])[0]
        assert got.shape == expected.shape == (8, 3, 224, 224)
        assert (got - expected).abs().max().item() <= CV2_UINT8_RESIZE_TOL


def test_device_augmentation_on_the_same_draws_matches_the_worker_maths(au_records):
    frames = [read_rgb(p) for p in au_records[0].frames[:8]]
    rng = np.random.default_rng(7)
    # erase_p 1 so that every frame is also erased (boxes of every shape)
    cfg = AugmentConfig(erase_p=1.0)
    params = [draw_augment(cfg, rng, 112, 112) for _ in frames]
    assert len({p.flip for p in params}) == 2 and all(p.erase is not None for p in params)
    plain = ClipTransform(224)
    expected = torch.from_numpy(np.stack([plain.frame(apply_augment(f, p)) for f, p in zip(frames, params, strict=True)]))
    pre = DevicePreprocess(224, (0.485, 0.456, 0.406), IMAGENET_STD).eval()
    got = pre(torch.from_numpy(np.stack(frames))[None], draws=FrameDraws.from_params(params))[0]
    assert (got - expected).abs().max().item() <= AUGMENTED_TOL


def test_device_augmentation_only_in_training_mode_and_reproducible_from_its_seed(au_records):
    clip = torch.from_numpy(np.stack([read_rgb(p) for p in au_records[0].frames[:8]]))[None]
    pre = DevicePreprocess(224, (0.485, 0.456, 0.406), IMAGENET_STD, AugmentConfig(), seed=3)
    plain = DevicePreprocess(224, (0.485, 0.456, 0.406), IMAGENET_STD)
    assert torch.equal(pre.eval()(clip), plain(clip))
    a = pre.train()(clip)
    again = DevicePreprocess(224, (0.485, 0.456, 0.406), IMAGENET_STD, AugmentConfig(), seed=3).train()(clip)
    assert not torch.allclose(a, plain(clip), atol=0.1)
    assert torch.equal(a, again)
    per_clip = DevicePreprocess(224, (0.485, 0.456, 0.406), IMAGENET_STD, AugmentConfig(per_frame=False), seed=3)
    same = per_clip.train()(clip.expand(1, 8, -1, -1, -1)[:, :1].expand(1, 8, -1, -1, -1).contiguous())
    assert torch.allclose(same[0, 0], same[0, 7])  # one draw for the whole clip


def test_device_draws_follow_the_worker_distributions():
    cfg = AugmentConfig()
    n = 20000
    d = draw_frames(cfg, n, 112, 112, torch.Generator().manual_seed(0), torch.device("cpu"))
    rng = np.random.default_rng(0)
    ref = [draw_augment(cfg, rng, 112, 112) for _ in range(n)]
    assert abs(d.flip.float().mean().item() - np.mean([p.flip for p in ref])) < 0.02
    for name in ("brightness", "contrast", "saturation", "sigma"):
        values = np.array([getattr(p, name) for p in ref])
        mine = getattr(d, name).numpy()
        assert abs(mine.min() - values.min()) < 0.01 and abs(mine.max() - values.max()) < 0.01, name
        assert abs(mine.mean() - values.mean()) < 0.01, name
    on = d.erase[:, 2] > 0
    assert abs(on.float().mean().item() - np.mean([p.erase is not None for p in ref])) < 0.02
    y, x, h, w = d.erase[on].T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 112).all() and (x + w <= 112).all()
    boxes = {p.erase[2:] for p in ref if p.erase is not None}
    assert {tuple(b) for b in d.erase[on][:, 2:].tolist()} == boxes  # the same box shapes
    assert y.min() == 0 and (y + h).max() == 112  # every position reachable


def test_uint8_batches_need_a_sixteenth_of_the_shared_memory_and_a_small_shm_is_refused(tmp_path):
    crops, floats = 128 * 8 * 112 * 112 * 3, 128 * 8 * 3 * 224 * 224 * 4
    assert floats == 16 * crops
    assert shared_memory_need(crops, 8, 2) == 16 * crops
    assert shared_memory_need(crops, 0, 2) == 0
    check_shared_memory(1024, tmp_path)  # fits anywhere
    with pytest.raises(ValueError, match=r"shared memory but .* MB free: .*--shm-size"):
        check_shared_memory(10**18, tmp_path)
