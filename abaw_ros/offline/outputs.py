"""What the offline tools may write over, and how they write so that nothing is lost.

The rule: a tool deletes or replaces only what it created itself. A bag it writes carries
a marker in its ``metadata.yaml`` (rosbag2 ``custom_data``, which every rosbag2 reader
carries through untouched), and ``--overwrite`` replaces an existing path only when it is
such a bag of the same kind holding nothing but its own files, and never the input. A
report is recognised by its ``format`` field. Anything else is refused with a message
naming the path and what was found there; nothing is removed.

A new bag is written into a staging folder next to its destination and moved into place
when it is complete (:class:`StagedBag`, over :class:`abaw_ros.outputs.Staging`: the same
staging, lock and clean-up of dead runs' leftovers as every other tool), so an existing
bag stays whole until its replacement exists, and a run that stops early still leaves the
results it wrote.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from abaw_ros.outputs import OutputError, Staging, is_json_of_format, write_bytes, write_faults

__all__ = ["OutputError", "bag_marker", "check_bag_output", "check_file_output", "is_our_report",
           "write_file_atomically", "StagedBag"]

log = logging.getLogger(__name__)

MARKER_KEY = "abaw_ros.bag"
AFFECT_BAG = "affect"  # FaceAffectArray bags of bag-eval
IMAGE_BAG = "images"  # camera bags of video-to-bag
_KIND_NAMES = {AFFECT_BAG: "an affect bag written by bag-eval", IMAGE_BAG: "an image bag written by video-to-bag"}
REPORT_FORMAT = "abaw_ros.bag_eval.report"
_MAX_REPORT_BYTES = 64 << 20  # a larger file is not a report of ours
_MAX_METADATA_BYTES = 16 << 20


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def bag_marker(path: str | Path) -> str | None:
    """The kind of bag (``affect``, ``images``) a tool of this package wrote at ``path``,
    or None when ``path`` is not such a bag or holds files the bag does not name."""
    from abaw_ros.safe_yaml import safe_load_file

    path = Path(path)
    meta_path = path / "metadata.yaml"
    if not path.is_dir() or path.is_symlink() or not meta_path.is_file():
        return None
    if meta_path.stat().st_size > _MAX_METADATA_BYTES:
        return None
    try:
        meta = safe_load_file(meta_path)
        info = meta["rosbag2_bagfile_information"]
        kind = (info.get("custom_data") or {}).get(MARKER_KEY)
        files = {str(f) for f in info.get("relative_file_paths") or []}
    except Exception:  # unreadable or not rosbag2 metadata: not ours
        return None
    if not isinstance(kind, str):
        return None
    own = files | {"metadata.yaml"}
    for entry in path.iterdir():
        if entry.name not in own or entry.is_dir() or entry.is_symlink():
            return None
    return kind


def check_bag_output(path: str | Path, kind: str, overwrite: bool, inputs: Iterable[str | Path] = ()) -> bool:
    """Raise :class:`OutputError` unless a bag of ``kind`` may be written at ``path``.

    Returns True when an existing bag will be replaced (``overwrite`` and a ``kind`` bag
    of ours), False when ``path`` is free. ``inputs`` are paths this run reads: the output
    may be neither one of them, nor inside one, nor contain one.
    """
    path = Path(path)
    for item in inputs:
        item = Path(item)
        if _is_within(path, item) or _is_within(item, path):
            raise OutputError(f"output bag {str(path)!r} would overlap the input {str(item)!r}: "
                              f"choose a path outside it")
    if not path.exists() and not path.is_symlink():
        return False
    found = bag_marker(path)
    if found != kind:
        what = ("a regular file" if path.is_file() else
                _KIND_NAMES.get(found, f"a bag of kind {found!r}") if found else
                f"a folder that is not {_KIND_NAMES.get(kind, kind)} (it holds other files, or its "
                f"metadata.yaml has no marker of this package)")
        raise OutputError(f"output {str(path)!r} exists and is {what}: not replacing it, with or "
                          f"without --overwrite; choose another path")
    if not overwrite:
        raise OutputError(f"output bag {str(path)!r} exists already (written by an earlier run): "
                          f"choose another path, or --overwrite to replace it")
    return True


def is_our_report(path: str | Path) -> bool:
    """True when ``path`` is a JSON report written by ``bag-eval``."""
    return is_json_of_format(Path(path), REPORT_FORMAT, _MAX_REPORT_BYTES)


def check_file_output(path: str | Path, what: str, overwrite: bool, ours: bool = False,
                      inputs: Iterable[str | Path] = (), bags: Iterable[str | Path] = ()) -> None:
    """Raise :class:`OutputError` unless the file ``path`` (``what``: "report", "plot") may
    be written: it is free, or ``ours`` (recognised as our own earlier output), or
    ``overwrite`` and a regular file; never an input, never inside a bag folder."""
    path = Path(path)
    for item in inputs:
        if _is_within(path, Path(item)):
            raise OutputError(f"{what} {str(path)!r} would overwrite or go inside the input "
                              f"{str(item)!r}: choose another path")
    for item in bags:
        if _is_within(path, Path(item)):
            raise OutputError(f"{what} {str(path)!r} is inside the bag folder {str(item)!r}: choose a "
                              f"path outside it")
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() or not path.is_file():
        raise OutputError(f"{what} {str(path)!r} exists and is not a regular file: not replacing it")
    if not (ours or overwrite):
        why = "was not written by bag-eval" if what == "report" else "exists already"
        raise OutputError(f"{what} {str(path)!r} {why}: not replacing it; choose another path or pass "
                          f"--overwrite")


def write_file_atomically(path: str | Path, data: bytes, what: str = "output") -> Path:
    """Write ``data`` to a staging file next to ``path`` and rename it over ``path``:
    readers see the old file or the new one, never half of one; a disk fault is one
    :class:`OutputError` line and leaves the old file as it was."""
    return write_bytes(path, data, what)


class StagedBag:
    """A bag folder written beside its destination and moved there when done.

    :attr:`path` is where the writer creates the bag (inside the staging folder next to
    ``destination``, :class:`abaw_ros.outputs.Staging`). :meth:`commit` moves it into
    place, replacing an existing bag of ours when ``replace`` was allowed; :meth:`discard`
    removes what this object created.
    """

    def __init__(self, destination: str | Path, kind: str, replace: bool) -> None:
        self.destination = Path(destination)
        self.kind = kind
        self.replace = replace
        self._staging = Staging(self.destination, "output bag", replace=replace)
        self.path = self._staging.path

    def commit(self, complete: bool = True) -> Path:
        """Move the bag into place; returns where it ended up.

        A complete bag replaces the destination when that was allowed and the destination
        is still a bag of ours. Otherwise (an incomplete bag, the run stopped early; or the
        destination appeared or changed during the run) nothing is replaced: the bag goes
        to the destination when that is free, else to ``<destination>.partial[-N]``, and
        the log says where.
        """
        target = self.destination
        if not (target.exists() or target.is_symlink()) or (
                complete and self.replace and bag_marker(target) == self.kind):
            return self._staging.commit()
        target = _free_sibling(target, ".partial")
        log.warning("%s exists and is not replaced by %s a bag: the bag is kept at %s",
                    self.destination, "a complete" if complete else "an incomplete", target)
        with write_faults(target, "output bag"):
            os.replace(self.path, target)
        self._staging.discard()
        return target

    def discard(self) -> None:
        """Remove the staging folder and everything in it (all of it created here)."""
        self._staging.discard()


def _free_sibling(path: Path, suffix: str) -> Path:
    candidate = path.with_name(path.name + suffix)
    n = 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}{suffix}-{n}")
    return candidate
