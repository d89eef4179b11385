"""The ``abaw_affect`` node: camera images in, per-face affect out. One class, a
lifecycle (managed) node, behind both executables:

- ``affect_node`` starts it with ``autostart``: the process configures and activates it
  before it spins, as Nav2 nodes do with ``autostart_node`` (``nav2::LifecycleNode`` in
  ros-navigation/navigation2 ``nav2_ros_common/include/nav2_ros_common/lifecycle_node.hpp``:
  configure, then activate only if configure reached inactive), without the lifecycle
  services (Nav2's ``enable_lifecycle_services: false``); a fault at start ends the
  process in one line with exit code 2;
- ``affect_lifecycle_node`` starts it unconfigured, for a lifecycle manager (services
  ``~/change_state`` and ``~/get_state``); a fault fails the transition, the node stays up.

configure reads and checks the parameters and loads the model; activate subscribes to the
camera and starts the worker and ``/diagnostics``; deactivate unsubscribes (nothing is
published while inactive); cleanup frees the model and the publishers (then any parameter
may change); shutdown works from any state. Topics (relative, so namespaces and remaps
apply): ``image`` or ``image/compressed`` (``image_transport``), QoS matched to the camera;
``affect`` (FaceAffectArray, reliable, the image's stamp and frame_id); ``/diagnostics``;
``~/debug_image`` (``publish_debug_image``); the ROS4HRI topics (``publish_ros4hri``); and
``~/transition_event``, which rcl creates for every lifecycle node. docs/NODE.md has it all.
"""
from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.utilities import get_rmw_implementation_identifier
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from abaw_ros.config import ConfigError, PipelineConfig
from abaw_ros.models.provenance import provenance_summary
from abaw_ros.msg import FaceAffectArray
from abaw_ros.ros.change_state_guard import guard_change_state, state_label
from abaw_ros.ros.diagnostics import build_diagnostics
from abaw_ros.ros.frame_worker import FrameWorker
from abaw_ros.ros.input_qos import MatchedSubscription
from abaw_ros.ros.node_logging import WarningThrottle
from abaw_ros.ros.node_parameters import declare_parameters, read_config, runtime_change
from abaw_ros.ros.node_startup import (
    EXIT_STARTUP_FAILED,
    NODE_NAME,
    StartupError,
    StopRequested,
    say,
    startup_failure,
    stop_signals,
)
from abaw_ros.ros.requirements_check import missing_requirements
from abaw_ros.ros.transport import dds_settings_in_force

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import PerceptionPipeline

UNTRAINED_NOTICE = (
    "the model weights are UNTRAINED: the published affect values are placeholders, not "
    "estimates. Set model_file_path to a trained checkpoint or exported model bundle."
)
QOS_RECHECK_PERIOD_S = 1.0  # publishers of the image topic are looked at this often
CONFIGURING = "configuring (loading the model)"  # what a managed node does in configure
LOADING = "loading the model"  # the same, said by an autostarted node


