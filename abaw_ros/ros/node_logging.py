"""The node's log: warnings about bad frames rate-limited per kind, and the ROS-free
core's Python log records sent to the node's ROS logger."""
from __future__ import annotations

import logging
import re
import time
from typing import Any

from rclpy.node import Node

WARN_PERIOD_S = 5.0  # the same kind of bad frame is reported at most this often


class WarningThrottle:
    """Logs the first warning of each kind at once, then at most once per ``period``,
    saying how many of that kind were not shown."""

    def __init__(self, log: Any, period: float = WARN_PERIOD_S) -> None:
        self._log, self._period = log, period
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        hidden = self._suppressed.pop(key, 0)
        suffix = f" ({hidden} more like it in the last {now - last:.0f} s)" if hidden and last else ""
        self._last[key] = now
        self._log.warning(message + suffix)


def warning_kind(transport: str, exc: Exception) -> str:
    """Messages of one kind differ only in their numbers."""
    return f"{transport}:{type(exc).__name__}:{re.sub(r'[0-9]+', '#', str(exc))}"


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
