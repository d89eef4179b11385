"""What a trained checkpoint was trained on: data roots, generated fixtures or not,
protocol, starting weights, code version. Stored as the checkpoint's ``provenance`` and
shown by :func:`abaw_ros.models.checkpoint.provenance_summary`."""
from __future__ import annotations

import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

from abaw_ros.training.config import TrainConfig

FIXTURE_MARKER = "fixture_spec.json"  # written by abaw_ros.data.fixtures.make_fixtures


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout holding this package, if it is one (None otherwise)."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def is_fixture(root: str | Path) -> bool:
    """True when ``root`` lies in a data set written by ``make_fixtures``."""
    path = Path(root).resolve()
    return any((p / FIXTURE_MARKER).is_file() for p in (path, *list(path.parents)[:3]))


def training_provenance(cfg: TrainConfig) -> dict[str, Any]:
    roots = {f.name: getattr(cfg.data, f.name) for f in fields(cfg.data)
             if f.name != "missing_frames" and getattr(cfg.data, f.name)}
    return {
        "source": "training",
        "data": {k: str(v) for k, v in roots.items()},
        "fixture": bool(roots) and any(is_fixture(v) for v in roots.values()),
        "protocol": cfg.protocol,
        "tasks": list(cfg.model.tasks),
        "backbone_weights": cfg.model.backbone_weights,
        "git_commit": git_commit(),
    }
