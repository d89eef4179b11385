"""A run that stops and resumes from its recovery checkpoint ends exactly where an
uninterrupted run ends (weights, optimizer, per-epoch losses and metrics), whether it
stopped mid-epoch or at an epoch end; and every run writes steps.csv / epochs.csv.

Tiny set-up: VA + AU on a small fixture, 64x64 crops, frozen random backbone, per-frame
augmentation on (its random stream must resume too), dropout on, 2 epochs."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from abaw_ros.data.fixtures import FixtureSpec, make_fixtures
from abaw_ros.models import load_checkpoint
from abaw_ros.training import load_train_config, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = FixtureSpec(frames_per_video=12, affwild2_videos=(2, 1), au_video_factor=1, au_length_factor=1,
                   hume_videos=(2, 1), hume_frames=4, bah_videos=(2, 1))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("resume") / "data", SPEC)


def config(paths, out_dir, *extra):
    return load_train_config(None, [
        f"data.affwild2_images={paths.affwild2_images}", f"data.affwild2_annotations={paths.affwild2_annotations}",
        "model.tasks=[va,au]", "model.n_levels=1", "model.window_length=4", "model.input_size=64",
        "model.freeze=all", "model.dropout=0.3", "train.batch_size=2", "train.epochs=2", "train.num_workers=0",
        "train.device=cpu", "train.augment=true", "train.lr=1e-3", "train.restart_steps=5",
        f"train.out_dir={out_dir}", *extra])


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    train(config(data, out))
    return out


def final_state(out_dir):
    _, info = load_checkpoint(out_dir / "last.pt")
    model, _ = load_checkpoint(out_dir / "last.pt")
    return model.state_dict(), info


def assert_same_run(a, b):
    state_a, info_a = final_state(a)
    state_b, info_b = final_state(b)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert info_a["optimizer"]["state"].keys() == info_b["optimizer"]["state"].keys()
    for k, s in info_a["optimizer"]["state"].items():
        assert torch.equal(s["exp_avg"], info_b["optimizer"]["state"][k]["exp_avg"])
    history_a = json.loads((a / "metrics.json").read_text())["history"]
    history_b = json.loads((b / "metrics.json").read_text())["history"]
    assert history_a == history_b


def test_resume_mid_epoch_equals_an_uninterrupted_run(data, uninterrupted, tmp_path):
    out = tmp_path / "run"
    # stops after 3 optimizer steps, inside the first epoch; last.pt was written at step 3
    train(config(data, out, "train.checkpoint_every=3", "train.max_steps=3"))
    _, info = load_checkpoint(out / "last.pt")
    assert info["resume_at"]["epoch"] == 0 and info["resume_at"]["step"] == 3
    train(config(data, out, f"train.resume={out / 'last.pt'}"))
    assert_same_run(uninterrupted, out)
    steps = list(csv.DictReader((out / "steps.csv").open()))
    whole = list(csv.DictReader((uninterrupted / "steps.csv").open()))
    assert [r["step"] for r in steps] == [r["step"] for r in whole]  # no step twice, none missing
    assert [r["loss"] for r in steps] == [r["loss"] for r in whole]


def test_resume_at_an_epoch_end_equals_an_uninterrupted_run(data, uninterrupted, tmp_path):
    out = tmp_path / "run"
    train(config(data, out, "train.epochs=1"))  # last.pt is written at every epoch end
    train(config(data, out, f"train.resume={out / 'last.pt'}"))
    assert_same_run(uninterrupted, out)


def test_run_directory_has_the_step_and_epoch_logs(uninterrupted):
    with (uninterrupted / "steps.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "step", "loss", "loss_va", "loss_au", "lr", "data_time_s", "step_time_s",
                             "samples_per_s"]
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["epoch"] for r in rows} == {"1", "2"}
    for r in rows:
        assert float(r["loss"]) == pytest.approx(float(r["loss_va"]) + float(r["loss_au"]), rel=1e-4, abs=1e-5)
        assert float(r["lr"]) > 0 and float(r["data_time_s"]) >= 0 and float(r["step_time_s"]) > 0
        assert float(r["samples_per_s"]) > 0
    assert float(rows[0]["lr"]) == pytest.approx(1e-3)  # the first step runs at the configured rate
    with (uninterrupted / "epochs.csv").open() as f:
        epochs = list(csv.DictReader(f))
    assert [e["epoch"] for e in epochs] == ["1", "2"]
    for column in ("train_loss", "lr", "val_score", "val_va_ccc_mean", "val_au_f1_mean"):
        assert all(e[column] != "" for e in epochs), column
