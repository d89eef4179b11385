"""``ros2 launch abaw_ros affect.launch.py`` with the real launch stack, where it is
installed (ros2/launch, ros2/launch_ros and ros2/ros2cli are not on the package registry:
docs/NODE.md "The launch file with the real launch stack" says how they were installed
here; without them these tests are skipped): model paths arrive verbatim as strings and a
node that cannot start ends launch with exit 1; the managed node, brought up by autostart
in a namespace with a parameters file keyed ``/**/abaw_affect``, stays deactivated when
deactivated, and Ctrl-C ends it all with exit 0."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

if not (shutil.which("ros2") and all(importlib.util.find_spec(m) for m in ("launch", "launch_ros", "ros2launch"))):
    pytest.skip("the ROS 2 launch stack (ros2 launch, launch_ros) is not installed; docs/NODE.md says how "
                "it was run", allow_module_level=True)

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from ros_harness import FrameClient, unique_namespace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(240)


class Launch:
    """``ros2 launch abaw_ros affect.launch.py ARGS`` in a process group of its own, SIGINT at
    its default disposition (as in a terminal), output to a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log_path = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            ["ros2", "launch", "abaw_ros", "affect.launch.py", *args], stdout=self._out,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def log(self) -> str:
        return re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.log() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return text in self.log()

    def ctrl_c(self, timeout: float = 60.0) -> int:
        """SIGINT to the whole group, what Ctrl-C in a terminal does."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._out.close()


@pytest.mark.parametrize("path", ["run #2/model.pt", "o'brien/model.pt", "2025"])
def test_model_path_reaches_the_node_verbatim_and_its_failure_ends_launch(tmp_path, ros_domain_id, path):
    launch = Launch([f"model_file_path:={path}", f"namespace:={unique_namespace('launch')[1:]}"],
                    tmp_path / "launch.log")
    code = launch.wait(timeout=120)
    log = launch.log()
    assert f"invalid parameter: model_file_path={path!r}: no such file or directory" in log, log
    assert "abaw_affect exited with code 2: it could not start" in log, log
    assert code == 1, log


def test_a_bad_boolean_stops_launch_with_one_line(tmp_path, ros_domain_id):
    launch = Launch(["managed:=yes"], tmp_path / "launch.log")
    assert launch.wait(timeout=60) == 1
    log = launch.log()
    assert "managed:='yes': must be one of ['true', '1', 'false', '0']" in log, log
    assert "Traceback" not in log and "process started" not in log


def test_managed_node_in_a_namespace_stays_deactivated(tmp_path, ros_domain_id, model_bundle):
    # The shipped file with another detection_interval: the node's value shows whether the
    # file's /**/abaw_affect section reached the node in its namespace.
    params = tmp_path / "robot.yaml"
    text = (ROOT / "config" / "affect.yaml").read_text()
    assert "\n    detection_interval: 5\n" in text
    params.write_text(text.replace("\n    detection_interval: 5\n", "\n    detection_interval: 3\n"))
    namespace = unique_namespace("launch")
    launch = Launch(["managed:=1", f"namespace:={namespace[1:]}", f"params_file:={params}",
                     f"model_file_path:={model_bundle}"], tmp_path / "launch.log")
    client = FrameClient(namespace=namespace, domain_id=ros_domain_id)
    try:
        assert launch.wait_for_log("active: listening on", timeout=150), launch.log()
        fqn = f"{namespace}/abaw_affect"
        get = client.node.create_client(GetState, f"{fqn}/get_state")
        change = client.node.create_client(ChangeState, f"{fqn}/change_state")
        get_parameters = client.node.create_client(GetParameters, f"{fqn}/get_parameters")

        def call(cli, request):
            assert cli.wait_for_service(timeout_sec=30), cli.srv_name
            future = cli.call_async(request)
            assert client.wait_for(future.done, timeout=30), cli.srv_name
            return future.result()

        assert call(get, GetState.Request()).current_state.id == State.PRIMARY_STATE_ACTIVE
        deactivate = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE))
        assert call(change, deactivate).success
        time.sleep(2.0)  # autostart used to activate again within milliseconds
        assert call(get, GetState.Request()).current_state.id == State.PRIMARY_STATE_INACTIVE
        assert launch.log().count("active: listening on") == 1, launch.log()
        values = call(get_parameters, GetParameters.Request(names=["detection_interval"])).values
        assert values[0].integer_value == 3  # the parameters file applied in the namespace
    finally:
        client.close()
        code = launch.ctrl_c()
    log = launch.log()
    assert "stopped by SIGINT in state inactive" in log, log
    assert code == 0, log
