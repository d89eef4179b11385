"""``abaw-affect train --seeds 3``: three runs and one summary whose mean and standard
deviation are those of the three runs' metrics; thresholds tuned on the set they are
scored on are flagged optimistic, and the held-out tuned F1 sits beside them."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from abaw_ros.cli import main as cli_main
from abaw_ros.data.fixtures import FixtureSpec, make_fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = FixtureSpec(frames_per_video=12, affwild2_videos=(2, 2), au_video_factor=1, au_length_factor=1,
                   hume_videos=(2, 1), hume_frames=4, bah_videos=(2, 1))


def test_three_seeds_give_mean_and_std_of_every_metric(tmp_path, capsys):
    paths = make_fixtures(tmp_path / "data", SPEC)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"tasks": ["va", "au"], "n_levels": 1, "window_length": 4, "input_size": 64, "freeze": "all"},
        "data": {"affwild2_images": str(paths.affwild2_images), "affwild2_annotations": str(paths.affwild2_annotations)},
        "train": {"epochs": 1, "batch_size": 4, "augment": False, "cache_features": True, "num_workers": 0,
                  "device": "cpu", "seed": 7, "out_dir": "runs/tiny"},
    }))
    assert cli_main(["train", "--config", str(config), "--seeds", "3"]) == 0
    out = tmp_path / "runs" / "tiny"  # relative to the config file
    assert "over 3 seeds" in capsys.readouterr().out
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [7, 8, 9]
    runs = {s: json.loads((out / f"seed{s}" / "metrics.json").read_text()) for s in (7, 8, 9)}
    assert len({json.dumps(r["best"]["tasks"]) for r in runs.values()}) == 3  # three different runs
    for name, task in (("score", None), ("va_ccc_mean", "va"), ("au_f1_mean", "au"), ("au_f1_AU12", "au")):
        values = [r["best"]["score"] if task is None else r["best"]["tasks"][task][name] for r in runs.values()]
        m = summary["metrics"][name]
        assert m["mean"] == pytest.approx(np.mean(values))
        assert m["std"] == pytest.approx(np.std(values, ddof=1))
        assert list(m["values"].values()) == pytest.approx(values)
    assert summary["metrics"]["au_f1_mean_tuned"]["optimistic"] is True
    assert summary["metrics"]["au_f1_mean_tuned_heldout"]["optimistic"] is False
    assert summary["metrics"]["au_f1_mean"]["optimistic"] is False
    with (out / "seeds.csv").open() as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    assert rows["score"]["n"] == "3" and float(rows["score"]["mean"]) == pytest.approx(
        summary["metrics"]["score"]["mean"], rel=1e-5)


def test_seeds_with_resume_are_refused_in_one_line(tmp_path, capsys):
    code = cli_main(["train", "--seeds", "2", "--resume", str(tmp_path / "last.pt"), "--set",
                     "model.tasks=va", "--set", "data.affwild2_images=/nowhere", "--set",
                     "data.affwild2_annotations=/nowhere", "--out-dir", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seeds with --resume" in err
