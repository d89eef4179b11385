"""HUME-Vidmimic2 emotional mimicry intensity (EMI): one label vector per video.

Layout (DESIGN §2)::

    <root>/face_images/<NNNNN>/<k>.jpg        (k sorted numerically)
    <root>/vit/<NNNNN>.pkl, <root>/wav2vec2/<NNNNN>.pkl   (optional features, not read here)
    <root>/train_split.csv, <root>/valid_split.csv       (or any path given)
        Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy
        1,0.12,0.5,...            (Filename: int, zero-padded to 5 digits on disk)

Every frame of a video carries the video's label; the challenge scores one prediction per
video (the mean of its frame predictions here, see :func:`abaw_ros.metrics.emi_pearson`).
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from abaw_ros.data.records import DataFormatError, VideoRecord, read_text, summarize
from abaw_ros.tasks import EMI_NAMES

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train_split.csv", "val": "valid_split.csv"}
HEADER = ("Filename", *EMI_NAMES)


def video_folder_name(filename: str) -> str:
    """``Filename`` column value -> folder name (``'7'`` -> ``'00007'``)."""
    number = int(filename)
    if number < 0:
        raise ValueError(f"Filename {filename!r} is negative")
    return f"{number:05d}"


def parse_split_csv(path: Path) -> list[tuple[str, np.ndarray, int]]:
    """``[(video folder name, label (6,) float32, line number)]`` of one split CSV.

    Two rows naming the same video (``1`` and ``01`` are both folder ``00001``) are an
    error naming both lines: the video would otherwise count twice.
    """
    if not path.is_file():
        raise DataFormatError(f"{path}: split file not found")
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    rows, lines = [], []
    for row in reader:
        rows.append(row)
        lines.append(reader.line_num)
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows or tuple(c.strip() for c in rows[0]) != HEADER:
        got = rows[0] if rows else "nothing"
        raise DataFormatError(f"{path}:1: header {got!r}, expected {','.join(HEADER)!r}")
    out = []
    first_line: dict[str, int] = {}
    for row, line_no in zip(rows[1:], lines[1:], strict=True):
        if len(row) != len(HEADER):
            raise DataFormatError(f"{path}:{line_no}: {len(row)} fields in {row!r}, expected {len(HEADER)}")
        try:
            name = video_folder_name(row[0])
            label = np.array([float(v) for v in row[1:]], dtype=np.float32)
        except ValueError:
            raise DataFormatError(f"{path}:{line_no}: not a number in {row!r}") from None
        if np.any(label < 0.0) or np.any(label > 1.0) or not np.all(np.isfinite(label)):
            raise DataFormatError(f"{path}:{line_no}: targets {row[1:]} outside [0, 1]")
        if name in first_line:
            raise DataFormatError(f"{path}:{line_no}: Filename {row[0]!r} is video {name} again (line "
                                  f"{first_line[name]}): each video may have one row")
        first_line[name] = line_no
        out.append((name, label, line_no))
    if not out:
        raise DataFormatError(f"{path}: empty split (header only)")
    return out


def list_face_images(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(p.stem), p) for p in folder.iterdir() if p.suffix.lower() == ".jpg" and p.stem.isdigit()]
    return sorted(found)


def load_hume(
    root: Path | str,
    split: str,
    split_csv: Path | str | None = None,
    missing_frames: str = "skip",
) -> list[VideoRecord]:
    """All videos of one HUME-Vidmimic2 split, in CSV order.

    A video listed in the split without face images is skipped and counted (``skip``,
    the default; the challenge's own baselines drop such videos too) or is an error
    naming the CSV line (``error``).
    """
    root = Path(root)
    csv_path = Path(split_csv) if split_csv is not None else root / SPLIT_FILES[_split_key(split)]
    records: list[VideoRecord] = []
    skipped = 0
    for name, label, line_no in parse_split_csv(csv_path):
        images = list_face_images(root / "face_images" / name)
        if not images:
            if missing_frames == "error":
                raise DataFormatError(f"{csv_path}:{line_no}: video {name} has no images in "
                                      f"{root / 'face_images' / name}")
            skipped += 1
            continue
        n = len(images)
        records.append(
            VideoRecord(
                task="emi",
                name=name,
                frames=[p for _, p in images],
                labels=np.repeat(label[None], n, axis=0),
                valid=np.ones(n, dtype=bool),
                frame_numbers=np.array([k for k, _ in images], dtype=np.int64),
                source=csv_path,
            )
        )
    if skipped:
        log.warning("%s: %d videos without face images skipped", csv_path, skipped)
    if not records:
        raise DataFormatError(f"{csv_path}: no video of the split has face images under {root / 'face_images'}")
    summarize(records, f"HUME-Vidmimic2 {split}")
    return records


def _split_key(split: str) -> str:
    aliases = {"train": "train", "val": "val", "valid": "val", "validation": "val"}
    if split.lower() not in aliases:
        raise ValueError(f"split={split!r}: choose from {sorted(aliases)}")
    return aliases[split.lower()]
