"""Disk cache of the frozen part's output: embed every frame once, then train only the rest.

With ``model.freeze: paper`` (stem and every stage but the last frozen) the frozen part of
mobilenetv4_conv_small ends at ``blocks.3``: its output, 128x7x7, is 12.5 KB per frame in
float16 and holds 96.7 % of the backbone's FLOPs. Training then runs ``blocks.4`` (the 1x1
conv to the 960-channel 7x7 map) and the temporal head on stored maps, with no image
decoding. Levels whose map comes from a frozen stage (14x14 from ``blocks.2``, 28x28 from
``blocks.1``) are stored as they are. With ``freeze: all`` the level maps themselves are
stored and only the head trains.

Layout of ``train.feature_cache``::

    manifest.json                  what the cache holds: backbone, frozen weights' SHA-1,
                                   preprocessing, stored outputs and shapes
    <output>/<video>.npy           float16 (frames, C, H, W), one per image folder, memory-mapped
    done/<video>.json              written after the video's maps are flushed: its frame names

A video whose ``done`` entry is missing or lacks a frame the records need is (re)built, so
an interrupted build resumes where it stopped. A manifest that does not match the model
(other backbone weights, freeze, levels or preprocessing) makes the whole cache stale: it
is removed and rebuilt, never read.

Augmentation: a cache holds the unaugmented crops' outputs, so training from it runs
without augmentation (``train.augment: false``, checked), as "embed once, train the
heads" setups do. Training from the cache equals training from the images with
``augment: false`` up to the float16 rounding of the stored maps
(``tests/test_training_feature_cache.py``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from abaw_ros.data.transforms import CropBytes, read_rgb
from abaw_ros.models import AffectNet
from abaw_ros.training.device_preprocess import DevicePreprocess
from abaw_ros.training.distributed import DistContext, barrier
from abaw_ros.training.frozen_split import DTYPE, CachePlan, FrozenTrunk, cache_plan

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


# ---------------------------------------------------------------------- the manifest

def frozen_weights_sha1(model: AffectNet, plan: CachePlan) -> str:
    """SHA-1 over the frozen part's tensors (names, values), BatchNorm statistics included."""
    h = hashlib.sha1()
    last = f"blocks.{len(model.encoder.backbone.blocks) - 1}."
    for name, tensor in model.encoder.backbone.state_dict().items():
        if plan.freeze == "paper" and name.startswith(last):
            continue  # trains: not part of what is stored
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(model: AffectNet, plan: CachePlan, crop_size: int) -> dict:
    cfg = model.cfg
    return {
        "format": CACHE_FORMAT,
        "backbone": cfg.backbone,
        "frozen_weights_sha1": frozen_weights_sha1(model, plan),
        "freeze": plan.freeze,
        "outputs": list(plan.outputs),
        "shapes": [list(s) for s in plan.shapes],
        "dtype": np.dtype(DTYPE).name,
        # the device preprocessing: uint8 crops at crop_size, bilinear resize, mean/std
        "preprocessing": {**cfg.preprocessing, "crop_size": int(crop_size), "resize": "bilinear-half-pixel"},
    }


def _video_key(folder: Path) -> str:
    """A file name for an image folder: its name plus a short hash of its full path (two
    data sets may both have a folder ``1``)."""
    return f"{folder.name}-{hashlib.sha1(str(folder).encode()).hexdigest()[:8]}"


def frames_by_video(paths: Iterable[Path]) -> dict[Path, list[Path]]:
    """Distinct frame paths grouped by image folder, sorted."""
    out: dict[Path, set[Path]] = {}
    for p in paths:
        out.setdefault(p.parent, set()).add(p)
    return {folder: sorted(v) for folder, v in sorted(out.items())}


@dataclass
class BuildReport:
    videos: int
    built: int  # videos (re)computed in this call
    frames_built: int
    stale_removed: bool
    bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


