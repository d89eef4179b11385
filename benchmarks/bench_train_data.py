"""Can the training input keep a GPU busy on all of Aff-Wild2? Index, workers, bytes, loaders.

    python benchmarks/bench_train_data.py --config config/train_au_l3.yaml [--videos 0.1] [--workers 2]
        [--data /tmp/affwild2_full] [--batches 4] [--gpu-img-s 10000]

Writes (or, with ``--data`` holding an earlier one, reuses) an Aff-Wild2 AU layout at the
published scale: 542 videos, 2.6M frames (ABAW: 295 train, 105 validation, 142 test videos;
the test labels are withheld, so the 400 train/validation videos get annotation files
and images). About 5 % of the rows are invalid (``-1`` runs) and 7 % of the annotated
frames have no image (gaps). The images are symbolic links to eight real 112x112 face
crops, so decoding is real but disk reads are not measured. ``--videos`` writes that share
of the videos (runtime on small machines); the per-frame, per-batch and full-scale cache
numbers do not depend on it, and the last line always gives them for the full scale.

Prints, side by side:

1. indexing the layout (``load_split`` under the config's protocol): CPU seconds, peak RSS;
2. worker CPU-ms per frame (decode + what the worker does) and bytes per batch, for the
   worker pipeline (``train.preprocess: worker``: augment, resize to 224, float32),
   the device pipeline (``train.preprocess: device``: uint8 crops) and the feature cache
   (``train.feature_cache``: the frozen part's output of ``freeze: paper``, fp16);
3. batches/s of a DataLoader with N workers for each, and for the device pipeline also
   with its preprocessing (augmentation, resize, normalization) run here in the main
   process (on this machine's CPU; on a GPU it is a few ms per batch);
4. a full-scale epoch: input CPU-minutes vs what 8 cores deliver, against a GPU that
   trains at ``--gpu-img-s`` frames/s (assumption: timm's published benchmark,
   ``results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv`` in
   huggingface/pytorch-image-models, gives mobilenetv4_conv_small 32,546 img/s AMP
   inference at 224 on an RTX 4090; a training step costs about 3 forward passes
   (forward + backward), so 10k img/s).

Ends with ``worker_cpu_ms_per_frame=<x> batch_mb=<y> cache_gb_full_scale=<z>`` (device
pipeline; cache for ``freeze: paper`` at one level, AU train + validation, full scale).
5. the feature cache: worker CPU-ms per frame, MB per batch and batches/s reading it, and a
   head-training epoch on it (GPU share by FLOPs; reads at ``--disk-gb-s``).
Clock: worker costs are process CPU time (neighbours' load does not count); loader rates
are wall clock and depend on the free cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from abaw_ros.data.dataset import ClipDataset
from abaw_ros.data.fixtures import face_pool, write_jpg
from abaw_ros.data.sources import load_split
from abaw_ros.models import AffectNet
from abaw_ros.tasks import AU_NAMES
from abaw_ros.training.config import TrainConfig, load_train_config
from abaw_ros.training.feature_cache import (
    DiskFeatures,
    build_feature_cache,
    cache_key,
    finish_video,
    frames_by_video,
    open_video_maps,
    write_manifest,
)
from abaw_ros.training.frozen_split import cache_plan
from abaw_ros.training.input_pipeline import batch_bytes, device_preprocess, worker_transforms

AU_VIDEOS = {"Train_Set": 295, "Validation_Set": 105, "test": 142}  # ABAW AU split, 542 videos
AU_FRAMES = 2_600_000
INVALID_SHARE = 0.05
MISSING_SHARE = 0.07
N_CROPS = 8


# ------------------------------------------------------------------ the full-scale layout

def plan(seed: int = 0) -> list[tuple[str, str, int]]:
    """(split folder, video name, frames) for all 542 videos, summing to 2.6M frames."""
    rng = np.random.default_rng(seed)
    n = sum(AU_VIDEOS.values())
    raw = rng.lognormal(0.0, 0.6, n)
    lengths = np.maximum(64, np.round(raw / raw.sum() * AU_FRAMES)).astype(int)
    lengths[-1] += AU_FRAMES - lengths.sum()
    out, i = [], 0
    for split, count in AU_VIDEOS.items():
        for k in range(count):
            out.append((split, f"{split[:5].lower()}{k:03d}-{int(lengths[i])}", int(lengths[i])))
            i += 1
    return out


def runs(n: int, share: float, rng: np.random.Generator, mean_run: int = 25) -> np.ndarray:
    """A boolean mask with about ``share`` of the rows set, in runs (faces lost for a while)."""
    mask = np.zeros(n, dtype=bool)
    for _ in range(rng.poisson(n * share / mean_run)):
        start, length = rng.integers(0, n), rng.integers(1, 2 * mean_run)
        mask[start:start + length] = True
    return mask


def video_masks(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(invalid rows, rows without image) of one video, reproducible from its name."""
    rng = np.random.default_rng(sum(map(ord, name)) * 7919 + n)
    return runs(n, INVALID_SHARE, rng), runs(n, MISSING_SHARE, rng)


