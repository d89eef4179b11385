"""Encode every distinct frame once with a frozen encoder (``cache_features``).

With ``freeze="all"`` and no augmentation the encoder output of a frame never changes, so
the temporal head can train on stored maps: epochs then cost the head only. Maps are kept
as float16 on the CPU. Under DDP every rank encodes all frames (simple, no exchange of
large tensors).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from abaw_ros.data.dataset import FrameFeatures
from abaw_ros.data.transforms import ClipTransform, read_rgb


@torch.no_grad()
def encode_frames(
    encoder: torch.nn.Module,
    paths: Iterable[Path],
    transform: ClipTransform,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = True,
) -> FrameFeatures:
    unique = list(dict.fromkeys(paths))
    was_training = encoder.training
    encoder.eval()
    levels: list[list[torch.Tensor]] = []
    for start in tqdm(range(0, len(unique), batch_size), desc="encode frames", unit="batch",
                      disable=not progress, leave=False):
        chunk = unique[start:start + batch_size]
        crops = transform([read_rgb(p) for p in chunk]).to(device)
        maps = encoder(crops)
        if not levels:
            levels = [[] for _ in maps]
        for store, m in zip(levels, maps, strict=True):
            store.append(m.to("cpu", torch.float16))
    encoder.train(was_training)
    return FrameFeatures(index={p: i for i, p in enumerate(unique)}, levels=[torch.cat(s) for s in levels])
