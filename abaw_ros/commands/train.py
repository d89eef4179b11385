"""``abaw-affect train``: train on the ABAW data (single process, or DDP under torchrun).

    abaw-affect train --config config/train_au_l3.yaml
    abaw-affect train --config config/train_au_l3.yaml --set train.epochs=2 --set model.n_levels=1
    torchrun --nproc_per_node 4 -m abaw_ros.cli train --config config/train_au_l3.yaml
    abaw-affect train --config config/train_au_l3.yaml --resume runs/au_l3/last.pt
    abaw-affect train --config config/train_au_l3.yaml --seeds 5     # mean and std in <out_dir>/seeds.json
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from abaw_ros.commands.options import add_number, config_overrides
from abaw_ros.config import Bounds

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML with model/data/loss/train sections (config/train_*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. train.epochs=2 (repeatable; value parsed as YAML)")
    parser.add_argument("--out-dir", type=Path, help="where checkpoints and metrics go (train.out_dir)")
    parser.add_argument("--resume", type=Path, help="continue from a checkpoint of an earlier run (last.pt)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="train.device")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the earlier run in train.out_dir (without it, and without --resume, a "
                             "directory holding a run is refused)")
    add_number(parser, "--seeds", kind=int, bounds=Bounds(1, 100, "seeds"), metavar="N",
               help="train N seeds (train.seed, +1, ...) into <out_dir>/seed<k>/ and write the mean and "
               "standard deviation of every metric to <out_dir>/seeds.json and seeds.csv")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.data.records import DataFormatError
    from abaw_ros.training import load_train_config, train

    overrides = config_overrides(args, {"out_dir": "train.out_dir", "resume": "train.resume",
                                        "device": "train.device"})
    try:
        cfg = load_train_config(args.config, overrides)
        if args.seeds is not None:
            from abaw_ros.training.seeds import train_seeds

            summary = train_seeds(cfg, args.seeds, overwrite=args.overwrite)
            out = Path(cfg.out_dir)
            for name in ("score", "frames/score"):
                if name in summary["metrics"]:
                    m = summary["metrics"][name]
                    print(f"{name}: {m['mean']:.4f} +- {m['std']:.4f} over {len(summary['seeds'])} seeds")
            print(f"every metric: {out / 'seeds.json'} and {out / 'seeds.csv'}")
            return 0
        result = train(cfg, overwrite=args.overwrite)
    except (DataFormatError, ValueError, FileNotFoundError) as exc:
        print(f"abaw-affect train: {exc}", file=sys.stderr)
        return 2
    if result.best_epoch >= 0:
        print(f"best validation score {result.best_score:.4f} at epoch {result.best_epoch + 1}: {result.best_checkpoint}")
        print(f"metrics: {Path(cfg.out_dir) / 'metrics.json'}")
    return 0
