"""The managed node (``affect_lifecycle_node``) over real DDS, driven through its lifecycle
services (``~/get_state``, ``~/change_state``) from this process, as ``ros2 lifecycle set``
or a lifecycle manager would: configure loads the model, activate answers frames,
deactivate publishes nothing, cleanup and shutdown end cleanly. The process boundary is
the plain node's: a stop signal while unconfigured or during configure ends it in one
line, exit 0; a bad model file fails configure with one error line naming the file and
leaves the node up, unconfigured."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

import fault_files  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from ros_harness import (  # noqa: E402
    FrameClient,
    NodeProcess,
    node_executable,
    params_file,
    send_in_lockstep,
    unique_namespace,
)

from abaw_ros.ros.demo_scene import DemoScene  # noqa: E402

pytestmark = pytest.mark.timeout(150)


class _Lifecycle:
    """Calls the node's lifecycle services from the client's node."""

    def __init__(self, client: FrameClient, node_fqn: str) -> None:
        self.client = client
        self.get = client.node.create_client(GetState, f"{node_fqn}/get_state")
        self.change = client.node.create_client(ChangeState, f"{node_fqn}/change_state")

    def _call(self, cli, request, resend: bool = False):
        """The service's answer. ``resend``: for requests that change nothing (a state query,
        a transition that must be refused), ask again when no answer comes: DDS may drop the
        first response when the client's response reader is not yet matched on the node's
        side, which wait_for_service does not cover (it sees only the request side)."""
        assert cli.wait_for_service(timeout_sec=30), cli.srv_name
        for _ in range(4 if resend else 1):
            future = cli.call_async(request)
            if self.client.wait_for(future.done, timeout=15 if resend else 60):
                return future.result()
        raise AssertionError(f"{cli.srv_name} did not answer")

    def state(self) -> int:
        return self._call(self.get, GetState.Request(), resend=True).current_state.id

    def transition(self, transition_id: int, label: str = "", resend: bool = False) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id, label=label))
        return self._call(self.change, request, resend=resend).success

    def request(self, transition_id: int) -> None:
        """Ask for a transition without waiting for the answer."""
        assert self.change.wait_for_service(timeout_sec=30), self.change.srv_name
        self.change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))


def _managed_node(tmp: Path, **overrides) -> tuple[NodeProcess, str]:
    """The managed node, with a cache of its own (empty: configure builds and exports the
    untrained model), and its fully qualified name."""
    params = params_file(tmp, **{"backend": "onnxruntime", **overrides})
    env = dict(os.environ, ABAW_ROS_CACHE=str(tmp / "cache"))
    executable = node_executable("affect_lifecycle_node")
    namespace = unique_namespace("lifecycle")
    node = NodeProcess(params, tmp / "node.log", namespace, env=env, executable=executable)
    return node, f"{namespace}/abaw_affect"


def _wait_for_log(node: NodeProcess, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while text not in node.log() and node.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return text in node.log()


def test_transitions_drive_the_node_and_an_inactive_node_publishes_nothing(tmp_path, ros_domain_id, model_bundle):
    namespace = unique_namespace("lifecycle")
    params = params_file(tmp_path, model_file_path=str(model_bundle), backend="onnxruntime", window_length=8,
                         diagnostics_period=0.5)
    executable = node_executable("affect_lifecycle_node")
    node = NodeProcess(params, tmp_path / "node.log", namespace, executable=executable)
    client = FrameClient(namespace, domain_id=ros_domain_id)
    scene = DemoScene(faces=1)
    try:
        lifecycle = _Lifecycle(client, f"{namespace}/abaw_affect")
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert client.image_pub.get_subscription_count() == 0  # no model, no subscription

        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE), node.log()[-3000:]
        assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
        assert "configured: model" in node.log()
        assert client.image_pub.get_subscription_count() == 0  # inactive: not listening yet

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.state() == State.PRIMARY_STATE_ACTIVE
        assert client.wait_for_node(timeout=20), node.log()[-3000:]
        answered = [a for a in send_in_lockstep(client, scene, 6) if a.result is not None]
        assert len(answered) >= 5, node.log()[-3000:]
        assert all(not a.msg.weights_trained and a.msg.model_id.startswith(model_bundle.name) for a in answered)
        assert client.wait_for(lambda: bool(client.diagnostics()), timeout=5)

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
        time.sleep(0.5)  # anything already on the wire arrives
        client.clear()
        stamps = []
        for i in range(10):
            stamps.append(client.send_image(scene.frame(i)))
            time.sleep(0.1)
        time.sleep(1.5)  # three diagnostics periods
        assert client.results_for(stamps) == [] and client.received() == []
        assert client.diagnostics() == []
        assert client.image_pub.get_subscription_count() == 0

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)  # and back
        assert client.wait_for_node(timeout=20)
        assert [a for a in send_in_lockstep(client, scene, 3) if a.result is not None]

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "cleaned up: model freed" in node.log()
        assert lifecycle.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert lifecycle.state() == State.PRIMARY_STATE_FINALIZED
    finally:
        client.close()
        code = node.stop()
    log = node.log()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log


def test_a_transition_invalid_in_the_current_state_is_refused_and_the_node_keeps_running(
        tmp_path, ros_domain_id, model_bundle):
    """A raw ChangeState call (another process, as ``ros2 service call`` or a lifecycle
    manager sends it) naming a transition the current state does not have: answered
    success=false with one warning line, whatever the rclpy version (Humble's and Jazzy's
    let rcl's error end the process)."""
    node, name = _managed_node(tmp_path, model_file_path=str(model_bundle), precision="fp32")
    client = FrameClient(unique_namespace("unused"), domain_id=ros_domain_id)
    try:
        lifecycle = _Lifecycle(client, name)
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED  # the node answers
        # while unconfigured (resent if the first answer is lost: refused, it changes nothing)
        assert not lifecycle.transition(Transition.TRANSITION_ACTIVATE, resend=True), node.log()[-3000:]
        assert node.alive(), node.log()[-3000:]
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert not lifecycle.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)  # only from active
        assert not lifecycle.transition(0, label="activate")  # by label: rclpy's own check
        assert not lifecycle.transition(200)  # no such transition at all
        assert node.alive() and lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED

        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE), node.log()[-3000:]  # still managed
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)  # inactive: already configured
        assert not lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert not lifecycle.transition(Transition.TRANSITION_ACTIVATE)  # active: already active
        assert lifecycle.state() == State.PRIMARY_STATE_ACTIVE
    finally:
        client.close()
        code = node.stop()
    log = node.log()
    assert code == 0, f"exit code {code}:\n{log[-3000:]}"
    assert "Traceback" not in log and "RCLError" not in log, log[-3000:]
    refused = [line for line in log.splitlines() if "answered success=false" in line]
    # a resent request whose first answer was lost is refused twice: count it once
    refused = [line for i, line in enumerate(refused)
               if i == 0 or line.split("]: ", 1)[-1] != refused[i - 1].split("]: ", 1)[-1]]
    assert len(refused) == 6, log[-3000:]  # the label request is refused by rclpy, silently
    assert "[WARN]" in refused[0] and "transition 3 (activate) is not valid in state unconfigured" in refused[0], refused
    assert "valid here: 1 (configure), 5 (shutdown)" in refused[0], refused
    assert "transition 200 is not valid in state unconfigured" in refused[2], refused
    assert "transition 3 (activate) is not valid in state active" in refused[-1], refused
    assert "stopped by SIGINT in state active" in log, log[-3000:]


