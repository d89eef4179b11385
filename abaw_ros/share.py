"""The package's names and its installed files, found one way for every tool.

A file the package ships (``config/affect.yaml``, ``msg/*.msg``, the requirements files)
lives in the source tree beside this package, in ``share/abaw_ros`` of a colcon install
(a prefix on ``AMENT_PREFIX_PATH`` that registers the package in the ament resource index,
the test ``ament_index_python.get_package_prefix`` makes: ament/ament_index,
ament_index_python/packages.py), or in ``share/abaw_ros`` of the Python environment after
``pip install`` (setup.py ``data_files``). Found here without importing ROS, so the offline
tools work where ROS is not installed.
"""
from __future__ import annotations

import os
import site
import sys
from pathlib import Path

PACKAGE = "abaw_ros"
NODE_NAME = "abaw_affect"

# The repository root when running from a source checkout (holds config/, msg/, ...).
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def install_prefixes() -> list[Path]:
    """Where ``pip install`` puts this package's data files (``setup.py`` data_files)."""
    return [Path(p) for p in dict.fromkeys([sys.prefix, site.getuserbase()])]


def ament_prefixes() -> list[Path]:
    """The ``AMENT_PREFIX_PATH`` prefixes that hold this package, first match first."""
    prefixes = []
    for entry in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if entry and (Path(entry) / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file():
            prefixes.append(Path(entry))
    return prefixes


def share_dirs() -> list[Path]:
    """Where the package's files are looked for, in order: the source tree, each colcon
    install on ``AMENT_PREFIX_PATH``, the Python environment's ``share/abaw_ros``."""
    return [SOURCE_ROOT, *(p / "share" / PACKAGE for p in [*ament_prefixes(), *install_prefixes()])]


def find_share_file(relative: str | Path, dirs: list[Path] | None = None) -> Path | None:
    """The first ``<dir>/relative`` that exists (a file or a folder), else None."""
    for folder in share_dirs() if dirs is None else dirs:
        candidate = folder / relative
        if candidate.exists():
            return candidate
    return None


def installed_executable(name: str) -> Path | None:
    """``lib/abaw_ros/<name>`` of the colcon install, if there is one and it can run."""
    for prefix in ament_prefixes():
        path = prefix / "lib" / PACKAGE / name
        if os.access(path, os.X_OK):
            return path
    return None
