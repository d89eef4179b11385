"""Small data sets in exactly the official ABAW layouts, with a learnable signal.

The frames are real faces (Labeled Faces in the Wild and the astronaut picture shipped with
scikit-image) and every label depends on what the frame shows, so a loader bug (wrong
row/frame pairing, wrong order, wrong mask) or a training bug shows up as a metric at
chance level:

- VA: valence sets the brightness, arousal a warm (red) / cool (blue) tint of the face;
- AU: each active AU fills its own cell of a 4x3 grid with its own colour (a patch of about
  22x28 pixels, large enough to survive in the 7x7 map of a frozen backbone);
- EMI: per video, Admiration = brightness, Amusement = red tint, Determination = blue tint,
  Empathic Pain = contrast, Excitement = size of a dark mouth ellipse, Joy = mean of
  Amusement and Excitement;
- AH: a hesitant frame shows the face shifted sideways.

Train and validation use different face identities. The official quirks are included:
Aff-Wild2 invalid rows (``-5,-5`` / ``-1``), annotated frames with no image (gaps), a
two-subject video (``_left`` / ``_right``); HUME frame names that sort wrongly as text
(``10.jpg`` before ``2.jpg``); BAH's ``Visite 1`` (YAML) vs ``Visite_1`` (split files).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from abaw_ros.data.affwild2 import CHALLENGE_DIRS
from abaw_ros.tasks import AU_NAMES, EMI_NAMES, TASKS, VA_NAMES

SIZE = 112


@dataclass
class FixtureSpec:
    """How much to write. Defaults (1792 frames): a few seconds to write, a few CPU
    minutes to learn with ``config/train_fixture.yaml``; many identities rather than long
    videos, so that validation (other faces) generalizes."""

    frames_per_video: int = 16
    affwild2_videos: tuple[int, int] = (10, 6)  # (train, val) per task, plus one _left/_right pair in train
    # AU has twelve outputs to learn: its training set has au_video_factor times as many
    # videos, and all its videos are au_length_factor times as long, as VA's.
    au_video_factor: int = 2
    au_length_factor: int = 2
    hume_videos: tuple[int, int] = (32, 12)
    hume_frames: int = 8
    bah_videos: tuple[int, int] = (12, 4)
    seed: int = 0


@dataclass
class FixturePaths:
    root: Path
    affwild2_images: Path
    affwild2_annotations: Path
    hume: Path
    bah: Path
    truth: dict = field(default_factory=dict)  # (task, split, video) -> what was written


# ---------------------------------------------------------------------------- rendering

def face_pool() -> list[np.ndarray]:
    """Real face crops, 112x112x3 float, each normalized to mean 128 and std 40."""
    from skimage import data

    faces = data.lfw_subset()
    pool = [np.repeat(cv2.resize(f.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)[..., None],
                      3, axis=2) for f in faces]
    astronaut = data.astronaut()[30:230, 150:350].astype(np.float32)
    pool.insert(0, cv2.resize(astronaut, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    out = []
    for f in pool:
        f = f - f.mean()
        out.append(f / (f.std() + 1e-6) * 40.0 + 128.0)
    return out


def au_disc_centres() -> list[tuple[int, int]]:
    """Centre of each AU's patch (cells of a 4x3 grid), in AU_NAMES order."""
    xs, ys = (22, 45, 68, 91), (26, 56, 86)
    return [(x, y) for y in ys for x in xs]


def au_disc_colours() -> list[tuple[float, float, float]]:
    """One saturated hue per AU (30 degrees apart), RGB 0..255."""
    hsv = np.array([[[15 * k, 255, 255] for k in range(12)]], dtype=np.uint8)  # OpenCV hue: 0..180
    return [tuple(float(v) for v in c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]]


