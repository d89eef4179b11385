"""``abaw-affect build-engine``: build (or reuse) the cached engines for a model.

TensorRT: one engine per graph (encoder, temporal head) for the precision and batch
ranges asked, checked against the ONNX hash, TensorRT version, GPU and precision recipe,
rebuilt when any of them changed. ONNX Runtime ``int8``: the statically quantized encoder
graph. Build on the machine that will run the engines (on a Jetson, on the Jetson itself).

Every fp16/int8 build is checked against fp32 (decisions >= 90 % equal, VA |diff| <= 0.05,
see :mod:`abaw_ros.runtime.accuracy`) before it is cached for use: the report is printed,
and a build that misses the tolerances is discarded (exit 2) unless ``--accept-precision``
is given, which is recorded in the cache entry and logged at every start.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from abaw_ros.backend_registry import BACKENDS, PRECISIONS
from abaw_ros.commands.options import add_number
from abaw_ros.config import Bounds

LOG = logging.getLogger(__name__)
# the backends that compile graphs into the cache, and for which precisions
COMPILING: dict[str, tuple[str, ...]] = {spec.name: spec.compiles for spec in BACKENDS.values() if spec.compiles}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="checkpoint (.pt) or ONNX bundle directory from `abaw-affect export`")
    parser.add_argument("--backend", default="tensorrt", choices=tuple(COMPILING),
                        help="tensorrt (default) or onnxruntime (int8 quantized graph)")
    parser.add_argument("--precision", default="fp16", choices=PRECISIONS,
                        help="engine precision (default fp16; int8 needs --calibration)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="folder of face-crop images for int8 calibration")
    add_number(parser, "--calibration-limit", kind=int, bounds=Bounds(1, 100000, "crops"),
               default=256, help="most crops used for calibration")
    parser.add_argument("--engine-cache-dir", type=Path, default=None,
                        help="where engines are kept (default ~/.cache/abaw_ros/engines)")
    parser.add_argument("--force-engine-update", action="store_true", help="rebuild even if a valid engine exists")
    add_number(parser, "--max-batch-size", kind=int, bounds=Bounds(1, 1024, "crops"),
               default=16, help="most face crops per encoder call")
    add_number(parser, "--opt-batch-size", kind=int, bounds=Bounds(1, 1024, "crops"),
               default=4, help="encoder batch the engine is tuned for")
    add_number(parser, "--max-windows", kind=int, bounds=Bounds(1, 1024, "windows"),
               default=8, help="most windows per temporal-head call")
    add_number(parser, "--workspace-mib", kind=int, bounds=Bounds(16, 1048576, "MiB"),
               default=1024, help="TensorRT builder workspace (MiB)")
    parser.add_argument("--device", default=None, help="cuda:<index> for TensorRT (default cuda:0)")
    parser.add_argument("--accept-precision", action="store_true",
                        help="keep an fp16/int8 build that misses the precision tolerances (recorded in the "
                             "cache entry, warned about at every start)")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.runtime import BackendUnavailableError, load_backend
    from abaw_ros.runtime.accuracy import PrecisionCheckError

    builds = COMPILING[args.backend]
    if args.precision not in builds:
        print(f"--backend {args.backend} --precision {args.precision}: {args.backend} runs the exported graph as "
              f"it is; only {', '.join(builds)} builds something. Use --precision "
              f"{builds[0]}.")
        return 2
    try:
        backend = load_backend(
            args.model, args.backend, args.precision,
            engine_cache_dir=args.engine_cache_dir,
            force_engine_update=args.force_engine_update,
            calibration=args.calibration,
            calibration_limit=args.calibration_limit,
            max_batch_size=args.max_batch_size,
            opt_batch_size=args.opt_batch_size,
            max_windows=args.max_windows,
            workspace_bytes=args.workspace_mib << 20,
            device=args.device,
            accept_precision=args.accept_precision,
        )
    except BackendUnavailableError as exc:
        print(f"cannot build a {args.backend} engine here: {exc}")
        return 2
    except PrecisionCheckError as exc:
        print(exc.result.format())
        print(f"error: {exc}")
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 2
    with backend:
        print(backend.describe())
        for graph, entry in backend.compiled_artifacts().items():
            what = f"built in {entry.build_seconds:.1f} s ({entry.reason})" if entry.built else "reused (key matches)"
            print(f"{graph}: {entry.path} [{entry.key.precision}] {what}")
        backend.warmup()
        verdict = getattr(backend, "precision_verdict", None)
        if verdict:
            print(verdict.get("report", ""))
            print(f"  precision check {str(verdict.get('status')).upper()}: {verdict.get('summary')}")
    return 0
