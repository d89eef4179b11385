"""``abaw-affect``: train, cache-features, evaluate, export, build-engine, bench, bag-eval, predict, video-to-bag, make-fixtures, demo.

Each command lives in ``abaw_ros/commands/<module>.py`` and is imported only when it is
run, so a missing optional dependency (TensorRT, rosbags, ROS) never breaks the others.
The offline tools (bag-eval, predict, video-to-bag, make-fixtures) run ONNX bundles
without torch (``pip install ".[bags]"``); only training, export and checkpoints need it.
A command that needs a package which is not installed stops with one line naming the
package and how to install it (exit 2).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> (module under abaw_ros.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train the network on ABAW data (single process or torchrun DDP)"),
    "cache-features": ("cache_features", "store the frozen backbone part's output of every frame once (disk)"),
    "evaluate": ("evaluate", "evaluate a checkpoint with the official metrics"),
    "predict-abaw": ("predict_abaw", "predict the ABAW test set (no labels) in the submission format"),
    "check-submission": ("check_submission", "check an ABAW submission folder against the test frames"),
    "export": ("export", "export a checkpoint to ONNX (encoder, temporal head, fused window, streaming graphs)"),
    "import-reference": ("import_reference", "convert a reference-code (Lightning) checkpoint into ours"),
    "build-engine": ("build_engine", "build (or reuse) a cached TensorRT engine from ONNX"),
    "bench": ("bench", "benchmark every available backend side by side"),
    "bag-eval": ("bag_eval", "run the node's pipeline over ROS 2 bags, write affect bags + metrics"),
    "predict": ("predict", "run the node's pipeline over a video, image folder or bag: per-frame CSV (+ video)"),
    "video-to-bag": ("video_to_bag", "turn a video file (and annotations) into a ROS 2 bag"),
    "make-fixtures": ("make_fixtures", "write small data sets in the official ABAW layouts"),
    "demo": ("demo", "run the perception pipeline on a demo stream and print the affect"),
}
# Optional packages: import name -> (what needs it, how to install it).
OPTIONAL_PACKAGES: dict[str, tuple[str, str]] = {
    "torch": ("training, export, evaluate, PyTorch checkpoints (.pt) and the untrained stand-in network "
              "(empty model_file_path)",
              "install torch, then pip install \".[train,export]\"; the offline tools run exported ONNX "
              "bundles without it (--model-file-path BUNDLE_DIR)"),
    "timm": ("the network's backbone (training, export, checkpoints)", "pip install \".[train]\""),
    "rosbags": ("reading and writing ROS 2 bags", "pip install \".[bags]\""),
    "matplotlib": ("the timeline plots", "pip install \".[bags]\""),
    "skimage": ("the face pictures of make-fixtures", "pip install \".[fixtures]\""),
    "ray": ("bag-eval --ray", "pip install \".[ray]\""),
    "onnx": ("ONNX export and int8 quantization", "pip install \".[export]\""),
    "ai_edge_litert": ("the default face detector (detector: blazeface) and the face-landmark model",
                       "pip install ai-edge-litert"),
}


def missing_package_message(command: str, exc: ModuleNotFoundError) -> str | None:
    """One line for a missing optional package, or None when ``exc`` is about another module."""
    top = (exc.name or "").split(".")[0]
    if top not in OPTIONAL_PACKAGES:
        return None
    needs, install = OPTIONAL_PACKAGES[top]
    return (f"abaw-affect {command}: the Python package {top!r} is not installed; it is needed for {needs}. "
            f"To add it: {install}")


EXIT_USAGE_ERROR = 2  # a bad argument, parameter, model file or missing package; the message names it
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


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
    from abaw_ros.config import ConfigError, MissingPackageError, ModelFileError
    from abaw_ros.outputs import OutputError
    from abaw_ros.runtime.base import BackendUnavailableError

    try:
        module = importlib.import_module(f"abaw_ros.commands.{module_name}")
        from abaw_ros.commands.options import OneLineErrors

        sub = OneLineErrors(prog=f"abaw-affect {known.command}", description=help_text)
        module.add_arguments(sub)
        args = sub.parse_args(rest)
        return int(module.run(args) or 0)
    except MissingPackageError as exc:  # raised with its own install command
        logging.getLogger("abaw_ros.cli").error("%s: %s", known.command, exc)
        return EXIT_USAGE_ERROR
    except ModuleNotFoundError as exc:
        message = missing_package_message(known.command, exc)
        if message is None:
            raise
        logging.getLogger("abaw_ros").error("%s", message)
        return EXIT_USAGE_ERROR
    except (ConfigError, ModelFileError, BackendUnavailableError, OutputError) as exc:
        # a bad value or model file, a backend asked for by name that cannot run, or an output
        # that may not or cannot be written (abaw_ros.outputs): one line, exit 2
        logging.getLogger("abaw_ros.cli").error("%s: %s", known.command, exc)
        return EXIT_USAGE_ERROR
    except KeyboardInterrupt:
        logging.getLogger("abaw_ros.cli").error("%s: interrupted", known.command)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
