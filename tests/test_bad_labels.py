"""Label and parameter files as other tools get them wrong: every fault is one error naming
the file and line, nothing is dropped silently, and the command line says it in one line
with exit status 2."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from abaw_ros import cli
from abaw_ros.config import ConfigError, PipelineConfig
from abaw_ros.data.records import DataFormatError
from abaw_ros.offline.annotations import load_frame_labels, load_stamp_csv


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["1000,0.5,0.1,7"], r":2: 4 fields, but the header has 3"),  # a stray extra column
        (["1000,0.5"], r":2: 2 fields, but the header has 3"),  # a column short: not "all invalid"
        (["2000,0.1,0.1", "inf,0.5,0.1"], r":3: stamp 'inf' is not a finite number"),
        (["nan,0.5,0.1"], r":2: stamp 'nan' is not a finite number"),
        (["99999999999999999999,0.5,0.1"], r":2: stamp '99999999999999999999' .*outside the 64-bit range"),
        (["1000,0.5,0.1", "1000.5,0.1,0.2"], r":3: stamp_ns '1000.5' is not a whole number"),
        (["1000,0.5,0.1", "1000,0.2,0.2"], r":3: stamp '1000' again \(line 2\)"),
        ([], r":2: no rows after the header"),
    ],
)
def test_stamp_csv_faults_name_file_and_line(tmp_path, rows, message):
    path = _write(tmp_path / "labels.csv", ["stamp_ns,valence,arousal", *rows])
    with pytest.raises(DataFormatError, match=rf"{path}{message}"):
        load_stamp_csv(path)


def test_stamp_in_seconds_is_read_exactly_and_bounded(tmp_path):
    path = _write(tmp_path / "labels.csv", ["stamp,valence,arousal", "1700000000.040000001,0.5,0.1"])
    assert load_stamp_csv(path).keys.tolist() == [1_700_000_000_040_000_001]
    _write(path, ["stamp,valence,arousal", "1e300,0.5,0.1"])
    with pytest.raises(DataFormatError, match=r"labels.csv:2: stamp '1e300'.*64-bit"):
        load_stamp_csv(path)
    _write(path, ["stamp,valence,arousal", "-inf,0.5,0.1"])
    with pytest.raises(DataFormatError, match=r"labels.csv:2: stamp '-inf' is not a finite"):
        load_stamp_csv(path)


def test_label_files_with_bytes_that_are_not_utf8_name_the_line(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_bytes(b"stamp_ns,valence,arousal\n1000,0.5,0.1\n2000,0.5,0.1 caf\xe9\n")
    with pytest.raises(DataFormatError, match=rf"{csv}:3: byte 0xe9"):
        load_stamp_csv(csv)
    ah = tmp_path / "video.ah.txt"
    ah.write_bytes(b"hesitancy\n1\n\xff\n")
    with pytest.raises(DataFormatError, match=rf"{ah}:3: byte 0xff"):
        load_frame_labels(ah=ah)
    # a byte-order mark, as spreadsheet tools write it, is not an error
    csv.write_bytes("\ufeffstamp_ns,valence,arousal\n1000,0.5,0.1\n".encode())
    assert load_stamp_csv(csv).keys.tolist() == [1000]


def test_cli_reports_a_bad_labels_csv_in_one_line(tmp_path, capsys, caplog):
    bag = tmp_path / "rec"
    bag.mkdir()
    csv = _write(tmp_path / "labels.csv", ["stamp_ns,valence,arousal", "inf,0.5,0.1"])
    with caplog.at_level(logging.ERROR):
        code = cli.main(["bag-eval", str(bag), "--labels-csv", str(csv), "--no-progress"])
    assert code == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"{csv}:2: stamp 'inf'" in errors[0].getMessage()
    assert "Traceback" not in capsys.readouterr().err


def test_index_label_files_with_only_a_header_are_errors(tmp_path):
    va = _write(tmp_path / "v.txt", ["valence,arousal"])
    with pytest.raises(DataFormatError, match=rf"{va}:2: no rows after the header"):
        load_frame_labels(va=va)
    ah = _write(tmp_path / "h.txt", ["hesitancy"])
    with pytest.raises(DataFormatError, match=rf"{ah}:2: no rows after the header"):
        load_frame_labels(ah=ah)


def _alias_bomb(levels: int = 8) -> list[str]:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghijk"
    for prev, name in zip(names[:levels], names[1:levels + 1], strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return lines


def test_parameters_files_refuse_aliases_and_repeated_keys(tmp_path):
    """ROS 2 refuses aliases in parameters files too (rcl_yaml_param_parser)."""
    params = _write(tmp_path / "bomb.yaml", ["abaw_affect:", "  ros__parameters:",
                                             *("    " + line for line in _alias_bomb()),
                                             "    crop_size: 112"])
    with pytest.raises(ConfigError, match=rf"{params}:\d+: .*YAML alias"):
        PipelineConfig.from_yaml(params)
    twice = _write(tmp_path / "twice.yaml", ["abaw_affect:", "  ros__parameters:", "    crop_size: 112",
                                             "    max_faces: 2", "    crop_size: 96"])
    with pytest.raises(ConfigError, match=rf"{twice}:5: key 'crop_size' appears a second time .*line 3"):
        PipelineConfig.from_yaml(twice)


def test_training_configs_refuse_aliases(tmp_path):
    from abaw_ros.training.config import load_train_config

    config = _write(tmp_path / "train.yaml", ["train:", *("  " + line for line in _alias_bomb(3)), "  epochs: 2"])
    with pytest.raises(ValueError, match=rf"{config}:\d+: .*YAML alias"):
        load_train_config(config)


def test_cli_parameter_values_refuse_aliases(tmp_path, caplog):
    bag = tmp_path / "rec"
    bag.mkdir()
    with caplog.at_level(logging.ERROR):
        code = cli.main(["bag-eval", str(bag), "--no-progress", "-p", "max_faces:=[&a [1, 2], *a]"])
    assert code == 2 and "YAML alias" in caplog.text


def test_bag_metadata_with_aliases_is_refused(tmp_path):
    from abaw_ros.offline.bag_reader import ImageBagReader
    from abaw_ros.offline.bag_types import BagReadError
    from abaw_ros.offline.bag_writers import ImageBagWriter

    bag = tmp_path / "rec"
    with ImageBagWriter(bag) as writer:
        writer.write(np.zeros((8, 8, 3), np.uint8), 1)
    meta = bag / "metadata.yaml"
    meta.write_text(meta.read_text() + "\n".join(_alias_bomb()) + "\n")
    with pytest.raises(BagReadError, match=r"metadata.yaml.*YAML alias"):
        ImageBagReader(bag).open()
