"""The node's log: warnings about bad frames rate-limited per kind (with bounded memory
and line length, whatever the frames carry), and the ROS-free core's Python log records
sent to the node's ROS logger."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rclpy.node import Node

WARN_PERIOD_S = 5.0  # the same kind of bad frame is reported at most this often
WARN_MAX_KINDS = 64  # kinds of warning remembered for throttling
WARN_MAX_CHARS = 400  # longest warning text logged


class WarningThrottle:
    """Logs the first warning of each kind at once, then at most once per ``period``,
    saying how many of that kind were not shown.

    Bounded whatever the input: at most ``max_kinds`` kinds are remembered (the one
    warned about longest ago is forgotten first) and a message is cut to ``max_chars``,
    so frames with random, megabyte-long encoding strings cost neither memory nor log."""

    def __init__(self, log: Any, period: float = WARN_PERIOD_S, max_kinds: int = WARN_MAX_KINDS,
                 max_chars: int = WARN_MAX_CHARS) -> None:
        self._log, self._period = log, period
        self._max_kinds, self._max_chars = max_kinds, max_chars
        self._last: dict[str, float] = {}  # oldest first
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str) -> None:
        key = key[:200]
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        hidden = self._suppressed.pop(key, 0)
        suffix = f" ({hidden} more like it in the last {now - last:.0f} s)" if hidden and last else ""
        self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self._max_kinds:
            oldest = next(iter(self._last))
            del self._last[oldest]
            self._suppressed.pop(oldest, None)
        if len(message) > self._max_chars:
            message = message[: self._max_chars] + f"... ({len(message)} chars)"
        self._log.warning(message + suffix)

    def __len__(self) -> int:
        return len(self._last)


def warning_kind(transport: str, exc: Exception) -> str:
    """One kind per transport, error type and the line that raised it: each problem
    (short data, odd 4:2:2 width, unsupported encoding, ...) has a kind of its own, while
    frames that differ only in their values (random encodings, sizes) share one, so the
    kinds are few whatever the stream carries."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    site = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb is not None else ""
    return f"{transport}:{type(exc).__name__}:{site}"


class RosLogHandler(logging.Handler):
    """Sends the core's Python log records (``abaw_ros.*``) to the node's ROS logger, so
    they appear in the node's log with its name and format."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.WARNING and "untrained" in text.lower():
            self._logger.debug(text)  # the node says it once itself (see _describe_model)
        elif record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        elif record.levelno >= logging.INFO:
            self._logger.info(text)
        else:
            self._logger.debug(text)
