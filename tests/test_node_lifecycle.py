"""The managed node (``affect_lifecycle_node``) over real DDS, driven through its lifecycle
services (``~/get_state``, ``~/change_state``) from this process, as ``ros2 lifecycle set``
or a lifecycle manager would: configure loads the model, activate answers frames,
deactivate publishes nothing, cleanup and shutdown end cleanly."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402

from abaw_ros.ros.demo_scene import DemoScene  # noqa: E402
from abaw_ros.ros.testing import (  # noqa: E402
    FrameClient,
    NodeProcess,
    node_executable,
    params_file,
    send_in_lockstep,
    unique_namespace,
)

pytestmark = pytest.mark.timeout(150)


class _Lifecycle:
    """Calls the node's lifecycle services from the client's node."""

    def __init__(self, client: FrameClient, node_fqn: str) -> None:
        self.client = client
        self.get = client.node.create_client(GetState, f"{node_fqn}/get_state")
        self.change = client.node.create_client(ChangeState, f"{node_fqn}/change_state")

    def _call(self, cli, request):
        assert cli.wait_for_service(timeout_sec=30), cli.srv_name
        future = cli.call_async(request)
        assert self.client.wait_for(future.done, timeout=60), f"{cli.srv_name} did not answer"
        return future.result()

    def state(self) -> int:
        return self._call(self.get, GetState.Request()).current_state.id

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success


def test_transitions_drive_the_node_and_an_inactive_node_publishes_nothing(tmp_path, ros_domain_id, model_bundle):
    namespace = unique_namespace("lifecycle")
    params = params_file(tmp_path, model_file_path=str(model_bundle), backend="onnxruntime", window_length=8,
                         diagnostics_period=0.5)
    executable = node_executable("affect_lifecycle_node", "abaw_ros.ros.affect_lifecycle_node")
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
