"""Print the affect stream as it arrives, one line per message.

``python -m abaw_ros.ros.affect_printer [--seconds N]`` (or through the demo) subscribes
to ``affect``; when the messages say the weights are untrained (``weights_trained``) the
printer says so once, plainly, before the values.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from abaw_ros.msg import FaceAffect, FaceAffectArray
from abaw_ros.tasks import AU_NAMES, EMI_NAMES

UNTRAINED_BANNER = (
    "NOTE: the node runs with UNTRAINED weights - the values below are placeholders, not "
    "affect estimates (set model_file_path to a trained model)."
)


def format_face(face: FaceAffect) -> str:
    aus = [name for name, on in zip(AU_NAMES, face.au_active, strict=True) if on]
    emi = sorted(zip(EMI_NAMES, face.mimicry_intensity, strict=True), key=lambda kv: -kv[1])[:2]
    r = face.roi
    return (
        f"face {face.face_id} [{r.x_offset},{r.y_offset} {r.width}x{r.height}] "
        f"window {face.frames_observed}/{face.window_length} "
        f"V={face.valence:+.2f} A={face.arousal:+.2f} "
        f"AU[{' '.join(aus) or '-'}] "
        f"EMI[{' '.join(f'{n}={v:.2f}' for n, v in emi)}] "
        f"hesitant={'yes' if face.hesitant else 'no'}({face.hesitancy_probability:.2f})"
    )


def format_affect(msg: FaceAffectArray, now_ns: int | None = None) -> str:
    """One line: stamp, stamp-to-arrival latency, then each face."""
    stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    head = f"[{msg.header.stamp.sec}.{msg.header.stamp.nanosec // 1_000_000:03d}]"
    if now_ns is not None and stamp_ns > 0:
        head += f" +{(now_ns - stamp_ns) / 1e6:.0f}ms"
    if not msg.faces:
        return f"{head} no face"
    return f"{head} " + " | ".join(format_face(face) for face in msg.faces)


class AffectPrinter(Node):
    """Subscribes to ``affect`` and hands each line to ``write``."""

    def __init__(self, write: Callable[[str], None] = print, node_name: str = "affect_printer") -> None:
        super().__init__(node_name)
        self._write = write
        self.received = 0
        self.faces_seen = 0
        self.weights_trained: bool | None = None
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(FaceAffectArray, "affect", self._on_affect, reliable)

    def _on_affect(self, msg: FaceAffectArray) -> None:
        self.received += 1
        self.faces_seen += len(msg.faces)
        trained = bool(msg.weights_trained)
        if trained != self.weights_trained:  # every message says it; print it when it changes
            self.weights_trained = trained
            self._write(UNTRAINED_BANNER if not trained else f"model {msg.model_id or '?'}: trained weights")
        self._write(format_affect(msg, self.get_clock().now().nanoseconds))


def print_affect_stream(
    seconds: float | None,
    write: Callable[[str], None] = print,
    keep_going: Callable[[], bool] = lambda: True,
    ros_args: list[str] | None = None,
) -> tuple[int, int, bool | None]:
    """Print the stream for ``seconds`` (None: until Ctrl-C) or while ``keep_going()``
    holds, with an rclpy session of its own.

    Returns (messages received, faces seen, weights trained as the messages said it or
    None when none arrived)."""
    rclpy.init(args=ros_args or [])
    received, faces, trained = 0, 0, None
    printer: AffectPrinter | None = None
    try:
        printer = AffectPrinter(write)
        deadline = None if seconds is None else time.monotonic() + seconds
        while rclpy.ok() and keep_going() and (deadline is None or time.monotonic() < deadline):
            rclpy.spin_once(printer, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if printer is not None:
            received, faces, trained = printer.received, printer.faces_seen, printer.weights_trained
            printer.destroy_node()
        rclpy.try_shutdown()
    return received, faces, trained


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog="affect_printer", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    print_affect_stream(args.seconds, lambda line: print(line, flush=True), ros_args=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
