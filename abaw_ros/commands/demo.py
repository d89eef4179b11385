"""``abaw-affect demo``: the node on a demo camera, printing the affect stream.

Starts the ``affect_node`` executable with ``--ros-args --params-file config/affect.yaml``
and the ``demo_camera`` executable (the astronaut picture moving across 640x480 frames, or
a video file) as separate processes, as on a robot, and prints every ``FaceAffectArray``
as it arrives, for ``--seconds`` or until Ctrl-C. When the node runs with untrained
weights the output says so before and after the values.

Everything that needs ROS is imported inside :func:`run`, so this module imports without
ROS (the command then says what to do).
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from abaw_ros.commands.options import FPS, add_number
from abaw_ros.config import Bounds
from abaw_ros.share import SOURCE_ROOT, find_share_file, installed_executable

UNTRAINED_SUMMARY = (
    "The model weights are UNTRAINED: face boxes and ids are real, the affect values are "
    "placeholders. Train a model (abaw-affect train), export it (abaw-affect export) and "
    "pass it with --model-file-path."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_number(parser, "--seconds", kind=float, bounds=Bounds(0.0, 86400.0, "seconds"), default=20.0,
               help="how long to run (default 20; 0 runs until Ctrl-C)")
    parser.add_argument("--params-file", type=Path, default=None,
                        help="node parameters file (default: config/affect.yaml of this package)")
    parser.add_argument("--model-file-path", default=None,
                        help="checkpoint (.pt) or exported ONNX bundle; overrides the parameters file")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter, e.g. -p backend:=torch (repeatable)")
    parser.add_argument("--faces", type=int, default=1, choices=(0, 1, 2, 3, 4),
                        help="people in the synthetic scene (default 1)")
    parser.add_argument("--video", default=None, help="publish this video file instead (looped)")
    add_number(parser, "--rate", kind=float, bounds=FPS, default=15.0, help="camera frames per second (default 15)")
    parser.add_argument("--compressed", action="store_true",
                        help="send JPEG CompressedImage (the node is set to image_transport=compressed)")


def _executable(name: str) -> list[str]:
    """The installed executable (lib/abaw_ros/<name>), else the module run by this Python."""
    path = installed_executable(name)
    module = "node_process" if name == "affect_node" else name  # the node's process runs it
    return [str(path)] if path is not None else [sys.executable, "-m", f"abaw_ros.ros.{module}"]


def _default_params_file() -> Path:
    return find_share_file("config/affect.yaml") or SOURCE_ROOT / "config" / "affect.yaml"


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Ctrl-C the process (clean ROS shutdown), kill it if it does not end."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def run(args: argparse.Namespace) -> int:
    try:
        from abaw_ros.ros.affect_printer import print_affect_stream
        from abaw_ros.ros.transport import prefer_large_frame_transport
    except ImportError as exc:
        print(f"abaw-affect demo needs ROS 2 (rclpy) and the built messages: {exc}. "
              f"Run `bash scripts/setup_env.sh` and `source .abaw_env` first.", file=sys.stderr)
        return 2
    params_file = args.params_file or _default_params_file()
    if not Path(params_file).is_file():
        print(f"--params-file {str(params_file)!r}: no such file", file=sys.stderr)
        return 2

    node_cmd = [*_executable("affect_node"), "--ros-args", "--params-file", str(params_file)]
    if args.model_file_path is not None:
        node_cmd += ["-p", f"model_file_path:={args.model_file_path}"]
    if args.compressed:
        node_cmd += ["-p", "image_transport:=compressed"]
    for item in args.param:
        if ":=" not in item:
            print(f"--param {item!r}: expected NAME:=VALUE", file=sys.stderr)
            return 2
        node_cmd += ["-p", item]
    camera_cmd = [*_executable("demo_camera"), "--faces", str(args.faces), "--rate", str(args.rate)]
    if args.video:
        camera_cmd += ["--video", str(args.video)]
    if args.compressed:
        camera_cmd += ["--compressed"]

    print(f"node:   {' '.join(node_cmd)}", flush=True)
    print(f"camera: {' '.join(camera_cmd)}", flush=True)
    model = args.model_file_path
    if model is None:
        try:
            from abaw_ros.config import PipelineConfig

            model = PipelineConfig.from_yaml(params_file).model_file_path
        except Exception:  # the node itself reports a bad file, with the parameter's name
            model = None
    if model == "":
        print(f"NOTE: no model_file_path: the node builds an untrained network. {UNTRAINED_SUMMARY}",
              flush=True)

    prefer_large_frame_transport()  # this process and both children (see abaw_ros/ros/transport.py)
    node = subprocess.Popen(node_cmd)
    camera = subprocess.Popen(camera_cmd)
    seconds = args.seconds if args.seconds > 0 else None
    started = time.monotonic()
    try:
        received, faces, trained = print_affect_stream(
            seconds,
            lambda line: print(line, flush=True),
            keep_going=lambda: node.poll() is None and camera.poll() is None,
        )
    finally:
        camera_code = _stop(camera)
        node_code = _stop(node)
    elapsed = time.monotonic() - started
    print(f"\n{received} affect messages in {elapsed:.0f} s ({faces} face estimates).", flush=True)
    if trained is False:
        print(UNTRAINED_SUMMARY, flush=True)
    if node_code not in (0, -signal.SIGINT):
        print(f"the node exited with code {node_code} (see its log above)", file=sys.stderr)
        return node_code or 1
    if camera_code not in (0, -signal.SIGINT):
        print(f"the demo camera exited with code {camera_code} (see its log above)", file=sys.stderr)
        return camera_code or 1
    if received == 0:
        print("no affect message arrived: is another ROS_DOMAIN_ID in use, or did the node fail "
              "to start?", file=sys.stderr)
        return 1
    return 0
