"""Every numeric parameter is bounded at run time as at start: a value that rclpy accepts
but the node cannot run with (``ros2 param set`` of 1e308 Hz, of 2**63-1 missed
detections) is refused with the allowed range, and the node keeps running.

The node is its installed executable in a process of its own; this process sends frames
over DDS and calls the node's SetParameters service as ``ros2 param set`` does.
"""
from __future__ import annotations

import os
import random

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")

from ros_harness import (  # noqa: E402
    FrameClient,
    NodeProcess,
    params_file,
    send_stream,
    set_parameters,
    unique_namespace,
)

from abaw_ros.ros.demo_scene import DemoScene  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def running(model_bundle, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        domain = random.SystemRandom().randint(231, 232)
        mp.setenv("ROS_DOMAIN_ID", str(domain))
        tmp = tmp_path_factory.mktemp("param_bounds")
        namespace = unique_namespace("bounds")
        params = params_file(tmp, model_file_path=str(model_bundle), backend="onnxruntime",
                             track_min_hits=1, diagnostics_period=0.5)
        node = NodeProcess(params, tmp / "node.log", namespace,
                           env=dict(os.environ, ABAW_ROS_CACHE=str(tmp / "cache")))
        client = FrameClient(namespace, domain_id=domain)
        try:
            assert client.wait_for_node(node, timeout=120), node.log()[-3000:]
            yield node, client, namespace
        finally:
            client.close()
            node.stop()


def _diagnostics_count(client: FrameClient) -> int:
    return len(client.diagnostics("affect pipeline"))


@pytest.mark.parametrize(("name", "value", "allowed"), [
    pytest.param("expected_input_rate", 1e308, "0.01 to 1000 Hz", id="rate_1e308"),
    pytest.param("expected_input_rate", float("inf"), "0.01 to 1000 Hz", id="rate_inf"),
    pytest.param("track_max_misses", 2**63 - 1, "0 to 1000", id="max_misses_int64_max"),
    pytest.param("max_faces", 10**6, "1 to 64", id="max_faces_million"),
    pytest.param("track_distance_threshold", float("nan"), "0 to 10", id="distance_nan"),
])
def test_a_runtime_value_outside_its_range_is_refused_and_the_node_runs_on(running, name, value, allowed):
    node, client, namespace = running
    (result,) = set_parameters(client, namespace, **{name: value})
    assert not result.successful, f"{name}={value!r} was accepted"
    assert name in result.reason and allowed in result.reason, result.reason
    # Frames keep flowing through the loss estimate and the tracker; the node must answer
    # them and go on publishing diagnostics (1e308 Hz used to overflow 2 s later).
    before = _diagnostics_count(client)
    send_stream(client, DemoScene(faces=1), 30, rate=15)
    assert client.wait_for(lambda: _diagnostics_count(client) >= before + 4, timeout=20)
    assert node.alive(), node.log()[-3000:]
    assert "Traceback" not in node.log()


def test_a_runtime_value_inside_its_range_is_applied(running):
    node, client, namespace = running
    results = set_parameters(client, namespace, expected_input_rate=15.0, track_max_misses=1000)
    assert all(r.successful for r in results), [r.reason for r in results]
    assert client.wait_for(lambda: "expected_input_rate 0.0 -> 15.0" in node.log(), timeout=5), node.log()[-2000:]
    send_stream(client, DemoScene(faces=1), 20, rate=15)
    assert node.alive(), node.log()[-3000:]


def test_ranges_are_declared_with_the_parameters(running):
    """``ros2 param describe`` shows each numeric parameter's range (its "Constraints")."""
    from rcl_interfaces.srv import DescribeParameters

    from abaw_ros.config import PipelineConfig

    _node, client, namespace = running
    numeric = [spec for spec in PipelineConfig.parameters() if spec.type in (int, float)]
    cli = client.node.create_client(DescribeParameters, f"{namespace}/abaw_affect/describe_parameters")
    assert cli.wait_for_service(timeout_sec=10)
    future = cli.call_async(DescribeParameters.Request(names=[spec.name for spec in numeric]))
    assert client.wait_for(future.done, timeout=10)
    client.node.destroy_client(cli)
    described = {d.name: d for d in future.result().descriptors}
    for spec in numeric:
        assert spec.bounds is not None, f"{spec.name} has no range"
        assert described[spec.name].additional_constraints == spec.bounds.describe()
        assert f"Range: {spec.bounds.describe()}." in described[spec.name].description
