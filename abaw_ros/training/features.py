"""Encode every distinct frame once with a frozen encoder (``cache_features``).

With ``freeze="all"`` and no augmentation the encoder output of a frame never changes, so
the temporal head can train on stored maps: epochs then cost the head only. Maps are kept
as float16 on the CPU. Under DDP every rank encodes all frames (simple, no exchange of
large tensors).

The maps of the last two encodings are kept for the process (``reuse=True``): a second run
with the same encoder weights, preprocessing and frames (another seed, another head
setting) skips the encoding. The key hashes every encoder tensor, so changed weights are
never served stale maps.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from abaw_ros.data.dataset import FrameFeatures
from abaw_ros.data.transforms import ClipTransform, read_rgb

_LAST: dict[str, FrameFeatures] = {}  # the latest encodings, oldest first
_KEEP = 2


def _cache_key(encoder: torch.nn.Module, unique: list[Path], transform: ClipTransform) -> str:
    h = hashlib.sha1()
    for name, tensor in encoder.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr((transform.input_size, transform.mean.tolist(), transform.std.tolist())).encode())
    for p in unique:
        stat = p.stat()
        h.update(f"{p}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()


@torch.no_grad()
def encode_frames(
    encoder: torch.nn.Module,
    paths: Iterable[Path],
    transform: ClipTransform,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = True,
    reuse: bool = True,
) -> FrameFeatures:
    unique = list(dict.fromkeys(paths))
    key = _cache_key(encoder, unique, transform) if reuse else ""
    if reuse and key in _LAST:
        return _LAST[key]
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
    features = FrameFeatures(index={p: i for i, p in enumerate(unique)}, levels=[torch.cat(s) for s in levels])
    if reuse:
        while len(_LAST) >= _KEEP:
            _LAST.pop(next(iter(_LAST)))
        _LAST[key] = features
    return features
