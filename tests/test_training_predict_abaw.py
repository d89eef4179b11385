"""``abaw-affect predict-abaw``: the unlabelled test set in the submission format, one line
per requested frame (frames without a face image included), per video and combined."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from abaw_ros.cli import main as cli_main
from abaw_ros.models import ModelConfig, create_affect_net, save_checkpoint
from abaw_ros.tasks import AU_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def test_set(tmp_path):
    for video, numbers in (("video7", [1, 2, 4, 5]), ("video9", [1, 2, 3])):  # video7 has no 00003.jpg
        folder = tmp_path / "cropped_aligned" / video
        folder.mkdir(parents=True)
        for n in numbers:
            cv2.imwrite(str(folder / f"{n:05d}.jpg"), np.full((112, 112, 3), 20 * n, np.uint8))
    videos = tmp_path / "Valence_Arousal_Estimation_Challenge_test_set_release.txt"
    videos.write_text("video9\nvideo7\n")
    return tmp_path, videos


def checkpoint(tmp_path, tasks):
    torch.manual_seed(0)
    model = create_affect_net(ModelConfig(tasks=tasks, n_levels=1, window_length=4, input_size=64, freeze="all"))
    return save_checkpoint(tmp_path / f"{'_'.join(tasks)}.pt", model, au_thresholds=[0.5] * 12, trained=True)


def test_va_predictions_per_video_and_combined(test_set, tmp_path):
    root, videos = test_set
    out = tmp_path / "sub"
    code = cli_main(["predict-abaw", "--checkpoint", str(checkpoint(tmp_path, ("va",))), "--affwild2-images",
                     str(root), "--videos", str(videos), "--num-workers", "0", "--device", "cpu", "--out", str(out)])
    assert code == 0
    video7 = (out / "VA" / "video7.txt").read_text().splitlines()
    assert video7[0] == "image_location,valence,arousal"
    assert [line.split(",")[0] for line in video7[1:]] == [f"video7/0000{n}.jpg" for n in (1, 2, 3, 4, 5)]
    values = np.array([[float(x) for x in line.split(",")[1:]] for line in video7[1:]])
    assert values.shape == (5, 2) and np.all(np.abs(values) <= 1)
    combined = (out / "VA_predictions.txt").read_text().splitlines()
    assert combined[0] == video7[0]
    assert [line.split(",")[0] for line in combined[1:]] == (
        [f"video9/0000{n}.jpg" for n in (1, 2, 3)] + [f"video7/0000{n}.jpg" for n in (1, 2, 3, 4, 5)])


def test_au_predictions_follow_the_sample_file(test_set, tmp_path):
    root, _ = test_set
    sample = tmp_path / "sample.txt"
    sample.write_text("image_location,AU1\nvideo7/00002.jpg,\nvideo7/00003.jpg,\nvideo9/00001.jpg,\n")
    out = tmp_path / "sub"
    code = cli_main(["predict-abaw", "--checkpoint", str(checkpoint(tmp_path, ("va", "au"))), "--task", "au",
                     "--affwild2-images", str(root), "--sample", str(sample), "--num-workers", "0", "--device", "cpu",
                     "--out", str(out)])
    assert code == 0
    lines = (out / "AU_predictions.txt").read_text().splitlines()
    assert lines[0] == "image_location," + ",".join(AU_NAMES)
    assert [line.split(",")[0] for line in lines[1:]] == ["video7/00002.jpg", "video7/00003.jpg", "video9/00001.jpg"]
    assert all(len(line.split(",")) == 13 and set(line.split(",")[1:]) <= {"0", "1"} for line in lines[1:])


def test_unknown_video_is_one_line_exit_2(test_set, tmp_path, capsys):
    root, _ = test_set
    videos = tmp_path / "list.txt"
    videos.write_text("video404\n")
    code = cli_main(["predict-abaw", "--checkpoint", str(checkpoint(tmp_path, ("va",))), "--affwild2-images",
                     str(root), "--videos", str(videos), "--device", "cpu", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "video404" in err and len(err.splitlines()) == 1
