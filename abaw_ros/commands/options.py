"""Numeric command-line options: each declares its range beside its help text, and a value
outside it (or not finite) ends the command before any work with one line naming the
option, the value and the range (exit 2), e.g.

    abaw-affect video-to-bag: error: argument --fps: 1e300: must be 0.01 to 1000 Hz
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
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
           "number", "plot_size"]


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


class OneLineErrors(argparse.ArgumentParser):
    """A sub-command's parser whose usage errors are one line (``prog: error: message``)
    and exit 2, as the commands' own errors are; ``--help`` still shows the usage."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
