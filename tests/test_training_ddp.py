"""Training end to end on a tiny fixture: the commands, checkpoints and resume, and a
two-process DDP run on CPU (gloo, torchrun) that gives the same validation metric format
as a single-process run and exactly the same metrics when evaluating one checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from abaw_ros.cli import main as cli_main
from abaw_ros.data.fixtures import FixtureSpec, make_fixtures
from abaw_ros.models import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = FixtureSpec(frames_per_video=12, affwild2_videos=(2, 1), hume_videos=(4, 3), hume_frames=4,
                   bah_videos=(2, 1), seed=7)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    paths = make_fixtures(root / "data", TINY)
    raw = yaml.safe_load((REPO / "config" / "train_fixture.yaml").read_text())
    raw["data"] = {"affwild2_images": str(paths.affwild2_images),
                   "affwild2_annotations": str(paths.affwild2_annotations),
                   "hume_root": str(paths.hume), "bah_root": str(paths.bah)}
    raw["train"].update(epochs=2, batch_size=4, out_dir=str(root / "single"))
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    return root, config, paths


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "abaw_ros.cli", *args]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _metric_names(metrics_json: Path) -> dict[str, list[str]]:
    best = json.loads(metrics_json.read_text())["best"]
    return {task: sorted(m) for task, m in best["tasks"].items()}


def test_single_process_train_checkpoint_and_resume(tiny):
    root, config, _ = tiny
    assert cli_main(["train", "--config", str(config)]) == 0
    out = root / "single"
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    _, info = load_checkpoint(out / "last.pt")
    assert info["epoch"] == 1 and info["trained"] and len(info["au_thresholds"]) == 12
    assert cli_main(["train", "--config", str(config), "--resume", str(out / "last.pt"),
                     "--set", "train.epochs=3"]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]  # continued, not restarted
    _, info = load_checkpoint(out / "last.pt")
    assert info["epoch"] == 2


def test_two_process_ddp_matches_single_process_format(tiny):
    root, config, _ = tiny
    single = root / "single" / "metrics.json"
    if not single.exists():
        assert cli_main(["train", "--config", str(config)]) == 0
    done = _torchrun("train", "--config", str(config), "--out-dir", str(root / "ddp"))
    assert "2 processes" in done.stderr + done.stdout
    ddp = root / "ddp" / "metrics.json"
    assert _metric_names(ddp) == _metric_names(single)
    assert set(_metric_names(ddp)) == {"va", "au", "emi", "ah"}
    best = json.loads(ddp.read_text())["best"]
    assert all(isinstance(v, float) for m in best["tasks"].values() for v in m.values())


def test_ddp_evaluation_gathers_exactly_the_single_process_metrics(tiny):
    root, config, _ = tiny
    ckpt = root / "single" / "best.pt"
    if not ckpt.exists():
        assert cli_main(["train", "--config", str(config)]) == 0
    assert cli_main(["evaluate", "--checkpoint", str(ckpt), "--config", str(config),
                     "--num-workers", "0", "--out", str(root / "eval1")]) == 0
    _torchrun("evaluate", "--checkpoint", str(ckpt), "--config", str(config), "--num-workers", "0",
              "--out", str(root / "eval2"))
    one = json.loads((root / "eval1" / "metrics.json").read_text())
    two = json.loads((root / "eval2" / "metrics.json").read_text())
    # Same predictions up to float32 rounding (different batch shapes and thread counts);
    # a lost or doubled window would move these metrics by far more.
    for task, m in one["tasks"].items():
        assert two["tasks"][task] == pytest.approx(m, abs=1e-3)
    va1 = (root / "eval1" / "VA_predictions.txt").read_text().splitlines()
    va2 = (root / "eval2" / "VA_predictions.txt").read_text().splitlines()
    assert [r.split(",")[0] for r in va1] == [r.split(",")[0] for r in va2]  # every frame once, in order
    np.testing.assert_allclose(np.loadtxt(va1[1:], delimiter=",", usecols=(1, 2)),
                               np.loadtxt(va2[1:], delimiter=",", usecols=(1, 2)), atol=1e-4)


def test_image_path_with_augmentation_trains_the_backbone_but_not_the_stem(tiny):
    """The paper's set-up (no feature cache): clips decoded and augmented per step, the
    whole network but the frozen stem trains."""
    import torch

    from abaw_ros.training import load_train_config, train

    root, config, _ = tiny
    cfg = load_train_config(config, [
        "model.tasks=[au]", "model.freeze=stem", "model.n_levels=3", "train.cache_features=false",
        "train.augment=true", "train.epochs=1", "train.batch_size=2", "train.train_fraction=0.34",
        f"train.out_dir={root / 'images'}",
    ])
    torch.manual_seed(cfg.seed)
    from abaw_ros.models import AffectNet

    initial = AffectNet(cfg.model).state_dict()
    result = train(cfg)
    model, info = load_checkpoint(result.last_checkpoint)
    after = model.state_dict()
    assert torch.equal(after["encoder.backbone.conv_stem.weight"], initial["encoder.backbone.conv_stem.weight"])
    changed = [k for k in after if "blocks" in k and k.endswith("weight") and not torch.equal(after[k], initial[k])]
    assert changed, "no backbone block weight changed"
    assert result.history[0]["train_loss"] > 0 and "au" in info["metrics"]["tasks"]