def test_sigterm_while_unconfigured_is_one_line_and_exit_0(tmp_path, ros_domain_id):
    node, _name = _managed_node(tmp_path)
    try:
        assert _wait_for_log(node, "unconfigured: waiting for configure", timeout=60), node.log()[-3000:]
        code, log = node.signal_and_wait(signal.SIGTERM)
    finally:
        node.stop()
    assert code == 0, f"exit code {code}:\n{log[-3000:]}"
    lines = [line for line in log.splitlines() if "stopped by SIGTERM" in line]
    assert lines == ["[INFO] [abaw_affect]: stopped by SIGTERM in state unconfigured"], log[-3000:]
    assert "Traceback" not in log and "RCLError" not in log, log[-3000:]


def test_sigterm_during_configure_is_one_line_and_exit_0(tmp_path, ros_domain_id):
    node, name = _managed_node(tmp_path)  # empty cache: configure exports the untrained model, seconds of work
    client = FrameClient(unique_namespace("unused"), domain_id=ros_domain_id)
    try:
        lifecycle = _Lifecycle(client, name)
        lifecycle.request(Transition.TRANSITION_CONFIGURE)
        assert _wait_for_log(node, "to ONNX under", timeout=90), node.log()[-3000:]
        assert node.alive() and "configured: model" not in node.log(), node.log()[-3000:]
        time.sleep(0.5)  # inside the export
        code, log = node.signal_and_wait(signal.SIGTERM)
    finally:
        client.close()
        node.stop()
    assert code == 0, f"exit code {code}:\n{log[-3000:]}"
    lines = [line for line in log.splitlines() if "stopped by SIGTERM" in line]
    assert len(lines) == 1 and "while configuring (loading the model)" in lines[0], log[-3000:]
    assert "Traceback" not in log and "RCLError" not in log and "context is invalid" not in log, log[-3000:]
    assert "configure failed" not in log, log[-3000:]


