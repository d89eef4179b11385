"""The image subscription's QoS, matched to the camera's publishers.

A best-effort subscription to a reliable camera is compatible, but DDS then never repairs
the UDP fragments it lost: with Fast DDS at its defaults a 640x480 frame (921,600 B) is
larger than a shared-memory segment, travels as fragments, and most frames are lost for
good (docs/NODE.md). A reliable subscription to a best-effort camera does not match at all.
So, like ``ros2 bag record`` (rosbag2_transport ``Rosbag2QoS::adapt_request_to_offers`` in
``rosbag2_transport/src/rosbag2_transport/qos.cpp``: reliable when every publisher offers
reliable, best effort otherwise, with a warning for a mix), ``image_qos: auto`` asks for
reliable only when all publishers offer it. The node keeps only the newest frame anyway,
hence keep-last 1 for the reliable case.

rclpy has no graph-event callback for Python nodes, so the publishers are polled (a
local graph-cache query, cheap) and the subscription is re-created when the decision
changes. With no publisher yet the subscription is best effort, which matches either kind.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, NamedTuple

from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

RELIABLE = "reliable"
BEST_EFFORT = "best_effort"
AUTO = "auto"

RELIABLE_INPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.VOLATILE)
BEST_EFFORT_INPUT_QOS = qos_profile_sensor_data  # best effort, keep last 5


class Basis(Enum):
    """What a reliability decision rests on."""

    FORCED = "forced"  # image_qos=reliable or best_effort
    NO_PUBLISHER = "no_publisher"
    ALL_RELIABLE = "all_reliable"
    MIXED = "mixed"  # some offer reliable, some best effort: frames of the reliable ones may be lost
    ALL_BEST_EFFORT = "all_best_effort"


class ReliabilityChoice(NamedTuple):
    reliability: str  # reliable | best_effort
    reason: str  # for the log line
    basis: Basis


def choose_reliability(mode: str, offered: Sequence[ReliabilityPolicy]) -> ReliabilityChoice:
    """``(reliable | best_effort, why, basis)`` for ``image_qos=mode`` and the reliability
    each publisher of the topic offers."""
    if mode in (RELIABLE, BEST_EFFORT):
        return ReliabilityChoice(mode, f"image_qos={mode}", Basis.FORCED)
    if mode != AUTO:
        raise ValueError(f"image_qos={mode!r}: must be one of {[AUTO, RELIABLE, BEST_EFFORT]}")
    if not offered:
        return ReliabilityChoice(BEST_EFFORT, "no publisher yet (best effort matches either kind)",
                                 Basis.NO_PUBLISHER)
    reliable = sum(1 for r in offered if r == ReliabilityPolicy.RELIABLE)
    if reliable == len(offered):
        return ReliabilityChoice(RELIABLE, f"all {len(offered)} publisher(s) offer reliable", Basis.ALL_RELIABLE)
    if reliable:
        return ReliabilityChoice(BEST_EFFORT, (
            f"{reliable} of {len(offered)} publishers offer reliable, the others best effort: best "
            f"effort reaches all of them, frames from the reliable ones may be lost"), Basis.MIXED)
    return ReliabilityChoice(BEST_EFFORT, f"the {len(offered)} publisher(s) offer best effort",
                             Basis.ALL_BEST_EFFORT)


class MatchedSubscription:
    """A subscription to ``topic`` whose reliability follows :func:`choose_reliability`.

    Call :meth:`update` periodically (and after a change of ``mode``); :meth:`destroy`
    removes the subscription."""

    def __init__(self, node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None],
                 mode: str, log: Callable[[str], None] | None = None) -> None:
        self._node, self._msg_type, self._topic, self._callback = node, msg_type, topic, callback
        self.mode = mode
        self._log = log or node.get_logger().info
        self._subscription: Any = None
        self.reliability: str | None = None  # what the current subscription asks for
        self.reason = ""
        self.resolved_topic = node.resolve_topic_name(topic)  # after remapping

    def offered(self) -> list[ReliabilityPolicy]:
        infos = self._node.get_publishers_info_by_topic(self.resolved_topic)
        return [info.qos_profile.reliability for info in infos]

    def update(self) -> bool:
        """(Re)subscribe when the wanted reliability changed; True when it did."""
        wanted, reason, basis = choose_reliability(self.mode, self.offered())
        if self._subscription is not None and wanted == self.reliability:
            return False
        if self._subscription is not None and basis is Basis.NO_PUBLISHER:
            return False  # publishers went away: keep what matched them, no flapping
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
        qos = RELIABLE_INPUT_QOS if wanted == RELIABLE else BEST_EFFORT_INPUT_QOS
        self._subscription = self._node.create_subscription(self._msg_type, self._topic, self._callback, qos)
        self.reliability, self.reason = wanted, reason
        text = f"subscribed to {self.resolved_topic} {wanted.replace('_', ' ')} ({reason}; image_qos={self.mode})"
        if basis is Basis.MIXED:  # a mix of reliable and best-effort publishers, as rosbag2 warns
            self._node.get_logger().warning(text)
        else:
            self._log(text)
        return True

    def destroy(self) -> None:
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
            self._subscription = None
            self.reliability = None
