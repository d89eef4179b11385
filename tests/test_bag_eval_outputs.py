"""bag-eval never deletes or replaces what it did not write, and one bad frame does not end
a run: the command line driven the way a user drives it, on bags written with rosbags."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from abaw_ros import cli
from abaw_ros.config import PipelineConfig
from abaw_ros.offline.bag_reader import read_affect_bag
from abaw_ros.offline.bag_types import IMAGE, affect_typestore
from abaw_ros.offline.bag_writers import ImageBagWriter

ROOT = Path(__file__).resolve().parents[1]
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 40_000_000


@pytest.fixture(scope="module")
def config(model_bundle) -> PipelineConfig:
    base = PipelineConfig.from_yaml(ROOT / "config" / "affect.yaml")
    return dataclasses.replace(base, model_file_path=str(model_bundle), backend="onnxruntime", warmup=False)


def write_bag(path: Path, n: int, storage: str = "mcap", depth_at: tuple[int, ...] = (),
              size: tuple[int, int] = (64, 48)) -> list[int]:
    """``n`` small camera frames (no face: the pipeline is quick); the frames at
    ``depth_at`` are 16UC1 depth images, as a mis-remapped driver would publish them."""
    store = affect_typestore()
    stamps = [START_NS + i * PERIOD_NS for i in range(n)]
    rng = np.random.default_rng(0)
    with ImageBagWriter(path, storage=storage) as writer:
        for i, stamp in enumerate(stamps):
            if i in depth_at:
                header = store.types["std_msgs/msg/Header"](
                    stamp=store.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                    frame_id="camera")
                writer.write_message(store.types[IMAGE](
                    header=header, height=48, width=64, encoding="16UC1", is_bigendian=0, step=128,
                    data=np.zeros(48 * 128, np.uint8)), stamp)
            else:
                writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), stamp)
    return stamps


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) with the hash of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_cli(config: PipelineConfig, bag: Path, *extra: str) -> int:
    return cli.main(["bag-eval", str(bag), "--no-progress", "--no-plot", "--model-file-path",
                     config.model_file_path, "-p", "backend:=onnxruntime", "-p", "warmup:=false", *extra])


def stamps_of(bag: Path) -> list[int]:
    return [m.stamp_ns for m in read_affect_bag(bag)]


def test_a_rerun_refuses_and_keeps_the_earlier_affect_bag_until_overwrite(tmp_path, config, caplog):
    bag = tmp_path / "rec"
    stamps = write_bag(bag, 4)
    assert run_cli(config, bag) == 0
    out = tmp_path / "rec_affect"
    before = tree_digest(out)
    with caplog.at_level(logging.ERROR):
        assert run_cli(config, bag) == 2
    assert "exists already" in caplog.text and "--overwrite" in caplog.text
    assert tree_digest(out) == before  # not deleted, not touched
    bag2 = tmp_path / "rec2"
    write_bag(bag2, 3)
    assert run_cli(config, bag2, "-o", str(out), "--overwrite") == 0
    assert stamps_of(out) == stamps[:3]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_folder_with_other_files_is_never_replaced(tmp_path, config, caplog, overwrite):
    bag = tmp_path / "rec"
    write_bag(bag, 2)
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "thesis.tex").write_text("my work\n")
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 8}\n")
    before = tree_digest(folder)
    with caplog.at_level(logging.ERROR):
        assert run_cli(config, bag, "-o", str(folder), *(["--overwrite"] if overwrite else [])) == 2
    assert "not replacing it" in caplog.text and str(folder) in caplog.text
    assert tree_digest(folder) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_the_input_recording_is_never_an_output(tmp_path, config, caplog, overwrite):
    """``bag-eval rec/rec.mcap -o rec`` once deleted the recording."""
    bag = tmp_path / "rec"
    write_bag(bag, 2)
    before = tree_digest(bag)
    flags = ["--overwrite"] if overwrite else []
    with caplog.at_level(logging.ERROR):
        assert run_cli(config, bag / "rec.mcap", "-o", str(bag), *flags) == 2
        assert run_cli(config, bag, "--report", str(bag / "rec.mcap"), *flags) == 2
    assert "input" in caplog.text
    assert tree_digest(bag) == before


def test_two_outputs_of_one_run_never_share_a_path(tmp_path, config, caplog):
    bag = tmp_path / "rec"
    write_bag(bag, 3)
    same = tmp_path / "same.png"
    with caplog.at_level(logging.ERROR):
        assert cli.main(["bag-eval", str(bag), "--no-progress", "--model-file-path", config.model_file_path,
                         "-p", "backend:=onnxruntime", "--report", str(same), "--plot", str(same)]) == 2
    assert "would both be written to" in caplog.text and not same.exists()
    assert not (tmp_path / "rec_affect").exists()


def test_report_replaces_only_its_own_file_unless_overwrite(tmp_path, config, caplog):
    bag = tmp_path / "rec"
    write_bag(bag, 2)
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    with caplog.at_level(logging.ERROR):
        assert run_cli(config, bag, "--report", str(video)) == 2
    assert "was not written by bag-eval" in caplog.text
    assert video.read_bytes().startswith(b"\x00\x00\x00\x18ftyp") and not (tmp_path / "rec_affect").exists()
    report = tmp_path / "summary.json"
    assert run_cli(config, bag, "--report", str(report)) == 0
    first = json.loads(report.read_text())
    assert first["format"] == "abaw_ros.bag_eval.report"
    # Our own report is recognised and replaced by the next run (into another bag).
    assert run_cli(config, bag, "-o", str(tmp_path / "again"), "--report", str(report)) == 0
    assert json.loads(report.read_text())["run"]["output_bag"] == str(tmp_path / "again")
    assert run_cli(config, bag, "-o", str(tmp_path / "third"), "--report", str(video), "--overwrite") == 0
    assert json.loads(video.read_text())["run"]["frames_processed"] == 2


def test_an_undecodable_frame_is_skipped_and_counted_or_stops_strict_runs(tmp_path, config, caplog):
    """One 16UC1 frame at message 6 of 8: skipped and counted like the node does, the other
    seven processed. With --strict the run stops there, exit 2, and the six results before
    it stay in the affect bag."""
    bag = tmp_path / "rec"
    stamps = write_bag(bag, 8, depth_at=(6,))
    assert run_cli(config, bag) == 0
    report = json.loads((tmp_path / "rec_affect_report.json").read_text())
    assert report["run"]["frames_processed"] == 7 and report["run"]["frames_skipped_unsupported"] == 1
    assert report["run"]["skipped"][0]["index"] == 6 and "'16UC1'" in report["run"]["skipped"][0]["reason"]
    assert stamps_of(tmp_path / "rec_affect") == stamps[:6] + stamps[7:]

    strict_out = tmp_path / "strict"
    with caplog.at_level(logging.ERROR):
        assert run_cli(config, bag, "-o", str(strict_out), "--strict") == 2
    assert "'16UC1'" in caplog.text and "message 6" in caplog.text
    assert stamps_of(strict_out) == stamps[:6]
    strict_report = json.loads((tmp_path / "strict_report.json").read_text())
    assert strict_report["run"]["frames_processed"] == 6 and "'16UC1'" in strict_report["run"]["stopped"]
    # An incomplete run never replaces a complete earlier bag, even with --overwrite.
    assert run_cli(config, bag, "--strict", "--overwrite") == 2
    assert stamps_of(tmp_path / "rec_affect") == stamps[:6] + stamps[7:]
    assert stamps_of(tmp_path / "rec_affect.partial") == stamps[:6]


def test_a_damaged_chunk_is_reported_and_read_past(tmp_path, config, caplog):
    """Bytes flipped on disk inside the third MCAP chunk (frames 4 and 5): the other six
    frames are processed, the two lost ones are counted, and the exit status says damage."""
    from test_bag_io import flip_bytes_in_mcap_chunk, mcap_chunk_offsets

    bag = tmp_path / "rec"
    stamps = write_bag(bag, 8, size=(640, 480))  # two frames per 1 MiB MCAP chunk
    assert len(mcap_chunk_offsets(bag / "rec.mcap")) == 4
    flip_bytes_in_mcap_chunk(bag / "rec.mcap", which=2)
    with caplog.at_level(logging.ERROR):
        assert run_cli(config, bag) == 4
    assert "2 of 8 frames could not be read" in caplog.text and "checksum" in caplog.text
    report = json.loads((tmp_path / "rec_affect_report.json").read_text())
    assert report["run"]["frames_processed"] == 6 and report["run"]["frames_unread_after_damage"] == 2
    assert "2 messages lost" in report["run"]["damage"]
    assert stamps_of(tmp_path / "rec_affect") == stamps[:4] + stamps[6:]


def test_a_damaged_sqlite_page_loses_only_its_rows(tmp_path, config, caplog):
    """One page of a .db3 zeroed on disk (a lost sector) in the middle of the file: the
    rows whose data ran through it are lost and counted, every other frame is processed;
    exit status 4."""
    import sqlite3

    bag = tmp_path / "rec"
    stamps = write_bag(bag, 10, "sqlite3", size=(160, 120))
    db3 = bag / "rec.db3"
    with sqlite3.connect(db3) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db3.read_bytes())
    middle = len(data) // page // 2 * page
    data[middle:middle + page] = bytes(page)
    db3.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        assert run_cli(config, bag) == 4
    assert "could not be read" in caplog.text
    report = json.loads((tmp_path / "rec_affect_report.json").read_text())
    lost = report["run"]["frames_unread_after_damage"]
    assert 1 <= lost <= 2 and report["run"]["frames_processed"] == 10 - lost
    written = stamps_of(tmp_path / "rec_affect")
    assert len(written) == 10 - lost and set(written) < set(stamps)
    assert written[-1] == stamps[-1]  # read on past the damage to the end


def test_our_mcap_output_carries_chunk_crcs(tmp_path):
    """Every chunk of a bag we write has its CRC, so damage to it is detected on reading."""
    import struct
    import zlib

    from test_bag_io import mcap_chunk_offsets

    bag = tmp_path / "rec"
    write_bag(bag, 4, size=(640, 480))
    data = (bag / "rec.mcap").read_bytes()
    offsets = mcap_chunk_offsets(bag / "rec.mcap")
    assert len(offsets) >= 2
    for offset in offsets:
        _start, _end, size, crc = struct.unpack_from("<QQQI", data, offset + 9)
        (name_len,) = struct.unpack_from("<I", data, offset + 9 + 28)
        assert name_len == 0  # uncompressed
        (length,) = struct.unpack_from("<Q", data, offset + 9 + 32)
        records = data[offset + 9 + 40:offset + 9 + 40 + length]
        assert crc != 0 and crc == zlib.crc32(records)


@pytest.mark.parametrize(("rows", "warning"), [(2, "only 2 of the 20 processed frames have a label row"),
                                               (2000, "2000 label rows for a bag of 20 frames")])
def test_label_files_that_do_not_fit_the_bag_are_warned_about(tmp_path, config, caplog, rows, warning):
    """A VA file 10x shorter or 100x longer than the bag (another video's file, a wrong
    --first-frame): scored anyway, and said in the log and the report."""
    bag = tmp_path / "rec"
    write_bag(bag, 20)
    va = tmp_path / "video.txt"
    va.write_text("valence,arousal\n" + "0.1,0.2\n" * rows)
    with caplog.at_level(logging.WARNING):
        assert run_cli(config, bag, "--va", str(va)) == 0
    assert warning in caplog.text and str(va) in caplog.text
    report = json.loads((tmp_path / "rec_affect_report.json").read_text())
    assert any(warning in w for w in report["label_warnings"])
