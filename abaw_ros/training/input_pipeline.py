"""What the DataLoader workers hand the training step, and what it costs in shared memory.

``train.preprocess: device`` (default): workers decode and stack uint8 crops at their
stored size (``train.crop_size``, 112 for Aff-Wild2); resize, augmentation and
normalization run batched on the training device (:mod:`device_preprocess`).
``train.preprocess: worker``: the workers do all of it in NumPy/OpenCV and hand over
float32 clips at ``input_size`` (16x the bytes, about 10x the worker CPU).

Worker batches travel to the main process through shared memory (``/dev/shm`` on Linux):
every worker keeps up to ``prefetch_factor`` finished batches there. Docker's default
``/dev/shm`` is 64 MB (``docker run --shm-size``), and running out kills a worker with a
bus error that names nothing; the need is therefore computed and checked at start.
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from abaw_ros.data.transforms import AugmentConfig, ClipTransform, CropBytes
from abaw_ros.training.config import TrainConfig
from abaw_ros.training.device_preprocess import DevicePreprocess
from abaw_ros.training.evaluation import to_device

log = logging.getLogger(__name__)

SHM_PATH = Path("/dev/shm")
MB = 1e6


def batch_bytes(cfg: TrainConfig, feature_frame_bytes: int | None = None) -> int:
    """Bytes of the inputs of one training batch as the workers hand it over."""
    mc = cfg.model
    frames = cfg.batch_size * mc.window_length
    if feature_frame_bytes is not None:
        return frames * feature_frame_bytes
    if cfg.preprocess == "device":
        return frames * cfg.crop_size * cfg.crop_size * 3
    return frames * 3 * mc.input_size * mc.input_size * 4


def shared_memory_need(batch: int, num_workers: int, prefetch_factor: int) -> int:
    """Bytes of batches the workers keep in shared memory at most (0 without workers)."""
    return batch * num_workers * prefetch_factor if num_workers > 0 else 0


def check_shared_memory(need: int, path: Path = SHM_PATH, what: str = "the DataLoader workers") -> None:
    """Raise a ValueError naming the need and the free space when ``path`` cannot hold ``need``
    bytes; nothing to check where ``path`` does not exist (no POSIX shared memory there)."""
    if need <= 0 or not path.is_dir():
        return
    free = shutil.disk_usage(path).free
    if need > free:
        raise ValueError(
            f"{what} need {need / MB:.0f} MB of shared memory but {path} has {free / MB:.0f} MB free: "
            f"give the container more (docker run --shm-size={2 * need / 1e9:.1f}g), or lower "
            f"train.num_workers / train.prefetch_factor / train.batch_size, or use train.preprocess=device "
            f"(uint8 crops, 1/16 of the bytes)")


def log_shared_memory(cfg: TrainConfig, feature_frame_bytes: int | None = None) -> int:
    """Log one batch's bytes and the shared-memory need, check it, return the need."""
    batch = batch_bytes(cfg, feature_frame_bytes)
    need = shared_memory_need(batch, cfg.num_workers, cfg.prefetch_factor)
    free = shutil.disk_usage(SHM_PATH).free if SHM_PATH.is_dir() else None
    log.info("input: %s, %.1f MB per batch, %d workers x prefetch %d: %.0f MB of shared memory%s",
             "cached features" if feature_frame_bytes is not None else f"preprocess on the {cfg.preprocess}",
             batch / MB, cfg.num_workers, cfg.prefetch_factor, need / MB,
             f" ({free / MB:.0f} MB free in {SHM_PATH})" if free is not None else "")
    check_shared_memory(need)
    return need


def worker_transforms(cfg: TrainConfig, seed: int) -> tuple[ClipTransform | CropBytes, ClipTransform | CropBytes]:
    """(training, evaluation) transforms the workers run."""
    mc = cfg.model
    if cfg.preprocess == "device":
        crops = CropBytes(cfg.crop_size)
        return crops, crops
    augment = AugmentConfig(per_frame=cfg.per_frame_augment) if cfg.augment else None
    return (ClipTransform(mc.input_size, mc.mean, mc.std, augment, seed=seed),
            ClipTransform(mc.input_size, mc.mean, mc.std))


def device_preprocess(cfg: TrainConfig, seed: int, device: torch.device) -> DevicePreprocess | None:
    """The preprocessing module of the training step (None when the workers do it)."""
    if cfg.preprocess != "device":
        return None
    mc = cfg.model
    augment = AugmentConfig(per_frame=cfg.per_frame_augment) if cfg.augment else None
    return DevicePreprocess(mc.input_size, mc.mean, mc.std, augment, seed=seed).to(device)


def step_inputs(inputs, device: torch.device, pre: DevicePreprocess | None, train: bool):
    """A batch's inputs on the device (non-blocking from pinned memory), preprocessed."""
    x = to_device(inputs, device)
    if pre is None:
        return x
    pre.train(train)
    return pre(x)


def with_preprocess(forward: Callable, pre: DevicePreprocess | None, device: torch.device) -> Callable:
    """``forward`` for evaluation: preprocessing without augmentation in front of it."""
    if pre is None:
        return forward
    return lambda x: forward(step_inputs(x, device, pre, train=False))
