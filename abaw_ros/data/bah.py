"""BAH ambivalence/hesitancy (AH): per-frame 0/1 labels from ``annotation.yml``.

Layout (DESIGN §2; where frames live is a loader setting)::

    <root>/annotation.yml
        Visite 1/P001/video-01.mp4:
          frame_annotation:
          - [.../frame-0.jpg, 0]
          - [.../frame-1.jpg, 1]
    <root>/split/{train,val,test}.txt      <video path>,<0|1>,<transcript>
        Visite_1/P001/video-01.mp4,1,so I guess, maybe ...
    <frames_root>/<video id>/frame-<N>.jpg  (frames_root defaults to <root>/cropped-aligned-faces)

The YAML writes ``Visite 1`` where the split files write ``Visite_1``: both are matched
through :func:`normalize_video_path`. ``<video id>`` is the normalized split path without
its extension; ``<N>`` is taken from each YAML entry's file name, whatever directory the
entry names. The split's second column (video-level label) is kept in ``extra``; the
transcript may contain commas. Videos are sampled at about 24 fps.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from abaw_ros.data.records import DataFormatError, VideoRecord, read_text, resolve_missing_frames, summarize
from abaw_ros.safe_yaml import safe_load_with_nodes

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
FPS = 24.0
_VISIT = re.compile(r"Visite[ _](\d+)")
_FRAME = re.compile(r"frame-(\d+)\.jpg$")


def normalize_video_path(path: str) -> str:
    """One spelling for YAML keys and split entries: ``Visite 1`` -> ``Visite_1``,
    forward slashes, no leading ``./``."""
    p = path.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return _VISIT.sub(r"Visite_\1", p)


def video_id(path: str) -> str:
    """Normalized video path without extension: the frame folder's relative path."""
    p = PurePosixPath(normalize_video_path(path))
    return str(p.with_suffix("")) if p.suffix else str(p)


def _looks_like_video_path(text: str) -> bool:
    p = PurePosixPath(normalize_video_path(text))
    return len(p.parts) > 1 or bool(p.suffix)


def parse_split_file(path: Path) -> list[tuple[str, int, str, int]]:
    """``[(normalized video path, video label, transcript, line number)]``.

    A first line is taken as a header (and skipped) only when its first column is not a
    video path (``video,label,transcript``); a first row naming a video with a label other
    than 0/1 is an error like any other row, not a header. A video listed twice is an
    error naming both lines.
    """
    if not path.is_file():
        raise DataFormatError(f"{path}: split file not found")
    out = []
    first_line: dict[str, int] = {}
    for i, line in enumerate(read_text(path).splitlines()):
        line_no = i + 1
        if not line.strip():
            continue
        fields = line.split(",", 2)
        if len(fields) < 2:
            raise DataFormatError(f"{path}:{line_no}: expected '<video path>,<0|1>,<transcript>', got {line!r}")
        label = fields[1].strip()
        if label not in ("0", "1"):
            if line_no == 1 and not _looks_like_video_path(fields[0]):
                log.info("%s:1: %r taken as a header", path, line)
                continue
            raise DataFormatError(f"{path}:{line_no}: label {label!r} must be 0 or 1")
        video = normalize_video_path(fields[0])
        if video in first_line:
            raise DataFormatError(f"{path}:{line_no}: video {video!r} is listed again (first at line "
                                  f"{first_line[video]}): each video may be listed once")
        first_line[video] = line_no
        out.append((video, int(label), fields[2] if len(fields) > 2 else "", line_no))
    if not out:
        raise DataFormatError(f"{path}: empty split")
    return out


