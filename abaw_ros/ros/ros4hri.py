"""The node's ROS4HRI (REP-155) view of its results, beside ``affect``.

Two modes (parameter ``ros4hri_faces``):

- ``own``: faces and ids are ours. Per frame the node publishes ``/humans/faces/tracked``
  (``hri_msgs/IdsList``) and, per face, ``/humans/faces/<id>/roi``
  (``NormalizedRegionOfInterest2D``), ``/expression`` (``Expression``) and ``/facs``
  (``FacialActionUnits``).
- ``follow``: a ROS4HRI face detector (``hri_face_detect``) already publishes faces. The
  node reads ``/humans/faces/tracked`` and each face's ``roi``, runs its windows under
  *those* ids (:class:`abaw_ros.perception.given_faces.GivenFace`) and publishes only
  ``expression`` and ``facs``, so the robot keeps one id per person.

Both come from the same :class:`FrameResult` as the ``FaceAffectArray``; the field values
are :mod:`abaw_ros.perception.ros4hri_values`'s. Every message carries the source image's
header (``hri_face_detect`` stamps its ``roi`` and ``tracked`` with the image header too).

Facts from the upstream sources (ros4hri/hri_face_detect humble-devel 69224b1170ef,
``node_face_detect.py``; ros4hri/libhri humble-devel ed49343880c4, ``hri/src/hri/face.cpp``):

- hri_face_detect creates its per-face publishers with ``create_publisher(type, topic, 1)``
  (reliable, volatile, keep last 1) when a face is confirmed, destroys them when the face is
  forgotten, and publishes ``/humans/faces/tracked`` the same way on every processed frame;
  we use the same QoS. libhri subscribes to them with ``SystemDefaultsQoS`` (reliable).
- Its ``roi`` is the detector box normalised by the image size; it leaves ``c`` at 0.
- Its ``aligned`` crops are eye-levelled, cut to the detector box and letterboxed into
  128x128 with black bars: not the five-point crop with margin our model was trained on, so
  in ``follow`` mode the node aligns each face itself inside that face's ``roi`` on the full
  camera frame it already receives (landmarks from our detector's landmark stage).
"""
from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rclpy.qos import QoSProfile
from std_msgs.msg import Header

from abaw_ros.perception.given_faces import GivenFace
from abaw_ros.perception.ros4hri_values import (
    expression_values,
    facs_values,
    normalized_roi,
    pixel_box,
)

if TYPE_CHECKING:
    from abaw_ros.perception.pipeline import FaceResult, FrameResult

FACES_NS = "/humans/faces"
TRACKED_TOPIC = f"{FACES_NS}/tracked"
# hri_face_detect: create_publisher(..., 1) for every ROS4HRI topic (reliable, volatile).
HRI_QOS = QoSProfile(depth=1)
# At most this many faces get topics of their own (publishers in both modes, roi
# subscriptions in follow mode); the others are skipped with a warning, so a tracker that
# floods the id list cannot make the node open topics without end.
MAX_FACE_TOPICS = 32
ROI_HISTORY = 16  # rois kept per followed face, to find the one of a frame's stamp


def hri_msgs_install_hint() -> str:
    distro = os.environ.get("ROS_DISTRO") or "<distro>"
    return (f"sudo apt install ros-{distro}-hri-msgs (released for Humble and Jazzy), or build "
            f"https://github.com/ros4hri/hri_msgs (branch humble-devel) with colcon and source it")


def import_hri_msgs() -> Any:
    """The ``hri_msgs.msg`` module; ImportError with the install command when missing."""
    try:
        from hri_msgs import msg
    except ImportError as exc:
        raise ImportError(f"publish_ros4hri=true needs the ROS4HRI messages (hri_msgs), which do not "
                          f"import here ({exc}): {hri_msgs_install_hint()}") from None
    return msg


def _header(header: Header) -> Header:
    return Header(stamp=header.stamp, frame_id=header.frame_id)


