"""``abaw-affect bench``: every backend available here, side by side, in one run.

For each backend/precision: encoder milliseconds per frame and temporal-head milliseconds
per window at batch 1 and batched (the head as the pipeline runs it: the new frame's
projection plus the tubelet head), and frames per second (one face streaming: one encoder
pass plus one head pass per frame; and batched encoder throughput). Then the accuracy of
every other backend/precision against ONNX Runtime fp32 (parity) on the same real face
crops, and the speed-up over the same backend's fp32. ``--json`` also records build times
and the runtime versions (``scripts/gpu_check.sh`` turns it into a report).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from abaw_ros.backend_registry import BACKENDS, PRECISIONS
from abaw_ros.commands.options import add_number
from abaw_ros.config import Bounds
from abaw_ros.errors import one_line

LOG = logging.getLogger(__name__)

# (backend, precision) pairs measured when available, in print order (the registry's)
CONFIGS: tuple[tuple[str, str], ...] = tuple(
    (spec.name, precision) for spec in BACKENDS.values() for precision in spec.bench_precisions)
# whose fp32 the others are compared with, first found first
REFERENCES: tuple[str, ...] = tuple(spec.name for spec in BACKENDS.values() if spec.reference)


@dataclass
class BenchRow:
    backend: str
    precision: str
    device: str
    encoder_ms_per_frame_b1: float
    encoder_ms_per_frame_batched: float
    head_ms_per_window_b1: float
    head_ms_per_window_batched: float
    build_seconds: float = 0.0  # engines / quantized graphs built for this row (0: all reused)

    @property
    def stream_fps(self) -> float:
        """One face: each frame costs one encoder pass and one head pass."""
        return 1000.0 / (self.encoder_ms_per_frame_b1 + self.head_ms_per_window_b1)

    @property
    def encoder_fps_batched(self) -> float:
        return 1000.0 / self.encoder_ms_per_frame_batched


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="checkpoint (.pt) or ONNX bundle directory; default: an untrained network "
                             "(speed does not depend on the weights)")
    parser.add_argument("--backends", default="all",
                        help="comma-separated backend[:precision] list, e.g. 'onnxruntime,tensorrt:fp16' (default all)")
    add_number(parser, "--batch", kind=int, bounds=Bounds(1, 1024),
               default=8, help="batch size of the batched measurements (default 8)")
    add_number(parser, "--iterations", kind=int, bounds=Bounds(1, 100000),
               default=20, help="timed runs per measurement (median reported)")
    add_number(parser, "--warmup", kind=int, bounds=Bounds(0, 10000),
               default=3, help="untimed runs before each measurement")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="statistic over the timed runs; 'min' is the steadier estimate on a shared machine")
    add_number(parser, "--num-threads", kind=int, bounds=Bounds(1, 256, "threads"),
               default=None, help="CPU threads (default: all usable cores)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="folder of face crops for int8 calibration and the accuracy report "
                             "(default: scikit-image's LFW faces)")
    add_number(parser, "--crops", kind=int, bounds=Bounds(2, 100000, "crops"), default=200,
               help="most face crops read (half calibrate int8, half measure accuracy; default 200)")
    parser.add_argument("--engine-cache-dir", type=Path, default=None, help="engine / quantized-graph cache")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--accept-precision", action="store_true",
                        help="measure fp16/int8 builds that miss the precision tolerances too (they are refused "
                             "and listed as skipped otherwise)")


def _time_ms(fn: Callable[[], object], iterations: int, warmup: int, stat: str = "median") -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * (min(times) if stat == "min" else statistics.median(times))


def measure(backend, batch: int, iterations: int, warmup: int, crops: np.ndarray, stat: str = "median") -> BenchRow:
    def frames(n: int) -> np.ndarray:
        return np.ascontiguousarray(np.resize(crops, (n, *crops.shape[1:])), np.float32)

    one, many = frames(1), frames(batch)
    maps = backend.encode(many)
    head1, headb = _head_pass(backend, maps, 1), _head_pass(backend, maps, batch)
    return BenchRow(
        backend=backend.name,
        precision=backend.precision,
        device=backend.device,
        encoder_ms_per_frame_b1=_time_ms(lambda: backend.encode(one), iterations, warmup, stat),
        encoder_ms_per_frame_batched=_time_ms(lambda: backend.encode(many), iterations, warmup, stat) / batch,
        head_ms_per_window_b1=_time_ms(head1, iterations, warmup, stat),
        head_ms_per_window_batched=_time_ms(headb, iterations, warmup, stat) / batch,
    )


def _head_pass(backend, maps: list[np.ndarray], n: int):
    """One head pass for ``n`` faces on the path the pipeline runs: each face's new frame
    projected and the tubelet head on the tubelet sums; whole windows through the fused
    head where the backend does not stream tubelets."""
    if not backend.streams_tubelets:
        t = backend.metadata.window_length
        windows = [np.ascontiguousarray(np.resize(m, (n, t, *m.shape[1:]))) for m in maps]
        return lambda: backend.temporal(windows)
    frame = [np.ascontiguousarray(np.resize(m, (n, *m.shape[1:]))) for m in maps]
    sums = [np.ascontiguousarray(np.resize(p, (n, *s))) for p, s in
            zip(backend.project(frame), backend.metadata.tubelet_shapes, strict=True)]
    return lambda: (backend.project(frame), backend.temporal_tubelets(sums))


def format_table(rows: list[BenchRow], batch: int) -> str:
    header = (f"{'backend':<12} {'prec':<5} {'device':<28} {'enc ms/frame':>12} {f'enc b{batch}':>9} "
              f"{'head ms/win':>11} {f'head b{batch}':>9} {'stream fps':>10} {f'enc fps b{batch}':>12}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.backend:<12} {r.precision:<5} {r.device[:28]:<28} {r.encoder_ms_per_frame_b1:12.2f} "
            f"{r.encoder_ms_per_frame_batched:9.2f} {r.head_ms_per_window_b1:11.2f} "
            f"{r.head_ms_per_window_batched:9.2f} {r.stream_fps:10.1f} {r.encoder_fps_batched:12.1f}"
        )
    return "\n".join(lines)


def _wanted(spec: str) -> list[tuple[str, str]]:
    if spec == "all":
        return list(CONFIGS)
    wanted = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, precision = item.partition(":")
        if name not in BACKENDS:
            raise ValueError(f"--backends item {item!r}: backend must be one of {list(BACKENDS)}")
        if precision and precision not in PRECISIONS:
            raise ValueError(f"--backends item {item!r}: precision must be one of {list(PRECISIONS)}")
        wanted += [(name, precision)] if precision else [c for c in CONFIGS if c[0] == name]
    return wanted


def _versions() -> dict[str, str]:
    """Versions of the runtimes this process can import (what a report needs to say)."""
    import importlib
    import platform

    found = {"python": platform.python_version(), "machine": platform.machine()}
    for module in ("tensorrt", "onnxruntime", "torch", "cuda.bindings", "onnxconverter_common"):
        try:
            found[module] = str(getattr(importlib.import_module(module), "__version__", "?"))
        except Exception:  # not installed, or unusable here: leave it out
            continue
    return found


def _default_model(workdir: Path) -> Path:
    from abaw_ros.models import ModelConfig
    from abaw_ros.runtime.opening import untrained_checkpoint

    LOG.info("no --model: benchmarking an untrained network (default ModelConfig, fixed seed)")
    # The same weights every run (fixed seed), so accuracy reports compare.
    return untrained_checkpoint(ModelConfig().window_length, workdir)


def run(args: argparse.Namespace) -> int:
    from abaw_ros.runtime import BackendUnavailableError, load_backend, preprocess_crops
    from abaw_ros.runtime.accuracy import compare_backends
    from abaw_ros.runtime.preprocess import load_crop_images
    from abaw_ros.runtime.samples import lfw_face_crops

    if args.batch < 1 or args.iterations < 1 or args.warmup < 0:
        raise SystemExit(f"--batch={args.batch}, --iterations={args.iterations}, --warmup={args.warmup}: "
                         "need batch >= 1, iterations >= 1, warmup >= 0")
    wanted = _wanted(args.backends)
    with tempfile.TemporaryDirectory(prefix="abaw-bench-") as tmp:
        model = args.model if args.model is not None else _default_model(Path(tmp))
        cache = args.engine_cache_dir if args.engine_cache_dir is not None else Path(tmp) / "cache"
        raw_crops = load_crop_images(args.calibration, args.crops) if args.calibration else lfw_face_crops(args.crops)
        if len(raw_crops) < 16:
            raise SystemExit(f"{len(raw_crops)} face crops: the bench needs at least 16 (calibration + accuracy)")
        half = len(raw_crops) // 2
        calibration, evaluation = raw_crops[:half], raw_crops[half:]  # disjoint: honest accuracy
        backends, rows, skipped = {}, [], []
        for name, precision in wanted:
            try:
                backend = load_backend(model, name, precision, engine_cache_dir=cache, num_threads=args.num_threads,
                                       calibration=calibration if precision == "int8" else None,
                                       max_batch_size=max(16, args.batch), max_windows=max(8, args.batch),
                                       accept_precision=args.accept_precision)
            except (BackendUnavailableError, ValueError) as exc:
                skipped.append(f"{name} {precision}: {one_line(exc)}")
                continue
            crops = preprocess_crops(evaluation, backend.metadata)
            row = measure(backend, args.batch, args.iterations, args.warmup, crops, args.stat)
            row.build_seconds = sum(e.build_seconds or 0.0 for e in backend.compiled_artifacts().values())
            rows.append(row)
            backends[(name, precision)] = backend
        if not rows:
            print("no backend could run:\n  " + "\n  ".join(skipped))
            return 1
        meta = next(iter(backends.values())).metadata
        print(f"model: {model} ({'trained' if meta.trained else 'untrained'}; T={meta.window_length}, "
              f"{len(meta.feature_names)} levels, tasks {','.join(meta.tasks)})")
        print(f"{args.stat} of {args.iterations} timed runs after {args.warmup} warm-up runs")
        print(format_table(rows, args.batch))
        reasons: dict[str, list[str]] = {}
        for line in skipped:
            what, _, why = line.partition(": ")
            reasons.setdefault(why, []).append(what)
        for why, which in reasons.items():
            print(f"skipped {', '.join(which)}: {why}")
        reports = []
        by_key = {(r.backend, r.precision): r for r in rows}
        eval_crops = preprocess_crops(evaluation, meta)
        for (name, precision), backend in backends.items():
            if precision == "fp32" and name in REFERENCES:
                continue
            found = [backends.get((ref, "fp32")) for ref in REFERENCES[:1]] + [backends.get((name, "fp32"))]
            found += [backends.get((ref, "fp32")) for ref in REFERENCES[1:]]
            reference = next((b for b in found if b is not None), None)
            if reference is None or reference is backend:
                continue
            report = compare_backends(reference, backend, eval_crops)
            reports.append(report)
            print()
            print(report.format())
            fp32 = by_key.get((name, "fp32")) if precision != "fp32" else None
            row = by_key[(name, precision)]
            if fp32 is not None:
                print(f"  speed-up of {name} {precision} over {name} fp32: encoder "
                      f"x{fp32.encoder_ms_per_frame_b1 / row.encoder_ms_per_frame_b1:.2f} at batch 1, "
                      f"x{fp32.encoder_ms_per_frame_batched / row.encoder_ms_per_frame_batched:.2f} at batch "
                      f"{args.batch}; head x{fp32.head_ms_per_window_b1 / row.head_ms_per_window_b1:.2f}")
        if args.json:
            payload = {
                "rows": [asdict(r) | {"stream_fps": r.stream_fps, "encoder_fps_batched": r.encoder_fps_batched}
                         for r in rows],
                "skipped": skipped,
                "accuracy": [asdict(r) for r in reports],
                "versions": _versions(),
            }
            args.json.write_text(json.dumps(payload, indent=2))
        for backend in backends.values():
            backend.close()
    return 0
