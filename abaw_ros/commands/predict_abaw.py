"""``abaw-affect predict-abaw``: predictions for the ABAW test set (no labels), in the
challenge's submission format.

    abaw-affect predict-abaw --checkpoint va.pt --affwild2-images /data/affwild2 \\
        --videos names_of_videos_in_each_test_set/Valence_Arousal_Estimation_Challenge_test_set_release.txt \\
        [--sample CVPR_ABAW_VA_test_set_sample.txt] --out submission/

Format (the organisers' sample files and the test-set video lists): a header
``image_location,valence,arousal`` (AU: ``image_location,AU1,...,AU26``, 0/1 at the
checkpoint's thresholds), then one line per frame, ``<video>/<NNNNN>.jpg,...``. Written
as one file per video (``<out>/<TASK>/<video>.txt``) and as one file over all videos
(``<out>/<TASK>_predictions.txt``, in the sample file's order when one is given). Every
requested frame is predicted; a frame without a face image shows the nearest one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abaw_ros.commands.options import add_number
from abaw_ros.config import Bounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="VA or AU checkpoint (best.pt)")
    parser.add_argument("--affwild2-images", type=Path, required=True, help="folder holding cropped_aligned/")
    parser.add_argument("--videos", type=Path, help="official test-set video list (one name per line)")
    parser.add_argument("--sample", type=Path, help="official sample submission file: the frames to predict")
    parser.add_argument("--task", choices=("va", "au"), help="task to predict (default: the checkpoint's VA or AU)")
    add_number(parser, "--eval-stride", kind=int, bounds=Bounds(1, 256, "frames"),
               help="window stride (default T; 1 = causal window per frame)")
    add_number(parser, "--batch-size", kind=int, bounds=Bounds(1, 4096, "windows"), default=32)
    add_number(parser, "--num-workers", kind=int, bounds=Bounds(0, 256, "processes"), default=2)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, required=True, help="folder for the submission files")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.data.records import DataFormatError

    try:
        return _run(args)
    except (DataFormatError, ValueError, FileNotFoundError) as exc:
        print(f"abaw-affect predict-abaw: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from abaw_ros.data.dataset import ClipDataset
    from abaw_ros.data.sources import load_affwild2_test, read_sample_file, read_video_list
    from abaw_ros.data.transforms import ClipTransform
    from abaw_ros.models import load_checkpoint
    from abaw_ros.tasks import AU_NAMES, VA_NAMES, output_slices
    from abaw_ros.training.distributed import DistContext, pick_device
    from abaw_ros.training.evaluation import predict

    if args.videos is None and args.sample is None:
        raise ValueError("give --videos (the test-set video list) and/or --sample (the sample submission file)")
    frames = read_sample_file(args.sample) if args.sample else None
    videos = read_video_list(args.videos) if args.videos else list(frames or {})
    model, info = load_checkpoint(args.checkpoint, map_location="cpu")
    cfg = info["config"]
    task = args.task or next((t for t in cfg.tasks if t in ("va", "au")), None)
    if task is None or task not in cfg.tasks:
        raise ValueError(f"--task {task}: the checkpoint predicts {list(cfg.tasks)}; ABAW test sets are va and au")
    device = pick_device(args.device)
    model.to(device)
    records = load_affwild2_test(args.affwild2_images, task, videos, frames)
    dataset = ClipDataset(records, cfg.tasks, cfg.window_length, train=False,
                          transform=ClipTransform(cfg.input_size, cfg.mean, cfg.std), eval_stride=args.eval_stride)
    with torch.no_grad():
        preds = predict(model, dataset, DistContext(device=device), args.batch_size, args.num_workers,
                        amp=device.type == "cuda")
    s = output_slices(cfg.tasks)[task]
    thresholds = np.asarray(info["au_thresholds"])
    header = "image_location," + ",".join(VA_NAMES if task == "va" else AU_NAMES)
    per_video: dict[str, list[str]] = {}
    for rec, p in zip(records, preds, strict=True):
        values = p[:, s]
        lines = []
        for number, v in zip(rec.frame_numbers, values, strict=True):
            body = ",".join(f"{x:.6f}" for x in v) if task == "va" else ",".join(
                str(int(x)) for x in (v >= thresholds))
            lines.append(f"{rec.name}/{int(number):05d}.jpg,{body}")
        per_video[rec.name] = lines
    folder = args.out / task.upper()
    folder.mkdir(parents=True, exist_ok=True)
    for video, lines in per_video.items():
        (folder / f"{video}.txt").write_text("\n".join([header, *lines]) + "\n")
    combined = args.out / f"{task.upper()}_predictions.txt"
    combined.write_text("\n".join([header, *(line for v in videos for line in per_video[v])]) + "\n")
    n = sum(len(v) for v in per_video.values())
    print(f"{task.upper()}: {n} frames of {len(videos)} test videos -> {combined} and {folder}/<video>.txt")
    return 0
