"""Stop requests (SIGINT, SIGTERM) for the node process, from its first line on.

A stop request is not a fault: whenever it arrives, the node says in one line what it
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
context down.

This module imports nothing heavy, so the executable installs it before anything else.
"""
from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """Raised in the main thread by a stop signal during start-up. A BaseException, like
    KeyboardInterrupt, so ``except Exception`` in the loading code never swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
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

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and self.interrupting:
            raise StopRequested(signum)


# One per process: signal handlers are process-wide.
stop_signals = StopSignals()


def run_node(module: str = "abaw_ros.ros.affect_node", node_name: str = "abaw_affect",
             early_stops: list[int] | None = None) -> int:
    """The node executable: handlers first, then the heavy imports, then ``main()``.
    ``early_stops``: signals the executable recorded before this package could be
    imported. A stop before or during the imports ends here, in one line; later ones
    end in ``main()``."""
    import importlib
    import sys

    stop_signals.install()
    try:
        if early_stops:
            raise StopRequested(early_stops[0])
        entry = importlib.import_module(module).main
    except StopRequested as stop:
        print(f"[INFO] [{node_name}]: stopped by {stop} while loading its modules; nothing was "
              f"started", file=sys.stderr)
        return 0
    return int(entry() or 0)
