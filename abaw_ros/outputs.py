"""How every tool of this package writes a file or folder, so that nothing a user owns is lost.

The rules, the same for bag-eval, predict, video-to-bag, export, import-reference and train:

- **Checked before any work** (:func:`check_outputs`): an output is never one of the run's
  inputs, never inside one and never holds one; two outputs of one run never share a path.
  An existing path is replaced only when it is recognised as our own earlier output (a
  marker: a bag's ``custom_data``, a bundle's manifest, a checkpoint's ``format``, a CSV's
  header) and ``--overwrite`` is given. Outputs that cannot carry a marker (a plot, an
  annotated video) are replaced with ``--overwrite`` when they are regular files.
- **Written beside the target** (:class:`Staging`): into ``.<name>.abaw-writing/<name>``
  in the target's folder, and moved into place (one ``rename``) only when complete. That
  folder is created exclusively and records the host, pid and process start time of its
  run, so it is also the lock: a second run onto the same output is refused while the
  first lives, and the staging of a run that died (``kill -9``, power loss) is recognised
  and removed by the next run writing into that folder. Nothing else is ever removed.
- **Operating-system faults are one line** (:func:`write_faults`): ENOSPC, EROFS, EACCES,
  EIO ... while writing become :class:`OutputError` naming the path and the cause; the
  staging is removed and the target is untouched.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".abaw-writing"
OWNER_FILE = ".owner.json"
OWNER_FORMAT = "abaw_ros.staging"
# A staging folder younger than this without its owner file is a run that is starting.
_STARTING_GRACE_S = 60.0


class OutputError(ValueError):
    """An output path cannot be used or written; the message names it and says why."""


# ---------------------------------------------------------------------------------------
# Operating-system faults
# ---------------------------------------------------------------------------------------
def describe_os_error(exc: OSError) -> str:
    """``no space left on device (ENOSPC)``: the cause of ``exc`` in words and its name."""
    code = exc.errno
    name = errno.errorcode.get(code, "") if code is not None else ""
    text = os.strerror(code) if code is not None else (str(exc) or type(exc).__name__)
    return f"{text.lower()} ({name})" if name else text


@contextlib.contextmanager
def write_faults(path: str | Path, what: str = "output") -> Iterator[None]:
    """Turn an :class:`OSError` raised while writing ``path`` into one :class:`OutputError`
    line naming ``path`` and the cause (disk full, read-only file system, no permission,
    I/O error)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {what} {str(path)!r}: {describe_os_error(exc)}; "
                          f"nothing of it was kept") from exc


# ---------------------------------------------------------------------------------------
# What may be written where
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Output:
    """One path a run will write. ``ours`` recognises our own earlier output at ``path``
    (None: this kind of output carries no marker, and ``--overwrite`` alone decides).
    ``folder``: the output is a folder (a bag, a bundle), else a regular file."""

    path: Path
    what: str
    ours: Callable[[Path], bool] | None = None
    folder: bool = False
    written_by: str = "this package"


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_outputs(outputs: Sequence[Output], overwrite: bool, inputs: Iterable[str | Path] = ()) -> list[bool]:
    """Raise :class:`OutputError` unless every output may be written; returns, per output,
    whether an existing one of ours will be replaced."""
    inputs = [Path(p) for p in inputs]
    seen: dict[Path, Output] = {}
    for out in outputs:
        key = out.path.resolve()
        if key in seen:
            raise OutputError(f"{seen[key].what} and {out.what} would both be written to {str(out.path)!r}: "
                              f"give them different paths")
        seen[key] = out
    for out in outputs:
        for other in outputs:
            if other is not out and other.folder and _within(out.path, other.path) and out.path.resolve() != \
                    other.path.resolve():
                raise OutputError(f"{out.what} {str(out.path)!r} is inside the {other.what} {str(other.path)!r} "
                                  f"of the same run: choose a path outside it")
        for item in inputs:
            if _within(out.path, item) or _within(item, out.path):
                relation = ("is the input" if out.path.resolve() == item.resolve() else
                            "is inside the input" if _within(out.path, item) else "holds the input")
                raise OutputError(f"{out.what} {str(out.path)!r} {relation} {str(item)!r}: an input of the run "
                                  f"is never written over, with or without --overwrite; choose another path")
    return [_check_existing(out, overwrite) for out in outputs]


def _check_existing(out: Output, overwrite: bool) -> bool:
    path = out.path
    if not path.exists() and not path.is_symlink():
        return False
    kind_ok = (path.is_dir() if out.folder else path.is_file()) and not path.is_symlink()
    if not kind_ok:
        found = ("a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else
                 "a regular file" if path.is_file() else "not a regular file")
        raise OutputError(f"{out.what} {str(path)!r} exists and is {found}: not replacing it, with or without "
                          f"--overwrite; choose another path")
    if out.ours is not None and not out.ours(path):
        raise OutputError(f"{out.what} {str(path)!r} exists and was not written by {out.written_by}: not "
                          f"replacing it, with or without --overwrite; choose another path")
    if not overwrite:
        raise OutputError(f"{out.what} {str(path)!r} exists already: choose another path, or --overwrite to "
                          f"replace it")
    return True


