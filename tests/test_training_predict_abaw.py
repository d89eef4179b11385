"""``abaw-affect predict-abaw``: the unlabelled test set in the submission format, every
frame of every test video (trailing frames without a face included, from the nearest
crop), or a refusal; the official 0.5 threshold unless asked; EMI and AH per video; and
``check-submission``, which finds a short or malformed file."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from abaw_ros.cli import main as cli_main
from abaw_ros.data.sources import load_affwild2_test
from abaw_ros.data.submission import check_submission
from abaw_ros.models import ModelConfig, create_affect_net, save_checkpoint
from abaw_ros.tasks import AU_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# video7: frames 1..8, faces on 1 2 4 5 (frame 3 and the last three frames have none)
IMAGES = {"video7": [1, 2, 4, 5], "video9": [1, 2, 3]}
FRAMES = {"video7": 8, "video9": 3}


@pytest.fixture
def test_set(tmp_path):
    for video, numbers in IMAGES.items():
        folder = tmp_path / "cropped_aligned" / video
        folder.mkdir(parents=True)
        for n in numbers:
            cv2.imwrite(str(folder / f"{n:05d}.jpg"), np.full((112, 112, 3), 20 * n, np.uint8))
    videos = tmp_path / "Valence_Arousal_Estimation_Challenge_test_set_release.txt"
    videos.write_text("video9\nvideo7\n")
    counts = tmp_path / "frame_counts.txt"
    counts.write_text("video,frames\nvideo7,8\nvideo9,3\n")
    return tmp_path, videos, counts


def checkpoint(tmp_path, tasks, **thresholds):
    torch.manual_seed(0)
    model = create_affect_net(ModelConfig(tasks=tasks, n_levels=1, window_length=4, input_size=64, freeze="all"))
    return save_checkpoint(tmp_path / f"{'_'.join(tasks)}.pt", model, trained=True,
                           **({"au_thresholds": [0.5] * 12} | thresholds))


def predict(*args: str) -> int:
    return cli_main(["predict-abaw", "--num-workers", "0", "--device", "cpu", *args])


def locations(path):
    return [line.split(",")[0] for line in path.read_text().splitlines()[1:]]


def test_video_list_alone_is_refused_and_nothing_is_written(test_set, tmp_path, capsys):
    root, videos, _ = test_set
    out = tmp_path / "sub"
    code = predict("--checkpoint", str(checkpoint(tmp_path, ("va",))), "--task", "va",
                   "--affwild2-images", str(root), "--videos", str(videos), "--out", str(out))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sample" in err and "--frame-counts" in err and "short" in err
    assert not out.exists()


def test_every_frame_with_trailing_no_face_frames_from_frame_counts(test_set, tmp_path):
    root, videos, counts = test_set
    out = tmp_path / "sub"
    code = predict("--checkpoint", str(checkpoint(tmp_path, ("va",))), "--task", "va", "--affwild2-images", str(root),
                   "--videos", str(videos), "--frame-counts", str(counts), "--out", str(out))
    assert code == 0
    video7 = out / "VA" / "video7.txt"
    assert video7.read_text().splitlines()[0] == "image_location,valence,arousal"
    assert locations(video7) == [f"video7/{n:05d}.jpg" for n in range(1, 9)]
    values = np.array([[float(x) for x in line.split(",")[1:]] for line in video7.read_text().splitlines()[1:]])
    assert values.shape == (8, 2) and np.all(np.abs(values) <= 1)
    assert locations(out / "VA_predictions.txt") == (
        [f"video9/{n:05d}.jpg" for n in (1, 2, 3)] + [f"video7/{n:05d}.jpg" for n in range(1, 9)])
    expected = {"video9": [1, 2, 3], "video7": list(range(1, 9))}
    assert check_submission(out, "va", expected) == []
    # the frames without a face show the nearest earlier crop
    record = load_affwild2_test(root, "va", ["video7"], {"video7": list(range(1, 9))})[0]
    assert [p.name for p in record.frames] == ["00001.jpg", "00002.jpg", "00002.jpg", "00004.jpg",
                                               "00005.jpg", "00005.jpg", "00005.jpg", "00005.jpg"]


def test_frames_counted_from_the_test_videos(test_set, tmp_path):
    root, videos, _ = test_set
    raw = tmp_path / "videos"
    raw.mkdir()
    for video, n in FRAMES.items():
        writer = cv2.VideoWriter(str(raw / f"{video}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
        assert writer.isOpened()
        for i in range(n):
            writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
        writer.release()
    out = tmp_path / "sub"
    code = predict("--checkpoint", str(checkpoint(tmp_path, ("va",))), "--task", "va", "--affwild2-images", str(root),
                   "--videos", str(videos), "--raw-videos", str(raw), "--out", str(out))
    assert code == 0
    assert locations(out / "VA" / "video7.txt") == [f"video7/{n:05d}.jpg" for n in range(1, 9)]
    assert cli_main(["check-submission", "--task", "va", "--submission", str(out), "--videos", str(videos),
                     "--raw-videos", str(raw)]) == 0


def test_au_official_threshold_by_default_tuned_on_request(test_set, tmp_path):
    root, _, _ = test_set
    sample = tmp_path / "sample.txt"
    sample.write_text("image_location,AU1\n" + "".join(f"video9/{n:05d}.jpg,\n" for n in (1, 2, 3))
                      + "".join(f"video7/{n:05d}.jpg,\n" for n in range(1, 9)))
    ckpt = str(checkpoint(tmp_path, ("va", "au"), au_thresholds=[0.01] * 12))  # tuned: about every AU on
    labels = {}
    for which in ("official", "tuned"):
        out = tmp_path / which
        code = predict("--checkpoint", ckpt, "--task", "au", "--affwild2-images", str(root), "--sample", str(sample),
                       "--thresholds", which, "--out", str(out))
        assert code == 0
        lines = (out / "AU_predictions.txt").read_text().splitlines()
        assert lines[0] == "image_location," + ",".join(AU_NAMES)
        assert [line.split(",")[0] for line in lines[1:]] == (
            [f"video9/{n:05d}.jpg" for n in (1, 2, 3)] + [f"video7/{n:05d}.jpg" for n in range(1, 9)])
        labels[which] = np.array([[int(x) for x in line.split(",")[1:]] for line in lines[1:]])
        assert cli_main(["check-submission", "--task", "au", "--submission", str(out), "--sample", str(sample)]) == 0
    assert labels["tuned"].all()
    assert not labels["official"].all()  # an untrained network is not above 0.5 on every AU and frame


def test_check_finds_a_short_file(test_set, tmp_path, capsys):
    root, videos, counts = test_set
    out = tmp_path / "sub"
    assert predict("--checkpoint", str(checkpoint(tmp_path, ("va",))), "--task", "va", "--affwild2-images", str(root),
                   "--videos", str(videos), "--frame-counts", str(counts), "--out", str(out)) == 0
    per_video = out / "VA" / "video7.txt"
    per_video.write_text("\n".join(per_video.read_text().splitlines()[:6]) + "\n")  # stops at the last face
    capsys.readouterr()
    code = cli_main(["check-submission", "--task", "va", "--submission", str(out), "--videos", str(videos),
                     "--frame-counts", str(counts)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "video7.txt: 5 frames, expected 8 (first missing: video7/00006.jpg)" in err


def test_an_existing_submission_is_not_replaced(test_set, tmp_path, capsys):
    root, videos, counts = test_set
    out = tmp_path / "sub"
    out.mkdir()
    (out / "VA_predictions.txt").write_text("mine\n")
    code = predict("--checkpoint", str(checkpoint(tmp_path, ("va",))), "--task", "va", "--affwild2-images", str(root),
                   "--videos", str(videos), "--frame-counts", str(counts), "--out", str(out))
    assert code == 2 and (out / "VA_predictions.txt").read_text() == "mine\n"
    assert "exists" in capsys.readouterr().err


def test_emi_and_ah_one_row_per_video(tmp_path):
    hume, bah = tmp_path / "hume", tmp_path / "bah"
    for name, n in (("00003", 5), ("00011", 3)):
        folder = hume / "face_images" / name
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            cv2.imwrite(str(folder / f"{k}.jpg"), np.full((112, 112, 3), 30 * k, np.uint8))
    for vid, n in (("Visite_1/P001/video-01", 6), ("Visite_2/P007/video-03", 2)):
        folder = bah / vid
        folder.mkdir(parents=True)
        for k in range(n):
            cv2.imwrite(str(folder / f"frame-{k}.jpg"), np.full((112, 112, 3), 25 * k, np.uint8))
    emi_list = tmp_path / "test_split.csv"
    emi_list.write_text("Filename\n3\n11\n")
    ah_list = tmp_path / "test.txt"
    ah_list.write_text("Visite_1/P001/video-01.mp4,0,so I guess\nVisite 2/P007/video-03.mp4,0,yes\n")
    ckpt = str(checkpoint(tmp_path, ("emi", "ah"), au_thresholds=None))
    out = tmp_path / "sub"
    assert predict("--checkpoint", ckpt, "--task", "emi", "--hume-root", str(hume), "--videos", str(emi_list),
                   "--out", str(out)) == 0
    rows = (out / "EMI_predictions.csv").read_text().splitlines()
    assert rows[0] == "Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy"
    assert [r.split(",")[0] for r in rows[1:]] == ["3", "11"]
    assert predict("--checkpoint", ckpt, "--task", "ah", "--bah-frames", str(bah), "--videos", str(ah_list),
                   "--out", str(out)) == 0
    rows = (out / "AH_predictions.txt").read_text().splitlines()
    assert rows[0] == "video,hesitancy"
    assert [r.split(",")[0] for r in rows[1:]] == ["Visite_1/P001/video-01", "Visite_2/P007/video-03"]
    assert all(r.split(",")[1] in ("0", "1") for r in rows[1:])
    assert len((out / "AH_frames.txt").read_text().splitlines()) == 1 + 6 + 2
    for task, videos in (("emi", emi_list), ("ah", ah_list)):
        assert cli_main(["check-submission", "--task", task, "--submission", str(out), "--videos", str(videos)]) == 0


def test_unknown_video_is_one_line_exit_2(test_set, tmp_path, capsys):
    root, _, counts = test_set
    videos = tmp_path / "list.txt"
    videos.write_text("video404\n")
    code = predict("--checkpoint", str(checkpoint(tmp_path, ("va",))), "--affwild2-images", str(root),
                   "--videos", str(videos), "--frame-counts", str(counts), "--out", str(tmp_path / "o"))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "video404" in err and len(err.splitlines()) == 1