def render(
    face: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.0,
    contrast: float = 1.0,
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0),
    aus: np.ndarray | None = None,
    mouth: float = 0.0,
    band: float = 0.0,
    shift: int = 0,
) -> np.ndarray:
    img = (face - 128.0) * contrast + 128.0 + brightness + np.asarray(tint, dtype=np.float32)
    if shift:
        m = np.float32([[1, 0, shift], [0, 1, 0]])
        img = cv2.warpAffine(img, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE)
    if band > 0:
        half = int(1 + 9 * band)
        img[40 - half:40 + half] = 0.35 * img[40 - half:40 + half]
    if mouth > 0:
        cv2.ellipse(img, (56, 88), (int(4 + 22 * mouth), int(2 + 10 * mouth)), 0, 0, 360, (15, 15, 15), -1)
    if aus is not None:
        for (x, y), colour, on in zip(au_disc_centres(), au_disc_colours(), aus, strict=True):
            if on > 0:
                cv2.rectangle(img, (x - 11, y - 14), (x + 11, y + 14), colour, -1)
    img = img + rng.normal(0.0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def smooth_curve(n: int, rng: np.random.Generator, amplitude: float = 0.8) -> np.ndarray:
    t = np.arange(n)
    period = rng.uniform(20, 50)
    return (amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))).astype(np.float32)


def binary_segments(n: int, rng: np.random.Generator, p_on: float, min_len: int = 6, max_len: int = 20) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    t = 0
    on = rng.random() < p_on
    while t < n:
        length = int(rng.integers(min_len, max_len + 1))
        out[t:t + length] = float(on)
        t += length
        on = rng.random() < p_on
    return out


# ---------------------------------------------------------------------------- writers

def _write_affwild2(paths: FixturePaths, spec: FixtureSpec, faces: list[np.ndarray],
                    rng: np.random.Generator) -> None:
    face_ids = iter(rng.permutation(np.arange(1, len(faces))))
    for split_key, split_dir in (("train", "Train_Set"), ("val", "Validation_Set")):
        for task in ("va", "au"):
            n_videos = spec.affwild2_videos[0 if split_key == "train" else 1]
            n = spec.frames_per_video
            if task == "au":
                n *= spec.au_length_factor
                n_videos *= spec.au_video_factor if split_key == "train" else 1
            names = [f"{task}{split_key}{k:02d}-30-640x360" for k in range(n_videos)]
            if split_key == "train":
                names += [f"video{task}7_left", f"video{task}7_right"]
            for name in names:
                face = faces[next(face_ids)]
                valence, arousal = smooth_curve(n, rng), smooth_curve(n, rng)
                p_on = rng.uniform(0.15, 0.35, size=len(AU_NAMES))
                # AU states change every 8 frames (about a third of a second at 25 fps)
                aus = np.stack([binary_segments(n, rng, p, min_len=8, max_len=8) for p in p_on], axis=1)
                # Gaps: annotated frames without an image (no face detected).
                n_missing, n_invalid = max(1, n // 16), max(2, n // 12)
                missing = set(int(x) for x in rng.choice(np.arange(3, n - 1), size=n_missing, replace=False) + 1)
                # Invalid rows: one run per video.
                start = int(rng.integers(1, n - n_invalid))
                invalid = np.zeros(n, dtype=bool)
                invalid[start:start + n_invalid] = True
                for i in range(n):
                    frame_no = i + 1
                    if frame_no in missing:
                        continue
                    img = render(face, rng, brightness=65.0 * valence[i],
                                 tint=(55.0 * arousal[i], 0.0, -55.0 * arousal[i]),
                                 aus=aus[i] if task == "au" else None)
                    write_jpg(paths.affwild2_images / "cropped_aligned" / name / f"{frame_no:05d}.jpg", img)
                ann = paths.affwild2_annotations / CHALLENGE_DIRS[task] / split_dir / f"{name}.txt"
                ann.parent.mkdir(parents=True, exist_ok=True)
                if task == "va":
                    labels = np.stack([valence, arousal], axis=1).round(3)
                    labels[invalid] = TASKS[task].invalid_label
                    rows = [",".join(f"{v:g}" for v in row) for row in labels]
                    header = ",".join(VA_NAMES)
                else:
                    labels = aus.copy()
                    labels[invalid] = TASKS[task].invalid_label
                    rows = [",".join(str(int(v)) for v in row) for row in labels]
                    header = ",".join(AU_NAMES)
                ann.write_text(header + "\n" + "\n".join(rows) + "\n")
                paths.truth[(task, split_key, name)] = {
                    "labels": labels, "valid": ~invalid, "missing": sorted(missing), "annotation": ann,
                }


def _write_hume(paths: FixturePaths, spec: FixtureSpec, faces: list[np.ndarray], rng: np.random.Generator) -> None:
    face_ids = iter(rng.permutation(np.arange(1, len(faces))))
    number = 1
    for split_key, csv_name in (("train", "train_split.csv"), ("val", "valid_split.csv")):
        rows = []
        for _ in range(spec.hume_videos[0 if split_key == "train" else 1]):
            face = faces[next(face_ids) % len(faces)]
            adm, amu, det, pain, exc = rng.uniform(0.05, 0.95, size=5)
            label = np.array([adm, amu, det, pain, exc, (amu + exc) / 2], dtype=np.float32).round(4)
            name = f"{number:05d}"
            # Frame names 1, 4, 7, 10, ...: text order differs from numeric order.
            for k in range(1, 3 * spec.hume_frames + 1, 3):
                img = render(face, rng, brightness=110.0 * (adm - 0.5), band=pain,
                             tint=(90.0 * (amu - 0.5), 0.0, 90.0 * (det - 0.5)), mouth=exc)
                write_jpg(paths.hume / "face_images" / name / f"{k}.jpg", img)
            rows.append([str(number), *[f"{v:g}" for v in label]])
            paths.truth[("emi", split_key, name)] = {"labels": label, "frames": spec.hume_frames}
            number += 1
        with (paths.hume / csv_name).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["Filename", *EMI_NAMES])
            writer.writerows(rows)


