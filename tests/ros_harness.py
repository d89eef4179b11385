"""Drive a running ``abaw_affect`` node from another process: the node tests and the node
benchmark (which puts tests/ on its path) use this; it is not installed.

- :class:`NodeProcess` starts the installed ``affect_node`` executable with
  ``--ros-args --params-file ...`` (as a user would without ``ros2 launch``), keeps its log
  in a file, and stops it with SIGINT as Ctrl-C would.
- :class:`FrameClient` is a camera and a listener in this process: it publishes frames
  with chosen stamps and records every ``FaceAffectArray`` and ``/diagnostics`` message,
  in an rclpy context of its own that spins on a background thread.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from abaw_ros.msg import FaceAffectArray
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from abaw_ros.ros.conversions import bgr_to_compressed, bgr_to_image
from abaw_ros.ros.transport import prefer_large_frame_transport

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# Before any rclpy.init of this process, and inherited by the node processes started here.
prefer_large_frame_transport()


def node_executable(name: str = "affect_node") -> list[str]:
    """``lib/abaw_ros/<name>`` of the colcon install space, else ``scripts/<name>`` of this
    checkout, run by this interpreter."""
    from abaw_ros.share import installed_executable

    path = installed_executable(name)  # not built with colcon: run the script with this interpreter
    return [str(path)] if path is not None else [sys.executable, str(PACKAGE_ROOT / "scripts" / name)]


class NodeProcess:
    """The node as a child process: ``affect_node --ros-args --params-file FILE -r __ns:=NS
    -p name:=value ...``, logging to ``log_path``."""

    def __init__(
        self,
        params_file: str | Path,
        log_path: str | Path,
        namespace: str = "",
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        executable: list[str] | None = None,
    ) -> None:
        cmd = [*(executable or node_executable()), "--ros-args", "--params-file", str(params_file)]
        if namespace:
            cmd += ["-r", f"__ns:={namespace}"]
        for name, value in (overrides or {}).items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            cmd += ["-p", f"{name}:={text if text != '' else chr(39) * 2}"]
        self.cmd = cmd
        self.log_path = Path(log_path)
        self._log = self.log_path.open("w", encoding="utf-8")
        env = dict(os.environ if env is None else env)
        env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        """Exit code once the node ended by itself (raises TimeoutExpired otherwise)."""
        return self.proc.wait(timeout=timeout)

    def signal_and_wait(self, sig: signal.Signals, timeout: float = 60.0) -> tuple[int, str]:
        """Send ``sig`` and wait for the node to end by itself: its exit code and log. A node
        still running after ``timeout`` s is killed and an AssertionError shows its log."""
        self.proc.send_signal(sig)
        try:
            code = self.wait_exit(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stop()
            raise AssertionError(f"node did not stop within {timeout} s:\n{self.log()[-3000:]}") from None
        self.stop()
        return code, self.log()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (Ctrl-C) and wait; killed if it does not end. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def cpu_seconds(self) -> float:
        """User + system CPU time the node process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        """Resident memory of the node process, MiB (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError(f"no VmRSS for pid {self.proc.pid}")


@dataclass
class Received:
    """One ``FaceAffectArray`` and when it arrived (ROS clock, ns)."""

    msg: FaceAffectArray
    arrival_ns: int

    @property
    def stamp_ns(self) -> int:
        return self.msg.header.stamp.sec * 1_000_000_000 + self.msg.header.stamp.nanosec


class FrameClient:
    """Publishes frames to ``<namespace>/image`` (and ``image/compressed``) and records
    ``<namespace>/affect`` and ``/diagnostics``, in its own rclpy context; with
    ``camera=False`` it only records."""

    def __init__(self, namespace: str = "", domain_id: int | None = None, name: str = "affect_client",
                 camera: bool = True) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, args=[])
        self.node = rclpy.create_node(name, namespace=namespace or None, context=self.context)
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._diagnostics: list[DiagnosticArray] = []
        # camera=False: a listener only (another process is the camera, so that the node's
        # image_qos=auto sees that camera's publisher alone).
        self.image_pub = self.node.create_publisher(Image, "image", qos_profile_sensor_data) if camera else None
        self.compressed_pub = self.node.create_publisher(
            CompressedImage, "image/compressed", qos_profile_sensor_data
        ) if camera else None
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(FaceAffectArray, "affect", self._on_affect, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="frame_client", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while spinning
                if self.context.ok():
                    raise
                return

    def _on_affect(self, msg: FaceAffectArray) -> None:
        now = self.node.get_clock().now().nanoseconds
        with self._lock:
            self._received.append(Received(msg, now))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._lock:
            self._diagnostics.append(msg)

    # -- what arrived ----------------------------------------------------------------------
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def diagnostics(self, name_part: str = "affect pipeline") -> list[dict[str, str]]:
        """Values of every diagnostics status whose name contains ``name_part``, oldest
        first, with the status' ``name``, ``level`` and ``message`` added."""
        with self._lock:
            arrays = list(self._diagnostics)
        out = []
        for array in arrays:
            for status in array.status:
                if name_part in status.name:
                    values = {kv.key: kv.value for kv in status.values}
                    values.update(name=status.name, message=status.message,
                                  level=str(int.from_bytes(status.level, "little")))
                    out.append(values)
        return out

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self._diagnostics.clear()

    # -- sending ---------------------------------------------------------------------------
    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    @staticmethod
    def header(stamp_ns: int, frame_id: str = "camera") -> Header:
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return header

    def send_image(self, image_bgr: np.ndarray, stamp_ns: int | None = None, frame_id: str = "camera",
                   encoding: str = "bgr8") -> int:
        """Publish a raw frame; returns its stamp (now when not given)."""
        stamp_ns = self.now_ns() if stamp_ns is None else stamp_ns
        self.image_pub.publish(bgr_to_image(image_bgr, self.header(stamp_ns, frame_id), encoding))
        return stamp_ns

    def send_compressed(self, image_bgr: np.ndarray, stamp_ns: int | None = None,
                        frame_id: str = "camera") -> int:
        stamp_ns = self.now_ns() if stamp_ns is None else stamp_ns
        self.compressed_pub.publish(bgr_to_compressed(image_bgr, self.header(stamp_ns, frame_id)))
        return stamp_ns

    def send_raw_message(self, msg: Image | CompressedImage) -> None:
        """Publish a message exactly as given (malformed ones included)."""
        (self.compressed_pub if isinstance(msg, CompressedImage) else self.image_pub).publish(msg)

    # -- waiting ---------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll)
        return predicate()

    def wait_for_node(self, node: NodeProcess | None = None, timeout: float = 60.0,
                      compressed: bool = False) -> bool:
        """Until the node's ``affect`` publisher and its image subscription are matched
        (the node creates them once its model is loaded). False on timeout or node exit."""
        pub = self.compressed_pub if compressed else self.image_pub

        def ready() -> bool:
            if node is not None and not node.alive():
                return True
            return (self.node.count_publishers(self.node.resolve_topic_name("affect")) > 0
                    and pub.get_subscription_count() > 0)

        ok = self.wait_for(ready, timeout)
        return ok and (node is None or node.alive())

    def results_for(self, stamps: Sequence[int]) -> list[Received]:
        """The received messages whose stamp is one of ``stamps``, in arrival order."""
        wanted = set(stamps)
        return [r for r in self.received() if r.stamp_ns in wanted]

    def close(self) -> None:
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


