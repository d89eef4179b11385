"""The one source of truth for task names, output order and output slices.

Every network output is a flat vector: the selected tasks' outputs concatenated in the
canonical order below (``TASK_ORDER``), whatever order a config lists them in. Model,
losses, metrics, runtime, messages and plots all take their slices from here.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26",
)
EMI_NAMES: tuple[str, ...] = (
    "Admiration", "Amusement", "Determination", "Empathic Pain", "Excitement", "Joy",
)
VA_NAMES: tuple[str, ...] = ("valence", "arousal")
AH_NAMES: tuple[str, ...] = ("hesitancy",)


@dataclass(frozen=True)
class Task:
    """One prediction task: its outputs, the activation that maps raw outputs to the
    published range, and the official metric."""

    name: str
    outputs: tuple[str, ...]
    activation: str  # "tanh" (range [-1, 1]) or "sigmoid" (range [0, 1])
    kind: str  # "regression" or "binary" (per output)
    metric: str
    description: str

    @property
    def size(self) -> int:
        return len(self.outputs)


TASKS: dict[str, Task] = {
    "va": Task("va", VA_NAMES, "tanh", "regression", "mean CCC of valence and arousal",
               "valence/arousal, Aff-Wild2"),
    "au": Task("au", AU_NAMES, "sigmoid", "binary", "mean F1 over the 12 AUs at threshold 0.5",
               "12 facial action units, Aff-Wild2"),
    "emi": Task("emi", EMI_NAMES, "sigmoid", "regression", "mean Pearson r over the 6 dimensions",
                "emotional mimicry intensity, HUME-Vidmimic2"),
    "ah": Task("ah", AH_NAMES, "sigmoid", "binary", "F1 (macro and weighted)",
               "ambivalence/hesitancy, BAH"),
}
TASK_ORDER: tuple[str, ...] = ("va", "au", "emi", "ah")
ALL_TASKS: tuple[str, ...] = TASK_ORDER


def normalize_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """Validate task names and return them in canonical order, without duplicates."""
    wanted = [t.strip().lower() for t in tasks]
    unknown = [t for t in wanted if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}: choose from {list(TASK_ORDER)}")
    if not wanted:
        raise ValueError(f"no task selected: choose at least one of {list(TASK_ORDER)}")
    return tuple(t for t in TASK_ORDER if t in wanted)


def output_slices(tasks: Sequence[str]) -> dict[str, slice]:
    """Slice of each selected task in the flat output vector."""
    slices: dict[str, slice] = {}
    start = 0
    for name in normalize_tasks(tasks):
        slices[name] = slice(start, start + TASKS[name].size)
        start += TASKS[name].size
    return slices


def output_size(tasks: Sequence[str]) -> int:
    return sum(TASKS[t].size for t in normalize_tasks(tasks))


def output_names(tasks: Sequence[str]) -> list[str]:
    """Names of every column of the flat output vector, e.g. ``au/AU12``."""
    return [f"{t}/{o}" for t in normalize_tasks(tasks) for o in TASKS[t].outputs]


def split_outputs(flat, tasks: Sequence[str]) -> dict:
    """Split an array or tensor whose last axis is the flat output into per-task views."""
    return {name: flat[..., s] for name, s in output_slices(tasks).items()}
