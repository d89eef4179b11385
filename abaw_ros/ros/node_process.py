"""The node process, for both executables (``affect_node``, which autostarts the node,
and the managed ``affect_lifecycle_node``): stop signals from its first line on
(:mod:`abaw_ros.ros.node_startup`), the spin, and the exit code.

- A fault at start (a bad parameter, a model file that cannot be used) ends in one
  ``[FATAL]`` line naming the value, and exit code 2 (:data:`EXIT_STARTUP_FAILED`).
- A stop request is not a fault: whenever it arrives, the node says in one line what it
  was doing, lets go of what it holds and exits 0.

The managed node loads its model in ``on_configure``, inside the spin: that callback runs
under :meth:`StopSignals.interrupting_while`, so a stop during configure ends the process
as one during the autostarted node's start-up does, while a fault there fails the
transition (the node stays up, unconfigured) instead of ending the process.

This module imports nothing heavy at module level, so the executable installs the
handlers before anything else; rclpy and the node are imported by :func:`run_node`.
"""
from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from abaw_ros.ros.node_startup import (
    EXIT_STARTUP_FAILED,
    NODE_NAME,
    StopRequested,
    one_line,
    say,
    stop_signals,
)

__all__ = ["EXIT_STARTUP_FAILED", "NODE_NAME", "main", "run_node"]

SPIN_CHECK_S = 0.5  # the spin looks at the context and the recorded stop signal this often
# The node's module, imported once the stop handlers are in place.
NODE_MODULE = "abaw_ros.ros.affect_node"


def run_node(args: list[str] | None = None, early_stops: list[int] | None = None,
             managed: bool = False) -> int:
    """A node executable: handlers first, then the heavy imports, then :func:`main`.
    ``early_stops``: signals the executable recorded before this package could be
    imported. ``managed``: the node waits, unconfigured, for a lifecycle manager instead
    of starting itself. A stop before or during the imports ends here, in one line."""
    stop_signals.install()
    try:
        if early_stops:
            raise StopRequested(early_stops[0])
        importlib.import_module(NODE_MODULE)  # rclpy, messages, numpy
    except StopRequested as stop:
        say("INFO", f"stopped by {stop} while loading its modules; nothing was started")
        return 0
    return main(args, managed=managed)


def main(args: list[str] | None = None, managed: bool = False) -> int:
    """Run the node until Ctrl-C, SIGTERM or an external shutdown (exit 0, also when the
    stop comes during start-up or, for the managed node, during configure); 2 when it
    cannot start. Every way out is one line."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor

    from abaw_ros.ros.affect_node import LOADING, AffectNode
    from abaw_ros.ros.node_logging import RosLogHandler
    from abaw_ros.ros.transport import share_profile_across_generations

    stop = stop_signals.install()
    stop.activity = "starting"
    try:
        # A Fast DDS profile the user gave under one generation's variable name is in force
        # on every distro (Fast DDS reads it once, at rclpy.init; see ros/transport.py).
        # Inside the try: a stop signal can come while it reads /proc/self/maps.
        share_profile_across_generations()
        try:
            rclpy.init(args=args)
        except StopRequested:
            raise
        except Exception as exc:  # e.g. a missing or malformed --params-file: rcl says which
            say("FATAL", f"cannot start: {one_line(exc, 500)}")
            return EXIT_STARTUP_FAILED
        node: Any = None
        code: int | None = None
        core_log = logging.getLogger("abaw_ros")
        try:
            try:
                node = AffectNode(autostart=not managed)
                core_log.addHandler(RosLogHandler(node))
                core_log.setLevel(logging.INFO)
                core_log.propagate = False
                if not managed:  # the managed node loads the model in on_configure, inside the spin
                    stop.activity = LOADING
                    code = node.autostart()
            except Exception:
                stop.raise_if_received()  # rcl failed because a stop signal shut the context down
                if not rclpy.ok():  # shut down from outside (rclpy.shutdown)
                    say("INFO", f"stopped: the ROS context was shut down while {stop.activity}")
                    return 0
                raise
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
                    say("INFO", f"stopped by {stop.name}{state}")
        finally:
            stop.interrupting = False
            if node is not None:
                node.stop()
                node.destroy_node()
            rclpy.try_shutdown()
        return code or 0
    except StopRequested as request:
        done = "done" if request.activity == "running" else "nothing was published"
        say("INFO", f"stopped by {request} while {request.activity}; {done}")
        return 0


if __name__ == "__main__":  # python -m abaw_ros.ros.node_process [--managed] --ros-args ...
    managed = "--managed" in sys.argv[1:sys.argv.index("--ros-args") if "--ros-args" in sys.argv else None]
    sys.exit(run_node(managed=managed))
