"""What a run records as it goes, in its run directory, for reading while it trains:

- ``steps.csv``: one row per optimizer step: epoch, global step, the step's loss and each
  task's part, learning rate, data time (waiting for the batch), step time (forward,
  backward, optimizer), samples per second (all processes). A slow input pipeline shows
  at once as data time above step time.
- ``epochs.csv``: one row per epoch: training loss, learning rate, and (at evaluation
  epochs) the validation score and every metric, as in ``metrics.json``'s history.
- TensorBoard event files under ``tensorboard/`` when the ``tensorboard`` package is
  installed (``pip install tensorboard``); the CSV files do not need it.

A resumed run appends to ``steps.csv`` after dropping the rows of steps it is about to
repeat (those after the checkpoint it resumes from).
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abaw_ros.outputs import write_bytes

log = logging.getLogger(__name__)

STEPS_FILE = "steps.csv"
EPOCHS_FILE = "epochs.csv"
STEP_COLUMNS = ("epoch", "step", "loss", "lr", "data_time_s", "step_time_s", "samples_per_s")


def step_columns(tasks: Sequence[str]) -> list[str]:
    return [*STEP_COLUMNS[:3], *(f"loss_{t}" for t in tasks), *STEP_COLUMNS[3:]]


def flatten_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """One ``metrics.json`` history entry as flat ``name: number`` columns."""
    row: dict[str, Any] = {"epoch": entry["epoch"] + 1, "train_loss": entry.get("train_loss"), "lr": entry.get("lr")}
    val = entry.get("val") or {}
    if val:
        row["val_score"] = val.get("score")
        for task, metrics in (val.get("tasks") or {}).items():
            for name, value in metrics.items():
                row[f"val_{name}" if name.startswith(task) else f"val_{task}_{name}"] = value
    for metrics in (entry.get("val_frames") or {}).get("tasks", {}).values():
        for metric, v in metrics.items():
            row[f"frames_{metric}"] = v
    return row


class RunLog:
    def __init__(self, out_dir: Path, tasks: Sequence[str], resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.columns = step_columns(tasks)
        self.steps_path = self.out_dir / STEPS_FILE
        kept: list[list[str]] = []
        if resume_step is not None and self.steps_path.is_file():
            with self.steps_path.open(newline="") as f:
                rows = list(csv.reader(f))
            if rows and rows[0] == self.columns:
                kept = [r for r in rows[1:] if r and int(r[1]) <= resume_step]
        self._file = self.steps_path.open("w", newline="", buffering=1)
        self._csv = csv.writer(self._file)
        self._csv.writerow(self.columns)
        self._csv.writerows(kept)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                log.debug("tensorboard is not installed: steps.csv and epochs.csv only")
            else:
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=resume_step)

    def step(self, epoch: int, step: int, loss: float, parts: dict[str, float], lr: float, data_time: float,
             step_time: float, samples: int) -> None:
        per_s = samples / max(data_time + step_time, 1e-9)
        values = {"epoch": epoch + 1, "step": step, "loss": loss, "lr": lr, "data_time_s": data_time,
                  "step_time_s": step_time, "samples_per_s": per_s,
                  **{f"loss_{t}": v for t, v in parts.items()}}
        self._csv.writerow([_fmt(values.get(c)) for c in self.columns])
        if self._tb is not None:
            for name in ("loss", "lr", "data_time_s", "step_time_s", "samples_per_s"):
                self._tb.add_scalar(f"train/{name}", values[name], step)
            for task, v in parts.items():
                self._tb.add_scalar(f"train/loss_{task}", v, step)

    def epochs(self, history: list[dict[str, Any]], step: int) -> None:
        """Rewrite ``epochs.csv`` from the whole history (columns: the union, in order)."""
        rows = [flatten_entry(e) for e in history]
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(columns)
        writer.writerows([[_fmt(row.get(c)) for c in columns] for row in rows])
        write_bytes(self.out_dir / EPOCHS_FILE, table.getvalue().encode("utf-8"), EPOCHS_FILE)
        if self._tb is not None and rows:
            for name, value in rows[-1].items():
                if name != "epoch" and isinstance(value, int | float):
                    self._tb.add_scalar(f"epoch/{name}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
