"""The ``abaw_affect`` node: camera images in, per-face affect out.

Topics (relative, so namespaces and remaps apply):

- ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage),
  chosen by the ``image_transport`` parameter, sensor-data QoS;
- ``affect`` (abaw_ros/FaceAffectArray, reliable), stamped with the source image's stamp
  and frame_id;
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) every ``diagnostics_period`` seconds;
- ``~/debug_image`` (sensor_msgs/Image) when ``publish_debug_image`` is true.

Every parameter is a field of :class:`abaw_ros.config.PipelineConfig`; the node declares
them with their descriptions, validates them once at start (a bad value ends the node
with a message naming the parameter) and hands the config to the ROS-free
:class:`PerceptionPipeline`. The subscription callback only puts the newest frame into a
one-slot mailbox; a worker thread decodes, runs the pipeline and publishes, so a slow
frame makes the node skip frames (counted) instead of queueing them.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from abaw_ros.config import ConfigError, PipelineConfig
from abaw_ros.msg import FaceAffectArray
from abaw_ros.ros.conversions import (
    IMAGE_ERRORS,
    bgr_to_image,
    compressed_to_bgr,
    frame_result_to_msg,
    image_to_bgr,
    stamp_to_ns,
)
from abaw_ros.ros.diagnostics import NodeStats, build_diagnostics
from abaw_ros.ros.handoff import LatestSlot

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import PerceptionPipeline

NODE_NAME = "abaw_affect"
EXIT_STARTUP_FAILED = 2  # bad parameters or a model that cannot be loaded
WARN_PERIOD_S = 5.0  # the same kind of bad frame is reported at most this often
UNTRAINED_NOTICE = (
    "the model weights are UNTRAINED: the published affect values are placeholders, not "
    "estimates. Set model_file_path to a trained checkpoint or exported model bundle."
)
# Parameters every rclpy node has, or that the ROS tooling adds; not ours to validate.
_ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")


class StartupError(Exception):
    """The node cannot start; the message says why (and names the parameter)."""


class WarningThrottle:
    """Logs the first warning of each kind at once, then at most once per ``period``,
    saying how many of that kind were not shown."""

    def __init__(self, log: Any, period: float = WARN_PERIOD_S) -> None:
        self._log, self._period = log, period
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        hidden = self._suppressed.pop(key, 0)
        suffix = f" ({hidden} more like it in the last {now - last:.0f} s)" if hidden and last else ""
        self._last[key] = now
        self._log.warning(message + suffix)


def _warning_kind(transport: str, exc: Exception) -> str:
    """Messages of one kind differ only in their numbers."""
    return f"{transport}:{type(exc).__name__}:{re.sub(r'[0-9]+', '#', str(exc))}"


def _ros_type(py_type: type) -> int:
    return {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
    }[py_type]


class AffectNode(Node):
    """Declares the parameters at construction; :meth:`start` brings up the pipeline,
    the topics and the worker."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PipelineConfig.parameters():
            description = spec.description
            if spec.choices:
                description += f" One of: {', '.join(spec.choices)}."
            # dynamic_typing: a value of the wrong type must reach PipelineConfig, whose
            # error names the parameter, instead of failing inside rclpy.
            descriptor = ParameterDescriptor(
                name=spec.name,
                type=_ros_type(spec.type),
                description=description,
                additional_constraints=f"one of {list(spec.choices)}" if spec.choices else "",
                dynamic_typing=True,
            )
            self.declare_parameter(spec.name, spec.default, descriptor)
        self.config: PipelineConfig | None = None
        self.pipeline: PerceptionPipeline | None = None
        self._slot: LatestSlot[tuple[str, Any]] = LatestSlot()
        self._stats = NodeStats()
        self._warnings = WarningThrottle(self.get_logger())
        self._worker: threading.Thread | None = None
        self._info: dict[str, str] = {}
        self._weights_trained = False

    # -- configuration ------------------------------------------------------------------
    def read_config(self) -> PipelineConfig:
        """The parameters as a validated :class:`PipelineConfig`; raises ConfigError."""
        declared = {spec.name for spec in PipelineConfig.parameters()}
        # rclpy ignores values from --params-file / -p that no declaration asks for, so a
        # misspelt name would silently keep the default; its overrides are only kept here.
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        unknown = sorted(
            name for name in overrides
            if name not in declared and name not in _ROS_PARAMETERS and not name.startswith("qos_overrides.")
        )
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {unknown} for node {self.get_name()!r}: known parameters "
                f"are {sorted(declared)}"
            )
        values = {name: self.get_parameter(name).value for name in declared}
        return PipelineConfig.from_dict(values).validate()

    # -- start / stop -------------------------------------------------------------------
    def start(self) -> None:
        """Validate the parameters, load the model and connect the topics.

        Raises :class:`StartupError` with a one-line reason."""
        try:
            config = self.read_config()
        except ConfigError as exc:
            raise StartupError(f"invalid parameter: {exc}") from None
        self.config = config
        from abaw_ros.perception.pipeline import PerceptionPipeline  # heavy: torch/onnxruntime

        try:
            self.pipeline = PerceptionPipeline(config)
        except ConfigError as exc:
            raise StartupError(f"invalid parameter: {exc}") from None
        except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
            raise StartupError(f"cannot load the perception pipeline: {exc}") from None
        self._describe_model()

        if config.image_transport == "compressed":
            self.create_subscription(
                CompressedImage, "image/compressed", self._on_compressed, qos_profile_sensor_data
            )
            input_topic = self.resolve_topic_name("image/compressed")
        else:
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)
            input_topic = self.resolve_topic_name("image")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._affect_pub = self.create_publisher(FaceAffectArray, "affect", reliable)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._debug_pub = (
            self.create_publisher(Image, "~/debug_image", qos_profile_sensor_data)
            if config.publish_debug_image else None
        )
        self.create_timer(config.diagnostics_period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="abaw_affect_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"listening on {input_topic}, publishing {self.resolve_topic_name('affect')} "
            f"(backend {self._info.get('backend')}, model {self._info.get('model')}, "
            f"window_length {config.window_length}, detector {config.detector})"
        )

    def stop(self) -> None:
        """Stop the worker (after its current frame)."""
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

    def _describe_model(self) -> None:
        assert self.config is not None and self.pipeline is not None
        metadata = self.pipeline.metadata
        self._weights_trained = bool(metadata.trained)
        model = self.config.model_file_path or "(none: untrained network built at start)"
        self._info = {
            "backend": str(self.pipeline.backend.name),
            "model": model,
            "precision": str(self.pipeline.backend.precision),  # what runs ("auto" resolved)
            "detector": self.config.detector,
            "detection_interval": str(self.config.detection_interval),
            "head_interval": str(self.config.head_interval),
            "window_length": str(self.config.window_length),
            "tasks": ",".join(metadata.tasks),
        }
        if self._weights_trained:
            self.get_logger().info(f"model {model}: trained weights")
        else:
            self.get_logger().warning(f"model {model}: {UNTRAINED_NOTICE}")

    # -- callbacks (executor thread): hand over, nothing else ---------------------------
    def _on_image(self, msg: Image) -> None:
        self._stats.on_received()
        self._slot.put(("image", msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._stats.on_received()
        self._slot.put(("compressed", msg))

    # -- worker thread --------------------------------------------------------------------
    def _work(self) -> None:
        while not self._slot.closed:
            item = self._slot.take(timeout=0.5)
            if item is None:
                continue
            transport, msg = item
            try:
                self._process(transport, msg)
            except Exception as exc:  # keep serving frames; the error says what broke
                if not self.context.ok():  # shutting down: the frame cannot be published
                    return
                self._warnings.warn(
                    f"process:{type(exc).__name__}",
                    f"processing frame {self._describe_frame(msg)} failed: {type(exc).__name__}: {exc}",
                )

    def _process(self, transport: str, msg: Image | CompressedImage) -> None:
        try:
            image = compressed_to_bgr(msg) if transport == "compressed" else image_to_bgr(msg)
        except IMAGE_ERRORS as exc:
            self._stats.on_bad()
            self._warnings.warn(
                _warning_kind(transport, exc),
                f"skipping bad {transport} frame {self._describe_frame(msg)}: {exc}",
            )
            return
        stamp_ns = stamp_to_ns(msg.header)
        started = time.perf_counter()
        result = self.pipeline.process(image, stamp_ns)
        processing_ms = (time.perf_counter() - started) * 1e3
        out = frame_result_to_msg(result, msg.header, image.shape)
        if not self.context.ok():
            return
        self._affect_pub.publish(out)
        now_ns = self.get_clock().now().nanoseconds
        latency_ms = (now_ns - stamp_ns) / 1e6 if stamp_ns > 0 else processing_ms
        self._stats.on_published(latency_ms, processing_ms, len(out.faces), result.timings)
        if self._debug_pub is not None and self._debug_pub.get_subscription_count() > 0:
            note = "" if self._weights_trained else "UNTRAINED weights: values are placeholders"
            self._debug_pub.publish(bgr_to_image(draw_affect(image, out, note), msg.header))

    @staticmethod
    def _describe_frame(msg: Image | CompressedImage) -> str:
        h = msg.header
        return f"(stamp {h.stamp.sec}.{h.stamp.nanosec:09d}, frame_id {h.frame_id!r})"

    # -- diagnostics (executor thread) ------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        report = self._stats.report(self._slot.dropped)
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diag_pub.publish(
            build_diagnostics(
                header,
                name=f"{self.get_fully_qualified_name().lstrip('/')}: affect pipeline",
                hardware_id=self._info.get("backend", ""),
                report=report,
                info=self._info,
                weights_trained=self._weights_trained,
            )
        )


def draw_affect(image_bgr: np.ndarray, msg: FaceAffectArray, note: str = "") -> np.ndarray:
    """A copy of the image with each face's box, id and main values drawn, and ``note``
    in the top-left corner."""
    import cv2

    canvas = image_bgr.copy()
    if note:
        cv2.putText(canvas, note, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, note, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
    for face in msg.faces:
        x, y, w, h = face.roi.x_offset, face.roi.y_offset, face.roi.width, face.roi.height
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 220, 0), 2)
        lines = [
            f"id {face.face_id} ({face.frames_observed}/{face.window_length})",
            f"V {face.valence:+.2f} A {face.arousal:+.2f}",
            f"hesitancy {face.hesitancy_probability:.2f}",
        ]
        for k, text in enumerate(lines):
            org = (x, max(12, y - 6 - 14 * (len(lines) - 1 - k)))
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 0), 1, cv2.LINE_AA)
    return canvas


class _RosLogHandler(logging.Handler):
    """Sends the core's Python log records (``abaw_ros.*``) to the node's ROS logger, so
    they appear in the node's log with its name and format."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        elif record.levelno >= logging.INFO:
            self._logger.info(text)
        else:
            self._logger.debug(text)


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or an external shutdown; 2 when it cannot start."""
    try:
        rclpy.init(args=args)
    except Exception as exc:  # e.g. a missing or malformed --params-file: rcl says which
        print(f"[FATAL] [{NODE_NAME}]: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    node: AffectNode | None = None
    code = 0
    core_log = logging.getLogger("abaw_ros")
    try:
        node = AffectNode()
        handler = _RosLogHandler(node)
        core_log.addHandler(handler)
        core_log.setLevel(logging.INFO)
        core_log.propagate = False
        try:
            node.start()
        except StartupError as exc:
            node.get_logger().fatal(str(exc))
            code = EXIT_STARTUP_FAILED
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
