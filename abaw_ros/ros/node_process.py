"""The node process, for both executables (``affect_node`` and the managed
``affect_lifecycle_node``): stop signals from its first line on, and the one place where
every way the start-up can fail becomes one line and an exit code.

- A fault at start (a bad parameter, a model file that cannot be used) ends in one
  ``[FATAL]`` line naming the value, and exit code 2 (:data:`EXIT_STARTUP_FAILED`).
- A stop request is not a fault: whenever it arrives, the node says in one line what it
was doing, lets go of what it holds and exits 0, as the running node always did on
Ctrl-C (``ros2 launch`` reports exit 0 as a clean finish, anything else as a death).

Why a handler of our own: until ``rclpy.init`` Python's default SIGINT handler raises
KeyboardInterrupt wherever the interpreter is (a traceback out of an import) and SIGTERM
kills the process without a word. After it, rclpy's handlers (``signal_handler.cpp``)
trigger the executors' guard conditions and shut the context down, then call the
handler that was installed before them; they do not interrupt Python code, so a model
load carries on and fails later with ``RCLError: ... context is invalid``. Installed
first, this handler is the one rclpy chains to: while the node starts it raises
:class:`StopRequested` in the main thread, which ends the start-up at once; while the
node spins it only records the signal, and the executor returns because rclpy shut the
context down. The managed node loads its model in ``on_configure``, inside the spin: that
callback runs under :meth:`StopSignals.interrupting_while`, so a stop during configure ends
the process as one during the plain node's start-up does, while a fault there fails the
transition (the node stays up, unconfigured) instead of ending the process.

This module imports nothing heavy at module level, so the executable installs the
handlers before anything else; rclpy and the node are imported by :func:`run_node`.
"""
from __future__ import annotations

import importlib
import logging
import pickle
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from abaw_ros.errors import one_line
from abaw_ros.share import NODE_NAME

EXIT_STARTUP_FAILED = 2  # bad parameters or a model that cannot be loaded

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
SPIN_CHECK_S = 0.5  # the spin looks at the context and the recorded stop signal this often
# The module of each executable's node, imported once the stop handlers are in place.
NODE_MODULES = {False: "abaw_ros.ros.affect_node", True: "abaw_ros.ros.affect_lifecycle_node"}


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
            self._installed = True
        return self

    @property
    def name(self) -> str:
        return signal_name(self.received) if self.received is not None else ""

    @contextmanager
    def interrupting_while(self, activity: str) -> Iterator[None]:
        """A stop signal during the block raises :class:`StopRequested` (also one that came
        just before it): the managed node's configure, which runs inside the spin."""
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


def run_node(args: list[str] | None = None, early_stops: list[int] | None = None,
             managed: bool = False) -> int:
    """A node executable: handlers first, then the heavy imports, then :func:`main`.
    ``early_stops``: signals the executable recorded before this package could be
    imported. ``managed``: the lifecycle node instead of the plain one. A stop before or
    during the imports ends here, in one line."""
    stop_signals.install()
    try:
        if early_stops:
            raise StopRequested(early_stops[0])
        importlib.import_module(NODE_MODULES[managed])  # rclpy, messages, numpy
    except StopRequested as stop:
        _say("INFO", f"stopped by {stop} while loading its modules; nothing was started")
        return 0
    return main(args, managed=managed)


def describe_startup_failure(exc: BaseException) -> str | None:
    """The one line for an expected start-up failure that escaped :meth:`AffectNode.start`
    (a model or file fault the loaders did not name), or None for a bug, which keeps its
    traceback."""
    from abaw_ros.config import ConfigError, ModelFileError
    from abaw_ros.ros.affect_node import StartupError

    if isinstance(exc, StartupError):
        return str(exc)
    if isinstance(exc, ConfigError):
        return f"invalid parameter: {exc}"
    if isinstance(exc, ModelFileError):
        return f"cannot load the perception pipeline: {exc}"
    if isinstance(exc, (OSError, EOFError, pickle.UnpicklingError, MemoryError)):
        return f"cannot load the perception pipeline: {type(exc).__name__}: {one_line(exc, 500)}"
    return None