# -- helpers for tests and benchmarks ------------------------------------------------------------


def set_parameters(client: FrameClient, namespace: str, **values: Any) -> list:
    """Set the node's parameters through its SetParameters service, as `ros2 param set`
    does; the per-parameter results (successful, reason)."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    cli = client.node.create_client(SetParameters, f"{namespace}/abaw_affect/set_parameters")
    if not cli.wait_for_service(timeout_sec=10):
        raise TimeoutError(f"{namespace}/abaw_affect/set_parameters: no service within 10 s")
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    future = cli.call_async(request)
    if not client.wait_for(future.done, timeout=10):
        raise TimeoutError(f"{namespace}/abaw_affect/set_parameters: no answer within 10 s")
    client.node.destroy_client(cli)
    return future.result().results


def unique_namespace(prefix: str = "test") -> str:
    """A namespace no other run on this machine uses, so parallel runs never cross-talk
    even when they share a ROS_DOMAIN_ID."""
    return f"/{prefix}_{os.getpid()}_{time.monotonic_ns() % 1_000_000_000}"


def params_file(out_dir: str | Path, base: str | Path | None = None, **overrides: Any) -> Path:
    """A parameters file for the node: ``base`` (default the package's config/affect.yaml,
    else the defaults of PipelineConfig) with ``overrides``, as ``ros__parameters`` under
    ``/**`` so it applies whatever the node's namespace."""
    import yaml

    from abaw_ros.config import PipelineConfig

    base = Path(base) if base is not None else PACKAGE_ROOT / "config" / "affect.yaml"
    config = PipelineConfig.from_yaml(base) if base.is_file() else PipelineConfig()
    values = {**config.to_dict(), **overrides}
    path = Path(out_dir) / "affect_params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Answered:
    """A frame sent by :func:`send_in_lockstep` and the node's answer to it."""

    index: int  # frame index in the scene
    stamp_ns: int
    result: Received | None  # None: not answered in time

    @property
    def msg(self) -> FaceAffectArray:
        assert self.result is not None, f"frame {self.index} was not answered"
        return self.result.msg


def send_in_lockstep(client: FrameClient, scene: Any, count: int, frame_id: str = "camera",
                     compressed: bool = False, start: int = 0, timeout: float = 10.0) -> list[Answered]:
    """Publish frames ``start .. start+count-1`` of ``scene`` one at a time, each once the
    previous one was answered (so none is dropped however slow the node is). An answer is
    the ``FaceAffectArray`` whose stamp equals the frame's; a frame unanswered after
    ``timeout`` seconds gets ``result=None``."""
    sent = []
    for index in range(start, start + count):
        image = scene.frame(index)
        stamp = (client.send_compressed(image, frame_id=frame_id) if compressed
                 else client.send_image(image, frame_id=frame_id))
        client.wait_for(lambda s=stamp: bool(client.results_for([s])), timeout, poll=0.005)
        found = client.results_for([stamp])
        sent.append(Answered(index, stamp, found[0] if found else None))
    return sent


def send_stream(client: FrameClient, scene: Any, count: int, rate: float, frame_id: str = "camera",
                compressed: bool = False, start: int = 0, sent: dict[int, int] | None = None) -> list[int]:
    """Publish ``count`` frames of ``scene`` at ``rate`` Hz; returns their stamps and fills
    ``sent`` (stamp -> frame index) when given."""
    stamps = []
    period = 1.0 / rate
    next_time = time.monotonic()
    for index in range(start, start + count):
        image = scene.frame(index)
        stamp = (client.send_compressed(image, frame_id=frame_id) if compressed
                 else client.send_image(image, frame_id=frame_id))
        stamps.append(stamp)
        if sent is not None:
            sent[stamp] = index
        next_time += period
        time.sleep(max(0.0, next_time - time.monotonic()))
    return stamps
