"""``--set section.key=value`` values are typed by the config schema (numbers in any YAML
spelling, lists, booleans) and checked before any data is read: a bad value is one line
naming the key, exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from abaw_ros.cli import main as cli_main
from abaw_ros.training.config import load_train_config

CONFIG = Path(__file__).resolve().parents[1] / "config" / "train_au_l3.yaml"


@pytest.mark.parametrize("override,key,expected", [
    ("train.lr=1e-3", "lr", 1e-3),
    ("train.lr=5E-4", "lr", 5e-4),
    ("train.min_lr=1", "min_lr", 1.0),
    ("train.epochs=1e1", "epochs", 10),
    ("train.augment=false", "augment", False),
    ("train.augment=off", "augment", False),
    ("train.eval_stride=null", "eval_stride", None),
    ("train.eval_stride=8", "eval_stride", 8),
    ("train.out_dir=2024", "out_dir", "2024"),
])
def test_train_values_take_the_schema_type(override, key, expected):
    value = getattr(load_train_config(CONFIG, [override]), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("override,expected", [
    ("model.tasks=au", ("au",)),
    ("model.tasks=[au,va]", ("va", "au")),
    ("model.tasks=va,au", ("va", "au")),
])
def test_task_lists_are_names_not_letters(override, expected):
    assert load_train_config(CONFIG, [override]).model.tasks == expected


def test_nested_values_are_typed():
    cfg = load_train_config(CONFIG, ["loss.weights={au: 3}", "model.mean=[0.5, 0.5, 0.5]", "loss.focal_alpha=1e-1"])
    assert cfg.loss.weights == {"au": 3.0} and type(cfg.loss.weights["au"]) is float
    assert cfg.model.mean == (0.5, 0.5, 0.5) and cfg.loss.focal_alpha == pytest.approx(0.1)


@pytest.mark.parametrize("override,message", [
    ("train.batch_size=abc", "train.batch_size='abc': expected an integer"),
    ("train.lr=fast", "train.lr='fast': expected a number"),
    ("train.lr=.nan", "train.lr=nan: expected a number"),
    ("train.epochs=2.5", "train.epochs=2.5: expected an integer"),
    ("train.augment=maybe", "train.augment='maybe': expected true or false"),
    ("model.mean=[1,2]", "model.mean=[1, 2]: expected 3 values"),
    ("loss.focal_gamma=[2]", "loss.focal_gamma=[2]: expected a number"),
    ("data.missing_frames=3", "data.missing_frames='3'"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_train_config(CONFIG, [override])


def test_cli_refuses_a_bad_value_in_one_line_before_reading_data(tmp_path, capsys):
    # the config's data paths do not exist here: reaching the data would give another error
    code = cli_main(["train", "--config", str(CONFIG), "--set", "train.batch_size=abc",
                     "--out-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.batch_size='abc'" in err
    assert not (tmp_path / "run").exists()


def test_paths_in_a_config_file_are_relative_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "au.yaml").write_text("model:\n  backbone_weights: weights/model_best.pth.tar\n"
                                    "data:\n  affwild2_images: ../data/affwild2\n  bah_root: /abs/bah\n"
                                    "train:\n  out_dir: runs/au\n")
    monkeypatch.chdir(tmp_path.parent)  # anywhere else
    cfg = load_train_config(folder / "au.yaml", ["train.resume=here/last.pt"])
    assert cfg.model.backbone_weights == str(folder / "weights" / "model_best.pth.tar")
    assert cfg.data.affwild2_images == str(tmp_path / "data" / "affwild2")
    assert cfg.data.bah_root == "/abs/bah" and cfg.out_dir == str(folder / "runs" / "au")
    assert cfg.resume == "here/last.pt"  # a command-line path stays relative to the working directory
