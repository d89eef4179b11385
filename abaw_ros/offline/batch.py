"""Many bags at once: ``abaw-affect bag-eval A B C``, a folder of bags, ``--workers N``
processes on this machine or a Ray cluster (``--ray ADDRESS``).

Every bag goes through :func:`abaw_ros.offline.bag_eval.evaluate_bag` exactly as a single
run would (its own fresh :class:`PerceptionPipeline`, so tracker ids and windows start
from scratch for each bag); the executor only decides where that call runs. The summary
report lists every bag (its run section and metrics, or the one-line error that stopped
it) and the metrics pooled over the frames of all bags that carry labels for a task.
Each bag ends with the status and exit code a single run of it would give; the batch's
exit code is the worst of them (:data:`EXIT_PRECEDENCE`).

Ray workers read the bags and write the outputs at the same paths as the driver: the
paths must lie on a file system every node mounts, and every node needs this package
installed (``pip install ".[bags,ray]"``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abaw_ros.offline.annotations import AlignedLabels, FrameLabels, load_stamp_csv
from abaw_ros.offline.bag_eval import (
    EXIT_DAMAGED,
    EXIT_DONE,
    EXIT_ERROR,
    EXIT_SKIPPED,
    BagEvalOptions,
    BagEvalResult,
    evaluate_bag,
)
from abaw_ros.offline.bag_io import BagError, BagReadError
from abaw_ros.offline.report import compute_metrics, frames_note, write_report
from abaw_ros.offline.track import PredictionTrack
from abaw_ros.tasks import TASK_ORDER

if TYPE_CHECKING:
    from abaw_ros.config import PipelineConfig

log = logging.getLogger(__name__)

STORAGE_SUFFIXES: tuple[str, ...] = (".mcap", ".db3")
# What bag-eval writes next to a bag; a folder scan does not take these for recordings.
OUTPUT_SUFFIX = "_affect"
LABELS_SUFFIX = "_labels.csv"  # what video-to-bag writes next to a bag
SUMMARY_FILE = "summary.json"
EXECUTORS: tuple[str, ...] = ("serial", "processes", "ray")
# Worst first: a bag that could not be used or that --strict stopped, a damaged bag, a
# --strict bag with skipped frames, a bag done. The batch exits with the worst bag's code.
EXIT_PRECEDENCE: tuple[int, ...] = (EXIT_ERROR, EXIT_DAMAGED, EXIT_SKIPPED, EXIT_DONE)


# ---------------------------------------------------------------------------------------
# Which bags
# ---------------------------------------------------------------------------------------
def is_bag(path: Path) -> bool:
    """A bag directory (with ``metadata.yaml``) or a single ``.mcap`` / ``.db3`` file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix in STORAGE_SUFFIXES)


def _bags_inside(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if is_bag(p) and not bag_name(p).endswith(OUTPUT_SUFFIX)),
                  key=lambda p: p.name)


def is_bag_folder(path: Path) -> bool:
    """A folder of bags: no ``metadata.yaml`` of its own, and bag sub-folders or more than
    one storage file. (One storage file alone is a recording whose recorder was killed
    before writing ``metadata.yaml``: a single bag.)"""
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return False
    inside = _bags_inside(path)
    return any(p.is_dir() for p in inside) or len(inside) > 1