def _write_bah(paths: FixturePaths, spec: FixtureSpec, faces: list[np.ndarray], rng: np.random.Generator) -> None:
    n = spec.frames_per_video
    face_ids = iter(rng.permutation(np.arange(1, len(faces))))
    annotation: dict[str, dict] = {}
    (paths.bah / "split").mkdir(parents=True, exist_ok=True)
    for split_key in ("train", "val"):
        lines = []
        for k in range(spec.bah_videos[0 if split_key == "train" else 1]):
            face = faces[next(face_ids)]
            visit = 1 + k % 2
            participant = f"P{split_key[0].upper()}{k:03d}"
            rel = f"{participant}/video-{k:02d}"
            labels = binary_segments(n, rng, 0.4, min_len=6, max_len=16)
            missing = {int(rng.integers(2, n - 2))}
            for i in range(n):
                if i in missing:
                    continue
                img = render(face, rng, shift=22 if labels[i] > 0 else 0)
                write_jpg(paths.bah / "cropped-aligned-faces" / f"Visite_{visit}" / rel / f"frame-{i}.jpg", img)
            annotation[f"Visite {visit}/{rel}.mp4"] = {
                "frame_annotation": [[f"/data/BAH/Visite {visit}/{rel}/frame-{i}.jpg", int(labels[i])]
                                     for i in range(n)],
            }
            video_label = int(labels.max())
            lines.append(f"Visite_{visit}/{rel}.mp4,{video_label},well, I am not sure, maybe")
            paths.truth[("ah", split_key, f"Visite_{visit}/{rel}")] = {"labels": labels, "missing": sorted(missing)}
        (paths.bah / "split" / f"{split_key}.txt").write_text("\n".join(lines) + "\n")
    import yaml

    (paths.bah / "annotation.yml").write_text(yaml.safe_dump(annotation, sort_keys=True))


def make_fixtures(out_dir: Path | str, spec: FixtureSpec | None = None) -> FixturePaths:
    """Write Aff-Wild2 (VA, AU), HUME-Vidmimic2 (EMI) and BAH (AH) fixtures under ``out_dir``."""
    spec = spec or FixtureSpec()
    if spec.frames_per_video < 12:
        raise ValueError(f"frames_per_video={spec.frames_per_video}: need >= 12 for gaps and invalid runs")
    if spec.au_video_factor < 1 or spec.au_length_factor < 1:
        raise ValueError(f"au_video_factor={spec.au_video_factor}, au_length_factor={spec.au_length_factor}: "
                         "must be >= 1")
    root = Path(out_dir)
    paths = FixturePaths(
        root=root,
        affwild2_images=root / "affwild2",
        affwild2_annotations=root / "affwild2" / "annotations",
        hume=root / "hume",
        bah=root / "bah",
    )
    faces = face_pool()
    # Within a data set, train and validation videos draw distinct faces (while the pool lasts).
    _write_affwild2(paths, spec, faces, np.random.default_rng(spec.seed))
    _write_hume(paths, spec, faces, np.random.default_rng(spec.seed + 1))
    _write_bah(paths, spec, faces, np.random.default_rng(spec.seed + 2))
    (root / "fixture_spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return paths
