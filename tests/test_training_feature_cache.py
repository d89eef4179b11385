"""The disk feature cache of the frozen part (``freeze: paper``): training from it equals
training from the images (augmentation off, same seed) up to the float16 rounding of the
stored maps; a cache built for other backbone weights is rebuilt, never read; an
interrupted build resumes with the videos not yet written.

Tolerance: the stored ``blocks.3`` maps are float16 (relative rounding 2^-11 = 4.9e-4), so
the runs' losses agree to 1e-3 relative and their validation predictions to 2e-3.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from abaw_ros.cli import main as cli_main
from abaw_ros.data.fixtures import FixtureSpec, make_fixtures
from abaw_ros.data.sources import load_split
from abaw_ros.data.transforms import read_rgb
from abaw_ros.models import AffectNet, load_checkpoint
from abaw_ros.training import load_train_config, train
from abaw_ros.training.device_preprocess import DevicePreprocess
from abaw_ros.training.feature_cache import (
    build_feature_cache,
    open_feature_cache,
)
from abaw_ros.training.frozen_split import FrozenTrunk, cache_plan

REPO = Path(__file__).resolve().parents[1]
LOSS_RTOL = 1e-3
PRED_ATOL = 2e-3


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    spec = FixtureSpec(frames_per_video=12, affwild2_videos=(2, 1), hume_videos=(1, 1), bah_videos=(1, 1))
    return make_fixtures(tmp_path_factory.mktemp("feature_cache"), spec)


def config(paths, out: Path, *extra: str):
    return load_train_config(REPO / "config" / "train_au_l1.yaml", [
        f"data.affwild2_images={paths.affwild2_images}",
        f"data.affwild2_annotations={paths.affwild2_annotations}",
        "data.missing_frames=nearest", "model.freeze=paper", "model.n_levels=2", "model.dropout=0.0",
        "model.input_size=96",  # 5x fewer pixels than 224: a CPU test
        "train.augment=false", "train.epochs=1", "train.batch_size=4", "train.train_fraction=0.5",
        "train.num_workers=0", "train.device=cpu", "train.patience=0", "train.seed=5",
        f"train.out_dir={out}", *extra])


def au_frames(cfg) -> list[Path]:
    return [p for split in ("train", "val") for recs in load_split(cfg.data, ("au",), split, cfg.protocol).values()
            for r in recs for p in r.frames]


def test_training_from_the_cache_equals_training_from_the_images(fixture, tmp_path):
    images = train(config(fixture, tmp_path / "images"))
    cached = train(config(fixture, tmp_path / "cached", f"train.feature_cache={tmp_path / 'cache'}"))
    assert (tmp_path / "cache" / "manifest.json").is_file()
    a, b = images.history[0], cached.history[0]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_RTOL)
    assert b["val"]["tasks"]["au"]["au_f1_mean"] == pytest.approx(a["val"]["tasks"]["au"]["au_f1_mean"], abs=0.02)
    # the trained networks predict the same on the validation crops
    net_a, _ = load_checkpoint(images.last_checkpoint)
    net_b, _ = load_checkpoint(cached.last_checkpoint)
    cfg = config(fixture, tmp_path / "x")
    crops = torch.stack([torch.from_numpy(read_rgb(p)) for p in au_frames(cfg)[:8]])[None]
    pre = DevicePreprocess(cfg.model.input_size, cfg.model.mean, cfg.model.std).eval()
    with torch.no_grad():
        pa, pb = net_a.eval()(pre(crops)), net_b.eval()(pre(crops))
    assert (pa - pb).abs().max().item() <= PRED_ATOL
    # and the weights changed in both (the comparison is not between two untrained nets)
    fresh = AffectNet(cfg.model)
    assert not torch.allclose(net_a.head.classifier.weight, fresh.head.classifier.weight)


def test_stored_maps_are_the_frozen_part_output_and_other_weights_rebuild_the_cache(fixture, tmp_path):
    cfg = config(fixture, tmp_path / "run")
    paths = au_frames(cfg)
    torch.manual_seed(0)
    model_a = AffectNet(cfg.model).eval()
    root = tmp_path / "cache"
    first = build_feature_cache(root, model_a, paths, progress=False)
    assert first.built == first.videos > 1 and not first.stale_removed
    plan = cache_plan(model_a)
    assert plan.outputs == ("blocks.3", "blocks.2") and plan.shapes == ((128, 3, 3), (96, 6, 6))
    assert first.bytes >= len(set(paths)) * plan.frame_bytes

    table = open_feature_cache(root, model_a, paths, 112)
    crops = torch.stack([torch.from_numpy(read_rgb(p)) for p in paths[:4]])[None]
    pre = DevicePreprocess(cfg.model.input_size, cfg.model.mean, cfg.model.std).eval()
    with torch.no_grad():
        expected = FrozenTrunk(model_a, plan.outputs)(pre(crops)[0])
    for got, want in zip(table.gather(paths[:4]), expected, strict=True):
        assert got.dtype == torch.float16
        assert torch.equal(got, want.half())

    again = build_feature_cache(root, model_a, paths, progress=False)
    assert again.built == 0  # nothing to do

    torch.manual_seed(1)
    model_b = AffectNet(cfg.model).eval()  # other backbone weights
    with pytest.raises(ValueError, match="stale"):
        open_feature_cache(root, model_b, paths, 112)
    rebuilt = build_feature_cache(root, model_b, paths, progress=False)
    assert rebuilt.stale_removed and rebuilt.built == rebuilt.videos
    with torch.no_grad():
        expected_b = FrozenTrunk(model_b, plan.outputs)(pre(crops)[0])
    got_b = open_feature_cache(root, model_b, paths, 112).gather(paths[:4])
    assert torch.equal(got_b[0], expected_b[0].half())
    assert not torch.equal(got_b[0], expected[0].half())
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["key"]["freeze"] == "paper" and manifest["key"]["preprocessing"]["crop_size"] == 112


def test_an_interrupted_build_resumes_with_the_missing_videos(fixture, tmp_path):
    cfg = config(fixture, tmp_path / "run")
    paths = au_frames(cfg)
    model = AffectNet(cfg.model).eval()
    root = tmp_path / "cache"
    build_feature_cache(root, model, paths, progress=False)
    done = sorted((root / "done").glob("*.json"))
    kept = {f: f.stat().st_mtime_ns for f in (root / "blocks.3").glob("*.npy")}
    done[0].unlink()  # as if the build had stopped before finishing this video
    with pytest.raises(ValueError, match="not cached"):
        open_feature_cache(root, model, paths, 112)
    resumed = build_feature_cache(root, model, paths, progress=False)
    assert resumed.built == 1 and not resumed.stale_removed
    rewritten = [f for f, t in kept.items() if f.stat().st_mtime_ns != t]
    assert len(rewritten) == 1 and rewritten[0].stem == done[0].stem


def test_cache_features_command_writes_the_cache_and_refuses_a_bad_config(fixture, tmp_path, capsys):
    base = ["cache-features", "--config", str(REPO / "config" / "train_au_l1.yaml"),
            "--set", f"data.affwild2_images={fixture.affwild2_images}",
            "--set", f"data.affwild2_annotations={fixture.affwild2_annotations}",
            "--set", "model.freeze=paper", "--set", "model.input_size=96", "--set", "train.augment=false",
            "--set", "train.num_workers=0",
            "--device", "cpu"]
    assert cli_main([*base, "--out", str(tmp_path / "cache")]) == 0
    assert "0 (re)built" not in capsys.readouterr().out
    assert (tmp_path / "cache" / "manifest.json").is_file()
    assert cli_main([*base, "--set", "model.freeze=stem", "--out", str(tmp_path / "c2")]) == 2
    assert "feature_cache needs model.freeze paper or all" in capsys.readouterr().err
