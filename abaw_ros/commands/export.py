"""``abaw-affect export``: checkpoint -> ONNX model bundle directory.

Writes ``encoder.onnx``, ``temporal_head.onnx`` and ``window.onnx`` (activated outputs,
metadata under ``metadata_props['abaw_ros']``) and, with ``--verify`` (default on),
checks ONNX Runtime against PyTorch on random inputs.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from abaw_ros.commands.options import add_number
from abaw_ros.config import Bounds

_logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from abaw_ros.models.export import DEFAULT_OPSET, GRAPH_FILES

    parser.add_argument("checkpoint", type=Path, help="checkpoint file (.pt) written by save_checkpoint")
    parser.add_argument("-o", "--out-dir", type=Path, default=None,
                        help="bundle directory (default: <checkpoint stem>_onnx next to the checkpoint)")
    add_number(parser, "--opset", kind=int, bounds=Bounds(17, 20),
               default=DEFAULT_OPSET,
               help=f"ONNX opset (default {DEFAULT_OPSET}; 20 is the newest the TorchScript exporter writes)")
    parser.add_argument("--graphs", nargs="+", choices=list(GRAPH_FILES), default=list(GRAPH_FILES),
                        help="graphs to write (default: all three)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the ONNX Runtime vs PyTorch check")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.models.checkpoint import load_checkpoint
    from abaw_ros.models.export import export_onnx, verify_bundle

    if not args.checkpoint.is_file():
        _logger.error("checkpoint %s: no such file", args.checkpoint)
        return 2
    out_dir = args.out_dir or args.checkpoint.with_name(args.checkpoint.stem + "_onnx")
    model, info = load_checkpoint(args.checkpoint)
    paths = export_onnx(model, out_dir, thresholds=info["thresholds"], trained=info["trained"],
                        opset=args.opset, graphs=tuple(args.graphs), provenance=info.get("provenance"))
    for graph, path in paths.items():
        print(f"{graph:14s} {path}")
    if args.verify:
        errors = verify_bundle(model, paths)
        for graph, err in errors.items():
            print(f"verify {graph:14s} max |onnxruntime - pytorch| = {err:.2e}")
    return 0
