"""``abaw-affect evaluate``: score a checkpoint on a validation split with the official
metrics; print a table per task and per AU, write JSON and ABAW-style submission files.

    abaw-affect evaluate --checkpoint runs/au_l3/best.pt --config config/train_au_l3.yaml --out runs/au_l3/eval
    abaw-affect evaluate --checkpoint best.pt --affwild2-images /data/affwild2 \\
        --affwild2-annotations /data/affwild2/annotations --tasks au --eval-stride 1 --out eval/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abaw_ros.commands.options import add_number
from abaw_ros.config import Bounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint written by train (best.pt)")
    parser.add_argument("--config", type=Path, help="training YAML; only its data section is used")
    parser.add_argument("--affwild2-images", help="folder holding cropped_aligned/")
    parser.add_argument("--affwild2-annotations", help="folder holding VA_Estimation_Challenge/ ...")
    parser.add_argument("--hume-root", help="HUME-Vidmimic2 folder (face_images/, split CSVs)")
    parser.add_argument("--bah-root", help="BAH folder (annotation.yml, split/)")
    parser.add_argument("--bah-frames-root", help="BAH frames folder (default <bah-root>/cropped-aligned-faces)")
    parser.add_argument("--missing-frames", choices=("nearest", "skip", "error"), default=None,
                        help="annotated frame without image (default: the config's, else nearest)")
    parser.add_argument("--split", choices=("train", "val"), default="val")
    parser.add_argument("--tasks", help="comma-separated subset of the checkpoint's tasks (default: all of them)")
    add_number(parser, "--eval-stride", kind=int, bounds=Bounds(1, 256, "frames"),
               help="window stride (default T, the reference; 1 = causal "
               "window ending at each frame, as on the robot)")
    parser.add_argument("--protocol", choices=("frames", "reference"), default=None,
                        help="data handling and scored frames (default: the config's, else the one the checkpoint "
                        "was trained with, else frames; see docs/TRAINING.md)")
    parser.add_argument("--thresholds", choices=("checkpoint", "tune"), default="checkpoint",
                        help="AU thresholds for the tuned score and the AU submission file")
    add_number(parser, "--batch-size", kind=int, bounds=Bounds(1, 4096, "windows"), default=32)
    add_number(parser, "--num-workers", kind=int, bounds=Bounds(0, 256, "processes"), default=2)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, help="folder for metrics.json and the submission files")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.data.records import DataFormatError

    try:
        return _run(args)
    except (DataFormatError, ValueError, FileNotFoundError) as exc:
        print(f"abaw-affect evaluate: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch

    from abaw_ros.data.dataset import ClipDataset
    from abaw_ros.data.sources import load_split
    from abaw_ros.data.transforms import ClipTransform
    from abaw_ros.models import load_checkpoint
    from abaw_ros.tasks import normalize_tasks
    from abaw_ros.training.config import DataConfig, load_train_config
    from abaw_ros.training.distributed import close_distributed, init_distributed
    from abaw_ros.training.evaluation import metrics_table, predict, score, write_json, write_submissions

    train_cfg = load_train_config(args.config) if args.config else None
    data = train_cfg.data if train_cfg is not None else DataConfig()
    for name in ("affwild2_images", "affwild2_annotations", "hume_root", "bah_root", "bah_frames_root",
                 "missing_frames"):
        value = getattr(args, name)
        if value is not None:
            setattr(data, name, value)
    ctx = init_distributed(args.device)
    try:
        model, info = load_checkpoint(args.checkpoint, map_location=ctx.device)
        cfg = info["config"]
        tasks = normalize_tasks(args.tasks.split(",")) if args.tasks else cfg.tasks
        missing = set(tasks) - set(cfg.tasks)
        if missing:
            raise ValueError(f"--tasks {sorted(missing)}: the checkpoint was trained for {list(cfg.tasks)}")
        protocol = args.protocol or (train_cfg.protocol if train_cfg is not None else None) or (
            info.get("train_config") or {}).get("protocol") or "frames"
        records = [r for recs in load_split(data, tasks, args.split, protocol).values() for r in recs]
        # The model's flat output keeps all its tasks; the data set only holds the chosen ones.
        dataset = ClipDataset(records, cfg.tasks, cfg.window_length, train=False,
                              transform=ClipTransform(cfg.input_size, cfg.mean, cfg.std), eval_stride=args.eval_stride,
                              score_padding=protocol == "reference")
        amp = ctx.device.type == "cuda"
        with torch.no_grad():
            preds = predict(model, dataset, ctx, args.batch_size, args.num_workers, amp)
        tune = args.thresholds == "tune"
        result = score(dataset, preds, tune_thresholds=tune,
                       au_thresholds=None if tune else info["au_thresholds"], ah_threshold=info["ah_threshold"])
        if ctx.is_main:
            print(metrics_table(result))
            if args.out is not None:
                payload = {"checkpoint": str(args.checkpoint), "split": args.split, "protocol": protocol,
                           "eval_stride": args.eval_stride or cfg.window_length, **result.to_dict()}
                write_json(args.out / "metrics.json", payload)
                files = write_submissions(args.out, dataset, preds, result.au_thresholds, result.ah_threshold)
                print(f"wrote {args.out / 'metrics.json'} and {', '.join(str(p) for p in files.values())}")
    finally:
        close_distributed(ctx)
    return 0
