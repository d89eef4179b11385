"""``abaw-affect check-submission``: is a submission folder complete and well formed?

    abaw-affect check-submission --task au --submission sub/ --sample CVPR_ABAW_AU_test_set_sample.txt
    abaw-affect check-submission --task va --submission sub/ --videos va_test.txt --frame-counts counts.txt
    abaw-affect check-submission --task ah --submission sub/ --videos /data/bah/split/test.txt

VA/AU: the combined file and every ``<TASK>/<video>.txt`` list exactly the expected frames
in order, with the right header and values (VA in [-1, 1], AU 0/1). EMI/AH: one row per
test video, in order. Exit 0 when valid, 2 with the first problems otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=("va", "au", "emi", "ah"), required=True)
    parser.add_argument("--submission", type=Path, required=True, help="folder written by predict-abaw")
    parser.add_argument("--videos", type=Path, help="the test videos (as for predict-abaw)")
    parser.add_argument("--sample", type=Path, help="VA/AU: the organisers' sample submission file")
    parser.add_argument("--frame-counts", type=Path, help="VA/AU: '<video>,<frames>' per line")
    parser.add_argument("--raw-videos", type=Path, help="VA/AU: folder of the test videos")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.commands.predict_abaw import expected_frames_from_args, read_test_videos
    from abaw_ros.data.records import DataFormatError
    from abaw_ros.data.submission import FRAME_FILES, check_submission

    try:
        if args.task in FRAME_FILES:
            expected = expected_frames_from_args(args)
            size = f"{sum(len(v) for v in expected.values())} frames of {len(expected)} videos"
        else:
            if args.videos is None:
                raise ValueError(f"--task {args.task} needs --videos (the test videos)")
            names = read_test_videos(args.videos, args.task)
            expected = [str(int(v)) for v in names] if args.task == "emi" else names
            size = f"{len(expected)} videos"
        problems = check_submission(args.submission, args.task, expected)
    except (DataFormatError, ValueError, FileNotFoundError) as exc:
        print(f"abaw-affect check-submission: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"abaw-affect check-submission: {args.submission} is not a valid {args.task.upper()} submission: "
              + "; ".join(problems), file=sys.stderr)
        return 2
    print(f"{args.submission}: valid {args.task.upper()} submission ({size})")
    return 0
