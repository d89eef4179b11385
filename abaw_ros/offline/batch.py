"""Many bags at once: ``abaw-affect bag-eval A B C``, a folder of bags, ``--workers N``
processes on this machine or a Ray cluster (``--ray ADDRESS``).

Every bag goes through :func:`abaw_ros.offline.bag_eval.evaluate_bag` exactly as a single
run would (its own fresh :class:`PerceptionPipeline`, so tracker ids and windows start
from scratch for each bag); the executor only decides where that call runs. The summary
report lists every bag (its run section and metrics, or the one-line error that stopped
it) and the metrics pooled over the frames of all bags that carry labels for a task.
Each bag ends with the status and exit code a single run of it would give; the batch's
exit code is the worst of them (:data:`~abaw_ros.offline.batch_summary.EXIT_PRECEDENCE`).
Which bags: :mod:`~abaw_ros.offline.bag_discovery`; where they run:
:mod:`~abaw_ros.offline.batch_executors`; the summary: :mod:`~abaw_ros.offline.batch_summary`,
:mod:`~abaw_ros.offline.pooled_metrics`.

Ray workers read the bags and write the outputs at the same paths as the driver: the
paths must lie on a file system every node mounts, and every node needs this package
installed (``pip install ".[bags,ray]"``).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abaw_ros.offline.annotations import FrameLabels, load_stamp_csv
from abaw_ros.offline.bag_discovery import find_bags, labels_for, output_paths
from abaw_ros.offline.bag_eval import BagEvalOptions
from abaw_ros.offline.bag_types import BagError
from abaw_ros.offline.batch_executors import BagJob, BagOutcome, run_processes, run_ray, run_serial
from abaw_ros.offline.batch_summary import BatchResult, problem_line
from abaw_ros.offline.pooled_metrics import pooled_metrics
from abaw_ros.offline.report import write_report

if TYPE_CHECKING:
    from abaw_ros.config import PipelineConfig

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


def evaluate_bags(
    bags: Sequence[str | Path],
    template: BagEvalOptions,
    config: PipelineConfig | None = None,
    *,
    output_dir: str | Path,
    labels_dir: str | Path | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    summary: str | Path | None = None,
    progress: bool = True,
) -> BatchResult:
    """Evaluate every bag of ``bags`` (bags or folders of bags) with the settings of
    ``template`` (its bag, output, report, plot and labels are replaced per bag); write
    each bag's outputs to ``output_dir`` and the summary JSON (default
    ``<output_dir>/summary.json``). ``workers`` > 1 runs that many processes here;
    ``ray_address`` sends the bags to a Ray cluster instead."""
    if workers < 1:
        raise ValueError(f"workers={workers}: must be >= 1")
    paths = find_bags(bags)
    output_dir = Path(output_dir)
    summary_path = Path(summary) if summary is not None else output_dir / SUMMARY_FILE
    if summary_path.exists() and not template.overwrite:
        raise BagError(f"summary {str(summary_path)!r} exists already: choose another output folder or overwrite it")
    labels_folder = Path(labels_dir) if labels_dir is not None else None
    if labels_folder is not None and not labels_folder.is_dir():
        raise FileNotFoundError(f"labels folder {str(labels_folder)!r} does not exist")

    jobs: list[BagJob] = []
    labels: dict[int, FrameLabels] = {}
    for position, (bag, out) in enumerate(zip(paths, output_paths(paths, output_dir), strict=True)):
        csv_path = labels_for(bag, labels_folder)
        if csv_path is not None:
            labels[position] = load_stamp_csv(csv_path)  # a bad label file stops before any work
        options = dataclasses.replace(
            template, bag=bag, output=out, labels=None, progress=False,
            report=out.with_name(out.name + "_report.json"), plot=out.with_name(out.name + "_timeline.png"))
        jobs.append(BagJob(position, options, config, csv_path))
    output_dir.mkdir(parents=True, exist_ok=True)

    kind = "ray" if ray_address else ("processes" if workers > 1 and len(jobs) > 1 else "serial")
    executor: dict[str, Any] = {"kind": kind}
    if kind == "processes":
        executor["workers"] = min(workers, len(jobs))
    if kind == "ray":
        executor["address"] = ray_address
    log.info("%d bags, %s executor%s", len(jobs), kind,
             f" ({executor['workers']} workers)" if "workers" in executor else "")

    from tqdm import tqdm

    outcomes: list[BagOutcome] = []
    start = time.perf_counter()
    with tqdm(total=len(jobs), unit="bag", desc="bags", disable=not progress, dynamic_ncols=True) as bar:
        def done(outcome: BagOutcome) -> None:
            outcomes.append(outcome)
            if (problem := problem_line(outcome)) is not None:
                log.error("%s: %s", outcome.bag, problem)
            bar.update(1)

        if kind == "ray":
            threads = float(config.num_threads) if config is not None else 1.0
            run_ray(jobs, ray_address, threads, done)
        elif kind == "processes":
            run_processes(jobs, executor["workers"], done)
        else:
            run_serial(jobs, done)
    outcomes.sort(key=lambda o: o.position)
    result = BatchResult(outcomes, executor=executor, elapsed_s=time.perf_counter() - start)
    result.pooled = pooled_metrics(outcomes, labels, template.missing, template.stamp_tolerance_ns)
    report = result.to_dict()
    report.update(face=template.face, missing=template.missing,
                  pipeline_config=config.to_dict() if config is not None else None)
    result.summary_path = write_report(summary_path, report)
    return result
