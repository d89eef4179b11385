"""``abaw-affect video-to-bag``: a video file (and optional per-frame annotations) -> a
ROS 2 bag of camera frames at the video's rate, ready for ``bag-eval``.

    abaw-affect video-to-bag clip.mp4 clip_bag --va clip.va.txt --au clip.au.txt
    abaw-affect bag-eval clip_bag --labels-csv clip_bag_labels.csv

Exit status: 0 done, 2 the video, output or annotations cannot be used.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from abaw_ros.commands.options import FIRST_FRAME, FPS, MAX_FRAMES, STAMP_SECONDS, add_number
from abaw_ros.offline.bag_types import BAG_VERSIONS, DEFAULT_BAG_VERSION, DEFAULT_IMAGE_TOPIC, STORAGES

log = logging.getLogger("abaw_ros.video_to_bag")
EXIT_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="video file OpenCV can read (mp4, avi, mkv, ...)")
    parser.add_argument("bag", type=Path, help="bag directory to create")
    parser.add_argument("-t", "--topic", default=None,
                        help=f"topic (default {DEFAULT_IMAGE_TOPIC}, or "
                             f"{DEFAULT_IMAGE_TOPIC}/compressed with --compressed)")
    parser.add_argument("-s", "--storage", choices=list(STORAGES), default="mcap", help="default mcap")
    parser.add_argument("--compressed", choices=("jpeg", "png"), default=None,
                        help="write sensor_msgs/CompressedImage in this format (default: raw Image)")
    parser.add_argument("--encoding", choices=("bgr8", "rgb8", "mono8"), default="bgr8",
                        help="pixel encoding of raw Image messages (default bgr8)")
    parser.add_argument("--frame-id", default="camera", help="header frame_id (default camera)")
    add_number(parser, "--fps", kind=float, bounds=FPS, default=None, help="frame rate (default: the video's)")
    add_number(parser, "--start", kind=float, bounds=STAMP_SECONDS, default=None,
               help="first stamp in seconds since the epoch (default: the file's mtime)")
    add_number(parser, "--max-frames", kind=int, bounds=MAX_FRAMES, default=None, help="stop after this many frames")
    parser.add_argument("--bag-version", type=int, choices=BAG_VERSIONS, default=DEFAULT_BAG_VERSION,
                        help=f"rosbag2 metadata version (default {DEFAULT_BAG_VERSION}: read by Humble, Jazzy "
                             f"and Kilted; 9: Jazzy and later only)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    labels = parser.add_argument_group("annotations, written as a CSV keyed by the bag's stamps")
    labels.add_argument("--va", type=Path, help="Aff-Wild2 VA file")
    labels.add_argument("--au", type=Path, help="Aff-Wild2 AU file")
    labels.add_argument("--ah", type=Path, help="per-frame hesitancy file (header 'hesitancy')")
    labels.add_argument("--ah-yaml", type=Path, help="BAH annotation.yml (with --ah-video)")
    labels.add_argument("--ah-video", help="the video's key in --ah-yaml")
    add_number(labels, "--first-frame", kind=int, bounds=FIRST_FRAME, default=1,
               help="annotation frame number of the video's first frame (default 1)")
    labels.add_argument("--labels-csv", type=Path, default=None,
                        help="where to write the CSV (default <bag>_labels.csv)")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.data.records import DataFormatError
    from abaw_ros.offline.annotations import load_frame_labels
    from abaw_ros.offline.bag_types import BagError
    from abaw_ros.offline.video_to_bag import video_to_bag

    topic = args.topic or (DEFAULT_IMAGE_TOPIC + ("/compressed" if args.compressed else ""))
    try:
        labels = None
        if any(v is not None for v in (args.va, args.au, args.ah, args.ah_yaml)):
            labels = load_frame_labels(args.va, args.au, args.ah, args.ah_yaml, args.ah_video, args.first_frame)
        result = video_to_bag(
            args.video, args.bag, topic=topic, storage=args.storage, compression=args.compressed,
            encoding=args.encoding, frame_id=args.frame_id, fps=args.fps,
            start_ns=None if args.start is None else int(round(args.start * 1e9)),
            max_frames=args.max_frames, labels=labels, labels_csv=args.labels_csv,
            overwrite=args.overwrite, progress=not args.no_progress, bag_version=args.bag_version,
            inputs=[p for p in (args.va, args.au, args.ah, args.ah_yaml) if p is not None],
        )
    except (BagError, DataFormatError, FileNotFoundError, KeyError, ValueError) as exc:
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return EXIT_ERROR
    print(result.summary())
    return 0
