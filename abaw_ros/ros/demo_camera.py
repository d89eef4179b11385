"""Demo camera: publishes frames with real faces, as a camera driver would.

By default the astronaut picture from scikit-image moves and changes scale across
640x480 frames (``--faces 2`` for two people, ``--faces 0`` for an empty scene);
``--video FILE`` publishes a video file instead (looped). Frames go out as
``sensor_msgs/Image`` on ``image`` or, with ``--compressed``, as JPEG
``sensor_msgs/CompressedImage`` on ``image/compressed``, at ``--rate`` Hz with the
publish time as stamp. ``--print-affect`` also prints the ``affect`` stream.

    lib/abaw_ros/demo_camera --faces 2 --rate 15 --print-affect [--ros-args ...]
"""
from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from abaw_ros.ros.conversions import bgr_to_compressed, bgr_to_image
from abaw_ros.ros.demo_scene import DemoScene, VideoScene
from abaw_ros.ros.transport import prefer_large_frame_transport


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo_camera", description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1, choices=(0, 1, 2, 3, 4),
                        help="people in the synthetic scene (default 1)")
    parser.add_argument("--video", default=None, help="publish this video file instead (looped)")
    parser.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    parser.add_argument("--height", type=int, default=480, help="frame height (default 480)")
    parser.add_argument("--rate", type=float, default=15.0, help="frames per second (default 15)")
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: never)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: never)")
    parser.add_argument("--compressed", action="store_true",
                        help="publish JPEG CompressedImage on image/compressed")
    parser.add_argument("--encoding", default="bgr8", choices=("bgr8", "rgb8", "mono8"),
                        help="raw image encoding (default bgr8)")
    parser.add_argument("--frame-id", default="camera", help="header.frame_id (default camera)")
    parser.add_argument("--print-affect", action="store_true", help="print the affect stream too")
    return parser


class DemoCamera(Node):
    """Publishes one frame per timer tick."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("demo_camera")
        if args.rate <= 0:
            raise ValueError(f"--rate {args.rate}: must be > 0 frames per second")
        self.args = args
        self.scene = (
            VideoScene(args.video, args.width, args.height) if args.video
            else DemoScene(args.faces, args.width, args.height)
        )
        self.sent = 0
        if args.compressed:
            self._pub = self.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
        else:
            self._pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.create_timer(1.0 / args.rate, self._tick)
        source = args.video or f"astronaut x{args.faces}"
        self.get_logger().info(
            f"publishing {source} at {args.rate:g} Hz on "
            f"{self.resolve_topic_name('image/compressed' if args.compressed else 'image')}"
        )

    @property
    def done(self) -> bool:
        return bool(self.args.frames) and self.sent >= self.args.frames

    def _tick(self) -> None:
        if self.done:
            return
        image = self.scene.frame(self.sent)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.args.frame_id)
        if self.args.compressed:
            self._pub.publish(bgr_to_compressed(image, header))
        else:
            self._pub.publish(bgr_to_image(image, header, self.args.encoding))
        self.sent += 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = build_parser().parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    prefer_large_frame_transport()  # full-size frames over shared memory (see transport.py)
    rclpy.init(args=argv)
    camera = printer = None
    try:
        try:
            camera = DemoCamera(args)
        except (ValueError, FileNotFoundError) as exc:
            print(f"demo_camera: {exc}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(camera)
        if args.print_affect:
            from abaw_ros.ros.affect_printer import AffectPrinter

            printer = AffectPrinter(lambda line: print(line, flush=True))
            executor.add_node(printer)
        deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
        while rclpy.ok() and not camera.done and (deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in (printer, camera):
            if node is not None:
                node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
