"""Where a batch's bags run: one after the other here, ``--workers N`` processes on this
machine, or one Ray task per bag (``--ray ADDRESS``). Each bag is one :class:`BagJob`; its
:func:`evaluate_job` runs :func:`~abaw_ros.offline.bag_eval.evaluate_bag` exactly as a
single run would and becomes a :class:`BagOutcome`, whichever executor ran it."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abaw_ros.offline.annotations import load_stamp_csv
from abaw_ros.offline.bag_eval import EXIT_ERROR, BagEvalOptions, BagEvalResult, evaluate_bag
from abaw_ros.offline.bag_types import BagError

if TYPE_CHECKING:
    from abaw_ros.config import PipelineConfig


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
    from abaw_ros.perception.pipeline import PerceptionPipeline
    from abaw_ros.runtime.opening import open_backend

    config = (config or PipelineConfig()).validate()
    key = repr(sorted(config.to_dict().items()))
    if key not in _BACKENDS:
        _BACKENDS[key] = open_backend(config)
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


def run_serial(jobs: Sequence[BagJob], done: Callable[[BagOutcome], None]) -> None:
    for job in jobs:
        done(evaluate_job(job))


def run_processes(jobs: Sequence[BagJob], workers: int, done: Callable[[BagOutcome], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a child must not inherit ONNX Runtime's or OpenCV's threads from a fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(evaluate_job, job) for job in jobs]
        for future in as_completed(futures):
            done(future.result())


def run_ray(jobs: Sequence[BagJob], address: str, cpus_per_bag: float, done: Callable[[BagOutcome], None]) -> None:
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
