"""``abaw-affect``: train, evaluate, export, build-engine, bench, bag-eval, video-to-bag,
make-fixtures, demo.

Each command lives in ``abaw_ros/commands/<module>.py`` and is imported only when it is
run, so a missing optional dependency (TensorRT, rosbags, ROS) never breaks the others.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> (module under abaw_ros.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train the network on ABAW data (single process or torchrun DDP)"),
    "evaluate": ("evaluate", "evaluate a checkpoint with the official metrics"),
    "predict-abaw": ("predict_abaw", "predict the ABAW test set (no labels) in the submission format"),
    "export": ("export", "export a checkpoint to ONNX (encoder, temporal head, fused window)"),
    "import-reference": ("import_reference", "convert a reference-code (Lightning) checkpoint into ours"),
    "build-engine": ("build_engine", "build (or reuse) a cached TensorRT engine from ONNX"),
    "bench": ("bench", "benchmark every available backend side by side"),
    "bag-eval": ("bag_eval", "run the node's pipeline over a ROS 2 bag, write affect bag + metrics"),
    "video-to-bag": ("video_to_bag", "turn a video file (and annotations) into a ROS 2 bag"),
    "make-fixtures": ("make_fixtures", "write small data sets in the official ABAW layouts"),
    "demo": ("demo", "run the perception pipeline on a demo stream and print the affect"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abaw-affect", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command name only; the command's own parser reads the rest.
    known, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module_name, help_text = COMMANDS[known.command]
    module = importlib.import_module(f"abaw_ros.commands.{module_name}")
    sub = argparse.ArgumentParser(prog=f"abaw-affect {known.command}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
