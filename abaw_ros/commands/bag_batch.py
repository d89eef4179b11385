"""``abaw-affect bag-eval`` over many bags: several bag arguments, folders of bags,
``--workers N`` processes or ``--ray ADDRESS``; one summary report.

    abaw-affect bag-eval sessions/ -o results/ --workers 4 -p num_threads:=1
    abaw-affect bag-eval sessions/ -o /shared/results --ray auto

Each bag's outputs go to ``<output folder>/<bag name>_affect`` (+ ``_report.json``,
``_timeline.png``); labels are the stamp-keyed CSV ``<bag>_labels.csv`` next to each bag
(what ``video-to-bag`` writes) or ``--labels-dir``. Exit status: 2 the arguments cannot
be used; else the worst of the bags' single-run codes (2 a bag failed or --strict stopped
it, then 4 damaged, then 3 --strict with skipped frames, 0 every bag done). Each bag that
did not end as done is one line; the other bags are done, and every bag's status is in
the summary.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("abaw_ros.bag_eval")
EXIT_ERROR = 2
DEFAULT_OUTPUT = "affect_eval"


def is_many(args: argparse.Namespace) -> bool:
    """Several bags, a folder of bags, or a parallel executor asked for."""
    from abaw_ros.offline.bag_discovery import is_bag_folder

    return (len(args.bag) > 1 or args.workers != 1 or args.ray is not None or args.labels_dir is not None
            or args.summary is not None or is_bag_folder(Path(args.bag[0])))


def _single_bag_labels(args: argparse.Namespace) -> str | None:
    given = [name for name in ("va", "au", "ah", "ah_yaml", "labels_csv") if getattr(args, name) is not None]
    if given:
        return (f"--{given[0].replace('_', '-')} labels one bag; with several bags put each bag's stamp-keyed "
                f"labels in <bag>_labels.csv next to it (video-to-bag writes them) or in --labels-dir")
    return None


def run_many(args: argparse.Namespace) -> int:
    from abaw_ros.commands.options import build_config, parse_size
    from abaw_ros.config import ConfigError
    from abaw_ros.data.records import DataFormatError
    from abaw_ros.offline.bag_discovery import find_bags
    from abaw_ros.offline.bag_eval import BagEvalOptions
    from abaw_ros.offline.bag_types import BagError
    from abaw_ros.offline.batch import evaluate_bags

    try:
        if problem := _single_bag_labels(args):
            raise ValueError(problem)
        if args.report is not None or args.plot is not None:
            raise ValueError("--report/--plot name one bag's files; with several bags they go to the output "
                             "folder (-o) as <bag name>_affect_report.json / _timeline.png, the summary to "
                             "--summary")
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: must be >= 1")
        if args.ray is not None and args.workers != 1:
            raise ValueError("--ray and --workers: choose one (Ray places the bags on its own workers)")
        bags = find_bags(args.bag)
        output_dir = args.output or (Path(bags[0]).parent / DEFAULT_OUTPUT)
        config, params_file = build_config(args)
        if params_file is not None:
            log.info("pipeline parameters from %s", params_file)
        template = BagEvalOptions(
            bag=bags[0], output=output_dir / "template", topic=args.topic or None, output_topic=args.output_topic,
            storage=args.storage, overwrite=args.overwrite, recover=args.recover,
            write_plot=not args.no_plot, plot_size_px=parse_size(args.plot_size), face=args.face,
            missing=args.missing, stamp_tolerance_ns=int(round(args.stamp_tolerance * 1e9)),
            max_frames=args.max_frames, progress=False, bag_version=args.bag_version, strict=args.strict,
        )
        result = evaluate_bags(bags, template, config, output_dir=output_dir, labels_dir=args.labels_dir,
                               workers=args.workers, ray_address=args.ray, summary=args.summary,
                               progress=not args.no_progress)
    except (BagError, ConfigError, DataFormatError, FileNotFoundError, KeyError, ValueError) as exc:
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return EXIT_ERROR
    print(result.summary())
    return result.exit_code
