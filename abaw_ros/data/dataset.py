"""Windows of one or several tasks' videos as a PyTorch data set.

Each item is a dict:

- ``inputs``: ``(T, 3, S, S)`` float32 clip, or (with a :class:`FrameFeatures` table) the
  list of per-level encoder maps ``[(T, C, H, W), ...]``;
- ``target``: ``(T, D)`` float32 in the flat output layout of ``tasks`` (zeros where the
  row's task is another one);
- ``mask``: ``(T, len(tasks))`` bool, True where the row has a valid label of that task;
- ``video``, ``rows``, ``write``: where the window's predictions go (see ``windows``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from abaw_ros.data.records import VideoRecord
from abaw_ros.data.transforms import ClipTransform, CropBytes, read_rgb
from abaw_ros.data.windows import Window, evaluation_windows, reference_scored_rows, training_windows
from abaw_ros.tasks import normalize_tasks, output_size, output_slices


class FeatureTable(Protocol):
    """Stored per-frame network inputs (encoder maps, or the frozen part's output)."""

    def gather(self, paths: Sequence[Path]) -> list[torch.Tensor]:
        """One ``(T, C, H, W)`` tensor per stored output, the frames ``paths`` in order."""


@dataclass
class FrameFeatures:
    """Encoder maps computed once per distinct image: ``levels[l][index[path]]``."""

    index: dict[Path, int]
    levels: list[torch.Tensor]

    def gather(self, paths: Sequence[Path]) -> list[torch.Tensor]:
        idx = torch.as_tensor([self.index[p] for p in paths])
        return [lvl[idx].float() for lvl in self.levels]


class ClipDataset(Dataset):
    def __init__(
        self,
        records: Sequence[VideoRecord],
        tasks: Sequence[str],
        window_length: int,
        train: bool,
        transform: ClipTransform | CropBytes | None = None,
        eval_stride: int | None = None,
        features: FeatureTable | None = None,
        score_padding: bool = False,
    ) -> None:
        self.records = list(records)
        self.tasks = normalize_tasks(tasks)
        unknown = {r.task for r in self.records} - set(self.tasks)
        if unknown:
            raise ValueError(f"records of task(s) {sorted(unknown)} but the model has tasks {list(self.tasks)}")
        if transform is None and features is None:
            raise ValueError("give a ClipTransform (images) or FrameFeatures (cached encoder maps)")
        if score_padding and not train and eval_stride not in (None, window_length):
            raise ValueError(f"eval_stride={eval_stride}: scoring the padding copies (protocol: reference) needs "
                             f"non-overlapping windows, stride {window_length}")
        self.window_length = window_length
        self.score_padding = score_padding
        self.transform = transform
        self.features = features
        self.slices = output_slices(self.tasks)
        self.size = output_size(self.tasks)
        lengths = [len(r) for r in self.records]
        self.windows: list[Window] = (
            training_windows(lengths, window_length) if train
            else evaluation_windows(lengths, window_length, eval_stride)
        )

    def scored_rows(self, i: int) -> np.ndarray:
        """Rows of record ``i`` that the metrics count, in order: its valid rows, or (with
        ``score_padding``, the reference protocol) every row of its windows including the
        last window's padding copies."""
        rec = self.records[i]
        if self.score_padding:
            rows = reference_scored_rows(len(rec), self.window_length)
            return rows[rec.valid[rows]]
        return np.flatnonzero(rec.valid)

    def scored_frames(self) -> list[tuple[str, int]]:
        """``(video, frame number)`` of every scored row, in scoring order."""
        return [(rec.name, int(rec.frame_numbers[r])) for i, rec in enumerate(self.records)
                for r in self.scored_rows(i)]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        w = self.windows[i]
        rec = self.records[w.video]
        paths = [rec.frames[r] for r in w.rows]
        if self.features is not None:
            inputs: torch.Tensor | list[torch.Tensor] = self.features.gather(paths)
        else:
            assert self.transform is not None
            decoded: dict[Path, np.ndarray] = {}  # padded windows repeat a path
            for p in paths:
                if p not in decoded:
                    decoded[p] = read_rgb(p)
            inputs = self.transform([decoded[p] for p in paths])
        target = np.zeros((len(w.rows), self.size), dtype=np.float32)
        target[:, self.slices[rec.task]] = rec.labels[w.rows]
        mask = np.zeros((len(w.rows), len(self.tasks)), dtype=bool)
        mask[:, self.tasks.index(rec.task)] = rec.valid[w.rows]
        return {
            "inputs": inputs,
            "target": torch.from_numpy(target),
            "mask": torch.from_numpy(mask),
            "video": w.video,
            "rows": torch.from_numpy(w.rows.astype(np.int64)),
            "write": torch.from_numpy(w.write),
        }
