"""An example behaviour node: reacts to a sustained smile and to hesitancy.

    affect_reactions --ros-args -r affect:=/abaw_affect/affect

Subscribes to ``affect`` (``FaceAffectArray``) and publishes one ``std_msgs/String`` on
``reactions`` per event, ``"<cue> <face_id>"`` (``smile face_3``, ``hesitant face_3``),
with a log line saying what the robot would do. A cue counts when it holds over most of
the last second of a face's messages (``smile`` = AU12, the lip-corner puller, active;
``hesitant`` = the hesitancy flag), so a single noisy frame does not trigger a reaction;
it fires once when it starts and again only after it stopped.

It trusts only what the message says: a ``FaceAffectArray`` with ``weights_trained``
false comes from an untrained network and is ignored (said once in the log), unless
``accept_untrained`` is set for a demo.

Parameters: ``cue_seconds`` (1.0), ``cue_fraction`` (0.7: share of that span's messages
in which the cue is on), ``accept_untrained`` (false).
"""
from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from abaw_ros.msg import FaceAffect, FaceAffectArray
from abaw_ros.tasks import AU_NAMES

AU12 = AU_NAMES.index("AU12")
FORGET_AFTER_NS = 3_000_000_000  # a face not seen for this long starts over


@dataclass
class SustainedCue:
    """Whether a yes/no cue held over most of the last ``span_s`` seconds, per face.

    :meth:`update` returns True once when the cue becomes sustained: the messages of the
    last ``span_s`` seconds cover at least 80 % of it and the cue is on in at least
    ``fraction`` of them; it rearms when that stops being true."""

    span_s: float = 1.0
    fraction: float = 0.7
    _history: dict[str, deque[tuple[int, bool]]] = field(default_factory=dict)
    _firing: set[str] = field(default_factory=set)

    def update(self, face_id: str, stamp_ns: int, on: bool) -> bool:
        history = self._history.setdefault(face_id, deque())
        if history and stamp_ns - history[-1][0] > FORGET_AFTER_NS:
            history.clear()
            self._firing.discard(face_id)
        history.append((stamp_ns, bool(on)))
        span_ns = int(self.span_s * 1e9)
        while history and stamp_ns - history[0][0] > span_ns:
            history.popleft()
        covered = stamp_ns - history[0][0] >= 0.8 * span_ns
        sustained = covered and sum(v for _, v in history) >= self.fraction * len(history)
        if sustained and face_id not in self._firing:
            self._firing.add(face_id)
            return True
        if not sustained:
            self._firing.discard(face_id)
        return False

    def forget(self, keep: set[str]) -> None:
        for face_id in set(self._history) - keep:
            self._history.pop(face_id, None)
            self._firing.discard(face_id)


class AffectReactions(Node):
    """Subscribes to ``affect``, publishes ``reactions``."""

    def __init__(self, node_name: str = "affect_reactions") -> None:
        super().__init__(node_name)
        seconds = float(self.declare_parameter("cue_seconds", 1.0).value)
        fraction = float(self.declare_parameter("cue_fraction", 0.7).value)
        self.accept_untrained = bool(self.declare_parameter("accept_untrained", False).value)
        self.smile = SustainedCue(seconds, fraction)
        self.hesitancy = SustainedCue(seconds, fraction)
        self._said_untrained = False
        self._pub = self.create_publisher(String, "reactions", 10)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(FaceAffectArray, "affect", self._on_affect, reliable)

    def _on_affect(self, msg: FaceAffectArray) -> None:
        if not msg.weights_trained and not self.accept_untrained:
            if not self._said_untrained:
                self._said_untrained = True
                self.get_logger().warning(
                    f"ignoring affect from model {msg.model_id or '?'}: its weights are untrained, the "
                    f"values are placeholders (set accept_untrained:=true to react anyway, for a demo)")
            return
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        for face in msg.faces:
            self._react(face, stamp_ns)
        present = {face.face_id for face in msg.faces}
        self.smile.forget(present)
        self.hesitancy.forget(present)

    def _react(self, face: FaceAffect, stamp_ns: int) -> None:
        if self.smile.update(face.face_id, stamp_ns, bool(face.au_active[AU12])):
            self._emit("smile", face, f"{face.face_id} has been smiling for {self.smile.span_s:.1f} s: smile back")
        if self.hesitancy.update(face.face_id, stamp_ns, bool(face.hesitant)):
            self._emit("hesitant", face, f"{face.face_id} looks hesitant: slow down and offer help")

    def _emit(self, cue: str, face: FaceAffect, text: str) -> None:
        self.get_logger().info(text)
        self._pub.publish(String(data=f"{cue} {face.face_id}"))


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node: AffectReactions | None = None
    try:
        node = AffectReactions()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