def full_scale_counts(videos: list[tuple[str, str, int]]) -> dict[str, int]:
    """Annotation rows, frames with images, and frames the reference protocol keeps (valid,
    with image), over the train + validation videos of the full plan."""
    rows = images = kept = 0
    for split, name, n in videos:
        if split == "test":
            continue
        invalid, missing = video_masks(name, n)
        rows += n
        images += int((~missing).sum())
        kept += int((~missing & ~invalid).sum())
    return {"rows": rows, "images": images, "kept": kept}


def write_layout(root: Path, videos: list[tuple[str, str, int]], fraction: float) -> dict:
    """The official layout under ``root`` for a ``fraction`` of the train/validation videos."""
    marker = root / "bench_layout.json"
    spec = {"frames": AU_FRAMES, "videos": AU_VIDEOS, "fraction": fraction, "version": 1}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return spec
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"--data {root}: not empty and not a layout this benchmark wrote; give an empty folder")
    crops = root / "crops"
    faces = face_pool()
    for k in range(N_CROPS):
        write_jpg(crops / f"face{k}.jpg", np.clip(faces[k], 0, 255).astype(np.uint8))
    targets = [str((crops / f"face{k}.jpg").resolve()) for k in range(N_CROPS)]
    header = ",".join(AU_NAMES)
    rng = np.random.default_rng(1)
    for split in ("Train_Set", "Validation_Set"):
        chosen = [v for v in videos if v[0] == split]
        chosen = chosen[:max(1, round(len(chosen) * fraction))]
        ann = root / "annotations" / "AU_Detection_Challenge" / split
        ann.mkdir(parents=True, exist_ok=True)
        for _, name, n in chosen:
            invalid, missing = video_masks(name, n)
            labels = (rng.random((n, len(AU_NAMES))) < 0.2).astype(np.int8)
            labels[invalid] = -1
            lines = [header] + [",".join(map(str, row)) for row in labels.tolist()]
            (ann / f"{name}.txt").write_text("\n".join(lines) + "\n")
            folder = root / "cropped_aligned" / name
            folder.mkdir(parents=True)
            face = targets[sum(map(ord, name)) % N_CROPS]
            for f in np.flatnonzero(~missing):
                os.symlink(face, folder / f"{f + 1:05d}.jpg")
    marker.write_text(json.dumps(spec))
    return spec


# ------------------------------------------------------------------ measurements

