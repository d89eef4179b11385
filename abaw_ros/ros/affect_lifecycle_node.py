"""The managed (lifecycle) ``abaw_affect`` node, executable ``affect_lifecycle_node``.

Same parameters, topics and diagnostics as :mod:`abaw_ros.ros.affect_node`; a lifecycle
manager (``ros2 lifecycle set``, nav2's lifecycle manager, a launch file's
``LifecycleNode``) drives it through the standard states (``rclpy.lifecycle``, services
``~/change_state`` and ``~/get_state``):

- configure: read and check the parameters, load the model (a bad parameter or model
  file fails the transition and the node stays unconfigured, with the reason in one
  error line; a stop signal during the load ends the process in one line, exit 0);
- activate: subscribe to the camera, start the worker and ``/diagnostics``;
- deactivate: unsubscribe and stop the worker; nothing is published while inactive;
- cleanup: free the model and the publishers (parameters may then change, also those a
  running node refuses, and a new configure reads them);
- shutdown: from any state, as cleanup.

A transition that is not valid in the current state (activate while unconfigured, from a
raw ``ChangeState`` call or a lifecycle manager) is answered ``success=false`` with one
warning line, and the node carries on. rclpy does that itself only from Kilted (9.x,
ros2/rclpy#1319): on Humble (3.3) and Jazzy (7.1) ``LifecycleNodeMixin.__change_state``
lets rcl's ``RCLError`` escape the service callback and so the spin, which ended the
process (``rclpy/lifecycle/node.py`` on the humble and jazzy branches).

The process (stop signals, the log, exit codes) is :mod:`abaw_ros.ros.node_process`'s,
as for the plain node.
"""
from __future__ import annotations

import sys
import traceback
from typing import Any

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from abaw_ros.ros.affect_node import NODE_NAME, AffectNodeBase
from abaw_ros.ros.node_process import StopRequested, describe_startup_failure, run_node, stop_signals

CONFIGURING = "configuring (loading the model)"


class AffectLifecycleNode(AffectNodeBase, LifecycleNode):
    """The affect node as a managed node; starts unconfigured."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, node_name, **kwargs)
        self._init_affect()
        self._active = False
        self._guard_change_state()

    @property
    def state_label(self) -> str:
        """The current lifecycle state ("unconfigured", "active", ...)."""
        return str(self._state_machine.current_state[1])

    def stop(self) -> None:
        """Stop the worker (after its current frame); the process is ending."""
        self._stop_input()

    def _guard_change_state(self) -> None:
        """Answer ``~/change_state`` requests for transitions the current state does not
        have with ``success=false`` before rclpy sees them (see the module docstring). The
        executor calls the service's ``callback`` attribute (``Executor._execute_service``
        on Humble, Jazzy and Kilted), so wrapping it covers every rclpy version."""
        service = getattr(self, "_service_change_state", None)
        if service is None:  # enable_communication_interface=False: no service to guard
            return
        answer = service.callback

        def change_state(request: Any, response: Any) -> Any:
            transition = request.transition
            name = repr(transition.label) if transition.label else self._transition_name(transition.id)
            if not transition.label:  # rclpy checks a label itself and answers false
                valid = {t[0]: t[1] for t in self._state_machine.available_transitions}
                if transition.id not in valid:
                    listed = ", ".join(f"{i} ({label})" for i, label in sorted(valid.items()))
                    return self._refuse(response, name, f"valid here: {listed or 'none'}")
            try:
                return answer(request, response)
            except _rclpy.RCLError as exc:  # a state machine error rclpy < 9 does not catch
                return self._refuse(response, name, f"rcl: {' '.join(str(exc).split())}")

        service.callback = change_state

    def _transition_name(self, transition_id: int) -> str:
        names = {t[0]: t[1] for t in self._state_machine.transition_graph}
        return f"{transition_id} ({names[transition_id]})" if transition_id in names else str(transition_id)

    def _refuse(self, response: Any, transition: str, why: str) -> Any:
        self.get_logger().warning(f"change_state: transition {transition} is not valid in state "
                                  f"{self.state_label}; answered success=false ({why})")
        response.success = False
        return response

    def _make_publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        pub = self.create_lifecycle_publisher(msg_type, topic, qos)
        if self._active:  # created by a runtime change (debug image) while active
            pub.on_activate(None)
        return pub

    def _drop_publisher(self, pub: Any) -> None:
        self.destroy_lifecycle_publisher(pub)

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
            with stop_signals.interrupting_while(CONFIGURING):
                self._load()
        except Exception as exc:
            self._unload()
            if stop_signals.received is not None:  # the load failed because of the stop
                raise StopRequested(stop_signals.received, CONFIGURING) from None
            if not self.context.ok():  # shut down from outside; the spin ends next
                return TransitionCallbackReturn.FAILURE
            reason = describe_startup_failure(exc)
            if reason is None:  # a bug: its traceback, and rclpy's error processing
                self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}\n"
                                        f"{traceback.format_exc()}")
                return TransitionCallbackReturn.ERROR
            self.get_logger().error(f"configure failed: {reason}")
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


if __name__ == "__main__":
    sys.exit(run_node(managed=True))