def _say(level: str, text: str) -> None:
    """A line in the ROS log format, for moments without a node logger."""
    print(f"[{level}] [{NODE_NAME}]: {text}", file=sys.stderr, flush=True)


def main(args: list[str] | None = None, managed: bool = False) -> int:
    """Run the node until Ctrl-C, SIGTERM or an external shutdown (exit 0, also when the
    stop comes during start-up or, for the managed node, during configure); 2 when it
    cannot start. Every way out is one line."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor

    from abaw_ros.ros.node_logging import RosLogHandler
    from abaw_ros.ros.transport import share_profile_across_generations

    stop = stop_signals.install()
    stop.activity = "starting"
    # A Fast DDS profile the user gave under one generation's variable name is in force on
    # every distro (Fast DDS reads it once, at rclpy.init; see ros/transport.py).
    share_profile_across_generations()
    try:
        try:
            rclpy.init(args=args)
        except StopRequested:
            raise
        except Exception as exc:  # e.g. a missing or malformed --params-file: rcl says which
            _say("FATAL", f"cannot start: {one_line(exc, 500)}")
            return EXIT_STARTUP_FAILED
        node: Any = None
        code: int | None = None
        core_log = logging.getLogger("abaw_ros")
        try:
            node = _create_node(managed)
            core_log.addHandler(RosLogHandler(node))
            core_log.setLevel(logging.INFO)
            core_log.propagate = False
            if not managed:  # the managed node loads the model in on_configure, inside the spin
                code = _start(node, stop)
            if code is None:
                stop.activity = "running"
                stop.interrupting = False  # from here rclpy's shutdown ends the spin
                if stop.received is not None:
                    raise StopRequested(stop.received, stop.activity)
                if managed:  # said only now: a stop after this line is one "in state unconfigured"
                    node.get_logger().info("unconfigured: waiting for configure (lifecycle ~/change_state)")
                executor = SingleThreadedExecutor()
                executor.add_node(node)
                try:
                    # Not executor.spin(): it waits without a timeout for the guard condition
                    # that rclpy's signal thread triggers (rclpy signal_handler.cpp), and in
                    # about 1 of 15 runs here a SIGINT after two failed configures of the
                    # managed node left the main thread in rcl_wait until SIGKILL (0 of 25
                    # with this loop). Waking every SPIN_CHECK_S to look at the context and
                    # at the signal our handler recorded ends the spin either way.
                    while node.context.ok() and stop.received is None:
                        executor.spin_once(timeout_sec=SPIN_CHECK_S)
                except (KeyboardInterrupt, ExternalShutdownException, ShutdownException):
                    pass
                if stop.received is not None:
                    state = f" in state {node.state_label}" if managed else ""
                    _say("INFO", f"stopped by {stop.name}{state}")
        finally:
            stop.interrupting = False
            if node is not None:
                node.stop()
                node.destroy_node()
            rclpy.try_shutdown()
        return code or 0
    except StopRequested as request:
        done = "done" if request.activity == "running" else "nothing was published"
        _say("INFO", f"stopped by {request} while {request.activity}; {done}")
        return 0


def _create_node(managed: bool) -> Any:
    if managed:
        from abaw_ros.ros.affect_lifecycle_node import AffectLifecycleNode

        return AffectLifecycleNode()
    from abaw_ros.ros.affect_node import AffectNode

    return AffectNode()


def _start(node: Any, stop: StopSignals) -> int | None:
    """Start the plain node: None once it runs, else the exit code (after its one line)."""
    stop.activity = "loading the model"
    try:
        node.start()
    except StopRequested:
        raise
    except Exception as exc:
        if stop.received is not None:  # the load failed because of the stop
            raise StopRequested(stop.received, stop.activity) from None
        if not node.context.ok():  # shut down from outside (rclpy.shutdown)
            _say("INFO", "stopped: the ROS context was shut down while loading the model")
            return 0
        reason = describe_startup_failure(exc)
        if reason is None:
            raise
        node.get_logger().fatal(reason)
        return EXIT_STARTUP_FAILED
    return None
