"""What the node's start-up and its process share, without importing rclpy: the stop
signals, the start-up failures and the one place where a failure becomes one line.

- A fault at start (a bad parameter, a model file that cannot be used) is one line naming
  the value (:func:`startup_failure`); the process ends with exit code 2
  (:data:`EXIT_STARTUP_FAILED`), a managed node fails the transition and stays up.
- A stop request is not a fault: whenever it arrives, the node says in one line what it
  was doing, lets go of what it holds and exits 0, as the running node always did on
  Ctrl-C (``ros2 launch`` reports exit 0 as a clean finish, anything else as a death).

Why a signal handler of our own: until ``rclpy.init`` Python's default SIGINT handler
raises KeyboardInterrupt wherever the interpreter is (a traceback out of an import) and
SIGTERM kills the process without a word. After it, rclpy's handlers
(``signal_handler.cpp``) trigger the executors' guard conditions and shut the context
down, then call the handler that was installed before them; they do not interrupt Python
code, so a model load carries on and fails later with ``RCLError: ... context is
invalid``. Installed first, :data:`stop_signals` is the one rclpy chains to: while the node
starts, and while it loads its model in configure (:meth:`StopSignals.interrupting_while`),
it raises :class:`StopRequested` in the main thread, which ends the start-up at once; while
the node spins it only records the signal, and the executor returns because rclpy shut
the context down.
"""
from __future__ import annotations

import pickle
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from abaw_ros.config import ConfigError, ModelFileError
from abaw_ros.errors import one_line
from abaw_ros.share import NODE_NAME

EXIT_STARTUP_FAILED = 2  # bad parameters or a model that cannot be loaded
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
# What the pipeline's loaders raise for a model or file they could not use.
LOAD_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, ValueError, RuntimeError, ImportError)


class StartupError(Exception):
    """The node cannot start; the message says why (and names the parameter)."""


class StopRequested(BaseException):
    """Raised in the main thread by a stop signal during start-up. A BaseException, like
    KeyboardInterrupt, so ``except Exception`` in the loading code never swallows it."""

    def __init__(self, signum: int, activity: str = "starting") -> None:
        self.signum = int(signum)
        self.activity = activity  # what the node was doing, for the one line
        super().__init__(signal_name(signum))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignals:
    """Records the first stop signal; raises :class:`StopRequested` for it while
    ``interrupting`` is true (start-up), and never for a second one (so cleaning up is
    never cut short by an impatient repeat)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.interrupting = True
        self.activity = "starting"
        self._installed = False

    def install(self) -> StopSignals:
        """Install the handlers (once; only from the main thread, as Python requires)."""
        if not self._installed:
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._handle)
            # A StopRequested raised where Python cannot propagate it (an import lock's
            # weakref callback, a __del__) would be printed as "Exception ignored ..." with
            # a traceback; the stop is recorded and acted on at the next check, so drop it.
            previous = sys.unraisablehook

            def unraisable(info: Any) -> None:
                if not isinstance(info.exc_value, StopRequested):
                    previous(info)

            sys.unraisablehook = unraisable
            self._installed = True
        return self

    @property
    def name(self) -> str:
        return signal_name(self.received) if self.received is not None else ""

    def raise_if_received(self) -> None:
        """Raise :class:`StopRequested` for a stop signal that came. Being a Python call, it
        also lets a handler still pending run first: rclpy's own SIGINT handler shuts the
        context down at once, so a call into rcl can fail ("context is not valid") before
        the interpreter has run ours."""
        if self.received is not None:
            raise StopRequested(self.received, self.activity)

    @contextmanager
    def interrupting_while(self, activity: str) -> Iterator[None]:
        """A stop signal during the block raises :class:`StopRequested` (also one that came
        just before it): the model load in configure, which may run inside the spin."""
        before = self.interrupting, self.activity
        self.interrupting, self.activity = True, activity
        try:
            if self.received is not None:
                raise StopRequested(self.received, activity)
            yield
        finally:
            self.interrupting, self.activity = before

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and self.interrupting:
            raise StopRequested(signum, self.activity)


# One per process: signal handlers are process-wide.
stop_signals = StopSignals()


def startup_failure(exc: BaseException) -> str | None:
    """The one line for an expected start-up failure, or None for a bug, which keeps its
    traceback."""
    if isinstance(exc, StartupError):
        return str(exc)
    if isinstance(exc, ConfigError):
        return f"invalid parameter: {exc}"
    if isinstance(exc, (ModelFileError, *LOAD_ERRORS)):
        return f"cannot load the perception pipeline: {exc}"
    if isinstance(exc, (OSError, EOFError, pickle.UnpicklingError, MemoryError)):
        return f"cannot load the perception pipeline: {type(exc).__name__}: {one_line(exc, 500)}"
    return None


def say(level: str, text: str) -> None:
    """A line in the ROS log format, for moments without a node logger."""
    print(f"[{level}] [{NODE_NAME}]: {text}", file=sys.stderr, flush=True)
