"""``abaw-affect bag-eval``: run the node's pipeline over a ROS 2 bag (MCAP or sqlite3),
write the affect bag, and with annotations the metrics report; always a timeline plot.

    abaw-affect bag-eval recording/ --topic /camera/image_raw \\
        --va video.va.txt --au video.au.txt          # Aff-Wild2-style files, by frame index
    abaw-affect bag-eval recording/ --labels-csv labels.csv   # keyed by image stamp
    abaw-affect bag-eval day1/ day2/ -o results/ --workers 4   # many bags: one summary report

Exit status: 0 done (frames may have been skipped: see the summary), 2 the bag, topic,
configuration, annotations or an output path cannot be used, or ``--strict`` stopped at
an undecodable frame (the message says which), 3 with ``--strict`` when frames were
skipped, 4 the bag is damaged: the frames that could be read were processed and written,
the message says how many could not.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from abaw_ros.commands.options import (
    FIRST_FRAME,
    MAX_FRAMES,
    PLOT_SIDE,
    add_number,
    add_pipeline_arguments,
    plot_size,
)
from abaw_ros.config import Bounds
from abaw_ros.offline.bag_eval import EXIT_ERROR, EXIT_SKIPPED
from abaw_ros.offline.bag_types import (
    BAG_VERSIONS,
    DEFAULT_AFFECT_TOPIC,
    DEFAULT_BAG_VERSION,
    DEFAULT_IMAGE_TOPIC,
    STORAGES,
)
from abaw_ros.offline.report import MISSING_POLICIES
from abaw_ros.offline.track import FACE_LARGEST, FACE_MOST_CONFIDENT

log = logging.getLogger("abaw_ros.bag_eval")
# A label row belongs to the image whose stamp is this close; beyond a second it would
# pair frames with the labels of others at any usual camera rate.
STAMP_TOLERANCE = Bounds(0.0, 1.0, "seconds")
WORKERS = Bounds(1, 1024, "processes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, nargs="+",
                        help="input bag: directory with metadata.yaml, or a .mcap/.db3 file; several bags or "
                             "folders of bags give one summary report (see 'many bags')")
    parser.add_argument("-t", "--topic", default=DEFAULT_IMAGE_TOPIC,
                        help=f"Image or CompressedImage topic (default {DEFAULT_IMAGE_TOPIC}; "
                             f"'' picks the bag's only image topic)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="affect bag to write (default: <bag>_affect next to the input); with several "
                             "bags the output folder (default: <first bag's folder>/affect_eval)")
    parser.add_argument("--output-topic", default=DEFAULT_AFFECT_TOPIC,
                        help=f"topic of the FaceAffectArray messages (default {DEFAULT_AFFECT_TOPIC})")
    parser.add_argument("-s", "--storage", choices=list(STORAGES), default=None,
                        help="storage of the affect bag (default: as the input)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the affect bag, report and plot of an earlier run (an affect bag "
                             "is replaced only if bag-eval wrote it; nothing else is ever replaced)")
    parser.add_argument("--bag-version", type=int, choices=BAG_VERSIONS, default=DEFAULT_BAG_VERSION,
                        help=f"rosbag2 metadata version of the affect bag (default {DEFAULT_BAG_VERSION}: read by "
                             f"Humble, Jazzy and Kilted; 9: Jazzy and later only)")
    parser.add_argument("--recover", action="store_true",
                        help="an MCAP recording that was cut short (no footer): process the complete "
                             "records before the cut instead of stopping with an error")

    add_pipeline_arguments(parser, "checkpoint (.pt) or exported ONNX bundle", "backend:=torch")

    labels = parser.add_argument_group("annotations (any of them; by frame index or by stamp)")
    labels.add_argument("--va", type=Path, help="Aff-Wild2 VA file (valence,arousal; -5 invalid)")
    labels.add_argument("--au", type=Path, help="Aff-Wild2 AU file (12 columns; -1 invalid)")
    labels.add_argument("--ah", type=Path, help="per-frame hesitancy file (header 'hesitancy', rows 0/1/-1)")
    labels.add_argument("--ah-yaml", type=Path, help="BAH annotation.yml (with --ah-video)")
    labels.add_argument("--ah-video", help="the video's key in --ah-yaml")
    add_number(labels, "--first-frame", kind=int, bounds=FIRST_FRAME, default=None,
               help="annotation frame number of the first image message (default 1 for "
                    "Aff-Wild2 files; BAH frame-<N> is always 0-based)")
    labels.add_argument("--labels-csv", type=Path,
                        help="CSV keyed by image stamp (stamp_ns or stamp [s] + label columns)")
    add_number(labels, "--stamp-tolerance", kind=float, bounds=STAMP_TOLERANCE, default=0.001,
               help="seconds between an image stamp and its CSV row (default 0.001)")
    labels.add_argument("--face", default=FACE_LARGEST,
                        help=f"face scored against the labels: {FACE_LARGEST} (default), "
                             f"{FACE_MOST_CONFIDENT}, or a tracker id")
    labels.add_argument("--missing", choices=MISSING_POLICIES, default="exclude",
                        help="frames without a prediction: exclude (default) or score as neutral")

    out = parser.add_argument_group("outputs")
    out.add_argument("--report", type=Path, default=None,
                     help="JSON report (default <output>_report.json); an existing file is replaced only "
                          "when it is a bag-eval report, or with --overwrite")
    out.add_argument("--plot", type=Path, default=None, help="timeline PNG (default <output>_timeline.png)")
    out.add_argument("--no-plot", action="store_true", help="do not draw the timeline")
    out.add_argument("--plot-size", type=plot_size, default=(1600, 1000), metavar="WxH",
                     help=f"plot size in pixels (default 1600x1000; each side {PLOT_SIDE.describe()})")
    add_number(out, "--max-frames", kind=int, bounds=MAX_FRAMES, default=None,
               help="stop after this many processed frames")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--strict", action="store_true",
                     help=f"stop at the first frame in an encoding that cannot be decoded (exit "
                          f"{EXIT_ERROR}, results so far kept); exit {EXIT_SKIPPED} when frames were skipped")
    many = parser.add_argument_group("many bags (several bag arguments or folders of bags)")
    add_number(many, "--workers", kind=int, bounds=WORKERS, default=1,
               help="bags evaluated at once in worker processes on this machine (default 1); each "
                    "worker runs num_threads inference threads (-p num_threads:=1 for many workers)")
    many.add_argument("--ray", metavar="ADDRESS", default=None,
                      help="send the bags to this Ray cluster (e.g. auto, or HEAD_IP:6379) instead; the bags "
                           "and -o must be on a file system every node mounts (needs .[ray])")
    many.add_argument("--labels-dir", type=Path, default=None,
                      help="folder of stamp-keyed label CSVs named <bag name>.csv or <bag name>_labels.csv "
                           "(default: <bag>_labels.csv next to each bag, as video-to-bag writes them)")
    many.add_argument("--summary", type=Path, default=None,
                      help="summary JSON (default <output folder>/summary.json)")


def build_labels(args: argparse.Namespace):
    from abaw_ros.offline.annotations import AFFWILD2_FIRST_FRAME, load_frame_labels, load_stamp_csv

    by_index = any(v is not None for v in (args.va, args.au, args.ah, args.ah_yaml))
    if by_index and args.labels_csv is not None:
        raise ValueError("give annotations by frame index (--va/--au/--ah/--ah-yaml) or by stamp "
                         "(--labels-csv), not both")
    if args.labels_csv is not None:
        return load_stamp_csv(args.labels_csv)
    if by_index:
        first = AFFWILD2_FIRST_FRAME if args.first_frame is None else args.first_frame
        return load_frame_labels(args.va, args.au, args.ah, args.ah_yaml, args.ah_video, first)
    return None


def run(args: argparse.Namespace) -> int:
    from abaw_ros.commands.bag_batch import is_many, run_many
    from abaw_ros.commands.options import build_config, parse_size
    from abaw_ros.config import ConfigError
    from abaw_ros.data.records import DataFormatError
    from abaw_ros.offline.bag_eval import BagEvalOptions, evaluate_bag
    from abaw_ros.offline.bag_types import BagError
    from abaw_ros.perception.image import UnsupportedEncodingError

    if is_many(args):
        return run_many(args)
    args.bag = args.bag[0]
    try:
        config, params_file = build_config(args)
        options = BagEvalOptions(
            bag=args.bag, output=args.output, topic=args.topic or None, output_topic=args.output_topic,
            storage=args.storage, overwrite=args.overwrite, recover=args.recover, labels=build_labels(args),
            report=args.report, plot=args.plot, write_plot=not args.no_plot,
            plot_size_px=parse_size(args.plot_size), face=args.face, missing=args.missing,
            stamp_tolerance_ns=int(round(args.stamp_tolerance * 1e9)), max_frames=args.max_frames,
            progress=not args.no_progress, strict=args.strict,
        )
        options.bag_version = args.bag_version
        if params_file is not None:
            log.info("pipeline parameters from %s", params_file)
        result = evaluate_bag(options, config)
    except (BagError, UnsupportedEncodingError, ConfigError, DataFormatError, FileNotFoundError, KeyError,
            ValueError) as exc:
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return EXIT_ERROR
    print(result.summary())
    status, code = result.status(args.strict)
    if status in ("stopped", "damaged"):
        log.error("%s", result.problem(status, named=True))
    elif result.frames_skipped:
        log.warning("%d frames skipped (listed in %s)", result.frames_skipped, result.report)
    return code