def bag_name(path: Path) -> str:
    return path.name.removesuffix(path.suffix) if path.is_file() else path.name


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Expand bags and folders of bags (their bag directories and loose ``.mcap`` / ``.db3``
    files, sorted by name; outputs of earlier runs, ``*_affect``, are left out). Raises
    :class:`BagReadError` naming a path that is neither, or a folder without bags."""
    bags: list[Path] = []
    for item in paths:
        path = Path(item)
        if is_bag_folder(path):
            inside = _bags_inside(path)
            _warn_split_recording(path, inside)
            bags.extend(inside)
            continue
        if is_bag(path) or (path.is_dir() and _bags_inside(path)):
            bags.append(path)  # a bag, or a recording folder with one storage file
            continue
        if not path.exists():
            raise BagReadError(f"bag {str(path)!r} does not exist")
        if not path.is_dir():
            raise BagReadError(f"{str(path)!r} is not a ROS 2 bag: expected a bag directory, a .mcap or a "
                               f".db3 file, or a folder of bags")
        raise BagReadError(f"{str(path)!r} holds no bag (no sub-folder with metadata.yaml, no .mcap or "
                           f".db3 file) and has no metadata.yaml itself")
    seen: dict[Path, Path] = {}
    for bag in bags:
        key = bag.resolve()
        if key in seen:
            raise BagReadError(f"bag {str(bag)!r} is given twice")
        seen[key] = bag
    return bags


# rosbag2's writer names a recording's files <bag folder>_<N>.<ext> (N from 0, one more at
# each split; rosbag2_cpp SequentialWriter), compressed whole-file ones <...>.<ext>.zstd.
_SPLIT_FILE = re.compile(r"^(?P<prefix>.+)_(?P<index>\d+)\.(?:mcap|db3)(?:\.zstd)?$")


def split_recording_files(bags: Sequence[Path]) -> list[Path]:
    """The loose storage files among ``bags`` that look like the splits of one recording
    whose ``metadata.yaml`` is missing (a recorder killed before writing it): two or more
    files ``<prefix>_0``, ``<prefix>_1``, ... with one prefix; [] when there are none."""
    groups: dict[str, dict[int, Path]] = {}
    for bag in bags:
        match = _SPLIT_FILE.match(bag.name) if bag.is_file() else None
        if match:
            groups.setdefault(match["prefix"], {})[int(match["index"])] = bag
    for files in groups.values():
        if len(files) >= 2 and sorted(files) == list(range(len(files))):
            return [files[i] for i in sorted(files)]
    return []


def _warn_split_recording(folder: Path, bags: Sequence[Path]) -> None:
    split = split_recording_files(bags)
    if split:
        log.warning("%s has no metadata.yaml but holds %d files named like the splits of one recording (%s .. %s): "
                    "they are evaluated as separate bags, so face ids and windows restart at each file; to evaluate "
                    "them as one recording, rebuild its metadata.yaml first (ros2 bag reindex %s -s %s)",
                    folder, len(split), split[0].name, split[-1].name, folder,
                    "sqlite3" if ".db3" in split[0].name else "mcap")


def labels_for(bag: Path, labels_dir: Path | None) -> Path | None:
    """The stamp-keyed label CSV of ``bag``: ``<labels_dir>/<name>.csv`` or
    ``<labels_dir>/<name>_labels.csv`` when a labels folder is given, else
    ``<name>_labels.csv`` next to the bag (what ``video-to-bag`` writes); None if absent."""
    name = bag_name(bag)
    candidates = ([labels_dir / f"{name}.csv", labels_dir / f"{name}{LABELS_SUFFIX}"] if labels_dir is not None
                  else [bag.with_name(name + LABELS_SUFFIX)])
    return next((c for c in candidates if c.is_file()), None)


# ---------------------------------------------------------------------------------------
# One bag, wherever it runs
# ---------------------------------------------------------------------------------------
@dataclass
class BagJob:
    """Everything one worker needs for one bag (picklable)."""

    position: int
    options: BagEvalOptions
    config: PipelineConfig | None
    labels_csv: Path | None = None


@dataclass
class BagOutcome:
    position: int
    bag: Path
    labels_csv: Path | None
    result: BagEvalResult | None = None
    error: str | None = None
    worker: str = ""
    status: str = "failed"  # failed, stopped, damaged, skipped or done (BagEvalResult.status)
    exit_code: int = EXIT_ERROR  # what a single bag-eval run of this bag exits with


_BACKENDS: dict[str, Any] = {}  # per process: model backend by config, loaded once


def _pipeline_for(config: PipelineConfig | None):
    """A fresh pipeline (tracker, windows) around a backend this process loads only once."""
    from abaw_ros.config import PipelineConfig
    from abaw_ros.perception.backend_loading import load_pipeline_backend
    from abaw_ros.perception.pipeline import PerceptionPipeline

    config = (config or PipelineConfig()).validate()
    key = repr(sorted(config.to_dict().items()))
    if key not in _BACKENDS:
        _BACKENDS[key] = load_pipeline_backend(config)
    return PerceptionPipeline(config, backend=_BACKENDS[key])


def evaluate_job(job: BagJob) -> BagOutcome:
    """Run one bag; an expected failure (bad bag, topic, labels) becomes the outcome's
    ``error`` so the other bags go on."""
    from abaw_ros.config import ConfigError
    from abaw_ros.data.records import DataFormatError

    outcome = BagOutcome(job.position, job.options.bag, job.labels_csv, worker=f"{os.uname().nodename}:{os.getpid()}")
    try:
        options = job.options
        if job.labels_csv is not None:
            options = dataclasses.replace(options, labels=load_stamp_csv(job.labels_csv))
        outcome.result = evaluate_bag(options, job.config, pipeline=_pipeline_for(job.config))
    except (BagError, ConfigError, DataFormatError, FileNotFoundError, KeyError, ValueError) as exc:
        outcome.error = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    else:
        outcome.status, outcome.exit_code = outcome.result.status(job.options.strict)
    return outcome


def _problem(outcome: BagOutcome) -> str | None:
    """The one line for a bag that did not end as done, or None."""
    result = outcome.result
    if result is None:
        return outcome.error
    if outcome.status == "stopped":
        return f"stopped at the first undecodable frame (--strict): {result.stopped}"
    if outcome.status == "damaged":
        return (f"bag is damaged: {result.frames_unread} of {result.frames_in_bag} frames could not be read "
                f"({result.damage}); the {result.frames_read} frames read are in {result.output}")
    if outcome.status == "skipped":
        return f"{result.frames_skipped} frames skipped (--strict; listed in {result.report})"
    return None


# ---------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------
def _run_serial(jobs: Sequence[BagJob], done: Callable[[BagOutcome], None]) -> None:
    for job in jobs:
        done(evaluate_job(job))


def _run_processes(jobs: Sequence[BagJob], workers: int, done: Callable[[BagOutcome], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a child must not inherit ONNX Runtime's or OpenCV's threads from a fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(evaluate_job, job) for job in jobs]
        for future in as_completed(futures):
            done(future.result())


def _run_ray(jobs: Sequence[BagJob], address: str, cpus_per_bag: float, done: Callable[[BagOutcome], None]) -> None:
    try:
        import ray
    except ImportError:
        raise BagError("--ray needs the Ray package: pip install \".[ray]\"") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError, depending on the version
            raise BagError(f"--ray {address!r}: cannot connect to a Ray cluster ({type(exc).__name__}: "
                           f"{exc})") from None
    try:
        remote = ray.remote(num_cpus=cpus_per_bag)(evaluate_job)
        pending = [remote.remote(job) for job in jobs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done(ray.get(ready[0]))
    finally:
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    outcomes: list[BagOutcome]
    pooled: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    summary_path: Path | None = None

    @property
    def failed(self) -> list[BagOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def frames_processed(self) -> int:
        return sum(o.result.frames_processed for o in self.outcomes if o.result is not None)

    @property
    def exit_code(self) -> int:
        """The worst bag's exit code (:data:`EXIT_PRECEDENCE`); 0 when every bag is done."""
        codes = {o.exit_code for o in self.outcomes}
        return next((code for code in EXIT_PRECEDENCE if code in codes), EXIT_DONE)

    def to_dict(self) -> dict[str, Any]:
        bags = []
        for o in self.outcomes:
            entry: dict[str, Any] = {"bag": str(o.bag), "status": o.status, "exit_code": o.exit_code,
                                     "labels_csv": str(o.labels_csv) if o.labels_csv else None,
                                     "worker": o.worker}
            if (problem := _problem(o)) is not None:
                entry["problem"] = problem
            if o.result is None:
                entry["error"] = o.error
            else:
                entry.update(run=o.result.to_dict(), metrics=o.result.metrics,
                             report=str(o.result.report) if o.result.report else None,
                             plot=str(o.result.plot) if o.result.plot else None)
            bags.append(entry)
        return {
            "bags": bags,
            "pooled": self.pooled,
            "executor": self.executor,
            "exit_code": self.exit_code,
            "bags_done": sum(o.status == "done" for o in self.outcomes),
            "bags_failed": len(self.failed),
            "bags_by_status": {status: sum(o.status == status for o in self.outcomes)
                               for status in dict.fromkeys(o.status for o in self.outcomes)},
            "frames_processed": self.frames_processed,
            "elapsed_s": round(self.elapsed_s, 4),
            "frames_per_second": round(self.frames_processed / self.elapsed_s, 3) if self.elapsed_s > 0 else 0.0,
        }

    def summary(self) -> str:
        lines = []
        for o in self.outcomes:
            if o.result is None:
                lines.append(f"{o.bag}: FAILED: {o.error}")
                continue
            scores = "; ".join(f"{task} {e['primary']} {e['scores'][e['primary']]:.4f}"
                               for task, e in o.result.metrics.items() if "scores" in e)
            status = f" [{o.status.upper()}, exit {o.exit_code}]" if o.status != "done" else ""
            lines.append(f"{o.bag}: {o.result.frames_processed}/{o.result.frames_in_bag} frames{status}"
                         + (f"; {scores}" if scores else "") + f" -> {o.result.output}")
        pooled = "; ".join(f"{task} {e['primary']} {e['scores'][e['primary']]:.4f} over {e['frames_scored']} "
                           f"frames of {e['bags']} bags" for task, e in self.pooled.items() if "scores" in e)
        fps = self.frames_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0
        done = sum(o.status == "done" for o in self.outcomes)
        lines.append(f"{done} of {len(self.outcomes)} bags done, "
                     f"{self.frames_processed} frames in {self.elapsed_s:.1f} s ({fps:.2f} frames/s, "
                     f"{self.executor.get('kind')})" + (f"; pooled: {pooled}" if pooled else ""))
        if self.summary_path:
            lines.append(f"summary: {self.summary_path}")
        return "\n".join(lines)


