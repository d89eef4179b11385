"""What makes a resumed run continue exactly where the interrupted one was.

- The order of an epoch's training windows is a function of (seed, epoch) alone
  (:class:`EpochSampler`), and each window's augmentation is drawn from a generator seeded
  by (seed, epoch, window) (:class:`EpochItems`): a fresh DataLoader worker draws exactly
  what the lost one would have, so no worker state needs saving.
- The remaining generators (Python, NumPy, torch, CUDA: dropout, evaluation loaders) are
  saved in the recovery checkpoint (:func:`rng_state`) and restored (:func:`set_rng_state`).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from abaw_ros.data.dataset import ClipDataset


class EpochSampler(Sampler[int]):
    """The training order of one epoch as a function of (seed, epoch) alone, sharded over
    ranks as DistributedSampler does, so that a resumed run sees exactly the order the
    interrupted one would have; ``skip`` leaves out the samples a resumed epoch has done.

    It yields ``epoch * n + i`` for window ``i``: :class:`EpochItems` decodes the epoch, so
    each window's augmentation is seeded by (seed, epoch, i) even inside persistent
    DataLoader workers, and no worker's RNG stream has to be saved or replayed.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.per_rank = math.ceil(n / world_size)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        order += order[: self.per_rank * self.world_size - self.n]  # pad so every rank gets per_rank
        return iter([self.epoch * self.n + i for i in order[self.rank::self.world_size][self.skip:]])

    def __len__(self) -> int:
        return max(self.per_rank - self.skip, 0)


class EpochItems(Dataset):
    """Item ``epoch * n + i`` (from :class:`EpochSampler`): window ``i`` with its
    augmentation drawn from a stream seeded by (seed, epoch, i)."""

    def __init__(self, dataset: ClipDataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> dict:
        epoch, i = divmod(int(key), len(self.dataset))
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and hasattr(transform, "rng"):
            transform.rng = np.random.default_rng((self.seed, epoch, i))
        return self.dataset[i]


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) generator states, in types a weights-only load reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                   cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
