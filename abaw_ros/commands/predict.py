"""``abaw-affect predict``: the node's pipeline on every frame of a video file, an image
folder or a ROS 2 bag; one CSV row per frame and face, a sidecar JSON naming the model,
and optionally the video with boxes, ids, valence/arousal and the active AUs drawn.

    abaw-affect predict clip.mp4 -o clip.csv --video clip_annotated.mp4 \\
        --model-file-path models/affect_bundle
    abaw-affect predict frames/ -o frames.csv --fps 30     # an image folder
    abaw-affect predict recording/ -o recording.csv        # a bag (--topic as in bag-eval)

Exit status: 0 done, 2 the SOURCE, an output or the parameters cannot be used (the
message says which), 130 interrupted (the rows so far are written).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from abaw_ros.commands.options import FPS, MAX_FRAMES, add_number, add_pipeline_arguments

log = logging.getLogger("abaw_ros.predict")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="video file, folder of images, or ROS 2 bag")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="CSV to write; the sidecar JSON goes next to it (<name>.json)")
    parser.add_argument("--video", type=Path, default=None,
                        help="also write the frames with the results drawn in (.mp4, .avi, .mkv, ...)")
    add_number(parser, "--fps", kind=float, bounds=FPS, default=None,
               help="frame rate: overrides a video's, sets an image folder's (default 30)")
    parser.add_argument("-t", "--topic", default=None,
                        help="image topic of a bag (default: its only Image/CompressedImage topic)")
    parser.add_argument("--recover", action="store_true", help="a bag cut short: read up to the damage")
    add_number(parser, "--max-frames", kind=int, bounds=MAX_FRAMES, default=None,
               help="stop after this many processed frames")
    parser.add_argument("--overwrite", action="store_true", help="replace the CSV, sidecar and video of an earlier run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_pipeline_arguments(parser, "exported ONNX bundle or checkpoint (.pt)", "detection_interval:=1")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.commands.options import build_config
    from abaw_ros.config import ConfigError
    from abaw_ros.offline.bag_types import BagError
    from abaw_ros.offline.predict import predict
    from abaw_ros.offline.sources import SourceError, open_source

    try:
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError(f"--max-frames {args.max_frames}: must be >= 1")
        config, params_file = build_config(args)  # checks the parameters; loads nothing
        # A bad SOURCE before the model loads; frames are measured against the same limit.
        open_source(args.source, args.fps, args.topic, args.recover, config.max_image_pixels).close()
        if params_file is not None:
            log.info("pipeline parameters from %s", params_file)
        result = predict(args.source, args.output, config, video=args.video, fps=args.fps, topic=args.topic,
                         recover=args.recover, max_frames=args.max_frames, overwrite=args.overwrite,
                         progress=not args.no_progress)
    except (SourceError, BagError, ConfigError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    print(result.summary())
    return EXIT_INTERRUPTED if result.interrupted else 0
