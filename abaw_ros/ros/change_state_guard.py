"""Invalid lifecycle transitions answered ``success=false`` on every distro.

A transition that is not valid in the current state (activate while unconfigured, from a
raw ``ChangeState`` call or a lifecycle manager) is answered ``success=false`` with one
warning line, and the node carries on. rclpy does that itself only from Kilted (9.x,
ros2/rclpy#1319): on Humble (3.3) and Jazzy (7.1) ``LifecycleNodeMixin.__change_state``
lets rcl's ``RCLError`` escape the service callback and so the spin, which ended the
process (``rclpy/lifecycle/node.py`` on the humble and jazzy branches).
"""
from __future__ import annotations

from typing import Any

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode

from abaw_ros.errors import one_line


def state_label(node: LifecycleNode) -> str:
    """The current lifecycle state ("unconfigured", "active", ...)."""
    return str(node._state_machine.current_state[1])


def guard_change_state(node: LifecycleNode) -> None:
    """Answer ``~/change_state`` requests for transitions the current state does not have
    with ``success=false`` before rclpy sees them. The executor calls the service's
    ``callback`` attribute (``Executor._execute_service`` on Humble, Jazzy and Kilted), so
    wrapping it covers every rclpy version."""
    service = getattr(node, "_service_change_state", None)
    if service is None:  # enable_communication_interface=False: no service to guard
        return
    answer = service.callback
    machine = node._state_machine

    def refuse(response: Any, transition: str, why: str) -> Any:
        node.get_logger().warning(f"change_state: transition {transition} is not valid in state "
                                  f"{state_label(node)}; answered success=false ({why})")
        response.success = False
        return response

    def transition_name(transition_id: int) -> str:
        names = {t[0]: t[1] for t in machine.transition_graph}
        return f"{transition_id} ({names[transition_id]})" if transition_id in names else str(transition_id)

    def change_state(request: Any, response: Any) -> Any:
        transition = request.transition
        name = repr(transition.label) if transition.label else transition_name(transition.id)
        if not transition.label:  # rclpy checks a label itself and answers false
            valid = {t[0]: t[1] for t in machine.available_transitions}
            if transition.id not in valid:
                listed = ", ".join(f"{i} ({label})" for i, label in sorted(valid.items()))
                return refuse(response, name, f"valid here: {listed or 'none'}")
        try:
            return answer(request, response)
        except _rclpy.RCLError as exc:  # a state machine error rclpy < 9 does not catch
            return refuse(response, name, f"rcl: {one_line(exc)}")

    service.callback = change_state