# ---------------------------------------------------------------------------------------
# Staging: written beside the target, moved into place when complete
# ---------------------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``), telling a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _owner() -> dict[str, object]:
    return {"format": OWNER_FORMAT, "host": socket.gethostname(), "pid": os.getpid(),
            "start": _start_time(os.getpid()), "since": time.time()}


def staging_owner_state(holder: Path) -> str:
    """``live``, ``dead`` or ``unknown`` for the staging folder ``holder``: dead only when
    its owner file names this host and a process that no longer runs (or another process
    under the same pid)."""
    try:
        owner = json.loads((holder / OWNER_FILE).read_text(encoding="utf-8"))
        if owner.get("format") != OWNER_FORMAT:
            return "unknown"
        host, pid, start = owner["host"], int(owner["pid"]), owner.get("start")
    except FileNotFoundError:
        try:
            age = time.time() - holder.stat().st_mtime
        except OSError:
            return "unknown"
        return "live" if age < _STARTING_GRACE_S else "unknown"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    if host != socket.gethostname():
        return "unknown"  # another machine on a shared disk: cannot tell
    if not _alive(pid):
        return "dead"
    if start is not None and _start_time(pid) not in (None, start):
        return "dead"  # the pid was reused by a later process
    return "live"


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove the staging folders in ``folder`` of runs on this host that no longer run;
    returns them. Only folders named ``.*.abaw-writing`` holding our owner file count."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(STAGING_SUFFIX)) or entry.is_symlink() \
                or not entry.is_dir():
            continue
        if staging_owner_state(entry) == "dead":
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                log.info("removed %s, left by a run that ended without finishing", entry)
                removed.append(entry)
    return removed


class Staging:
    """One output written at :attr:`path` (inside ``.<name>.abaw-writing/`` next to
    ``target``) and moved onto ``target`` by :meth:`commit`; :meth:`discard` removes what
    was written. A context manager: leaving the block through an exception discards.

    ``replace``: the caller checked that an existing ``target`` is ours and may be
    replaced (:func:`check_outputs`); without it an existing target is never touched.
    """

    def __init__(self, target: str | Path, what: str = "output", *, replace: bool = False) -> None:
        self.target = Path(target)
        self.what = what
        self.replace = replace
        parent = self.target.parent
        with write_faults(self.target, what):
            parent.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(parent)
            self.holder = parent / f".{self.target.name}{STAGING_SUFFIX}"
            try:
                self.holder.mkdir()
            except FileExistsError:
                self._refuse_or_take_over()
            try:
                (self.holder / OWNER_FILE).write_text(json.dumps(_owner()), encoding="utf-8")
            except BaseException:
                shutil.rmtree(self.holder, ignore_errors=True)
                raise
        self.path = self.holder / self.target.name
        self.done = False

    def _refuse_or_take_over(self) -> None:
        state = staging_owner_state(self.holder)
        if state == "dead":
            shutil.rmtree(self.holder)
            self.holder.mkdir()
            return
        who = ""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            owner = json.loads((self.holder / OWNER_FILE).read_text(encoding="utf-8"))
            who = f" (pid {int(owner['pid'])} on {owner['host']})"
        if state == "live":
            raise OutputError(f"{self.what} {str(self.target)!r} is being written by another run{who} now: wait "
                              f"for it to end or choose another path")
        raise OutputError(f"{self.what} {str(self.target)!r}: {str(self.holder)!r} is the staging of another "
                          f"run{who} that cannot be checked from here; remove it if that run has ended")

    def commit(self) -> Path:
        """Move the finished output onto the target (replacing an earlier output of ours
        when that was allowed) and remove the staging folder; returns the target."""
        target = self.target
        with write_faults(target, self.what):
            if target.exists() or target.is_symlink():
                if not self.replace:
                    raise OutputError(f"{self.what} {str(target)!r} appeared while this run was writing it: not "
                                      f"replacing it; the new one is discarded")
                if target.is_dir() and not target.is_symlink():
                    # moved aside first: the old output is gone only once the new one is in place
                    os.replace(target, self.holder / ".replaced")
            os.replace(self.path, target)
        self.done = True
        shutil.rmtree(self.holder, ignore_errors=True)
        return target

    def discard(self) -> None:
        """Remove the staging folder and everything in it (all of it written by this run)."""
        self.done = True
        shutil.rmtree(self.holder, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.discard()


def write_bytes(target: str | Path, data: bytes, what: str = "output", *, replace: bool = True) -> Path:
    """Write ``data`` to ``target`` through a :class:`Staging`: readers see the old file or
    the new one, never half of one; a fault leaves the old one as it was."""
    with Staging(target, what, replace=replace) as staging, write_faults(target, what):
        staging.path.write_bytes(data)
        return staging.commit()


def is_json_of_format(path: Path, fmt: str, max_bytes: int = 64 << 20) -> bool:
    """True when ``path`` is a JSON object whose ``format`` field is ``fmt``."""
    try:
        if not path.is_file() or path.stat().st_size > max_bytes:
            return False
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("format") == fmt


def starts_with_line(path: Path, line: str) -> bool:
    """True when the first line of the text file ``path`` is ``line`` (a CSV header)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(len(line.encode()) + 4)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == line.encode()
