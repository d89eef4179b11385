"""The managed (lifecycle) ``abaw_affect`` node, executable ``affect_lifecycle_node``.

Same parameters, topics and diagnostics as :mod:`abaw_ros.ros.affect_node`; a lifecycle
manager (``ros2 lifecycle set``, nav2's lifecycle manager, a launch file's
``LifecycleNode``) drives it through the standard states (``rclpy.lifecycle``, services
``~/change_state`` and ``~/get_state``):

- configure: read and check the parameters, load the model (a failure returns to
  unconfigured, with the reason in the log);
- activate: subscribe to the camera, start the worker and ``/diagnostics``;
- deactivate: unsubscribe and stop the worker; nothing is published while inactive;
- cleanup: free the model and the publishers (parameters may then change, also those a
  running node refuses, and a new configure reads them);
- shutdown: from any state, as cleanup.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from abaw_ros.ros.affect_node import NODE_NAME, AffectNodeBase, StartupError
from abaw_ros.ros.node_logging import RosLogHandler


class AffectLifecycleNode(AffectNodeBase, LifecycleNode):
    """The affect node as a managed node; starts unconfigured."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, node_name, **kwargs)
        self._init_affect()
        self._active = False

    def _make_publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        pub = self.create_lifecycle_publisher(msg_type, topic, qos)
        if self._active:  # created by a runtime change (debug image) while active
            pub.on_activate(None)
        return pub

    def _destroy_outputs(self) -> None:
        for pub in (self._affect_pub, self._diag_pub, self._debug_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._affect_pub = self._diag_pub = self._debug_pub = None

    def _connect_debug_image(self) -> None:
        if self._debug_pub is not None and self.config is not None and not self.config.publish_debug_image:
            pub, self._debug_pub = self._debug_pub, None
            self.destroy_lifecycle_publisher(pub)
            return
        super()._connect_debug_image()

    # -- transitions ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load()
        except StartupError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._unload()
            return TransitionCallbackReturn.FAILURE
        self._create_outputs()
        self.get_logger().info(f"configured: model {self._info.get('model')} "
                               f"(backend {self._info.get('backend')}); activate to start")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        result = super().on_activate(state)  # enables the lifecycle publishers
        topic = self._start_input()
        self.get_logger().info(f"active: listening on {topic}, publishing {self.resolve_topic_name('affect')}")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._active = False
        self.get_logger().info("inactive: unsubscribed, nothing is published")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_outputs()
        self._unload()
        self.get_logger().info("cleaned up: model freed")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._active = False
        self._destroy_outputs()
        self._unload()
        return super().on_shutdown(state)


def main(args: list[str] | None = None) -> int:
    """Run the managed node until Ctrl-C or an external shutdown."""
    try:
        rclpy.init(args=args)
    except Exception as exc:  # e.g. a missing or malformed --params-file: rcl says which
        print(f"[FATAL] [{NODE_NAME}]: cannot start: {exc}", file=sys.stderr)
        return 2
    node: AffectLifecycleNode | None = None
    core_log = logging.getLogger("abaw_ros")
    try:
        node = AffectLifecycleNode()
        core_log.addHandler(RosLogHandler(node))
        core_log.setLevel(logging.INFO)
        core_log.propagate = False
        node.get_logger().info("unconfigured: waiting for configure (lifecycle ~/change_state)")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node._stop_input()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
