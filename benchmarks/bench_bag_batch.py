"""Benchmark bag-eval over many bags: one process vs ``--workers N``, side by side.

    python benchmarks/bench_bag_batch.py [--bags 4] [--frames 60] [--workers 2] [--model BUNDLE_DIR]

Writes ``--bags`` bags of ``--frames`` frames each (the astronaut picture moving across a
640x480 frame, 25 fps), then evaluates them with :func:`abaw_ros.offline.batch.evaluate_bags`
serially and with ``--workers`` processes (ONNX Runtime, one inference thread per worker,
so both runs use the same threads per bag), and prints wall time, frames/s and the
speed-up. Both runs give the same affect messages (checked here). Without ``--model``
an untrained network is exported first (needs torch). Wall-clock time on a shared machine
measures the neighbours too: compare the ratio, on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import cv2
import numpy as np

from abaw_ros.config import PipelineConfig
from abaw_ros.offline.bag_eval import BagEvalOptions
from abaw_ros.offline.bag_reader import read_affect_bag
from abaw_ros.offline.bag_writers import ImageBagWriter
from abaw_ros.offline.batch import evaluate_bags

ROOT = Path(__file__).resolve().parents[1]


def write_bags(folder: Path, count: int, frames: int) -> None:
    from skimage import data

    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (300, 300))
    for k in range(count):
        with ImageBagWriter(folder / f"rec{k:02d}", "/camera/image_raw", "mcap") as writer:
            for i in range(frames):
                frame = np.full((480, 640, 3), 100, np.uint8)
                x = 20 + (3 * i + 40 * k) % 300
                frame[90:390, x:x + 300] = person
                writer.write(frame, 1_700_000_000_000_000_000 + k * 10**11 + i * 40_000_000)


def export_untrained(folder: Path) -> Path:
    import torch

    from abaw_ros.models import create_affect_net, export_onnx

    torch.manual_seed(0)
    export_onnx(create_affect_net(window_length=8).eval(), folder / "bundle", trained=False)
    return folder / "bundle"


def face_values(bag: Path) -> list:
    return [[(f.face_id, f.roi.x_offset, f.roi.y_offset, f.valence, f.arousal, list(f.au_probability),
              f.hesitancy_probability) for f in m.msg.faces] for m in read_affect_bag(bag)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=4)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None, help="exported ONNX bundle (default: untrained)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "bags").mkdir()
        write_bags(tmp_path / "bags", args.bags, args.frames)
        model = args.model or export_untrained(tmp_path)
        config = dataclasses.replace(PipelineConfig.from_yaml(ROOT / "config" / "affect.yaml"),
                                     model_file_path=str(model), backend="onnxruntime", num_threads=1)
        template = BagEvalOptions(tmp_path / "bags" / "rec00", write_plot=False, progress=False)
        runs = {}
        for workers in (1, args.workers):
            out = tmp_path / f"out_{workers}"
            runs[workers] = evaluate_bags([tmp_path / "bags"], template, config, output_dir=out, workers=workers,
                                          progress=False)
        frames = runs[1].frames_processed
        for a, b in zip(runs[1].outcomes, runs[args.workers].outcomes, strict=True):
            assert face_values(a.result.output) == face_values(b.result.output), f"{a.bag}: the runs differ"
        print(f"{args.bags} bags x {args.frames} frames (640x480), ONNX Runtime, 1 thread per worker")
        print(f"{'workers':>8} {'wall s':>8} {'frames/s':>9} {'speed-up':>9}")
        for workers, run in runs.items():
            print(f"{workers:>8} {run.elapsed_s:>8.1f} {frames / run.elapsed_s:>9.1f} "
                  f"{runs[1].elapsed_s / run.elapsed_s:>8.2f}x")


if __name__ == "__main__":
    main()
