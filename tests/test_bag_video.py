"""video-to-bag: a video the test writes with cv2.VideoWriter becomes a bag at the
video's rate (both storages, raw and compressed), its annotations a CSV keyed by the
bag's stamps; then bag-eval scores that bag through the command line."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from abaw_ros import cli
from abaw_ros.offline.bag_reader import ImageBagReader
from abaw_ros.offline.bag_types import COMPRESSED_IMAGE, IMAGE
from abaw_ros.tasks import AU_NAMES

FPS = 10.0
N_FRAMES = 12
START_S = 1_700_000_000


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, list[np.ndarray], dict[str, Path]]:
    """An MJPG video of the astronaut sliding right, and Aff-Wild2-style VA/AU files."""
    from skimage import data

    folder = tmp_path_factory.mktemp("video")
    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (288, 288))
    frames = []
    for i in range(N_FRAMES):
        frame = np.full((360, 480, 3), 110, np.uint8)
        frame[40:328, 10 + 8 * i:298 + 8 * i] = person
        frames.append(frame)
    path = folder / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (480, 360))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    rng = np.random.default_rng(3)
    va_rows = [f"{v:.3f},{a:.3f}" for v, a in rng.uniform(-0.8, 0.8, (N_FRAMES, 2))]
    au_rows = [",".join(str(int(x)) for x in row) for row in rng.random((N_FRAMES, 12)) > 0.6]
    labels = {"va": folder / "clip.va.txt", "au": folder / "clip.au.txt"}
    labels["va"].write_text("\n".join(["valence,arousal", *va_rows]) + "\n")
    labels["au"].write_text("\n".join([",".join(AU_NAMES), *au_rows]) + "\n")
    return path, frames, labels


@pytest.mark.parametrize(("storage", "compressed"), [("mcap", None), ("sqlite3", "jpeg")])
def test_video_becomes_a_bag_at_its_own_rate(tmp_path, video, storage, compressed):
    path, frames, labels = video
    bag = tmp_path / "clip_bag"
    args = ["video-to-bag", str(path), str(bag), "-s", storage, "--start", str(START_S), "--no-progress",
            "--va", str(labels["va"]), "--au", str(labels["au"])]
    if compressed:
        args += ["--compressed", compressed]
    assert cli.main(args) == 0

    topic = "/camera/image_raw" + ("/compressed" if compressed else "")
    with Reader(bag) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {topic: COMPRESSED_IMAGE if compressed else IMAGE}
    with ImageBagReader(bag, topic) as reader:
        read = list(reader.frames())
    stamps = [START_S * 10**9 + round(i * 1e9 / FPS) for i in range(N_FRAMES)]
    assert [f.stamp_ns for f in read] == stamps and [f.log_time_ns for f in read] == stamps
    for frame, original in zip(read, frames, strict=True):  # MJPG (and JPEG) are lossy
        assert frame.image.shape == original.shape
        assert np.abs(frame.image.astype(int) - original.astype(int)).mean() < 6

    csv_rows = (tmp_path / "clip_bag_labels.csv").read_text().splitlines()
    assert csv_rows[0].split(",")[:3] == ["stamp_ns", "valence", "arousal"] and len(csv_rows) == N_FRAMES + 1
    assert [int(r.split(",")[0]) for r in csv_rows[1:]] == stamps
    first_va = labels["va"].read_text().splitlines()[1].split(",")
    assert [float(x) for x in csv_rows[1].split(",")[1:3]] == pytest.approx([float(x) for x in first_va])


def test_bag_eval_scores_a_video_bag_by_stamp(tmp_path, video, model_bundle):
    path, _, labels = video
    bag = tmp_path / "clip_bag"
    assert cli.main(["video-to-bag", str(path), str(bag), "--start", str(START_S), "--no-progress",
                     "--va", str(labels["va"]), "--au", str(labels["au"])]) == 0
    code = cli.main(["bag-eval", str(bag), "--labels-csv", str(tmp_path / "clip_bag_labels.csv"),
                     "--model-file-path", str(model_bundle), "-p", "backend:=onnxruntime",
                     "-p", "warmup:=false", "--no-progress"])
    assert code == 0
    report = json.loads((tmp_path / "clip_bag_affect_report.json").read_text())
    assert report["run"]["frames_processed"] == N_FRAMES and report["run"]["frames_skipped"] == 0
    assert report["pipeline_config"]["model_file_path"] == str(model_bundle)
    for task, primary in (("va", "va_ccc_mean"), ("au", "au_f1_mean")):
        entry = report["metrics"][task]
        assert entry["frames_labelled"] == N_FRAMES and entry["frames_scored"] >= N_FRAMES - 3
        assert -1.0 <= entry["scores"][primary] <= 1.0
    plot = cv2.imread(str(tmp_path / "clip_bag_affect_timeline.png"))
    assert plot is not None and plot.shape == (1000, 1600, 3)


def test_video_errors_name_the_file(tmp_path, caplog):
    missing = tmp_path / "nope.mp4"
    assert cli.main(["video-to-bag", str(missing), str(tmp_path / "bag"), "--no-progress"]) == 2
    assert "nope.mp4" in caplog.text
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video" * 100)
    caplog.clear()
    assert cli.main(["video-to-bag", str(junk), str(tmp_path / "bag2"), "--no-progress"]) == 2
    assert "junk.avi" in caplog.text
