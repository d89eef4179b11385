"""The ``abaw_affect`` node: camera images in, per-face affect out.

Topics (relative, so namespaces and remaps apply):

- ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage),
  chosen by the ``image_transport`` parameter, sensor-data QoS;
- ``affect`` (abaw_ros/FaceAffectArray, reliable), stamped with the source image's stamp
  and frame_id;
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) every ``diagnostics_period`` seconds;
- ``~/debug_image`` (sensor_msgs/Image) when ``publish_debug_image`` is true;
- with ``publish_ros4hri``, the ROS4HRI (REP-155) face topics (:mod:`abaw_ros.ros.ros4hri`).

Every parameter is a field of :class:`abaw_ros.config.PipelineConfig`; the node declares
them with their descriptions, validates them once at start (a bad value ends the node
with a message naming the parameter) and hands the config to the ROS-free
:class:`PerceptionPipeline`. The subscription callback only puts the newest frame into a
one-slot mailbox; a worker thread decodes, runs the pipeline and publishes, so a slow
frame makes the node skip frames (counted) instead of queueing them.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.utilities import get_rmw_implementation_identifier
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from abaw_ros.config import ConfigError, ParameterSpec, PipelineConfig
from abaw_ros.models.provenance import provenance_summary
from abaw_ros.msg import FaceAffectArray
from abaw_ros.perception.image import ImageTooLargeError, shown
from abaw_ros.ros.conversions import (
    IMAGE_ERRORS,
    bgr_to_image,
    compressed_to_bgr,
    frame_result_to_msg,
    image_to_bgr,
    stamp_to_ns,
)
from abaw_ros.ros.debug_image import draw_affect
from abaw_ros.ros.diagnostics import NodeStats, build_diagnostics
from abaw_ros.ros.handoff import LatestSlot
from abaw_ros.ros.input_qos import MatchedSubscription
from abaw_ros.ros.node_logging import WarningThrottle, warning_kind
from abaw_ros.ros.node_process import EXIT_STARTUP_FAILED, NODE_NAME  # noqa: F401 - re-exported
from abaw_ros.ros.requirements_check import missing_requirements
from abaw_ros.ros.transport import dds_settings_in_force

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import PerceptionPipeline

UNTRAINED_NOTICE = (
    "the model weights are UNTRAINED: the published affect values are placeholders, not "
    "estimates. Set model_file_path to a trained checkpoint or exported model bundle."
)
# What a running node applies when set (``ros2 param set``); every other parameter is read
# when the model loads, and a change is refused with the reason.
RUNTIME_PARAMETERS = frozenset({
    "detection_interval", "detection_threshold", "min_face_size", "max_faces",
    "track_iou_threshold", "track_distance_threshold", "track_min_hits", "track_max_misses",
    "publish_debug_image", "diagnostics_period", "image_qos", "expected_input_rate",
    "input_loss_warn_fraction",
})
QOS_RECHECK_PERIOD_S = 1.0  # publishers of the image topic are looked at this often
# Parameters every rclpy node has, or that the ROS tooling adds; not ours to validate.
_ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")


class StartupError(Exception):
    """The node cannot start; the message says why (and names the parameter)."""


def _ros_type(py_type: type) -> int:
    return {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
    }[py_type]


def _constraints(spec: ParameterSpec) -> str:
    """What ``ros2 param describe`` shows under "Constraints"; the ranges are checked by
    PipelineConfig (not by rclpy's integer/floating_point_range, whose refusal would not
    name the allowed values the same way, and which cannot say "0 or 32 to 1024")."""
    if spec.choices:
        return f"one of {list(spec.choices)}"
    return spec.bounds.describe() if spec.bounds is not None else ""


class AffectNodeBase:
    """What the plain and the managed (lifecycle) node share: parameters, model loading,
    topics, the worker, runtime parameter changes and diagnostics. Mixed into an rclpy
    ``Node`` (or ``LifecycleNode``); the subclass decides when each step runs."""

    def _init_affect(self) -> None:
        for spec in PipelineConfig.parameters():
            description = spec.description
            if spec.choices:
                description += f" One of: {', '.join(spec.choices)}."
            if spec.bounds is not None:
                description += f" Range: {spec.bounds.describe()}."
            description += (" Applied at run time." if spec.name in RUNTIME_PARAMETERS
                            else " Read when the model loads (restart the node to change it).")
            # dynamic_typing: a value of the wrong type must reach PipelineConfig, whose
            # error names the parameter, instead of failing inside rclpy.
            descriptor = ParameterDescriptor(
                name=spec.name,
                type=_ros_type(spec.type),
                description=description,
                additional_constraints=_constraints(spec),
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
        # What the DDS layer really runs with (this process loaded its RMW at rclpy.init):
        # the library decides which profile variable counts, not what was asked for.
        self._dds = dds_settings_in_force(get_rmw_implementation_identifier())
        self.model_id = ""
        self._input: MatchedSubscription | None = None
        self._timers: list[Any] = []
        self._diag_timer: Any = None
        self._affect_pub: Any = None
        self._diag_pub: Any = None
        self._debug_pub: Any = None
        self._ros4hri: Any = None  # ros4hri.Ros4hriOutput while active with publish_ros4hri
        self._followed: Any = None  # ros4hri.FollowedFaces while active with ros4hri_faces=follow
        self.add_on_set_parameters_callback(self._on_set_parameters)

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

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Runtime changes: those in :data:`RUNTIME_PARAMETERS` are checked and applied;
        the others are refused, with the reason, while a model is loaded."""
        if self.config is None:  # nothing loaded yet (or a managed node before configure)
            return SetParametersResult(successful=True)
        ours = {p.name: p.value for p in params if p.name in self.config.to_dict()}
        fixed = sorted(name for name, value in ours.items()
                       if name not in RUNTIME_PARAMETERS and value != getattr(self.config, name))
        if fixed:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(fixed)} cannot change while the node runs (read when the model loads); "
                f"restart the node with the new value, or for affect_lifecycle_node: deactivate, "
                f"cleanup, set it, configure, activate. At run time these apply: "
                f"{', '.join(sorted(RUNTIME_PARAMETERS))}"))
        try:
            new = PipelineConfig.from_dict({**self.config.to_dict(), **ours}).validate(check_files=False)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        changed = {name: value for name, value in ours.items() if value != getattr(self.config, name)}
        if changed:
            self._apply_runtime(new, changed)
        return SetParametersResult(successful=True)

    def _apply_runtime(self, new: PipelineConfig, changed: dict[str, Any]) -> None:
        old, self.config = self.config, new
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.config = new
            faces = pipeline.faces  # detector + tracker of the pipeline
            faces.interval = new.detection_interval
            if {"detection_threshold", "min_face_size"} & changed.keys():
                from abaw_ros.perception.detectors import create_detector

                # Swapped whole: the worker's current frame finishes with the old one.
                detector = create_detector(new)
                faces.stage = detector.landmark_stage() if new.refine_landmarks else None
                faces.detector = pipeline.detector = detector
            tracker = pipeline.tracker
            tracker.iou_threshold = new.track_iou_threshold
            tracker.distance_threshold = new.track_distance_threshold
            tracker.min_hits, tracker.max_misses = new.track_min_hits, new.track_max_misses
            tracker.max_faces, tracker.min_face_size = new.max_faces, new.min_face_size
            self._info["detection_interval"] = str(new.detection_interval)
        if "publish_debug_image" in changed and self._affect_pub is not None:
            self._connect_debug_image()
        if "diagnostics_period" in changed and self._diag_timer is not None:
            self._start_diagnostics_timer()
        if "image_qos" in changed and self._input is not None:
            self._input.mode = new.image_qos
            self._input.update()
        self.get_logger().info("applied at run time: " + ", ".join(
            f"{name} {getattr(old, name)!r} -> {value!r}" for name, value in sorted(changed.items())))

    # -- model ----------------------------------------------------------------------------
    def _load(self) -> None:
        """Validate the parameters and load the model; raises :class:`StartupError` with a
        one-line reason."""
        try:
            config = self.read_config()
        except ConfigError as exc:
            raise StartupError(f"invalid parameter: {exc}") from None
        missing = missing_requirements(config)
        if missing:
            raise StartupError(missing)
        from abaw_ros.perception.pipeline import PerceptionPipeline  # heavy: torch/onnxruntime

        try:
            pipeline = PerceptionPipeline(config)
        except ConfigError as exc:
            raise StartupError(f"invalid parameter: {exc}") from None
        except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
            raise StartupError(f"cannot load the perception pipeline: {exc}") from None
        self.config, self.pipeline = config, pipeline
        self._describe_model()

    def _unload(self) -> None:
        self.pipeline = None
        self.config = None

    def _describe_model(self) -> None:
        assert self.config is not None and self.pipeline is not None
        metadata = self.pipeline.metadata
        self._weights_trained = bool(metadata.trained)
        model = self.config.model_file_path or "(none: untrained network built at start)"
        self.model_id = self.pipeline.backend.identity.model_id
        self._info = {
            "backend": str(self.pipeline.backend.name),
            "device": str(getattr(self.pipeline.backend, "device", "")),
            "model": model,
            "model_id": self.model_id,
            "precision": str(self.pipeline.backend.precision),  # what runs ("auto" resolved)
            "detector": self.config.detector,
            "detection_interval": str(self.config.detection_interval),
            "head_interval": str(self.config.head_interval),
            "window_length": str(self.config.window_length),
            "tasks": ",".join(metadata.tasks),
            "max_image_pixels": str(self.config.max_image_pixels),
            "ros4hri": self.config.ros4hri_faces if self.config.publish_ros4hri else "off",
            **self._dds.describe(),  # rmw_implementation, fast_dds_version, dds_profile, largest_deliverable_frame
        }
        if self._weights_trained:
            self.get_logger().info(f"model {model} ({self.model_id}): {provenance_summary(True, metadata.provenance)}")
        else:  # said once here; /diagnostics and every FaceAffectArray keep saying it
            self.get_logger().warning(f"model {model} ({self.model_id}): {UNTRAINED_NOTICE}")

    # -- topics ---------------------------------------------------------------------------
    def _make_publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        return self.create_publisher(msg_type, topic, qos)

    def _drop_publisher(self, pub: Any) -> None:
        self.destroy_publisher(pub)

    def _create_outputs(self) -> None:
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._affect_pub = self._make_publisher(FaceAffectArray, "affect", reliable)
        self._diag_pub = self._make_publisher(DiagnosticArray, "/diagnostics", 10)
        self._connect_debug_image()

    def _connect_debug_image(self) -> None:
        assert self.config is not None
        if self.config.publish_debug_image and self._debug_pub is None:
            self._debug_pub = self._make_publisher(Image, "~/debug_image", qos_profile_sensor_data)
        elif not self.config.publish_debug_image and self._debug_pub is not None:
            pub, self._debug_pub = self._debug_pub, None
            self.destroy_publisher(pub)

    def _destroy_outputs(self) -> None:
        for pub in (self._affect_pub, self._diag_pub, self._debug_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._affect_pub = self._diag_pub = self._debug_pub = None

    def _start_input(self) -> str:
        """Subscribe to the camera (QoS matched to its publishers), start the worker and
        the timers; returns the input topic."""
        assert self.config is not None
        if self.config.image_transport == "compressed":
            msg_type, topic, callback = CompressedImage, "image/compressed", self._on_compressed
        else:
            msg_type, topic, callback = Image, "image", self._on_image
        self._input = MatchedSubscription(self, msg_type, topic, callback, self.config.image_qos)
        self._input.update()
        self._timers.append(self.create_timer(QOS_RECHECK_PERIOD_S, self._input.update))
        self._start_diagnostics_timer()
        self._start_ros4hri()
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._work, name="abaw_affect_worker", daemon=True)
        self._worker.start()
        return self._input.resolved_topic

    def _start_diagnostics_timer(self) -> None:
        assert self.config is not None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)

    def _stop_input(self) -> None:
        """Unsubscribe, stop the timers and the worker (after its current frame)."""
        if self._input is not None:
            self._input.destroy()
            self._input = None
        for timer in [*self._timers, self._diag_timer]:
            if timer is not None:
                self.destroy_timer(timer)
        self._timers, self._diag_timer = [], None
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        self._stop_ros4hri()

    def _start_ros4hri(self) -> None:
        """The ROS4HRI topics (publish_ros4hri), for as long as the input runs."""
        assert self.config is not None
        if not self.config.publish_ros4hri:
            return
        from abaw_ros.ros.ros4hri import FollowedFaces, Ros4hriOutput, import_hri_msgs

        try:  # found at start (requirements_check); imported only here
            hri = import_hri_msgs()
        except ImportError as exc:
            raise StartupError(str(exc)) from None
        follow = self.config.ros4hri_faces == "follow"
        self._ros4hri = Ros4hriOutput(hri, not follow, self._make_publisher, self._drop_publisher,
                                      self._warnings.warn)
        if follow:
            self._followed = FollowedFaces(self, hri, self.config.ros4hri_roi_max_age, self._warnings.warn)

    def _stop_ros4hri(self) -> None:
        if self._followed is not None:
            self._followed.close()
            self._followed = None
        if self._ros4hri is not None:
            self._ros4hri.close()
            self._ros4hri = None

    # -- callbacks (executor thread): hand over, nothing else ---------------------------
    def _on_image(self, msg: Image) -> None:
        self._stats.on_received(stamp_to_ns(msg.header))
        self._slot.put(("image", msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._stats.on_received(stamp_to_ns(msg.header))
        self._slot.put(("compressed", msg))

    # -- worker thread --------------------------------------------------------------------
    def _work(self) -> None:
        slot = self._slot
        while not slot.closed:
            item = slot.take(timeout=0.5)
            if item is None:
                continue
            transport, msg = item
            try:
                self._process(transport, msg)
            except Exception as exc:  # keep serving frames; the error says what broke
                if not self.context.ok() or slot.closed:  # shutting down or deactivated
                    return
                self._warnings.warn(
                    f"process:{type(exc).__name__}",
                    f"processing frame {self._describe_frame(msg)} failed: {type(exc).__name__}: {exc}",
                )

    def _process(self, transport: str, msg: Image | CompressedImage) -> None:
        pipeline, affect_pub = self.pipeline, self._affect_pub
        if pipeline is None or affect_pub is None:
            return
        segment = self._dds.segment_bytes
        if segment and len(msg.data) > segment:
            # This one arrived; most frames this large do not (see ros/transport.py).
            self._warnings.warn(
                f"{transport}:oversized",
                f"frame {self._describe_frame(msg)} has {len(msg.data)} bytes, more than the "
                f"{segment}-byte Fast DDS shared-memory segment: most frames this large are lost "
                f"in transport without an error; send smaller frames or image/compressed",
            )
        limit = self.config.max_image_pixels
        try:
            image = (compressed_to_bgr(msg, limit) if transport == "compressed"
                     else image_to_bgr(msg, limit))
        except IMAGE_ERRORS as exc:
            self._stats.on_bad()
            what = "too large" if isinstance(exc, ImageTooLargeError) else "bad"
            self._warnings.warn(
                warning_kind(transport, exc),
                f"skipping {what} {transport} frame {self._describe_frame(msg)}: {exc}",
            )
            return
        stamp_ns = stamp_to_ns(msg.header)
        followed = self._followed
        started = time.perf_counter()
        if followed is not None:  # ROS4HRI follow mode: that detector's faces and ids
            result = pipeline.process(image, stamp_ns, *followed.faces_for(stamp_ns, image.shape))
        else:
            result = pipeline.process(image, stamp_ns)
        processing_ms = (time.perf_counter() - started) * 1e3
        out = frame_result_to_msg(result, msg.header, image.shape, self._weights_trained, self.model_id)
        if not self.context.ok() or self._slot.closed:
            return
        affect_pub.publish(out)
        ros4hri = self._ros4hri
        if ros4hri is not None:  # the same results, as ROS4HRI topics
            ros4hri.publish(result, msg.header, image.shape, self._weights_trained)
        now_ns = self.get_clock().now().nanoseconds
        latency_ms = (now_ns - stamp_ns) / 1e6 if stamp_ns > 0 else processing_ms
        self._stats.on_published(latency_ms, processing_ms, len(out.faces), result.timings)
        debug_pub = self._debug_pub
        if debug_pub is not None and debug_pub.get_subscription_count() > 0:
            note = "" if self._weights_trained else "UNTRAINED weights: values are placeholders"
            debug_pub.publish(bgr_to_image(draw_affect(image, out, note), msg.header))

    @staticmethod
    def _describe_frame(msg: Image | CompressedImage) -> str:
        h = msg.header
        return f"(stamp {h.stamp.sec}.{h.stamp.nanosec:09d}, frame_id {shown(h.frame_id)})"

    # -- diagnostics (executor thread) ------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        config, pub = self.config, self._diag_pub
        if config is None or pub is None:
            return
        report = self._stats.report(self._slot.dropped, config.expected_input_rate)
        header = Header(stamp=self.get_clock().now().to_msg())
        info = dict(self._info)
        if self._input is not None:
            info["input_reliability"] = self._input.reliability or "none"
            info["image_qos"] = self._input.mode
        pub.publish(
            build_diagnostics(
                header,
                node_name=self.get_fully_qualified_name().lstrip("/"),
                # What runs the network: the backend and its device ("onnxruntime cpu x2").
                hardware_id=f"{self._info.get('backend', '')} {self._info.get('device', '')}".strip(),
                report=report,
                info=info,
                weights_trained=self._weights_trained,
                loss_warn_fraction=config.input_loss_warn_fraction,
                expected_rate_hz=config.expected_input_rate,
            )
        )


class AffectNode(AffectNodeBase, Node):
    """Declares the parameters at construction; :meth:`start` brings up the pipeline,
    the topics and the worker."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        Node.__init__(self, node_name, **kwargs)
        self._init_affect()

    def start(self) -> None:
        """Validate the parameters, load the model and connect the topics.

        Raises :class:`StartupError` with a one-line reason."""
        self._load()
        assert self.config is not None
        self._create_outputs()
        input_topic = self._start_input()
        self.get_logger().info(
            f"listening on {input_topic}, publishing {self.resolve_topic_name('affect')} "
            f"(backend {self._info.get('backend')}, model {self._info.get('model')}, "
            f"window_length {self.config.window_length}, detector {self.config.detector})"
        )

    def stop(self) -> None:
        """Stop the worker (after its current frame)."""
        self._stop_input()


if __name__ == "__main__":
    from abaw_ros.ros.node_process import run_node

    sys.exit(run_node())
