"""The argument helpers the commands share.

Numeric options declare their range beside their help text, and a value outside it (or
not finite) ends the command before any work with one line naming the option, the value
and the range (exit 2), e.g.

    abaw-affect video-to-bag: error: argument --fps: 1e300: must be 0.01 to 1000 Hz

:func:`build_config` reads the node's parameters the way bag-eval and predict take them
(``--params-file``, ``--model-file-path``, ``-p NAME:=VALUE``).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from abaw_ros.config import FRAME_RATE, STAMP_SECONDS, Bounds

# Shared by the tools that take them, so one option means the same everywhere.
FPS = FRAME_RATE
MAX_FRAMES = Bounds(1, 10**9, "frames")
FIRST_FRAME = Bounds(0, 10**9)
# The timeline PNG: matplotlib renders it in memory as RGBA, 4 bytes a pixel; 8000x8000 is
# 256 MB (60000x60000 would be 14 GB).
PLOT_SIDE = Bounds(200, 8000, "pixels")
__all__ = ["FIRST_FRAME", "FPS", "MAX_FRAMES", "PLOT_SIDE", "STAMP_SECONDS", "OneLineErrors", "add_number",
           "add_pipeline_arguments", "build_config", "default_params_file", "number", "parse_size", "plot_size"]


def number(kind: type, bounds: Bounds) -> Callable[[str], Any]:
    """An argparse ``type`` that reads an int or float and refuses it outside ``bounds``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: not {'an integer' if kind is int else 'a number'} "
                f"(must be {bounds.describe()})") from None
        if value not in bounds:
            raise argparse.ArgumentTypeError(f"{text}: must be {bounds.describe()}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    parse.bounds = bounds  # type: ignore[attr-defined]  # for the tests that check every option has one
    return parse


def add_number(parser: argparse.ArgumentParser | Any, *flags: str, kind: type, bounds: Bounds,
               help: str = "", **kwargs: Any) -> argparse.Action:
    """``parser.add_argument`` for a bounded number; the range is appended to ``help``."""
    text = f"{help} [{bounds.describe()}]" if help else f"[{bounds.describe()}]"
    return parser.add_argument(*flags, type=number(kind, bounds), help=text.replace("%", "%%"), **kwargs)


def plot_size(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"1600x1000"`` -> ``(1600, 1000)``, each side within :data:`PLOT_SIDE`."""
    if isinstance(text, tuple):
        return text
    try:
        width, height = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1600x1000") from None
    if width not in PLOT_SIDE or height not in PLOT_SIDE:
        raise argparse.ArgumentTypeError(f"{text}: width and height must each be {PLOT_SIDE.describe()}")
    return width, height


def config_overrides(args: argparse.Namespace, options: dict[str, str]) -> list[str]:
    """``--set`` overrides plus ``SECTION.KEY=VALUE`` for each option given on the command
    line (``options``: attribute -> config key); a shortcut option wins over ``--set``."""
    overrides = list(args.overrides)
    for attr, key in options.items():
        value = getattr(args, attr)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides


class OneLineErrors(argparse.ArgumentParser):
    """A sub-command's parser whose usage errors are one line (``prog: error: message``)
    and exit 2, as the commands' own errors are; ``--help`` still shows the usage."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------------------
# The node's parameters, shared by bag-eval and predict
# ---------------------------------------------------------------------------------------
def add_pipeline_arguments(parser: argparse.ArgumentParser, model_help: str, param_example: str) -> None:
    """``--params-file``, ``--model-file-path``, ``-p NAME:=VALUE``: the node's parameters,
    read by :func:`build_config`."""
    pipe = parser.add_argument_group("pipeline (the node's parameters)")
    pipe.add_argument("--params-file", type=Path, default=None,
                      help="node parameters file (default: config/affect.yaml of this package)")
    pipe.add_argument("--model-file-path", default=None, help=f"{model_help}; overrides the parameters file")
    pipe.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                      help=f"override one parameter, e.g. -p {param_example} (repeatable)")


def default_params_file() -> Path | None:
    """config/affect.yaml of the source tree, else of the colcon or pip install, else None."""
    from abaw_ros.share import find_share_file

    return find_share_file("config/affect.yaml")


def build_config(args: argparse.Namespace):
    """The node's PipelineConfig: parameters file, then --model-file-path and -p overrides."""
    import yaml

    from abaw_ros.config import ConfigError, PipelineConfig
    from abaw_ros.safe_yaml import safe_load_text

    params_file = args.params_file or default_params_file()
    config = PipelineConfig.from_yaml(params_file) if params_file is not None else PipelineConfig()
    values = config.to_dict()
    if args.model_file_path is not None:
        values["model_file_path"] = args.model_file_path
    for item in args.param:
        name, sep, text = item.partition(":=")
        if not sep:
            raise ConfigError(f"-p {item!r}: expected NAME:=VALUE, e.g. -p backend:=torch")
        try:
            values[name.strip()] = safe_load_text(text, f"-p {item}") if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"-p {item!r}: not a YAML value ({exc})") from None
    return PipelineConfig.from_dict(values).validate(), params_file


def parse_size(text: str | tuple[int, int]) -> tuple[int, int]:
    """``--plot-size`` as ``(width, height)``; a ValueError names a bad one."""
    try:
        return plot_size(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"--plot-size {exc}") from None