class _Frames(Dataset):
    def __init__(self, paths: Sequence[Path], crop_size: int) -> None:
        self.paths = list(paths)
        self.crops = CropBytes(crop_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.crops([read_rgb(self.paths[i])])[0]


def _remove_cache_files(root: Path, manifest: dict) -> None:
    """Remove what an earlier build wrote (its manifest's outputs, done entries, manifest)."""
    for name in manifest.get("outputs", []):
        for f in (root / name).glob("*.npy"):
            f.unlink()
        try:
            (root / name).rmdir()
        except OSError:
            pass
    for f in (root / "done").glob("*.json"):
        f.unlink()
    (root / "manifest.json").unlink(missing_ok=True)


@torch.no_grad()
def build_feature_cache(
    root: Path | str,
    model: AffectNet,
    paths: Iterable[Path],
    crop_size: int = 112,
    device: torch.device | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
) -> BuildReport:
    """Write (or complete, or rebuild when stale) the cache of ``paths`` under ``root``."""
    root = Path(root)
    device = device or next(model.parameters()).device
    plan = cache_plan(model)
    key = cache_key(model, plan, crop_size)
    manifest_path = root / "manifest.json"
    stale = False
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {"outputs": []}
        if old.get("key") != key:
            changed = sorted(k for k in key if (old.get("key") or {}).get(k) != key[k])
            log.warning("feature cache %s is stale (%s differ from the model's): removing and rebuilding it",
                        root, ", ".join(changed))
            _remove_cache_files(root, {"outputs": (old.get("key") or {}).get("outputs", [])})
            stale = True
    elif root.is_dir() and any(p for p in root.iterdir() if p.name not in ("done", *plan.outputs)):
        raise ValueError(f"feature cache {root}: the folder holds other files and no manifest.json; "
                         f"give an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    for name in plan.outputs:
        (root / name).mkdir(exist_ok=True)
    (root / "done").mkdir(exist_ok=True)
    write_manifest(root, key)

    videos = frames_by_video(paths)
    todo: list[tuple[Path, list[Path]]] = []
    for folder, frames in videos.items():
        done = root / "done" / f"{_video_key(folder)}.json"
        if done.is_file():
            names = set(json.loads(done.read_text())["frames"])
            if all(p.name in names for p in frames):
                continue
            frames = sorted(set(frames) | {folder / n for n in names})
            done.unlink()
        todo.append((folder, frames))
    flat = [p for _, frames in todo for p in frames]
    report = BuildReport(len(videos), len(todo), len(flat), stale, 0)
    if todo:
        trunk = FrozenTrunk(model, plan.outputs)
        was_training = model.training
        model.eval()
        pre = DevicePreprocess(model.cfg.input_size, model.cfg.mean, model.cfg.std).to(device).eval()
        # its own generator: building the cache leaves the global random stream (the
        # training's sampler and dropout) as it was
        loader = DataLoader(_Frames(flat, crop_size), batch_size=batch_size, num_workers=num_workers,
                            pin_memory=device.type == "cuda", generator=torch.Generator())
        video_iter = iter(todo)
        folder, frames = next(video_iter)
        maps = open_video_maps(root, plan, folder, len(frames), "w+")
        row = 0
        bar = tqdm(total=len(flat), desc="cache features", unit="frame", disable=not progress, leave=False)
        for crops in loader:
            outs = trunk(pre(crops.to(device, non_blocking=True)[None])[0])
            outs = [o.to("cpu", torch.float16).numpy() for o in outs]
            start = 0
            while start < len(crops):
                take = min(len(crops) - start, len(frames) - row)
                for mm, o in zip(maps, outs, strict=True):
                    mm[row:row + take] = o[start:start + take]
                row, start = row + take, start + take
                if row == len(frames):
                    finish_video(root, maps, folder, frames)
                    nxt = next(video_iter, None)
                    if nxt is None:
                        break
                    folder, frames = nxt
                    maps, row = open_video_maps(root, plan, folder, len(frames), "w+"), 0
            bar.update(len(crops))
        bar.close()
        model.train(was_training)
    report.bytes = sum(f.stat().st_size for name in plan.outputs for f in (root / name).glob("*.npy"))
    return report


def write_manifest(root: Path, key: dict) -> None:
    (root / "manifest.json").write_text(json.dumps({"key": key}, indent=2))


def open_video_maps(root: Path, plan: CachePlan, folder: Path, n: int, mode: str) -> list[np.memmap]:
    """The memory-mapped files of one video's ``n`` frames, one per stored output."""
    key = _video_key(folder)
    return [np.lib.format.open_memmap(root / name / f"{key}.npy", mode=mode, dtype=DTYPE, shape=(n, *shape))
            for name, shape in zip(plan.outputs, plan.shapes, strict=True)]


def finish_video(root: Path, maps: list[np.memmap], folder: Path, frames: list[Path]) -> None:
    """Flush a video's maps, then mark it done (atomically): only then is it ever read."""
    for mm in maps:
        mm.flush()
    done = root / "done" / f"{_video_key(folder)}.json"
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps({"folder": str(folder), "frames": [p.name for p in frames]}))
    os.replace(tmp, done)


class DiskFeatures:
    """The cache as a :class:`~abaw_ros.data.dataset.FeatureTable`: ``gather(paths)`` ->
    float16 ``(T, C, H, W)`` per stored output. Files are memory-mapped lazily in each
    process (DataLoader workers open their own maps)."""

    def __init__(self, root: Path | str, plan: CachePlan, paths: Iterable[Path]) -> None:
        self.root = Path(root)
        self.plan = plan
        self.index: dict[Path, tuple[str, int]] = {}
        for folder, frames in frames_by_video(paths).items():
            key = _video_key(folder)
            done = self.root / "done" / f"{key}.json"
            if not done.is_file():
                raise ValueError(f"feature cache {self.root}: video {folder} is not cached; run "
                                 f"abaw-affect cache-features with this config")
            row = {n: i for i, n in enumerate(json.loads(done.read_text())["frames"])}
            for p in frames:
                if p.name not in row:
                    raise ValueError(f"feature cache {self.root}: frame {p} is not cached")
                self.index[p] = (key, row[p.name])
        self._maps: dict[tuple[str, str], np.ndarray] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}  # memory maps are opened again in the receiving process
        return state

    def _map(self, output: str, key: str) -> np.ndarray:
        mm = self._maps.get((output, key))
        if mm is None:
            mm = np.load(self.root / output / f"{key}.npy", mmap_mode="r")
            self._maps[(output, key)] = mm
        return mm

    def gather(self, paths: Sequence[Path]) -> list[torch.Tensor]:
        where = [self.index[p] for p in paths]
        return [torch.from_numpy(np.stack([self._map(output, key)[row] for key, row in where]))
                for output in self.plan.outputs]


