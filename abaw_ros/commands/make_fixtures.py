"""``abaw-affect make-fixtures``: write small Aff-Wild2 / HUME-Vidmimic2 / BAH data sets in
the official layouts, with labels that depend on what the frames show (for tests and for
a quick try of ``train`` / ``evaluate`` with ``config/train_fixture.yaml``)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from abaw_ros.commands.options import add_number
from abaw_ros.config import Bounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/fixtures"), help="output folder (default runs/fixtures)")
    add_number(parser, "--frames-per-video", kind=int, bounds=Bounds(12, 10000, "frames"),
               default=16, help="Aff-Wild2 and BAH frames per video")
    add_number(parser, "--affwild2-videos", kind=int, bounds=Bounds(1, 10000, "videos"),
               nargs=2, default=(10, 6), metavar=("TRAIN", "VAL"),
               help="videos per Aff-Wild2 task (train also gets one _left/_right pair)")
    add_number(parser, "--hume-videos", kind=int, bounds=Bounds(1, 10000, "videos"),
               nargs=2, default=(32, 12), metavar=("TRAIN", "VAL"))
    add_number(parser, "--hume-frames", kind=int, bounds=Bounds(4, 10000, "frames"),
               default=8, help="frames per HUME-Vidmimic2 video")
    add_number(parser, "--bah-videos", kind=int, bounds=Bounds(1, 10000, "videos"),
               nargs=2, default=(12, 4), metavar=("TRAIN", "VAL"))
    add_number(parser, "--seed", kind=int, bounds=Bounds(0, 2**32 - 1), default=0)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from abaw_ros.data.fixtures import FixtureSpec, make_fixtures

    spec = FixtureSpec(
        frames_per_video=args.frames_per_video,
        affwild2_videos=tuple(args.affwild2_videos),
        hume_videos=tuple(args.hume_videos),
        hume_frames=args.hume_frames,
        bah_videos=tuple(args.bah_videos),
        seed=args.seed,
    )
    try:
        with tqdm(total=1, desc="writing fixtures", unit="set") as bar:
            paths = make_fixtures(args.out, spec)
            bar.update()
    except ValueError as exc:  # a size the layouts cannot hold; the message names it
        logging.getLogger("abaw_ros.make_fixtures").error("%s", exc)
        return 2
    print(f"Aff-Wild2: {paths.affwild2_images} (annotations {paths.affwild2_annotations})")
    print(f"HUME-Vidmimic2: {paths.hume}")
    print(f"BAH: {paths.bah}")
    return 0
