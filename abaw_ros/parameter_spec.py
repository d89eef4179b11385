"""The parameter spec: what each node parameter and command-line number may be.

:class:`ParameterSpec` is one parameter as the node declares it (type, default,
description, allowed values, whether a running node applies a change);
:func:`spec_field` attaches it to a field of :class:`abaw_ros.config.PipelineConfig`.
:class:`Bounds` and the ranges below are shared with the command-line options.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A parameter has a value the node cannot run with; the message names it."""


@dataclass(frozen=True)
class Bounds:
    """The values a number may take: ``low`` to ``high`` (both included), finite, and
    optionally one value outside them (``off``) with its meaning. Every numeric node
    parameter and command-line option declares one beside its description: values the
    libraries accept can still break the node (a 1e308 Hz rate overflows the loss
    estimate, 2**63-1 missed detections keep every face that ever passed)."""

    low: float
    high: float
    unit: str = ""
    off: float | None = None
    off_means: str = ""

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return value == self.off or self.low <= value <= self.high

    def describe(self) -> str:
        """``"0.1 to 1000 Hz, or 0 (estimate from the image stamps)"``."""
        text = f"{_shown(self.low)} to {_shown(self.high)}" + (f" {self.unit}" if self.unit else "")
        if self.off is not None:
            text += f", or {_shown(self.off)}" + (f" ({self.off_means})" if self.off_means else "")
        return text

    def check(self, name: str, value: Any) -> None:
        """Raise ConfigError ``"name=value: must be <describe()>"`` unless ``value`` is in."""
        if value not in self:
            raise ConfigError(f"{name}={value!r}: must be {self.describe()}")


# Ranges whose extreme values are accepted by the libraries but break the node: a timer
# period of 1e-9 s floods /diagnostics and starves the worker, `inf` overflows the timer;
# an 8000-pixel crop allocates ~190 MB per face per frame.
DIAGNOSTICS_PERIOD_RANGE = (0.1, 3600.0)  # seconds
CROP_SIZE_RANGE = (32, 1024)  # pixels; crops are resized to the model input (224) anyway
# The largest decoded frame the node and the offline tools accept: 7680x4320 (8K UHD, four
# times 4K UHD), i.e. at most 95 MiB of BGR pixels per frame. A compressed image's header
# gives its size before decoding, so a small file that would decode to gigabytes is
# refused unread.
DEFAULT_MAX_IMAGE_PIXELS = 7680 * 4320
MAX_IMAGE_PIXELS_RANGE = (64 * 64, 16384 * 16384)
# How far (seconds) a followed ROS4HRI face's roi stamp may be from a frame's stamp: above a
# few seconds the box no longer says where the face is in that frame.
ROS4HRI_ROI_MAX_AGE_RANGE = (0.0, 5.0)
# Camera frame rates, for the node's expected_input_rate and the tools' --fps: beyond
# 1000 Hz the nanosecond stamps of consecutive frames stop being distinct enough to
# measure loss; below 0.01 Hz (one frame in 100 s) nothing temporal is left to estimate.
FRAME_RATE_RANGE = (0.01, 1000.0)  # Hz
# ROS 2 stamps (builtin_interfaces/Time) hold the seconds in an int32: from 1970-01-01 to
# 2038-01-19 03:14:07 UTC (ros2/rcl_interfaces builtin_interfaces/msg/Time.msg: int32 sec);
# bag log times are unsigned (MCAP log_time uint64), so stamps before 1970 are refused too.
STAMP_SECONDS_RANGE = (0, 2**31 - 1)
# Most faces processed per frame. Also the most hidden tracks (faces missed by the latest
# detector runs, kept with their windows until track_max_misses) the tracker holds, so the
# memory of hidden faces stays bounded whatever the parameters.
MAX_FACES = 64
FRAME_RATE = Bounds(*FRAME_RATE_RANGE, "Hz")
STAMP_SECONDS = Bounds(*STAMP_SECONDS_RANGE, "seconds since the epoch")


def spec_field(default: Any, description: str, choices: tuple[str, ...] | None = None,
               bounds: Bounds | None = None, runtime: bool = False) -> Any:
    """A config field with its parameter spec. ``runtime``: a running node applies a new
    value (``ros2 param set``); every other parameter is read when the model loads, and a
    change is refused with the reason."""
    metadata: dict[str, Any] = {"description": description, "runtime": runtime}
    if choices is not None:
        metadata["choices"] = choices
    if bounds is not None:
        metadata["bounds"] = bounds
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter as the ROS node declares it."""

    name: str
    type: type
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    bounds: Bounds | None = None  # every int and float parameter has one
    runtime: bool = False  # applied by a running node when set; else read when the model loads


def _shown(number: float) -> str:
    """An int in full (268435456, never 2.68435e+08), a float as %g."""
    return str(number) if isinstance(number, int) else f"{number:g}"



def coerce(spec: ParameterSpec, value: Any) -> Any:
    """Check a value's type; ints are accepted for floats (YAML writes 1 for 1.0)."""
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if spec.type is int and isinstance(value, bool):
        ok = False
    else:
        ok = isinstance(value, spec.type)
    if not ok:
        raise ConfigError(f"{spec.name}={value!r}: must be of type {spec.type.__name__}, "
                          f"got {type(value).__name__}")
    return value