def worker_ms_per_frame(ds: ClipDataset, n_windows: int, seed: int = 0) -> float:
    """Process CPU-ms per frame of ``ds[i]`` (what one DataLoader worker does)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ds), n_windows)
    ds[int(idx[0])]  # warm the page cache and the decoder
    start = time.process_time()
    for i in idx:
        ds[int(i)]
    return (time.process_time() - start) * 1000 / (len(idx) * ds.window_length)


def loader_rate(ds, cfg: TrainConfig, workers: int, batches: int, step=None) -> float:
    """Batches/s (wall clock) of a DataLoader over ``ds`` from the start of its iteration
    (worker start-up included) to its ``max(batches, 2 x workers)``-th batch, so that the
    batches the workers prefetch do not count as free; ``step`` runs on every batch in the
    main process (the device preprocessing)."""
    loader = DataLoader(ds, batch_size=cfg.batch_size,
                        sampler=RandomSampler(ds, generator=torch.Generator().manual_seed(0)),
                        num_workers=workers, prefetch_factor=cfg.prefetch_factor if workers else None)
    n = max(batches, 2 * workers)
    start = time.perf_counter()
    it = iter(loader)
    for _ in range(n):
        batch = next(it)
        if step is not None:
            step(batch["inputs"])
    rate = n / (time.perf_counter() - start)
    del it
    return rate


def bench_cache(cfg: TrainConfig, train_recs: list, args) -> dict:
    """A real cache (the cache's own writer, manifest and reader) for enough training windows
    to time the loader. The stored values are random: reading costs the same whatever they
    hold, and computing them here would take the CPU minutes; the build rate is measured on
    a few real frames instead."""
    model = AffectNet(replace(cfg.model, freeze="paper", n_levels=1, backbone_weights=None)).eval()
    plan = cache_plan(model)
    need = (args.batches + 2) * cfg.batch_size * cfg.model.window_length
    recs, total = [], 0
    for r in train_recs:
        recs.append(r)
        total += len(r)
        if total >= need:
            break
    paths = [p for r in recs for p in r.frames]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        root = Path(tmp)
        write_manifest(root, cache_key(model, plan, cfg.crop_size))
        for name in plan.outputs:
            (root / name).mkdir()
        (root / "done").mkdir()
        for folder, frames in frames_by_video(paths).items():
            maps = open_video_maps(root, plan, folder, len(frames), "w+")
            for mm in maps:
                mm[:] = rng.standard_normal(mm.shape, dtype=np.float32).astype(np.float16)
            finish_video(root, maps, folder, frames)
        table = DiskFeatures(root, plan, paths)
        mc = cfg.model
        ds = ClipDataset(recs, mc.tasks, mc.window_length, True, features=table)
        ms = worker_ms_per_frame(ds, args.windows)
        rate = loader_rate(ds, cfg, args.workers, args.batches)
    with tempfile.TemporaryDirectory(prefix="bench_cache_build_") as tmp:
        sample = paths[:32]
        start = time.perf_counter()
        build_feature_cache(Path(tmp) / "c", model, sample, cfg.crop_size, progress=False)
        build_fps = len(sample) / (time.perf_counter() - start)
    return {"ms": ms, "rate": rate, "mb": cfg.batch_size * mc.window_length * plan.frame_bytes / 1e6,
            "frame_bytes": plan.frame_bytes, "outputs": plan.outputs, "build_fps": build_fps,
            "flop_share": trainable_flop_share(model)}


def trainable_flop_share(model: AffectNet) -> float:
    """FLOPs of the last stage on the stored map / FLOPs of the whole backbone, per frame
    (mobilenetv4_conv_small at 224: 0.012 of 0.367 GFLOP)."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone, s = model.encoder.backbone, model.cfg.input_size
    stored = cache_plan(model).shapes[0]
    with torch.no_grad():
        with FlopCounterMode(display=False) as whole:
            backbone(torch.zeros(1, 3, s, s))
        with FlopCounterMode(display=False) as last:
            backbone.blocks[-1](torch.zeros(1, *stored))
    return last.get_total_flops() / whole.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--videos", type=float, default=1.0, help="share of the videos written (0, 1]")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--batches", type=int, default=4, help="batches timed per loader")
    parser.add_argument("--windows", type=int, default=48, help="windows timed per worker-cost row")
    parser.add_argument("--data", type=Path, help="layout folder (kept, reused when it matches)")
    parser.add_argument("--gpu-img-s", type=float, default=10_000.0)
    parser.add_argument("--disk-gb-s", type=float, default=2.0, help="read rate assumed for the feature cache")
    args = parser.parse_args(argv)
    if not 0 < args.videos <= 1:
        print(f"--videos {args.videos}: must be in (0, 1]", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cfg = load_train_config(args.config)
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_train_data_")
        root = Path(tmp.name)
    else:
        root = args.data
    videos = plan()
    full = full_scale_counts(videos)
    t0 = time.perf_counter()
    write_layout(root, videos, args.videos)
    print(f"layout: {root} ({args.videos:.0%} of the train/validation videos written in "
          f"{time.perf_counter() - t0:.0f} s; full scale {sum(n for *_, n in videos):,} frames in "
          f"{len(videos)} videos, train+val {full['rows']:,} rows, {full['images']:,} with an image)")

    data = replace(cfg.data, affwild2_images=str(root), affwild2_annotations=str(root / "annotations"))
    cfg = replace(cfg, data=data, num_workers=args.workers)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c0 = time.process_time()
    train_recs = [r for recs in load_split(cfg.data, cfg.model.tasks, "train", cfg.protocol).values() for r in recs]
    val_recs = [r for recs in load_split(cfg.data, cfg.model.tasks, "val", cfg.protocol).values() for r in recs]
    index_s = time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    frames_indexed = sum(len(r) for r in train_recs + val_recs)
    scale = full["kept"] / max(frames_indexed, 1) if cfg.protocol == "reference" else full["images"] / max(frames_indexed, 1)
    mc = cfg.model
    rows: list[tuple[str, str, str, str, str]] = []

    def add(name: str, ms: float | None, mb: float, rate: float | None, note: str = "") -> None:
        rows.append((name, f"{ms:.3f}" if ms is not None else "-", f"{mb:.1f}",
                     f"{rate:.2f}" if rate is not None else "-", note))

    train_tf, _ = worker_transforms(replace(cfg, preprocess="worker"), seed=0)
    crops_tf, _ = worker_transforms(replace(cfg, preprocess="device"), seed=0)
    ds_worker = ClipDataset(train_recs, mc.tasks, mc.window_length, True, transform=train_tf)
    ds_device = ClipDataset(train_recs, mc.tasks, mc.window_length, True, transform=crops_tf)
    ms_worker = worker_ms_per_frame(ds_worker, args.windows // 4)
    ms_device = worker_ms_per_frame(ds_device, args.windows)
    mb_worker = batch_bytes(replace(cfg, preprocess="worker")) / 1e6
    mb_device = batch_bytes(replace(cfg, preprocess="device")) / 1e6
    add("worker: augment + resize + float32 (preprocess: worker)", ms_worker, mb_worker,
        loader_rate(ds_worker, cfg, args.workers, args.batches))
    add("device: uint8 crops (preprocess: device), loader only", ms_device, mb_device,
        loader_rate(ds_device, cfg, args.workers, args.batches))
    pre = device_preprocess(replace(cfg, preprocess="device"), seed=0, device=torch.device("cpu")).train()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.workers) if args.workers else 1)
    # On a GPU the step is memory-bound: about 24 float32 passes over the crops (augmentation)
    # and 3 over the 224x224 result (resize, normalize); estimated at 1 TB/s.
    frames = cfg.batch_size * mc.window_length
    traffic = frames * 3 * 4 * (24 * cfg.crop_size ** 2 + 3 * mc.input_size ** 2)
    with torch.no_grad():
        add("device: + augment/resize/normalize in the step, on this CPU", ms_device, mb_device,
            loader_rate(ds_device, cfg, args.workers, 1, step=pre),
            f"on a GPU: {traffic / 1e9:.1f} GB of memory traffic, ~{traffic / 1e12 * 1e3:.1f} ms at 1 TB/s")
    torch.set_num_threads(1)
    cache = bench_cache(cfg, train_recs, args)
    add("feature cache (freeze: paper, 1 level), loader only", cache["ms"], cache["mb"], cache["rate"],
        f"build on this CPU: {cache['build_fps']:.0f} frames/s")

    # -- full-scale epoch against the GPU
    windows_train = len(ds_device) * scale
    windows_val = len(ClipDataset(val_recs, mc.tasks, mc.window_length, False, transform=crops_tf)) * scale
    frames_epoch = (windows_train * cfg.train_fraction + windows_val) * mc.window_length
    gpu_min = frames_epoch / args.gpu_img_s / 60

    print(f"\nindex ({cfg.protocol} protocol): {index_s:.1f} CPU-s, peak RSS {rss:.0f} MB "
          f"(before: {rss0:.0f} MB); {len(train_recs)} train / {len(val_recs)} val videos, "
          f"{frames_indexed:,} frames kept; full scale x{scale:.2f}: "
          f"{int(windows_train):,} train / {int(windows_val):,} val windows, "
          f"{int(np.ceil(windows_train * cfg.train_fraction / cfg.batch_size)):,} steps per epoch")
    print(f"\nbatch: {cfg.batch_size} windows x T={mc.window_length}; {args.workers} loader workers on "
          f"{os.cpu_count()} cores")
    width = max(len(r[0]) for r in rows)
    print(f"{'input':<{width}}  {'worker CPU-ms/frame':>19}  {'MB/batch':>9}  {'batches/s':>9}")
    for name, ms, mb, rate, note in rows:
        print(f"{name:<{width}}  {ms:>19}  {mb:>9}  {rate:>9}  {note}")
    print(f"\nfull-scale epoch (train x {cfg.train_fraction} + val): {frames_epoch / 1e6:.2f}M frames; "
          f"GPU at {args.gpu_img_s:,.0f} img/s (assumed): {gpu_min:.1f} min")
    for name, ms in (("worker", ms_worker), ("device", ms_device)):
        cpu_min = frames_epoch * ms / 1000 / 60
        wall8 = cpu_min / 8
        wait = max(0.0, 1 - gpu_min / wall8) if wall8 else 0.0
        print(f"  preprocess {name}: {cpu_min:.0f} CPU-min of input, {wall8:.1f} min on 8 cores: "
              f"{'keeps up' if wall8 <= gpu_min else f'GPU waits {wait:.0%}'} "
              f"({wall8 / gpu_min:.2f}x the GPU time)")
    cache_gb = full["kept" if cfg.protocol == "reference" else "images"] * cache["frame_bytes"] / 1e9
    # From the cache only blocks.4 (0.012 of the backbone's 0.367 GFLOP per frame) and the
    # head run: the GPU rate scales by that share; the reads are one epoch of stored maps.
    head_min = gpu_min * cache["flop_share"]
    read_min = frames_epoch * cache["frame_bytes"] / args.disk_gb_s / 1e9 / 60
    print(f"  feature cache (freeze: paper, 1 level, {'/'.join(cache['outputs'])} output fp16 = "
          f"{cache['frame_bytes']:,} B/frame): {cache_gb:.1f} GB for AU train + val; an epoch of head training: "
          f"{cache['ms'] * frames_epoch / 1000 / 60:.1f} CPU-min of reads, GPU {head_min:.2f} min "
          f"({cache['flop_share']:.3f} of the FLOPs), disk {read_min:.1f} min at {args.disk_gb_s:g} GB/s "
          f"(or the page cache): about {max(head_min, read_min, cache['ms'] * frames_epoch / 1000 / 60 / 8):.1f} min")
    print(f"worker_cpu_ms_per_frame={ms_device:.3f} batch_mb={mb_device:.1f} cache_gb_full_scale={cache_gb:.1f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
