"""The node's frame path: the subscription callback only puts the newest frame into a
one-slot mailbox; a worker thread decodes it, runs the pipeline and publishes, so a slow
frame makes the node skip frames (counted) instead of queueing them."""
from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from sensor_msgs.msg import CompressedImage, Image

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
from abaw_ros.ros.diagnostics import NodeStats
from abaw_ros.ros.handoff import LatestSlot
from abaw_ros.ros.node_logging import warning_kind


class Node(Protocol):
    """What the worker reads of its node (:class:`abaw_ros.ros.affect_node.AffectNode`)."""

    pipeline: Any  # PerceptionPipeline, None while unconfigured
    config: Any  # PipelineConfig, None while unconfigured
    affect_pub: Any
    debug_pub: Any
    dds: Any  # transport.DdsSettings
    followed: Any  # ros4hri.FollowedFaces or None
    ros4hri: Any  # ros4hri.Ros4hriOutput or None
    weights_trained: bool
    model_id: str
    context: Any

    def warn(self, kind: str, text: str) -> None: ...
    def get_clock(self) -> Any: ...


class FrameWorker:
    """The mailbox, the worker thread and the counts behind ``/diagnostics`` of one node.
    Reads the node's pipeline, publishers and ROS4HRI outputs as they are at each frame."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.slot: LatestSlot[tuple[str, Any]] = LatestSlot()
        self.stats = NodeStats()
        self._thread: threading.Thread | None = None

    # -- callbacks (executor thread): hand over, nothing else ---------------------------
    def on_image(self, msg: Image) -> None:
        self.stats.on_received(stamp_to_ns(msg.header))
        self.slot.put(("image", msg))

    def on_compressed(self, msg: CompressedImage) -> None:
        self.stats.on_received(stamp_to_ns(msg.header))
        self.slot.put(("compressed", msg))

    # -- worker thread --------------------------------------------------------------------
    def start(self) -> None:
        self.slot = LatestSlot()
        self._thread = threading.Thread(target=self._work, name="abaw_affect_worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the mailbox; the worker ends after its current frame."""
        self.slot.close()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None

    def _work(self) -> None:
        slot = self.slot
        while not slot.closed:
            item = slot.take(timeout=0.5)
            if item is None:
                continue
            transport, msg = item
            try:
                self._process(transport, msg)
            except Exception as exc:  # keep serving frames; the error says what broke
                if not self._node.context.ok() or slot.closed:  # shutting down or deactivated
                    return
                self._node.warn(
                    f"process:{type(exc).__name__}",
                    f"processing frame {describe_frame(msg)} failed: {type(exc).__name__}: {exc}",
                )

    def _process(self, transport: str, msg: Image | CompressedImage) -> None:
        node = self._node
        pipeline, affect_pub, config = node.pipeline, node.affect_pub, node.config
        if pipeline is None or affect_pub is None or config is None:
            return
        segment = node.dds.segment_bytes
        if segment and len(msg.data) > segment:
            # This one arrived; most frames this large do not (see ros/transport.py).
            node.warn(
                f"{transport}:oversized",
                f"frame {describe_frame(msg)} has {len(msg.data)} bytes, more than the "
                f"{segment}-byte Fast DDS shared-memory segment: most frames this large are lost "
                f"in transport without an error; send smaller frames or image/compressed",
            )
        limit = config.max_image_pixels
        try:
            image = (compressed_to_bgr(msg, limit) if transport == "compressed"
                     else image_to_bgr(msg, limit))
        except IMAGE_ERRORS as exc:
            self.stats.on_bad()
            what = "too large" if isinstance(exc, ImageTooLargeError) else "bad"
            node.warn(
                warning_kind(transport, exc),
                f"skipping {what} {transport} frame {describe_frame(msg)}: {exc}",
            )
            return
        stamp_ns = stamp_to_ns(msg.header)
        followed = node.followed
        started = time.perf_counter()
        if followed is not None:  # ROS4HRI follow mode: that detector's faces and ids
            result = pipeline.process(image, stamp_ns, *followed.faces_for(stamp_ns, image.shape))
        else:
            result = pipeline.process(image, stamp_ns)
        processing_ms = (time.perf_counter() - started) * 1e3
        trained = node.weights_trained
        out = frame_result_to_msg(result, msg.header, image.shape, trained, node.model_id)
        if not node.context.ok() or self.slot.closed:
            return
        affect_pub.publish(out)
        ros4hri = node.ros4hri
        if ros4hri is not None:  # the same results, as ROS4HRI topics
            ros4hri.publish(result, msg.header, image.shape, trained)
        now_ns = node.get_clock().now().nanoseconds
        latency_ms = (now_ns - stamp_ns) / 1e6 if stamp_ns > 0 else processing_ms
        self.stats.on_published(latency_ms, processing_ms, len(out.faces), result.timings)
        debug_pub = node.debug_pub
        if debug_pub is not None and debug_pub.get_subscription_count() > 0:
            note = "" if trained else "UNTRAINED weights: values are placeholders"
            debug_pub.publish(bgr_to_image(draw_affect(image, out, note), msg.header))


def describe_frame(msg: Image | CompressedImage) -> str:
    h = msg.header
    return f"(stamp {h.stamp.sec}.{h.stamp.nanosec:09d}, frame_id {shown(h.frame_id)})"