def open_feature_cache(root: Path | str, model: AffectNet, paths: Sequence[Path], crop_size: int) -> DiskFeatures:
    """The cache for ``paths``; a ValueError when it is missing, incomplete or stale."""
    root = Path(root)
    plan = cache_plan(model)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"feature cache {root}: no manifest.json; run abaw-affect cache-features first")
    if json.loads(manifest.read_text()).get("key") != cache_key(model, plan, crop_size):
        raise ValueError(f"feature cache {root} is stale (built for other frozen weights or preprocessing)")
    return DiskFeatures(root, plan, paths)


def training_feature_cache(root: Path | str, model: AffectNet, paths: Sequence[Path], crop_size: int,
                           ctx: DistContext, num_workers: int = 0) -> DiskFeatures:
    """Build what is missing or stale (the main process; the others wait), then open it."""
    if ctx.is_main:
        report = build_feature_cache(root, model, paths, crop_size, ctx.device, num_workers=num_workers)
        log.info("feature cache %s: %d videos, %d (re)built (%d frames)%s, %.2f GB", root, report.videos,
                 report.built, report.frames_built, ", stale cache removed" if report.stale_removed else "",
                 report.bytes / 1e9)
    barrier(ctx)
    return open_feature_cache(root, model, paths, crop_size)
