"""``abaw-affect cache-features``: store the frozen part's output for every frame once.

    abaw-affect cache-features --config config/train_au_l1.yaml --set model.freeze=paper \\
        --set train.augment=false --out /data/cache/au_l1_paper
    abaw-affect train --config config/train_au_l1.yaml --set model.freeze=paper \\
        --set train.augment=false --set train.feature_cache=/data/cache/au_l1_paper

Resumable (an interrupted run continues with the videos not yet written); a cache built
for other frozen weights or preprocessing is removed and rebuilt. Training with
``train.feature_cache`` builds what is missing itself; this command does it ahead of time
(and on another machine, if wanted). See abaw_ros/training/feature_cache.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abaw_ros.commands.options import add_number, config_overrides
from abaw_ros.config import Bounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the training config (config/train_*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable)")
    parser.add_argument("--out", type=Path, help="cache folder (train.feature_cache)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="train.device")
    add_number(parser, "--batch-size", kind=int, bounds=Bounds(1, 65536, "frames"), default=256,
               help="frames per encoder batch")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.data.records import DataFormatError
    from abaw_ros.data.sources import load_split
    from abaw_ros.models import AffectNet
    from abaw_ros.training import load_train_config
    from abaw_ros.training.distributed import pick_device
    from abaw_ros.training.feature_cache import build_feature_cache

    overrides = config_overrides(args, {"out": "train.feature_cache", "device": "train.device"})
    try:
        cfg = load_train_config(args.config, overrides)
        if not cfg.feature_cache:
            raise ValueError("no cache folder: give --out DIR or set train.feature_cache")
        device = pick_device(cfg.device)
        model = AffectNet(cfg.model).to(device)
        paths = [p for split in ("train", "val")
                 for recs in load_split(cfg.data, cfg.model.tasks, split, cfg.protocol).values()
                 for r in recs for p in r.frames]
        report = build_feature_cache(cfg.feature_cache, model, paths, cfg.crop_size, device,
                                     batch_size=args.batch_size, num_workers=cfg.num_workers)
    except (DataFormatError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"abaw-affect cache-features: {exc}", file=sys.stderr)
        return 2
    print(f"feature cache {cfg.feature_cache}: {report.videos} videos, {report.built} (re)built "
          f"({report.frames_built} frames){', stale cache replaced' if report.stale_removed else ''}, "
          f"{report.bytes / 1e9:.2f} GB")
    return 0
