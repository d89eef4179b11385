"""``abaw-affect export``: checkpoint -> ONNX model bundle directory.

Writes ``encoder.onnx``, ``temporal_head.onnx``, ``window.onnx`` and the streaming graphs
``frame_projection.onnx`` and ``tubelet_head.onnx`` (activated outputs, metadata under
``metadata_props['abaw_ros']``) and ``bundle.json`` (the model hash every
graph carries, each file's SHA-256) and, with ``--verify`` (default on), checks ONNX
Runtime against PyTorch on random inputs. The bundle is written beside ``-o`` and moved
there complete; an existing folder is replaced only with ``--overwrite`` and only when it
is a bundle export wrote (exit 2 otherwise, nothing touched).
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
                        help="graphs to write (default: all five; leave out projection and tubelet_head for a "
                             "bundle whose head runs on whole windows)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the ONNX Runtime vs PyTorch check")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing bundle written by export (never another folder)")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.models.checkpoint import load_checkpoint
    from abaw_ros.models.export import verify_bundle, write_bundle

    if not args.checkpoint.is_file():
        _logger.error("checkpoint %s: no such file", args.checkpoint)
        return 2
    out_dir = args.out_dir or args.checkpoint.with_name(args.checkpoint.stem + "_onnx")
    model, info = load_checkpoint(args.checkpoint)
    # the bundle is written whole (all requested graphs of this model + bundle.json) and
    # replaces only a bundle of ours, with --overwrite
    paths = write_bundle(model, out_dir, overwrite=args.overwrite, inputs=(args.checkpoint,),
                         thresholds=info["thresholds"], trained=info["trained"], opset=args.opset,
                         graphs=tuple(args.graphs), provenance=info.get("provenance"))
    for graph, path in paths.items():
        print(f"{graph:14s} {path}")
    if args.verify:
        errors = verify_bundle(model, paths)
        for graph, err in errors.items():
            print(f"verify {graph:14s} max |onnxruntime - pytorch| = {err:.2e}")
    return 0
