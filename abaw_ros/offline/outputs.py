"""What the offline tools may write over, and how they write so that nothing is lost.

The rule: a tool deletes or replaces only what it created itself. A bag it writes carries
a marker in its ``metadata.yaml`` (rosbag2 ``custom_data``, which every rosbag2 reader
carries through untouched), and ``--overwrite`` replaces an existing path only when it is
such a bag of the same kind holding nothing but its own files, and never the input. A
report is recognised by its ``format`` field. Anything else is refused with a message
naming the path and what was found there; nothing is removed.

A new bag is written into a fresh folder next to its destination and moved into place when
it is complete (:class:`StagedBag`), so an existing bag stays whole until its replacement
exists, and a run that stops early still leaves the results it wrote.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

MARKER_KEY = "abaw_ros.bag"
AFFECT_BAG = "affect"  # FaceAffectArray bags of bag-eval
IMAGE_BAG = "images"  # camera bags of video-to-bag
_KIND_NAMES = {AFFECT_BAG: "an affect bag written by bag-eval", IMAGE_BAG: "an image bag written by video-to-bag"}
REPORT_FORMAT = "abaw_ros.bag_eval.report"
_MAX_REPORT_BYTES = 64 << 20  # a larger file is not a report of ours
_MAX_METADATA_BYTES = 16 << 20


class OutputError(ValueError):
    """An output path cannot be used; the message names it and says why."""


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
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > _MAX_REPORT_BYTES:
            return False
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("format") == REPORT_FORMAT


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


def write_file_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a new file next to ``path`` and rename it over ``path``: readers
    see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


class StagedBag:
    """A bag folder written beside its destination and moved there when done.

    :attr:`path` is where the writer creates the bag (inside a fresh hidden folder next to
    ``destination``). :meth:`commit` moves it into place, replacing an existing bag of
    ours when ``replace`` was allowed; :meth:`discard` removes what this object created.
    """

    def __init__(self, destination: str | Path, kind: str, replace: bool) -> None:
        self.destination = Path(destination)
        self.kind = kind
        self.replace = replace
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self._holder = Path(tempfile.mkdtemp(prefix=f".{self.destination.name}.", suffix=".partial",
                                             dir=self.destination.parent))
        self.path = self._holder / self.destination.name

    def commit(self, complete: bool = True) -> Path:
        """Move the bag into place; returns where it ended up.

        A complete bag replaces the destination when that was allowed and the destination
        is still a bag of ours. Otherwise (an incomplete bag, the run stopped early; or the
        destination appeared or changed during the run) nothing is replaced: the bag goes
        to the destination when that is free, else to ``<destination>.partial[-N]``, and
        the log says where.
        """
        target = self.destination
        if target.exists() or target.is_symlink():
            if complete and self.replace and bag_marker(target) == self.kind:
                shutil.rmtree(target)
            else:
                target = _free_sibling(target, ".partial")
                log.warning("%s exists and is not replaced by %s a bag: the bag is kept at %s",
                            self.destination, "a complete" if complete else "an incomplete", target)
        os.replace(self.path, target)
        self._holder.rmdir()
        return target

    def discard(self) -> None:
        """Remove the staging folder and everything in it (all of it created here)."""
        shutil.rmtree(self._holder, ignore_errors=True)


def _free_sibling(path: Path, suffix: str) -> Path:
    candidate = path.with_name(path.name + suffix)
    n = 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}{suffix}-{n}")
    return candidate