def test_configure_with_a_garbage_model_fails_naming_the_file_and_the_node_stays_up(tmp_path, ros_domain_id):
    garbage = fault_files.garbage_checkpoint(tmp_path)
    node, name = _managed_node(tmp_path, model_file_path=str(garbage))
    client = FrameClient(unique_namespace("unused"), domain_id=ros_domain_id)
    try:
        lifecycle = _Lifecycle(client, name)
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE), node.log()[-3000:]
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.alive()
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)  # the same answer again
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        client.close()
        code = node.stop()
    log = node.log()
    assert code == 0, f"exit code {code}:\n{log[-3000:]}"
    failed = [line for line in log.splitlines() if "configure failed" in line]
    assert len(failed) == 2, log[-3000:]
    assert "[ERROR]" in failed[0] and "garbage.pt" in failed[0] and "not a PyTorch checkpoint" in failed[0], failed
    assert "Traceback" not in log and "[FATAL]" not in log, log[-3000:]
    assert "stopped by SIGINT in state unconfigured" in log, log[-3000:]


def test_one_node_class_autostarted_offers_no_lifecycle_services(ros_domain_id):
    """Both executables run the one lifecycle node class. affect_node's (autostart) starts
    without the lifecycle services, as the plain node always had none; the managed one has
    ~/change_state and ~/get_state. Both start unconfigured until something drives them."""
    import rclpy
    from rclpy.node import Node

    from abaw_ros.ros.affect_node import AffectNode

    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    nodes = []
    try:
        plain = AffectNode("plain_affect", autostart=True, context=context)
        managed = AffectNode("managed_affect", context=context)
        observer = Node("observer", context=context)
        nodes = [plain, managed, observer]
        assert plain.state_label == managed.state_label == "unconfigured"

        def services(name: str) -> set[str]:
            return {s for s, _ in observer.get_service_names_and_types_by_node(name, "/")}

        deadline = time.monotonic() + 20
        while "/managed_affect/change_state" not in services("managed_affect") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {"/managed_affect/change_state", "/managed_affect/get_state"} <= services("managed_affect")
        assert not {s for s in services("plain_affect") if s.endswith(("/change_state", "/get_state"))}
        assert "/plain_affect/set_parameters" in services("plain_affect")  # parameters as before
    finally:
        for node in nodes:
            node.destroy_node()
        context.try_shutdown()