class AffectNode(LifecycleNode):
    """The affect node. ``autostart``: :meth:`autostart` brings it up before the spin and a
    start-up fault ends the process; else it waits, unconfigured, for a lifecycle manager."""

    def __init__(self, node_name: str = NODE_NAME, autostart: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("enable_communication_interface", not autostart)
        super().__init__(node_name, **kwargs)
        self.autostart_enabled = autostart
        declare_parameters(self)
        self.config: PipelineConfig | None = None
        self.pipeline: PerceptionPipeline | None = None
        self.frames = FrameWorker(self)
        self.warn = WarningThrottle(self.get_logger()).warn  # (kind, text), throttled per kind
        self._info: dict[str, str] = {}
        self.weights_trained = False
        # What the DDS layer really runs with (this process loaded its RMW at rclpy.init):
        # the library decides which profile variable counts, not what was asked for.
        self.dds = dds_settings_in_force(get_rmw_implementation_identifier())
        self.model_id = ""
        self._active = False
        self._input: MatchedSubscription | None = None
        self._timers: list[Any] = []
        self._diag_timer: Any = None
        self.affect_pub: Any = None
        self._diag_pub: Any = None
        self.debug_pub: Any = None
        self.ros4hri: Any = None  # ros4hri.Ros4hriOutput while active with publish_ros4hri
        self.followed: Any = None  # ros4hri.FollowedFaces while active with ros4hri_faces=follow
        # Set by a start-up step of an autostarted node: its exit code, or the bug it hit.
        self.exit_code: int | None = None
        self._bug: Exception | None = None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        guard_change_state(self)

    @property
    def state_label(self) -> str:
        """The current lifecycle state ("unconfigured", "active", ...)."""
        return state_label(self)

    def read_config(self) -> PipelineConfig:
        """The parameters as a validated :class:`PipelineConfig`; raises ConfigError."""
        return read_config(self)

    # -- start-up -------------------------------------------------------------------------
    def autostart(self) -> int | None:
        """Configure, then activate: None once active, else the exit code (after its one
        line). A stop signal raises StopRequested; a bug is raised with its traceback."""
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()
        if self._bug is not None:
            raise self._bug
        return self.exit_code

    def _failed(self, step: str, exc: Exception) -> TransitionCallbackReturn:
        """The one start-up failure path, for configure and activate: a stop signal ends
        the process; a fault is one line (the process exits 2 when autostarted, a managed
        node fails the transition); a bug keeps its traceback."""
        activity = LOADING if self.autostart_enabled else CONFIGURING
        if stop_signals.received is not None:  # the load failed because of the stop
            raise StopRequested(stop_signals.received, activity) from None
        if not self.context.ok():  # shut down from outside; the spin ends next
            if self.autostart_enabled:
                say("INFO", f"stopped: the ROS context was shut down while {LOADING}")
                self.exit_code = 0
            return TransitionCallbackReturn.FAILURE
        reason = startup_failure(exc)
        if self.autostart_enabled:
            if reason is None:
                self._bug = exc
                return TransitionCallbackReturn.ERROR
            self.get_logger().fatal(reason)
            self.exit_code = EXIT_STARTUP_FAILED
            return TransitionCallbackReturn.FAILURE
        if reason is None:  # a bug: its traceback, and rclpy's error processing
            self.get_logger().error(f"{step} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
        self.get_logger().error(f"{step} failed: {reason}")
        return TransitionCallbackReturn.FAILURE

    # -- transitions ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            with stop_signals.interrupting_while(LOADING if self.autostart_enabled else CONFIGURING):
                self._load()
            self._create_outputs()
        except Exception as exc:
            self._destroy_outputs()
            self._unload()
            return self._failed("configure", exc)
        if not self.autostart_enabled:
            self.get_logger().info(f"configured: model {self._info.get('model')} "
                                   f"(backend {self._info.get('backend')}); activate to start")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        result = super().on_activate(state)  # enables the lifecycle publishers
        try:
            topic = self._start_input()
        except Exception as exc:
            self.stop()
            return self._failed("activate", exc)
        affect = self.resolve_topic_name("affect")
        if self.autostart_enabled:
            assert self.config is not None
            self.get_logger().info(
                f"listening on {topic}, publishing {affect} (backend {self._info.get('backend')}, "
                f"model {self._info.get('model')}, window_length {self.config.window_length}, "
                f"detector {self.config.detector})")
        else:
            self.get_logger().info(f"active: listening on {topic}, publishing {affect}")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self.get_logger().info("inactive: unsubscribed, nothing is published")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_outputs()
        self._unload()
        self.get_logger().info("cleaned up: model freed")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self._destroy_outputs()
        self._unload()
        return super().on_shutdown(state)

    def stop(self) -> None:
        """Unsubscribe, stop the timers and the worker (after its current frame)."""
        self._stop_input()
        self._active = False

    # -- parameters changed at run time ---------------------------------------------------
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Runtime changes: those the parameter spec declares ``runtime`` are checked and
        applied; the others are refused, with the reason, while a model is loaded."""
        if self.config is None:  # nothing loaded yet (unconfigured, or cleaned up)
            return SetParametersResult(successful=True)
        ours = {p.name: p.value for p in params if p.name in self.config.to_dict()}
        try:
            new, changed = runtime_change(self.config, ours)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if changed:
            self._apply_runtime(new, changed)
        return SetParametersResult(successful=True)

    def _apply_runtime(self, new: PipelineConfig, changed: dict[str, Any]) -> None:
        old, self.config = self.config, new
        if self.pipeline is not None:
            self.pipeline.reconfigure(new)
            self._info["detection_interval"] = str(new.detection_interval)
        if "publish_debug_image" in changed and self.affect_pub is not None:
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
        """Validate the parameters and load the model; raises what the loaders raise
        (:func:`startup_failure` turns it into one line)."""
        config = self.read_config()
        missing = missing_requirements(config)
        if missing:
            raise StartupError(missing)
        from abaw_ros.perception.pipeline import PerceptionPipeline  # heavy: torch/onnxruntime

        self.pipeline, self.config = PerceptionPipeline(config), config
        self._describe_model()

    def _unload(self) -> None:
        self.pipeline = None
        self.config = None

    def _describe_model(self) -> None:
        assert self.config is not None and self.pipeline is not None
        metadata = self.pipeline.metadata
        self.weights_trained = bool(metadata.trained)
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
            **self.dds.describe(),  # rmw_implementation, fast_dds_version, dds_profile, largest_deliverable_frame
        }
        if self.weights_trained:
            self.get_logger().info(f"model {model} ({self.model_id}): {provenance_summary(True, metadata.provenance)}")
        else:  # said once here; /diagnostics and every FaceAffectArray keep saying it
            self.get_logger().warning(f"model {model} ({self.model_id}): {UNTRAINED_NOTICE}")

    # -- topics ---------------------------------------------------------------------------
    def _make_publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        pub = self.create_lifecycle_publisher(msg_type, topic, qos)
        if self._active:  # created by a runtime change (debug image) while active
            pub.on_activate(None)
        return pub

    def _drop_publisher(self, pub: Any) -> None:
        self.destroy_lifecycle_publisher(pub)

    def _create_outputs(self) -> None:
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.affect_pub = self._make_publisher(FaceAffectArray, "affect", reliable)
        self._diag_pub = self._make_publisher(DiagnosticArray, "/diagnostics", 10)
        self._connect_debug_image()

    def _connect_debug_image(self) -> None:
        assert self.config is not None
        if self.config.publish_debug_image and self.debug_pub is None:
            self.debug_pub = self._make_publisher(Image, "~/debug_image", qos_profile_sensor_data)
        elif not self.config.publish_debug_image and self.debug_pub is not None:
            pub, self.debug_pub = self.debug_pub, None
            self._drop_publisher(pub)

    def _destroy_outputs(self) -> None:
        for pub in (self.affect_pub, self._diag_pub, self.debug_pub):
            if pub is not None:
                self._drop_publisher(pub)
        self.affect_pub = self._diag_pub = self.debug_pub = None

    def _start_input(self) -> str:
        """Subscribe to the camera (QoS matched to its publishers), start the worker and
        the timers; returns the input topic."""
        assert self.config is not None
        if self.config.image_transport == "compressed":
            msg_type, topic, callback = CompressedImage, "image/compressed", self.frames.on_compressed
        else:
            msg_type, topic, callback = Image, "image", self.frames.on_image
        self._input = MatchedSubscription(self, msg_type, topic, callback, self.config.image_qos)
        self._input.update()
        self._timers.append(self.create_timer(QOS_RECHECK_PERIOD_S, self._input.update))
        self._start_diagnostics_timer()
        self._start_ros4hri()
        self.frames.start()
        return self._input.resolved_topic

    def _start_diagnostics_timer(self) -> None:
        assert self.config is not None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)

    def _stop_input(self) -> None:
        if self._input is not None:
            self._input.destroy()
            self._input = None
        for timer in [*self._timers, self._diag_timer]:
            if timer is not None:
                self.destroy_timer(timer)
        self._timers, self._diag_timer = [], None
        self.frames.stop()
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
        self.ros4hri = Ros4hriOutput(hri, not follow, self._make_publisher, self._drop_publisher, self.warn)
        if follow:
            self.followed = FollowedFaces(self, hri, self.config.ros4hri_roi_max_age, self.warn)

    def _stop_ros4hri(self) -> None:
        if self.followed is not None:
            self.followed.close()
            self.followed = None
        if self.ros4hri is not None:
            self.ros4hri.close()
            self.ros4hri = None

    # -- diagnostics (executor thread) ------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        config, pub = self.config, self._diag_pub
        if config is None or pub is None:
            return
        report = self.frames.stats.report(self.frames.slot.dropped, config.expected_input_rate)
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
                weights_trained=self.weights_trained,
                loss_warn_fraction=config.input_loss_warn_fraction,
                expected_rate_hz=config.expected_input_rate,
            )
        )


