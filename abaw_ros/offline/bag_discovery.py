"""Which bags a batch evaluates: bags and folders of bags named on the command line, a
recording whose ``metadata.yaml`` is missing, each bag's label CSV and output name."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from abaw_ros.offline.bag_types import BagError, BagReadError

log = logging.getLogger(__name__)

STORAGE_SUFFIXES: tuple[str, ...] = (".mcap", ".db3")
# What bag-eval writes next to a bag; a folder scan does not take these for recordings.
OUTPUT_SUFFIX = "_affect"
LABELS_SUFFIX = "_labels.csv"  # what video-to-bag writes next to a bag


def is_bag(path: Path) -> bool:
    """A bag directory (with ``metadata.yaml``) or a single ``.mcap`` / ``.db3`` file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix in STORAGE_SUFFIXES)


def _bags_inside(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if is_bag(p) and not bag_name(p).endswith(OUTPUT_SUFFIX)),
                  key=lambda p: p.name)


def is_bag_folder(path: Path) -> bool:
    """A folder of bags: no ``metadata.yaml`` of its own, and bag sub-folders or more than
    one storage file. (One storage file alone is a recording whose recorder was killed
    before writing ``metadata.yaml``: a single bag.)"""
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return False
    inside = _bags_inside(path)
    return any(p.is_dir() for p in inside) or len(inside) > 1


def bag_name(path: Path) -> str:
    return path.name.removesuffix(path.suffix) if path.is_file() else path.name


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Expand bags and folders of bags (their bag directories and loose ``.mcap`` / ``.db3``
    files, sorted by name; outputs of earlier runs, ``*_affect``, are left out). Raises
    :class:`BagReadError` naming a path that is neither, or a folder without bags."""
    bags: list[Path] = []
    for item in paths:
        path = Path(item)
        if is_bag_folder(path):
            inside = _bags_inside(path)
            _warn_split_recording(path, inside)
            bags.extend(inside)
            continue
        if is_bag(path) or (path.is_dir() and _bags_inside(path)):
            bags.append(path)  # a bag, or a recording folder with one storage file
            continue
        if not path.exists():
            raise BagReadError(f"bag {str(path)!r} does not exist")
        if not path.is_dir():
            raise BagReadError(f"{str(path)!r} is not a ROS 2 bag: expected a bag directory, a .mcap or a "
                               f".db3 file, or a folder of bags")
        raise BagReadError(f"{str(path)!r} holds no bag (no sub-folder with metadata.yaml, no .mcap or "
                           f".db3 file) and has no metadata.yaml itself")
    seen: dict[Path, Path] = {}
    for bag in bags:
        key = bag.resolve()
        if key in seen:
            raise BagReadError(f"bag {str(bag)!r} is given twice")
        seen[key] = bag
    return bags


# rosbag2's writer names a recording's files <bag folder>_<N>.<ext> (N from 0, one more at
# each split; rosbag2_cpp SequentialWriter), compressed whole-file ones <...>.<ext>.zstd.
_SPLIT_FILE = re.compile(r"^(?P<prefix>.+)_(?P<index>\d+)\.(?:mcap|db3)(?:\.zstd)?$")


def split_recording_files(bags: Sequence[Path]) -> list[Path]:
    """The loose storage files among ``bags`` that look like the splits of one recording
    whose ``metadata.yaml`` is missing (a recorder killed before writing it): two or more
    files ``<prefix>_0``, ``<prefix>_1``, ... with one prefix; [] when there are none."""
    groups: dict[str, dict[int, Path]] = {}
    for bag in bags:
        match = _SPLIT_FILE.match(bag.name) if bag.is_file() else None
        if match:
            groups.setdefault(match["prefix"], {})[int(match["index"])] = bag
    for files in groups.values():
        if len(files) >= 2 and sorted(files) == list(range(len(files))):
            return [files[i] for i in sorted(files)]
    return []


def _warn_split_recording(folder: Path, bags: Sequence[Path]) -> None:
    split = split_recording_files(bags)
    if split:
        log.warning("%s has no metadata.yaml but holds %d files named like the splits of one recording (%s .. %s): "
                    "they are evaluated as separate bags, so face ids and windows restart at each file; to evaluate "
                    "them as one recording, rebuild its metadata.yaml first (ros2 bag reindex %s -s %s)",
                    folder, len(split), split[0].name, split[-1].name, folder,
                    "sqlite3" if ".db3" in split[0].name else "mcap")


def labels_for(bag: Path, labels_dir: Path | None) -> Path | None:
    """The stamp-keyed label CSV of ``bag``: ``<labels_dir>/<name>.csv`` or
    ``<labels_dir>/<name>_labels.csv`` when a labels folder is given, else
    ``<name>_labels.csv`` next to the bag (what ``video-to-bag`` writes); None if absent."""
    name = bag_name(bag)
    candidates = ([labels_dir / f"{name}.csv", labels_dir / f"{name}{LABELS_SUFFIX}"] if labels_dir is not None
                  else [bag.with_name(name + LABELS_SUFFIX)])
    return next((c for c in candidates if c.is_file()), None)


def output_paths(bags: Sequence[Path], output_dir: Path) -> list[Path]:
    """``<output_dir>/<bag name>_affect`` for every bag; two bags of one name are an error."""
    names: dict[str, Path] = {}
    for bag in bags:
        name = bag_name(bag)
        if name in names:
            raise BagError(f"bags {str(names[name])!r} and {str(bag)!r} share the name {name!r}: their outputs "
                           f"in {str(output_dir)!r} would collide; rename one")
        names[name] = bag
    return [output_dir / f"{bag_name(bag)}{OUTPUT_SUFFIX}" for bag in bags]