def load_annotation_yaml(path: Path) -> dict[str, list[tuple[int, int]]]:
    """``{normalized video path: [(frame number, 0|1), ...] sorted by frame number}``.

    Refused with :class:`DataFormatError`: YAML aliases and repeated keys
    (:mod:`abaw_ros.safe_yaml`), two keys that name the same video (``Visite 1/...`` and
    ``Visite_1/...``), and a frame number given twice for one video.
    """
    if not path.is_file():
        raise DataFormatError(f"{path}: annotation file not found")
    try:
        data, root = safe_load_with_nodes(read_text(path), str(path))
    except yaml.YAMLError as exc:
        raise DataFormatError(f"{path}: not valid YAML: {exc}") from None
    lines = _entry_lines(root)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a mapping of video path -> {{frame_annotation: [...]}}")
    out: dict[str, list[tuple[int, int]]] = {}
    for key, value in data.items():
        entries = value.get("frame_annotation") if isinstance(value, dict) else None
        if not isinstance(entries, list):
            raise DataFormatError(f"{path}:{lines.get((str(key), None), '?')}: video {key!r} has no "
                                  f"'frame_annotation' list")
        frames = []
        for j, entry in enumerate(entries):
            where = f"{path}:{lines.get((str(key), j), '?')}: video {key!r}, frame_annotation entry {j}"
            if not (isinstance(entry, list | tuple) and len(entry) == 2):
                raise DataFormatError(f"{where}: expected [frame path, 0|1], got {entry!r}")
            match = _FRAME.search(str(entry[0]))
            if match is None:
                raise DataFormatError(f"{where}: {entry[0]!r} does not end in frame-<N>.jpg")
            if entry[1] not in (0, 1) or isinstance(entry[1], bool):
                raise DataFormatError(f"{where}: label {entry[1]!r} must be 0 or 1")
            frames.append((int(match.group(1)), int(entry[1])))
        numbers = [n for n, _ in frames]
        if len(set(numbers)) != len(numbers):
            seen: dict[int, int] = {}
            for j, n in enumerate(numbers):
                if n in seen:
                    raise DataFormatError(
                        f"{path}:{lines.get((str(key), j), '?')}: video {key!r}, frame_annotation entry {j}: "
                        f"frame {n} again (line {lines.get((str(key), seen[n]), '?')}): each frame may be "
                        f"labelled once")
                seen[n] = j
        video = normalize_video_path(str(key))
        if video in out:
            raise DataFormatError(f"{path}:{lines.get((str(key), None), '?')}: video {key!r} is the same "
                                  f"video as an earlier key ({video!r}): each video may appear once")
        out[video] = sorted(frames)
    return out


def _entry_lines(root: yaml.Node | None) -> dict[tuple[str, int | None], int]:
    """``{(video key, entry index): line}`` and ``{(video key, None): line of the key}`` of an
    annotation.yml node tree, for error messages."""
    lines: dict[tuple[str, int | None], int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key_node, value_node in root.value:
        key = str(key_node.value)
        lines[(key, None)] = key_node.start_mark.line + 1
        if not isinstance(value_node, yaml.MappingNode):
            continue
        for inner_key, inner_value in value_node.value:
            if inner_key.value == "frame_annotation" and isinstance(inner_value, yaml.SequenceNode):
                for j, entry in enumerate(inner_value.value):
                    lines[(key, j)] = entry.start_mark.line + 1
    return lines


def list_bah_frames(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.iterdir():
        match = _FRAME.search(p.name)
        if match:
            found[int(match.group(1))] = p
    return found


def load_bah(
    root: Path | str,
    split: str,
    split_file: Path | str | None = None,
    frames_root: Path | str | None = None,
    annotation_file: Path | str | None = None,
    missing_frames: str = "nearest",
) -> list[VideoRecord]:
    """All videos of one BAH split, in split-file order.

    A split entry missing from the YAML is an error naming the split file and line; a
    video with no frame image at all is an error, except under ``skip`` (left out,
    counted). Rows without their own image follow ``missing_frames``.
    """
    root = Path(root)
    split_path = Path(split_file) if split_file is not None else root / "split" / SPLIT_FILES[split]
    frames_root = Path(frames_root) if frames_root is not None else root / "cropped-aligned-faces"
    yaml_path = Path(annotation_file) if annotation_file is not None else root / "annotation.yml"
    annotations = load_annotation_yaml(yaml_path)
    records: list[VideoRecord] = []
    skipped = 0
    for video, video_label, _transcript, line_no in parse_split_file(split_path):
        if video not in annotations:
            raise DataFormatError(f"{split_path}:{line_no}: video {video!r} not in {yaml_path}")
        labelled = annotations[video]
        if not labelled:
            raise DataFormatError(f"{yaml_path}: video {video!r} has an empty frame_annotation list")
        folder = frames_root / video_id(video)
        images = list_bah_frames(folder)
        if not images:
            if missing_frames == "skip":
                skipped += 1
                continue
            raise DataFormatError(f"{split_path}:{line_no}: video {video!r} has no frames in {folder}")
        numbers = [n for n, _ in labelled]
        frames, missing = resolve_missing_frames(images, numbers, missing_frames, yaml_path)
        keep = np.array([f is not None for f in frames])
        if missing:
            log.debug("%s: %d of %d annotated frames have no image in %s", video, missing, len(numbers), folder)
        labels = np.array([[lab] for _, lab in labelled], dtype=np.float32)
        records.append(
            VideoRecord(
                task="ah",
                name=video_id(video),
                frames=[f for f in frames if f is not None],
                labels=labels[keep],
                valid=np.ones(int(keep.sum()), dtype=bool),
                frame_numbers=np.array(numbers, dtype=np.int64)[keep],
                source=yaml_path,
                substituted=0 if missing_frames == "skip" else missing,
                extra={"video_label": video_label, "split_line": line_no},
            )
        )
    if skipped:
        log.warning("%s: %d videos without frames skipped", split_path, skipped)
    if not records:
        raise DataFormatError(f"{split_path}: no video of the split has frames under {frames_root}")
    summarize(records, f"BAH {split}")
    return records
