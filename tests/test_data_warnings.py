"""Inputs that run but would mislead, said out loud (each tool run as its own process):
an affect bag keeps the storage of the recording it comes from (a whole-file zstd sqlite3
bag, as ``ros2 bag record --compression-mode file`` writes, gets a sqlite3 affect bag); the
files of a split recording that lost its ``metadata.yaml`` are named as such before they
are evaluated as separate bags; an AU never active in the training split is warned about
and recorded in metrics.json instead of scoring F1 0.0 in silence."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abaw_ros.offline.bag_writers import ImageBagWriter

REPO = Path(__file__).resolve().parents[1]
MODEL_ARGS = ("-p", "backend:=onnxruntime", "-p", "warmup:=false", "--no-progress")
START_NS = 1_700_000_000_000_000_000


def abaw_affect(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "abaw_ros.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def compressed_sqlite_bag(path: Path, frames: int = 4) -> None:
    """A sqlite3 bag with whole-file zstd compression, written with rosbags as rosbag2 does
    (``<name>.db3.zstd`` beside a metadata.yaml saying compression_mode: file)."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from abaw_ros.perception.image import encode_image

    store = get_typestore(Stores.ROS2_HUMBLE)
    image, header, time = (store.types[f"{p}/msg/{n}"] for p, n in
                           (("sensor_msgs", "Image"), ("std_msgs", "Header"), ("builtin_interfaces", "Time")))
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3)
    writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i in range(frames):
            stamp = START_NS + i * 100_000_000
            height, width, step, data = encode_image(np.full((120, 160, 3), 30 * i, np.uint8), "bgr8")
            msg = image(header=header(stamp=time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="camera"),
                        height=height, width=width, encoding="bgr8", is_bigendian=0, step=step, data=data)
            writer.write(conn, stamp, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def test_a_compressed_sqlite3_bag_gets_a_sqlite3_affect_bag(tmp_path, model_bundle):
    bag = tmp_path / "rec"
    compressed_sqlite_bag(bag)
    assert [p.name for p in bag.iterdir() if p.name != "metadata.yaml"] == ["rec.db3.zstd"]
    result = abaw_affect("bag-eval", str(bag), "--no-plot", "--model-file-path", str(model_bundle), *MODEL_ARGS,
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "rec_affect"
    assert sorted(p.suffix for p in out.iterdir() if p.name != "metadata.yaml") == [".db3"]
    assert "storage_identifier: sqlite3" in (out / "metadata.yaml").read_text()
    report = json.loads((tmp_path / "rec_affect_report.json").read_text())
    assert report["run"]["output_storage"] == "sqlite3"
    # asked for, another storage is written
    result = abaw_affect("bag-eval", str(bag), "-o", str(tmp_path / "as_mcap"), "-s", "mcap", "--no-plot",
                         "--model-file-path", str(model_bundle), *MODEL_ARGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.suffix for p in (tmp_path / "as_mcap").iterdir() if p.name != "metadata.yaml"] == [".mcap"]


def test_a_split_recording_without_metadata_is_named_before_its_files_are_evaluated_apart(tmp_path, model_bundle):
    """rosbag2 splits a recording into <bag>_0.mcap, <bag>_1.mcap, ...; a recorder killed
    before writing metadata.yaml leaves only those files."""
    recording = tmp_path / "rec"
    for part in range(2):
        single = tmp_path / f"part{part}"
        with ImageBagWriter(single, "/camera/image_raw", "mcap") as writer:
            for i in range(3):
                writer.write(np.full((120, 160, 3), 20 * i, np.uint8), START_NS + (3 * part + i) * 100_000_000)
        recording.mkdir(exist_ok=True)
        (next(single.glob("*.mcap"))).rename(recording / f"rec_{part}.mcap")
    result = abaw_affect("bag-eval", str(recording), "-o", str(tmp_path / "out"), "--no-plot",
                         "--model-file-path", str(model_bundle), *MODEL_ARGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line and "split" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert "rec_0.mcap .. rec_1.mcap" in warnings[0] and "ros2 bag reindex" in warnings[0]
    assert "face ids and windows restart" in warnings[0]


def test_an_au_never_active_in_training_is_warned_about_and_recorded(tmp_path):
    pytest.importorskip("torch")
    from abaw_ros.data.fixtures import FixtureSpec, make_fixtures
    from abaw_ros.tasks import AU_NAMES

    paths = make_fixtures(tmp_path / "data", FixtureSpec(hume_videos=(2, 2), bah_videos=(2, 2)))
    column = AU_NAMES.index("AU15")
    train_files = sorted((paths.affwild2_annotations / "AU_Detection_Challenge" / "Train_Set").glob("*.txt"))
    assert train_files
    for path in train_files:  # AU15 never active in the training split; -1 rows stay invalid
        lines = path.read_text().splitlines()
        rows = [line.split(",") for line in lines[1:]]
        for row in rows:
            if row[column].strip() != "-1":
                row[column] = "0"
        path.write_text("\n".join([lines[0], *(",".join(row) for row in rows)]) + "\n")
    config = tmp_path / "train.yaml"
    config.write_text(
        "model: {n_levels: 1, window_length: 8, tasks: [au], freeze: all}\n"
        f"data: {{affwild2_images: {paths.affwild2_images}, affwild2_annotations: {paths.affwild2_annotations}}}\n"
        f"train: {{out_dir: {tmp_path / 'run'}, epochs: 1, batch_size: 4, eval_every: 1, augment: false, "
        f"cache_features: true, num_workers: 0, device: cpu, seed: 1}}\n")
    result = abaw_affect("train", "--config", str(config), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line and "never active" in line]
    assert len(warnings) == 1 and "AU15" in warnings[0], result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["au_never_positive"] == ["AU15"]
