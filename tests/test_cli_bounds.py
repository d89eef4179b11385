"""Numeric options and image sizes at the command line, tried as a user would (each tool
run as its own process): a value outside an option's range ends the tool before any work
with one line naming the option, the value and the range, exit 2, no traceback, nothing
written; an image above ``max_image_pixels`` is skipped unread by predict as by bag-eval,
and a video whose frames are all above it is refused."""
from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from abaw_ros.offline.bag_writers import ImageBagWriter

MODEL_ARGS = ("-p", "backend:=onnxruntime", "-p", "warmup:=false", "--no-progress")


def abaw_affect(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "abaw_ros.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The run's one error line; fails when there is a traceback or more than one."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for i in range(6):
        writer.write(np.full((120, 160, 3), 40 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bag") / "rec"
    with ImageBagWriter(path, "/camera/image_raw", "mcap") as writer:
        for i in range(4):
            writer.write(np.full((120, 160, 3), 30 * i, np.uint8), 1_700_000_000_000_000_000 + i * 100_000_000)
    return path


# -- options outside their range ------------------------------------------------------------
@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("--fps", "1e300", "0.01 to 1000 Hz"),
    ("--fps", "1e-300", "0.01 to 1000 Hz"),
    ("--fps", "nan", "0.01 to 1000 Hz"),
    ("--start", "1e12", "0 to 2147483647 seconds since the epoch"),
    ("--start", "4e9", "0 to 2147483647 seconds since the epoch"),
    ("--start", "-5", "0 to 2147483647 seconds since the epoch"),
    ("--max-frames", "0", "1 to 1000000000 frames"),
])
def test_video_to_bag_refuses_an_option_outside_its_range_and_writes_nothing(tmp_path, video, option, value,
                                                                            allowed):
    out = tmp_path / "out_bag"
    result = abaw_affect("video-to-bag", str(video), str(out), option, value, "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert option in line and value in line and allowed in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no bag, no staging folder


def test_video_to_bag_refuses_a_start_whose_last_stamp_would_pass_2038(tmp_path, video):
    """--start in range, but 6 frames at 0.1 Hz end 50 s later, past the last int32 second."""
    result = abaw_affect("video-to-bag", str(video), str(tmp_path / "out"), "--start", "2147483600",
                         "--fps", "0.1", "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert "start=2.14748e+09" in line and "2038" in line, line
    assert not (tmp_path / "out").exists()


def test_video_to_bag_stamps_stay_distinct_at_the_highest_rate(tmp_path, video):
    from abaw_ros.offline.bag_reader import ImageBagReader

    out = tmp_path / "fast"
    result = abaw_affect("video-to-bag", str(video), str(out), "--fps", "1000", "--start", "100",
                         "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with ImageBagReader(out, "/camera/image_raw") as reader:
        stamps = [frame.stamp_ns for frame in reader.frames()]
    assert stamps == [100_000_000_000 + i * 1_000_000 for i in range(6)]


@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("--plot-size", "60000x60000", "200 to 8000 pixels"),
    ("--stamp-tolerance", "inf", "0 to 1 seconds"),
    ("--stamp-tolerance", "-1", "0 to 1 seconds"),
    ("--workers", "0", "1 to 1024 processes"),
])
def test_bag_eval_refuses_an_option_outside_its_range_before_writing(tmp_path, bag, model_bundle, option, value,
                                                                    allowed):
    out = tmp_path / "affect"
    result = abaw_affect("bag-eval", str(bag), "-o", str(out), "--model-file-path", str(model_bundle),
                         *MODEL_ARGS, option, value, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert option in line and value in line and allowed in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before the affect bag was written


@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("--fps", "1e-300", "0.01 to 1000 Hz"),
    ("--fps", "0", "0.01 to 1000 Hz"),
    ("--max-frames", "-3", "1 to 1000000000 frames"),
])
def test_predict_refuses_an_option_outside_its_range(tmp_path, video, model_bundle, option, value, allowed):
    result = abaw_affect("predict", str(video), "-o", str(tmp_path / "out.csv"), "--model-file-path",
                         str(model_bundle), *MODEL_ARGS, option, value, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert option in line and value in line and allowed in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_of_a_plain_timm_state_dict_is_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    weights = tmp_path / "mobilenetv4.pth"
    torch.save({"conv_stem.weight": torch.zeros(32, 3, 3, 3), "bn1.weight": torch.ones(32)}, weights)
    result = abaw_affect("export", str(weights), "-o", str(tmp_path / "bundle"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert str(weights) in line and "not an abaw_ros checkpoint" in line and "backbone_weights" in line, line
    assert not (tmp_path / "bundle").exists()


# -- one pixel limit for every image source ----------------------------------------------------
def huge_png(path: Path, side: int) -> int:
    """A real, valid ``side`` x ``side`` grey PNG written row by row (never held in memory):
    20000 x 20000 is about 400 KB on disk and 1.2 GB once decoded to BGR."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then black pixels
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit greyscale
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return len(data)


PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, code)
"""


def test_predict_skips_an_image_above_the_pixel_limit_unread(tmp_path, model_bundle):
    from skimage import data

    folder = tmp_path / "imgs"
    folder.mkdir()
    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for name in ("1.png", "3.png"):
        cv2.imwrite(str(folder / name), face)
    size = huge_png(folder / "2.png", 20000)
    assert size < 1_000_000
    out = tmp_path / "out.csv"
    run = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "abaw_ros.cli", "predict", str(folder), "-o", str(out),
         "--model-file-path", str(model_bundle), *MODEL_ARGS],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    peak_mib, code = (int(v) for v in run.stdout.split()[-2:])
    assert code == 0, run.stderr[-3000:]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["frames_processed"] == 2
    (skip,) = sidecar["skipped"]
    assert skip["name"] == "2.png"
    assert "20000x20000" in skip["reason"] and "max_image_pixels" in skip["reason"] and "not decoded" in skip["reason"]
    assert peak_mib < 1000, f"peak RSS {peak_mib} MiB: the 20000x20000 image was decoded"


def test_predict_refuses_a_video_above_the_pixel_limit_naming_both(tmp_path, video, model_bundle):
    result = abaw_affect("predict", str(video), "-o", str(tmp_path / "out.csv"), "--model-file-path",
                         str(model_bundle), *MODEL_ARGS, "-p", "max_image_pixels:=10000", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert "160x120" in line and "max_image_pixels=10,000" in line, line
    assert not (tmp_path / "out.csv").exists()


def test_bag_eval_measures_frames_against_the_configured_pixel_limit(tmp_path, bag, model_bundle):
    """The limit bag-eval applies is the node's max_image_pixels parameter, not a constant."""
    out = tmp_path / "affect"
    report = tmp_path / "report.json"
    result = abaw_affect("bag-eval", str(bag), "-o", str(out), "--report", str(report), "--no-plot",
                         "--model-file-path", str(model_bundle), *MODEL_ARGS, "-p", "max_image_pixels:=10000",
                         cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    text = result.stderr + (report.read_text() if report.exists() else "")
    assert "160x120" in text and "max_image_pixels=10,000" in text, text[-3000:]


# -- bundle metadata ---------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "expected"), [
    ({"std": [0.0, 0.0, 0.0]}, "std=[0.0, 0.0, 0.0]"),
    ({"std": [float("nan")] * 3}, "std=[nan, nan, nan]"),
    ({"mean": [1e308, 0.0, 0.0]}, "mean=[1e+308, 0.0, 0.0]"),
], ids=["std_0", "std_nan", "mean_1e308"])
def test_predict_names_the_file_and_field_of_impossible_bundle_metadata(tmp_path, video, model_bundle, changes,
                                                                        expected):
    import fault_files

    bundle = fault_files.metadata_bundle(tmp_path, model_bundle, "bad_bundle", **changes)
    result = abaw_affect("predict", str(video), "-o", str(tmp_path / "out.csv"), "--model-file-path", str(bundle),
                         "-p", "backend:=onnxruntime", "-p", "precision:=int8", "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert str(bundle / "encoder.onnx") in line and expected in line, line
    assert not (tmp_path / "out.csv").exists()


# -- every command, as a registry ---------------------------------------------------------------
def _numeric_options():
    import argparse
    import importlib

    from abaw_ros import cli
    from abaw_ros.commands.options import OneLineErrors

    for command, (module, _help) in cli.COMMANDS.items():
        try:
            parser = OneLineErrors(prog=command)
            importlib.import_module(f"abaw_ros.commands.{module}").add_arguments(parser)
        except ModuleNotFoundError as exc:  # an optional package this command needs
            yield pytest.param(command, None, marks=pytest.mark.skip(reason=f"{command}: {exc}"), id=command)
            continue
        for action in parser._actions:
            if isinstance(action, argparse._StoreAction) and action.type is not None and action.choices is None:
                if action.type in (int, float) or hasattr(action.type, "bounds"):
                    yield pytest.param(command, action, id=f"{command} {action.option_strings[-1]}")


@pytest.mark.parametrize(("command", "action"), list(_numeric_options()))
def test_every_numeric_option_of_every_command_has_a_finite_range(command, action):
    import argparse

    bounds = getattr(action.type, "bounds", None)
    assert bounds is not None, f"abaw-affect {command} {action.option_strings[-1]}: no range declared"
    assert bounds.describe() in action.help
    for text in ("inf", "nan", "1e400", str(bounds.high * 10 + 1)):
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(text)
