"""Each loader reads its generated fixture (official layouts) and returns the right frames,
labels and masks; invalid rows, missing images and bad input behave as documented."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from abaw_ros.data import DataFormatError, load_affwild2, load_bah, load_hume, read_rgb
from abaw_ros.data.fixtures import FixtureSpec, au_disc_centres, au_disc_colours, make_fixtures

SPEC = FixtureSpec(frames_per_video=16, affwild2_videos=(2, 1), hume_videos=(3, 2), hume_frames=4,
                   bah_videos=(2, 2), seed=5)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("fixtures"), SPEC)


def copy_of(fx, tmp_path):
    shutil.copytree(fx.root, tmp_path / "copy")
    return make_paths(tmp_path / "copy")


def make_paths(root):
    class P:
        affwild2_images = root / "affwild2"
        affwild2_annotations = root / "affwild2" / "annotations"
        hume = root / "hume"
        bah = root / "bah"
    return P


# ---------------------------------------------------------------- Aff-Wild2

@pytest.mark.parametrize("split", ["train", "val"])
def test_affwild2_va_labels_masks_and_frames(fx, split):
    records = load_affwild2(fx.affwild2_images, fx.affwild2_annotations, "va", split)
    truth = {k[2]: v for k, v in fx.truth.items() if k[:2] == ("va", split)}
    assert sorted(r.name for r in records) == sorted(truth)
    if split == "train":
        assert {"videova7_left", "videova7_right"} <= {r.name for r in records}
    brightness, valence = [], []
    for r in records:
        t = truth[r.name]
        assert len(r) == SPEC.frames_per_video
        np.testing.assert_array_equal(r.valid, t["valid"])
        np.testing.assert_allclose(r.labels[r.valid], t["labels"][t["valid"]], atol=1e-6)
        assert np.all(r.labels[~r.valid] == 0)  # the -5 markers never reach a loss
        np.testing.assert_array_equal(r.frame_numbers, np.arange(1, SPEC.frames_per_video + 1))
        assert r.substituted == len(t["missing"])
        for i, n in enumerate(r.frame_numbers):
            if n in t["missing"]:  # gap: nearest earlier frame that exists
                earlier = max(m for m in range(1, n) if m not in t["missing"])
                assert r.frames[i].name == f"{earlier:05d}.jpg"
            else:
                assert r.frames[i].name == f"{n:05d}.jpg" and r.frames[i].parent.name == r.name
                if r.valid[i]:
                    brightness.append(read_rgb(r.frames[i]).mean())
                    valence.append(r.labels[i, 0])
    # the frame paired with a row shows that row's valence (brightness)
    assert np.corrcoef(brightness, valence)[0, 1] > 0.9


def test_affwild2_au_rows_match_the_drawn_discs(fx):
    records = load_affwild2(fx.affwild2_images, fx.affwild2_annotations, "au", "train")
    hits = total = 0
    for r in records:
        t = fx.truth[("au", "train", r.name)]
        np.testing.assert_array_equal(r.valid, t["valid"])
        np.testing.assert_array_equal(r.labels[r.valid], t["labels"][t["valid"]])
        for i in np.flatnonzero(r.valid):
            if r.frame_numbers[i] in t["missing"]:
                continue
            img = read_rgb(r.frames[i]).astype(float)
            drawn = np.array([np.abs(img[y - 2:y + 3, x - 2:x + 3].mean((0, 1)) - c).max() < 25
                              for (x, y), c in zip(au_disc_centres(), au_disc_colours(), strict=True)])
            hits += int(np.sum(drawn == (r.labels[i] > 0)))
            total += 12
    assert hits / total > 0.97


def test_affwild2_skip_and_error_policies(fx, caplog):
    with caplog.at_level(logging.INFO):
        skipped = load_affwild2(fx.affwild2_images, fx.affwild2_annotations, "va", "val", missing_frames="skip")
    r = skipped[0]
    missing = fx.truth[("va", "val", r.name)]["missing"]
    assert len(r) == SPEC.frames_per_video - len(missing)
    assert not set(missing) & set(r.frame_numbers.tolist())
    assert all(p.name == f"{n:05d}.jpg" for p, n in zip(r.frames, r.frame_numbers, strict=True))
    with pytest.raises(DataFormatError) as err:
        load_affwild2(fx.affwild2_images, fx.affwild2_annotations, "va", "val", missing_frames="error")
    first = missing[0]
    assert f"{r.name}.txt:{first + 1}: annotated frame {first} has no image" in str(err.value)


@pytest.mark.parametrize(
    "task, line_no, new_line, message",
    [
        ("va", 3, "0.2;0.4", "1 fields"),
        ("va", 4, "0.2,abc", "not a number"),
        ("va", 5, "1.5,0.1", "outside [-1, 1]"),
        ("au", 3, "0,1,0", "3 fields"),
        ("au", 4, "0,1,0,0,0,0,0,0,0,0,2,0", "must be 0, 1 or -1"),
        ("va", 1, "arousal,valence", "header"),
        ("au", 1, "AU1,AU2", "header"),
    ],
)
def test_affwild2_bad_lines_name_file_and_line(fx, tmp_path, task, line_no, new_line, message):
    p = copy_of(fx, tmp_path)
    challenge = "VA_Estimation_Challenge" if task == "va" else "AU_Detection_Challenge"
    ann = sorted((p.affwild2_annotations / challenge / "Validation_Set").glob("*.txt"))[0]
    lines = ann.read_text().splitlines()
    lines[line_no - 1] = new_line
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        load_affwild2(p.affwild2_images, p.affwild2_annotations, task, "val")
    assert f"{ann}:{line_no}:" in str(err.value) and message in str(err.value)


def test_affwild2_empty_split_and_video_without_images(fx, tmp_path):
    p = copy_of(fx, tmp_path)
    val_dir = p.affwild2_annotations / "VA_Estimation_Challenge" / "Validation_Set"
    name = sorted(val_dir.glob("*.txt"))[0].stem
    shutil.rmtree(p.affwild2_images / "cropped_aligned" / name)
    with pytest.raises(DataFormatError, match=f"{name}.txt: no images for video"):
        load_affwild2(p.affwild2_images, p.affwild2_annotations, "va", "val")
    for f in val_dir.glob("*.txt"):
        f.unlink()
    with pytest.raises(DataFormatError, match=f"{val_dir}: no annotation files"):
        load_affwild2(p.affwild2_images, p.affwild2_annotations, "va", "val")


# ---------------------------------------------------------------- HUME-Vidmimic2

def test_hume_frames_in_numeric_order_one_label_per_video(fx):
    for split in ("train", "val"):
        records = load_hume(fx.hume, split)
        assert len(records) == SPEC.hume_videos[0 if split == "train" else 1]
        for r in records:
            t = fx.truth[("emi", split, r.name)]
            assert len(r.name) == 5 and r.name.isdigit()
            assert [p.stem for p in r.frames] == [str(k) for k in range(1, 3 * SPEC.hume_frames + 1, 3)]
            np.testing.assert_allclose(r.labels, np.repeat(t["labels"][None], len(r), axis=0), atol=1e-6)
            assert r.valid.all()


def test_hume_video_without_images_is_skipped_and_counted(fx, tmp_path, caplog):
    p = copy_of(fx, tmp_path)
    shutil.rmtree(p.hume / "face_images" / "00001")
    with caplog.at_level(logging.WARNING):
        records = load_hume(p.hume, "train")
    assert [r.name for r in records] == ["00002", "00003"]
    assert "1 videos without face images skipped" in caplog.text
    with pytest.raises(DataFormatError, match=r"train_split.csv:2: video 00001 has no images"):
        load_hume(p.hume, "train", missing_frames="error")


@pytest.mark.parametrize(
    "line_no, new_line, message",
    [(1, "Filename,Admiration", "header"), (3, "2,0.1,0.2", "fields"), (2, "1,0.1,0.2,0.3,0.4,0.5,1.7", "outside [0, 1]"),
     (2, "x1,0.1,0.2,0.3,0.4,0.5,0.6", "not a number")],
)
def test_hume_bad_csv_names_file_and_line(fx, tmp_path, line_no, new_line, message):
    p = copy_of(fx, tmp_path)
    csv_path = p.hume / "train_split.csv"
    lines = csv_path.read_text().splitlines()
    lines[line_no - 1] = new_line
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        load_hume(p.hume, "train")
    assert f"{csv_path}:{line_no}:" in str(err.value) and message in str(err.value)


def test_hume_empty_split(fx, tmp_path):
    p = copy_of(fx, tmp_path)
    (p.hume / "valid_split.csv").write_text((p.hume / "valid_split.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(DataFormatError, match="empty split"):
        load_hume(p.hume, "val")


# ---------------------------------------------------------------- BAH

def test_bah_matches_visite_spellings_and_frame_labels(fx):
    assert "Visite 1/" in (fx.bah / "annotation.yml").read_text()
    assert "Visite_1/" in (fx.bah / "split" / "train.txt").read_text()
    for split in ("train", "val"):
        records = load_bah(fx.bah, split)
        assert len(records) == SPEC.bah_videos[0 if split == "train" else 1]
        shifted, labels = [], []
        for r in records:
            t = fx.truth[("ah", split, r.name)]
            assert r.name.startswith("Visite_")
            np.testing.assert_array_equal(r.labels[:, 0], t["labels"])
            np.testing.assert_array_equal(r.frame_numbers, np.arange(SPEC.frames_per_video))
            assert r.substituted == len(t["missing"])
            for i, n in enumerate(r.frame_numbers):
                expected = n - 1 if n in t["missing"] else n
                assert r.frames[i].name == f"frame-{expected}.jpg"
                if n not in t["missing"]:
                    img = read_rgb(r.frames[i]).astype(float)
                    shifted.append(np.abs(img[:, :22] - img[:, :1]).mean() < 1e-6 + 4)  # replicated edge
                    labels.append(r.labels[i, 0] > 0)
        assert np.mean(np.array(shifted) == np.array(labels)) > 0.95


def test_bah_bad_input_names_file_and_line(fx, tmp_path):
    p = copy_of(fx, tmp_path)
    split = p.bah / "split" / "val.txt"
    split.write_text(split.read_text() + "Visite_9/P999/video-99.mp4,1,not in the yaml\n")
    n_lines = len(split.read_text().splitlines())
    with pytest.raises(DataFormatError, match=f"{split}:{n_lines}: video 'Visite_9/P999/video-99.mp4' not in"):
        load_bah(p.bah, "val")
    split.write_text("Visite_1/PV000/video-00.mp4,1,ok\nVisite_2/PV001/video-01.mp4,maybe,bad\n")
    with pytest.raises(DataFormatError, match=f"{split}:2: label 'maybe'"):
        load_bah(p.bah, "val")
    split.write_text("\n")
    with pytest.raises(DataFormatError, match="empty split"):
        load_bah(p.bah, "val")
    yml = p.bah / "annotation.yml"
    yml.write_text(yml.read_text().replace(", 0]", ", 3]", 1).replace("- 0\n", "- 3\n", 1))
    split.write_text("Visite_1/PV000/video-00.mp4,1,ok\n")
    with pytest.raises(DataFormatError, match="frame_annotation entry .*must be 0 or 1"):
        load_bah(p.bah, "val")


# ---------------------------------------------------------------- bad input from other tools

def _bah_split(p):
    return p.bah / "split" / "val.txt"


@pytest.mark.parametrize("which", ["affwild2", "hume", "bah"])
def test_bytes_that_are_not_utf8_name_file_and_line(fx, tmp_path, which):
    """A file saved as Latin-1 by a spreadsheet (``é`` as byte 0xe9) on its 3rd line."""
    p = copy_of(fx, tmp_path)
    if which == "affwild2":
        path = sorted((p.affwild2_annotations / "VA_Estimation_Challenge" / "Validation_Set").glob("*.txt"))[0]
        def load():
            return load_affwild2(p.affwild2_images, p.affwild2_annotations, "va", "val")
    elif which == "hume":
        path = p.hume / "train_split.csv"
        def load():
            return load_hume(p.hume, "train")
    else:
        path = _bah_split(p)
        def load():
            return load_bah(p.bah, "val")
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2] + ("é".encode("latin-1") if which != "affwild2" else b"\xe9")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataFormatError, match=rf"{path}:3: byte 0xe9 .*not UTF-8"):
        load()


def test_affwild2_file_with_only_a_header_is_an_error(fx, tmp_path):
    p = copy_of(fx, tmp_path)
    ann = sorted((p.affwild2_annotations / "AU_Detection_Challenge" / "Validation_Set").glob("*.txt"))[0]
    ann.write_text(ann.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataFormatError, match=rf"{ann}:2: no rows after the header"):
        load_affwild2(p.affwild2_images, p.affwild2_annotations, "au", "val")


def test_bah_first_row_with_a_bad_label_is_not_taken_as_a_header(fx, tmp_path):
    p = copy_of(fx, tmp_path)
    split = _bah_split(p)
    rows = split.read_text().splitlines()
    first_video = rows[0].split(",")[0]
    split.write_text("\n".join([f"{first_video},yes,it was", *rows[1:]]) + "\n")
    with pytest.raises(DataFormatError, match=rf"{split}:1: label 'yes' must be 0 or 1"):
        load_bah(p.bah, "val")
    # A real header line (no video path in its first column) is still skipped.
    split.write_text("\n".join(["video,label,transcript", *rows]) + "\n")
    assert len(load_bah(p.bah, "val")) == len(rows)


def test_hume_rows_naming_the_same_video_twice_are_refused(fx, tmp_path):
    p = copy_of(fx, tmp_path)
    csv_path = p.hume / "train_split.csv"
    lines = csv_path.read_text().splitlines()
    again = "01" + lines[1][lines[1].index(","):]  # '1' written again as '01'
    csv_path.write_text("\n".join([*lines, again]) + "\n")
    with pytest.raises(DataFormatError, match=rf"{csv_path}:{len(lines) + 1}: Filename '01' is video 00001 "
                                              rf"again \(line 2\)"):
        load_hume(p.hume, "train")


def test_bah_duplicate_frames_videos_and_keys_are_refused(fx, tmp_path):
    p = copy_of(fx, tmp_path)
    yml = p.bah / "annotation.yml"
    text = yml.read_text()
    lines = text.splitlines()
    entry = next(i for i, line in enumerate(lines) if "frame-3.jpg" in line)  # "- - path" then "  - 0|1"
    yml.write_text("\n".join([*lines[:entry + 2], *lines[entry:entry + 2], *lines[entry + 2:]]) + "\n")
    with pytest.raises(DataFormatError, match=rf"{yml}:{entry + 3}: .*frame 3 again \(line {entry + 1}\)"):
        load_bah(p.bah, "val")
    # The same video under both spellings of its visit.
    key = next(line for line in lines if line.startswith("Visite 1/"))
    block_end = next(i for i in range(lines.index(key) + 1, len(lines)) if not lines[i].startswith(" "))
    copy = [key.replace("Visite 1/", "Visite_1/"), *lines[lines.index(key) + 1:block_end]]
    yml.write_text(text + "\n".join(copy) + "\n")
    with pytest.raises(DataFormatError, match=r"same video as an earlier key"):
        load_bah(p.bah, "val")
    # The same key twice: YAML would keep the last one and lose the first video silently.
    yml.write_text(text + "\n".join([key, *lines[lines.index(key) + 1:block_end]]) + "\n")
    with pytest.raises(DataFormatError, match=r"appears a second time"):
        load_bah(p.bah, "val")
    split = _bah_split(p)
    yml.write_text(text)
    split.write_text(split.read_text() + split.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataFormatError, match=r"is listed again \(first at line 1\)"):
        load_bah(p.bah, "val")


def test_a_yaml_alias_bomb_is_refused_before_it_expands(fx, tmp_path):
    """458 bytes of nested aliases once took 7 s and 845 MiB in the BAH loader."""
    p = copy_of(fx, tmp_path)
    yml = p.bah / "annotation.yml"
    lines = ['a: &a ["x/frame-0.jpg", 0]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("Visite 1/PV000/video-00.mp4: {frame_annotation: *i}")
    yml.write_text("\n".join(lines) + "\n")
    assert len(yml.read_bytes()) < 600
    with pytest.raises(DataFormatError, match=rf"{yml}:\d+: .*YAML alias"):
        load_bah(p.bah, "val")