def _stamp_ns(header: Header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class Ros4hriOutput:
    """Publishes each frame's results as ROS4HRI topics; per-face publishers are created
    when a face first has a result and destroyed when its id leaves the tracked list."""

    def __init__(self, hri: Any, own_faces: bool, make_publisher: Callable[[Any, str, Any], Any],
                 drop_publisher: Callable[[Any], None], warn: Callable[[str, str], None]) -> None:
        self.hri = hri
        self.own_faces = own_faces
        self._make = make_publisher
        self._drop = drop_publisher
        self._warn = warn
        self._faces: dict[str, dict[str, Any]] = {}  # id -> {"roi"/"expression"/"facs": publisher}
        self._tracked_pub = make_publisher(hri.IdsList, TRACKED_TOPIC, HRI_QOS) if own_faces else None

    def publish(self, result: FrameResult, header: Header, image_shape: tuple[int, ...],
                weights_trained: bool) -> None:
        tracked = set(result.tracked)
        for gone in [face_id for face_id in self._faces if face_id not in tracked]:
            self._drop_face(gone)
        for face in result.faces:
            topics = self._topics(face)
            if topics is None:
                continue
            if "roi" in topics:
                xmin, ymin, xmax, ymax = normalized_roi(face.box, image_shape)
                topics["roi"].publish(self.hri.NormalizedRegionOfInterest2D(
                    header=_header(header), xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax,
                    c=float(min(max(face.confidence, 0.0), 1.0))))
            expression = expression_values(face, weights_trained)
            if expression is not None:
                topics["expression"].publish(self.hri.Expression(header=_header(header), **expression))
            facs = facs_values(face, weights_trained)
            if facs is not None:
                msg = self.hri.FacialActionUnits(header=_header(header))
                msg.intensity, msg.confidence = facs[0], facs[1]
                topics["facs"].publish(msg)
        # After the faces' topics, as hri_face_detect does: an id listed here has its data out.
        if self._tracked_pub is not None:
            self._tracked_pub.publish(self.hri.IdsList(header=_header(header), ids=list(result.tracked)))

    def _topics(self, face: FaceResult) -> dict[str, Any] | None:
        """The face's publishers, created on its first result (None: it cannot have any)."""
        face_id = face.face_id
        topics = self._faces.get(face_id)
        if topics is not None:
            return topics
        if len(self._faces) >= MAX_FACE_TOPICS:
            self._warn("ros4hri:too_many", f"ROS4HRI: {len(self._faces)} faces already have topics "
                       f"(the most is {MAX_FACE_TOPICS}); face {face_id!r} is not published")
            return None
        ns = f"{FACES_NS}/{face_id}"
        topics = {}
        try:
            if self.own_faces:
                topics["roi"] = self._make(self.hri.NormalizedRegionOfInterest2D, f"{ns}/roi", HRI_QOS)
            if "va" in face.outputs:
                topics["expression"] = self._make(self.hri.Expression, f"{ns}/expression", HRI_QOS)
            if "au" in face.outputs:
                topics["facs"] = self._make(self.hri.FacialActionUnits, f"{ns}/facs", HRI_QOS)
        except Exception as exc:  # an id that is no valid topic name (rclpy's error names it)
            for pub in topics.values():
                self._drop(pub)
            self._warn("ros4hri:bad_id", f"ROS4HRI: cannot publish face {face_id!r}: {exc}")
            return None
        self._faces[face_id] = topics
        return topics

    def _drop_face(self, face_id: str) -> None:
        for pub in self._faces.pop(face_id).values():
            self._drop(pub)

    def close(self) -> None:
        for face_id in list(self._faces):
            self._drop_face(face_id)
        if self._tracked_pub is not None:
            self._drop(self._tracked_pub)
            self._tracked_pub = None


class FollowedFaces:
    """``follow`` mode's input: the ROS4HRI detector's tracked ids and each face's latest
    rois. Callbacks run on the executor; :meth:`faces_for` on the node's worker."""

    def __init__(self, node: Any, hri: Any, max_age_s: float, warn: Callable[[str, str], None]) -> None:
        self.node = node
        self.hri = hri
        self.max_age_ns = int(round(max_age_s * 1e9))
        self._warn = warn
        self._lock = threading.Lock()
        self._tracked: list[str] = []
        self._rois: dict[str, deque[tuple[int, tuple[float, float, float, float], float]]] = {}
        self._subs: dict[str, Any] = {}
        self._tracked_sub = node.create_subscription(hri.IdsList, TRACKED_TOPIC, self._on_tracked, HRI_QOS)

    def _on_tracked(self, msg: Any) -> None:
        with self._lock:
            self._follow(list(dict.fromkeys(str(i) for i in msg.ids)))

    def _follow(self, ids: list[str]) -> None:
        for gone in [face_id for face_id in self._subs if face_id not in ids]:
            self.node.destroy_subscription(self._subs.pop(gone))
        for face_id in ids:
            if face_id in self._subs:
                continue
            if len(self._subs) >= MAX_FACE_TOPICS:
                self._warn("ros4hri:too_many", f"ROS4HRI: following {len(self._subs)} faces already "
                           f"(the most is {MAX_FACE_TOPICS}); face {face_id!r} is ignored")
                break
            try:
                self._subs[face_id] = self.node.create_subscription(
                    self.hri.NormalizedRegionOfInterest2D, f"{FACES_NS}/{face_id}/roi",
                    lambda roi, face_id=face_id: self._on_roi(face_id, roi), HRI_QOS)
            except Exception as exc:  # an id that is no valid topic name
                self._warn("ros4hri:bad_id", f"ROS4HRI: cannot follow face {face_id!r}: {exc}")
        self._tracked = [face_id for face_id in ids if face_id in self._subs]
        for gone in [face_id for face_id in self._rois if face_id not in self._subs]:
            del self._rois[gone]

    def _on_roi(self, face_id: str, msg: Any) -> None:
        with self._lock:
            if face_id in self._subs:
                history = self._rois.setdefault(face_id, deque(maxlen=ROI_HISTORY))
                history.append((_stamp_ns(msg.header), (msg.xmin, msg.ymin, msg.xmax, msg.ymax), float(msg.c)))

    def faces_for(self, stamp_ns: int, image_shape: tuple[int, ...]) -> tuple[list[GivenFace], list[str]]:
        """(the faces to process on the frame stamped ``stamp_ns``: each tracked face whose
        roi stamped closest to it is at most ``max_age`` away, in pixels; every tracked id)."""
        with self._lock:
            tracked = list(self._tracked)
            faces = []
            for face_id in tracked:
                history = self._rois.get(face_id)
                if not history:
                    continue
                stamp, roi, score = min(history, key=lambda entry: abs(entry[0] - stamp_ns))
                if abs(stamp - stamp_ns) > self.max_age_ns:
                    continue
                x1, y1, x2, y2 = pixel_box(roi, image_shape)
                if x2 - x1 >= 1 and y2 - y1 >= 1:
                    faces.append(GivenFace(face_id=face_id, box=(x1, y1, x2, y2), score=score))
        return faces, tracked

    def close(self) -> None:
        with self._lock:
            for sub in [*self._subs.values(), self._tracked_sub]:
                self.node.destroy_subscription(sub)
            self._subs.clear()
            self._tracked, self._rois = [], {}
