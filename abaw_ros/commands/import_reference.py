"""``abaw-affect import-reference``: a checkpoint of the paper's reference code (PyTorch
Lightning, weights only) -> our checkpoint, which export, the node and bag-eval read.

    abaw-affect import-reference epoch=7-step=1234.ckpt -o au_l3.pt
    abaw-affect export au_l3.pt -o au_l3_onnx

Task (AU/VA), levels, window length T and depth come from the file (its tensors and its
``hyper_parameters``); AU thresholds from ``hyper_parameters['threshold']``. ``-o`` is
never the input; an existing file is replaced only with ``--overwrite`` and only when it is
a checkpoint of ours (exit 2 otherwise, nothing touched).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="reference-code Lightning checkpoint (.ckpt)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="our checkpoint to write (.pt)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing checkpoint written by this package (never another file)")
    parser.add_argument("--backbone", default="mobilenetv4_conv_small",
                        help="timm backbone, when the file's hyper_parameters do not name one")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.models.checkpoint import is_our_checkpoint
    from abaw_ros.models.reference import import_reference
    from abaw_ros.outputs import Output, check_outputs

    # before anything is read: never the input, never a file this package did not write
    check_outputs([Output(args.output, "output checkpoint", is_our_checkpoint,
                          written_by="this package (not a checkpoint of ours)")],
                  args.overwrite, [args.checkpoint])
    try:
        imported = import_reference(args.checkpoint, args.output, backbone=args.backbone)
    except (ValueError, FileNotFoundError) as exc:
        print(f"abaw-affect import-reference: {exc}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint}: {imported.summary()}")
    print(f"wrote {args.output}")
    return 0