def concatenate_tracks(tracks: Sequence[PredictionTrack]) -> PredictionTrack:
    """One track holding the frames of ``tracks`` one after the other."""
    out = PredictionTrack(tracks[0].face_policy if tracks else PredictionTrack().face_policy)
    for track in tracks:
        out.extend(track)
    return out


def pooled_metrics(outcomes: Sequence[BagOutcome], labels: dict[int, FrameLabels], missing: str,
                   tolerance_ns: int) -> dict[str, Any]:
    """Per task, the official metrics over the frames of every bag labelled for it."""
    import numpy as np

    per_task: dict[str, list[tuple[PredictionTrack, AlignedLabels]]] = {}
    for o in outcomes:
        if o.result is None or o.result.track is None or o.position not in labels:
            continue
        track = o.result.track
        aligned = labels[o.position].align(track.index_array, track.stamp_array, tolerance_ns)
        for task in aligned.tasks:
            per_task.setdefault(task, []).append((track, aligned))
    pooled: dict[str, Any] = {}
    for task in TASK_ORDER:
        parts = per_task.get(task)
        if not parts:
            continue
        track = concatenate_tracks([t for t, _ in parts])
        aligned = AlignedLabels(
            values={task: np.concatenate([a.values[task] for _, a in parts])},
            valid={task: np.concatenate([a.valid[task] for _, a in parts])},
            matched=np.concatenate([a.matched for _, a in parts]),
            sources={task: f"{len(parts)} bags"},
        )
        entry = compute_metrics(track, aligned, missing)[task]
        entry["bags"] = len(parts)
        note = frames_note(task, "all bags")
        if note:
            entry["note"] = note
        pooled[task] = entry
    return pooled


