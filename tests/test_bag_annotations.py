"""Annotations for bag frames: Aff-Wild2-style files by frame index, BAH YAML, CSV by stamp."""
from __future__ import annotations

import numpy as np
import pytest

from abaw_ros.data.records import DataFormatError
from abaw_ros.offline.annotations import (
    KEY_INDEX,
    KEY_STAMP,
    load_frame_labels,
    load_stamp_csv,
    write_stamp_csv,
)
from abaw_ros.tasks import AU_NAMES


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_affwild2_rows_map_to_topic_frame_indices(tmp_path):
    va = _write(tmp_path / "v.txt", ["valence,arousal", "0.1,0.2", "-5,-5", "0.5,-0.5"])
    au = _write(tmp_path / "a.txt", [",".join(AU_NAMES), ",".join(["1"] + ["0"] * 11),
                                     ",".join(["-1"] * 12)])
    ah = _write(tmp_path / "h.txt", ["hesitancy", "1", "0", "-1", "1"])
    labels = load_frame_labels(va=va, au=au, ah=ah)
    assert labels.key == KEY_INDEX and labels.keys.tolist() == [0, 1, 2, 3]
    aligned = labels.align(np.array([0, 1, 2, 3, 7]), np.zeros(5, np.int64))
    assert aligned.valid["va"].tolist() == [True, False, True, False, False]
    assert np.allclose(aligned.values["va"][2], [0.5, -0.5])
    assert aligned.valid["au"].tolist() == [True, False, False, False, False]
    assert aligned.values["au"][0, 0] == 1 and aligned.values["au"][0, 1:].sum() == 0
    assert aligned.valid["ah"].tolist() == [True, True, False, True, False]
    assert aligned.matched.tolist() == [True, True, True, True, False]
    # a bag that starts at the video's 3rd frame
    later = load_frame_labels(va=va, first_frame=3)
    assert later.keys.tolist() == [-2, -1, 0]
    assert np.allclose(later.align(np.array([0]), np.zeros(1, np.int64)).values["va"][0], [0.5, -0.5])


def test_bah_yaml_labels_one_video_from_frame_zero(tmp_path):
    yml = _write(tmp_path / "annotation.yml", [
        "Visite 1/P001/video-01.mp4:",
        "  frame_annotation:",
        "  - [x/frame-0.jpg, 0]",
        "  - [x/frame-1.jpg, 1]",
        "Visite 1/P002/video-02.mp4:",
        "  frame_annotation:",
        "  - [y/frame-0.jpg, 1]",
    ])
    labels = load_frame_labels(ah_yaml=yml, ah_video="Visite_1/P001/video-01.mp4")
    assert labels.keys.tolist() == [0, 1] and labels.values["ah"][:, 0].tolist() == [0, 1]
    with pytest.raises(ValueError, match="holds 2 videos"):
        load_frame_labels(ah_yaml=yml)
    with pytest.raises(KeyError, match="'nope.mp4'"):
        load_frame_labels(ah_yaml=yml, ah_video="nope.mp4")


def test_stamp_csv_with_invalid_cells_and_tolerant_alignment(tmp_path):
    csv = _write(tmp_path / "labels.csv", [
        "stamp_ns,valence,arousal,hesitancy",
        "1000000000,0.5,0.25,1",
        "1040000000,,0.1,0",
        "1080000000,-5,-5,-1",
    ])
    labels = load_stamp_csv(csv)
    assert labels.key == KEY_STAMP and labels.tasks == ("va", "ah")
    stamps = np.array([1_000_000_400, 1_040_000_000, 1_080_000_000, 1_120_000_000])
    aligned = labels.align(np.arange(4), stamps, stamp_tolerance_ns=1_000)
    assert aligned.matched.tolist() == [True, True, True, False]
    assert aligned.valid["va"].tolist() == [True, False, False, False]
    assert aligned.valid["ah"].tolist() == [True, True, False, False]
    strict = labels.align(np.arange(4), stamps, stamp_tolerance_ns=100)
    assert strict.matched.tolist() == [False, True, True, False]


def test_stamp_csv_errors_name_file_line_and_columns(tmp_path):
    with pytest.raises(DataFormatError, match="no 'stamp_ns'"):
        load_stamp_csv(_write(tmp_path / "a.csv", ["time,valence,arousal", "1,0,0"]))
    with pytest.raises(DataFormatError, match=r"task 'va' has columns \['valence'\] but lacks \['arousal'\]"):
        load_stamp_csv(_write(tmp_path / "b.csv", ["stamp,valence", "1.0,0.5"]))
    with pytest.raises(DataFormatError, match=r"c.csv:3: va values \['2', '0'\] outside"):
        load_stamp_csv(_write(tmp_path / "c.csv", ["stamp,valence,arousal", "1.0,0.5,0", "2.0,2,0"]))
    with pytest.raises(DataFormatError, match=r"h.txt:3: '2': hesitancy must be 0, 1 or -1"):
        load_frame_labels(ah=_write(tmp_path / "h.txt", ["hesitancy", "1", "2"]))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_frame_labels(va=tmp_path / "missing.txt")


def test_index_labels_written_as_stamp_csv_read_back_the_same(tmp_path):
    va = _write(tmp_path / "v.txt", ["valence,arousal", "0.1,0.2", "-5,-5", "0.5,-0.5"])
    au = _write(tmp_path / "a.txt", [",".join(AU_NAMES)] + [",".join(["1", "0"] * 6)] * 3)
    labels = load_frame_labels(va=va, au=au)
    stamps = np.array([10, 20, 30], np.int64) * 1_000_000
    back = load_stamp_csv(write_stamp_csv(tmp_path / "out.csv", stamps, labels))
    for task in ("va", "au"):
        a = labels.align(np.arange(3), stamps)
        b = back.align(np.arange(3), stamps)
        assert a.valid[task].tolist() == b.valid[task].tolist()
        assert np.allclose(a.values[task], b.values[task])
