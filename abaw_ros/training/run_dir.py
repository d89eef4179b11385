"""The run directory of ``abaw-affect train``: never replaced by accident.

A run directory holds ``train_config.json``, ``best.pt``, ``last.pt`` and ``metrics.json``.
A new run (no ``--resume``) into a directory that holds files is refused with the three
ways on: ``--resume DIR/last.pt`` continues that run, ``--overwrite`` replaces it (only
when it holds nothing but a run's files), or a new ``--out-dir``. While a run writes, it
holds the directory (:func:`abaw_ros.outputs.Staging` as a lock), so a second run into the
same directory is refused until the first ends.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from abaw_ros.outputs import OutputError, Staging, write_faults
from abaw_ros.training.tracking import EPOCHS_FILE, STEPS_FILE

log = logging.getLogger(__name__)

# What a run writes into its directory (the tracking CSVs included), and so what --overwrite
# may remove.
RUN_FILES = ("train_config.json", "best.pt", "last.pt", "metrics.json", STEPS_FILE, EPOCHS_FILE)


def check_run_dir(out_dir: str | Path, resume: str | None, overwrite: bool) -> list[Path]:
    """Raise :class:`OutputError` unless a run may write into ``out_dir``; returns the
    earlier run's files that ``overwrite`` will remove (empty otherwise)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"train.out_dir {str(out_dir)!r} exists and is not a directory: choose a new --out-dir")
    if not out_dir.is_dir() or resume:
        return []  # a new directory; or --resume, which continues the run there
    entries = sorted(p for p in out_dir.iterdir() if not p.name.startswith("."))
    if not entries:
        return []
    names = ", ".join(p.name for p in entries[:6]) + (" ..." if len(entries) > 6 else "")
    ours = (out_dir / RUN_FILES[0]).is_file() and all(p.name in RUN_FILES and p.is_file() for p in entries)
    if not ours:
        raise OutputError(f"train.out_dir {str(out_dir)!r} holds files that are not a training run's ({names}): "
                          f"not writing into it, with or without --overwrite; choose a new --out-dir")
    if not overwrite:
        raise OutputError(f"train.out_dir {str(out_dir)!r} holds an earlier run ({names}): continue it with "
                          f"--resume {str(out_dir / 'last.pt')!r}, replace it with --overwrite, or choose a new "
                          f"--out-dir")
    return entries


@contextlib.contextmanager
def hold_run_dir(out_dir: str | Path, replace: list[Path]) -> Iterator[None]:
    """Hold ``out_dir`` for this run (a second run is refused), after removing the earlier
    run's files ``replace`` (what :func:`check_run_dir` allowed)."""
    out_dir = Path(out_dir)
    with Staging(out_dir, "train.out_dir"):
        with write_faults(out_dir, "train.out_dir"):
            for path in replace:
                path.unlink(missing_ok=True)
            if replace:
                log.warning("--overwrite: removed the earlier run's %s from %s", ", ".join(p.name for p in replace),
                            out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
        yield