def output_paths(bags: Sequence[Path], output_dir: Path) -> list[Path]:
    """``<output_dir>/<bag name>_affect`` for every bag; two bags of one name are an error."""
    names: dict[str, Path] = {}
    for bag in bags:
        name = bag_name(bag)
        if name in names:
            raise BagError(f"bags {str(names[name])!r} and {str(bag)!r} share the name {name!r}: their outputs "
                           f"in {str(output_dir)!r} would collide; rename one")
        names[name] = bag
    return [output_dir / f"{bag_name(bag)}{OUTPUT_SUFFIX}" for bag in bags]


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
            if (problem := _problem(outcome)) is not None:
                log.error("%s: %s", outcome.bag, problem)
            bar.update(1)

        if kind == "ray":
            threads = float(config.num_threads) if config is not None else 1.0
            _run_ray(jobs, ray_address, threads, done)
        elif kind == "processes":
            _run_processes(jobs, executor["workers"], done)
        else:
            _run_serial(jobs, done)
    outcomes.sort(key=lambda o: o.position)
    result = BatchResult(outcomes, executor=executor, elapsed_s=time.perf_counter() - start)
    result.pooled = pooled_metrics(outcomes, labels, template.missing, template.stamp_tolerance_ns)
    report = result.to_dict()
    report.update(face=template.face, missing=template.missing,
                  pipeline_config=config.to_dict() if config is not None else None)
    result.summary_path = write_report(summary_path, report)
    return result
