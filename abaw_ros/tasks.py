"""The one source of truth for the tasks: names, output order and slices, and what each
task does (activation, loss, official metric, invalid-label marker, threshold, message
fields, CSV columns, caption).

Every network output is a flat vector: the selected tasks' outputs concatenated in the
canonical order below (``TASK_ORDER``), whatever order a config lists them in. Model,
losses, metrics, runtime, messages and plots all take their slices from here, and every
per-task decision is a lookup on the task's :class:`Task` (no ``if task == ...`` chains).
The torch-needing parts are named here and resolved where torch lives: ``Task.loss`` is a
key of :data:`abaw_ros.training.losses.LOSSES`, ``Task.scorer`` a key of
:data:`abaw_ros.metrics.SCORERS`.

A new task is one :func:`register_task` call (and, for a new loss or metric family, one
entry in those tables); :func:`unregister_task` removes it again.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where it is used: the metadata schema reads tasks without it
    import numpy as np

AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26",
)
EMI_NAMES: tuple[str, ...] = (
    "Admiration", "Amusement", "Determination", "Empathic Pain", "Excitement", "Joy",
)
VA_NAMES: tuple[str, ...] = ("valence", "arousal")
AH_NAMES: tuple[str, ...] = ("hesitancy",)

ACTIVATIONS: dict[str, tuple[float, float]] = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
THRESHOLD_KINDS: tuple[str, ...] = ("none", "per_output", "single")
Caption = Callable[[Any, Any], str]  # (values array, flags) -> text


@dataclass(frozen=True)
class Task:
    """One prediction task and everything the package does per task.

    - ``activation``: raw output -> published value (``"tanh"`` [-1, 1], ``"sigmoid"`` [0, 1]);
    - ``loss``: the loss family (:data:`abaw_ros.training.losses.LOSSES`);
    - ``scorer`` / ``primary_metric``: the official metric family
      (:data:`abaw_ros.metrics.SCORERS`) and the key of its headline number;
    - ``unit``: what one sample of the official metric is (``"frame"`` or ``"video"``: one
      prediction per video, the frame mean);
    - ``invalid_label``: the marker an annotation file writes for "no label";
    - ``threshold``: ``"none"``, ``"per_output"`` (one threshold per output, e.g. AUs) or
      ``"single"`` (one for the task), defaulting to ``default_threshold``;
      ``threshold_field`` names it in the model metadata and checkpoints;
    - ``message_fields``: the ``FaceAffect`` fields carrying the outputs (one scalar field
      per output, or one array field); ``flag_field``: the thresholded flags' field, which
      is also the :class:`~abaw_ros.perception.pipeline.FaceResult` attribute;
    - ``csv_columns`` / ``flag_columns``: the prediction CSV's columns (default: the outputs);
    - ``caption``: the drawn caption line from ``(values, flags)``; ``caption_rank`` orders
      the lines (lower first).
    """

    name: str
    outputs: tuple[str, ...]
    activation: str  # "tanh" (range [-1, 1]) or "sigmoid" (range [0, 1])
    kind: str  # "regression" or "binary" (per output)
    metric: str
    description: str
    loss: str = "ccc"
    scorer: str = "ccc"
    primary_metric: str = ""
    unit: str = "frame"
    invalid_label: float = -1.0
    threshold: str = "none"
    default_threshold: float = 0.5
    threshold_field: str = ""
    message_fields: tuple[str, ...] = ()
    flag_field: str = ""
    csv_columns: tuple[str, ...] = ()
    flag_columns: tuple[str, ...] = ()
    caption: Caption | None = field(default=None, compare=False)
    caption_rank: int = 100

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"task {self.name!r}: activation {self.activation!r}, choose from {list(ACTIVATIONS)}")
        if self.threshold not in THRESHOLD_KINDS:
            raise ValueError(f"task {self.name!r}: threshold {self.threshold!r}, choose from {list(THRESHOLD_KINDS)}")
        if self.unit not in ("frame", "video"):
            raise ValueError(f"task {self.name!r}: unit {self.unit!r}, choose 'frame' or 'video'")
        if not self.outputs:
            raise ValueError(f"task {self.name!r}: no outputs")
        if not self.csv_columns:
            object.__setattr__(self, "csv_columns", self.outputs)
        if not self.primary_metric:
            object.__setattr__(self, "primary_metric", f"{self.name}_{self.scorer}_mean")

    @property
    def size(self) -> int:
        return len(self.outputs)

    @property
    def value_range(self) -> tuple[float, float]:
        """The published values' range (the activation's)."""
        return ACTIVATIONS[self.activation]

    def activate(self, raw: np.ndarray) -> np.ndarray:
        """Raw outputs -> published values (numpy; torch: :func:`abaw_ros.models.activate`)."""
        import numpy as np

        x = np.asarray(raw, dtype=np.float32)
        return np.tanh(x) if self.activation == "tanh" else 1.0 / (1.0 + np.exp(-x))

    def default_thresholds(self) -> list[float] | float | None:
        """The thresholds an untuned model uses (None for a task without thresholds)."""
        if self.threshold == "per_output":
            return [self.default_threshold] * self.size
        return self.default_threshold if self.threshold == "single" else None

    def flags(self, values: np.ndarray, thresholds: Any = None) -> np.ndarray | bool | None:
        """The thresholded flags of ``values`` (None for a task without thresholds)."""
        import numpy as np

        if self.threshold == "none":
            return None
        th = self.default_thresholds() if thresholds is None else thresholds
        on = np.asarray(values, dtype=np.float32).reshape(-1) >= np.asarray(th, dtype=np.float32)
        return on if self.threshold == "per_output" else bool(on[0])


def _va_caption(values: np.ndarray, _flags: Any) -> str:
    return f"V {float(values[0]):+.2f} A {float(values[1]):+.2f}"


def _ah_caption(values: np.ndarray, flag: Any) -> str:
    return f"hesitancy {float(values[0]):.2f}" + (" HESITANT" if flag else "")


def _au_caption(_values: np.ndarray, flags: Any) -> str:
    import numpy as np

    active = [name for name, on in zip(AU_NAMES, np.asarray(flags, dtype=bool), strict=True) if on]
    return "AU " + (" ".join(a.removeprefix("AU") for a in active) if active else "-")


BUILTIN_TASKS: tuple[Task, ...] = (
    Task("va", VA_NAMES, "tanh", "regression", "mean CCC of valence and arousal", "valence/arousal, Aff-Wild2",
         loss="ccc", scorer="ccc", primary_metric="va_ccc_mean", invalid_label=-5.0,
         message_fields=("valence", "arousal"), caption=_va_caption, caption_rank=0),
    Task("au", AU_NAMES, "sigmoid", "binary", "mean F1 over the 12 AUs at threshold 0.5",
         "12 facial action units, Aff-Wild2", loss="multilabel", scorer="f1", primary_metric="au_f1_mean",
         invalid_label=-1.0, threshold="per_output", threshold_field="au_thresholds",
         message_fields=("au_probability",), flag_field="au_active",
         flag_columns=tuple(f"{name}_active" for name in AU_NAMES), caption=_au_caption, caption_rank=2),
    Task("emi", EMI_NAMES, "sigmoid", "regression", "mean Pearson r over the 6 dimensions",
         "emotional mimicry intensity, HUME-Vidmimic2", loss="mse_pearson", scorer="pearson",
         primary_metric="emi_pearson_mean", unit="video", invalid_label=-1.0,
         message_fields=("mimicry_intensity",)),
    Task("ah", AH_NAMES, "sigmoid", "binary", "F1 (macro and weighted)", "ambivalence/hesitancy, BAH",
         loss="bce", scorer="f1_classes", primary_metric="ah_f1_macro", invalid_label=-1.0, threshold="single",
         threshold_field="ah_threshold", message_fields=("hesitancy_probability",), flag_field="hesitant",
         flag_columns=("hesitant",), caption=_ah_caption, caption_rank=1),
)
BUILTIN_ORDER: tuple[str, ...] = tuple(t.name for t in BUILTIN_TASKS)

# The registry. TASKS and TASK_ORDER are changed in place by (un)register_task, so every
# module holding them sees the same tasks.
TASKS: dict[str, Task] = {t.name: t for t in BUILTIN_TASKS}
TASK_ORDER: tuple[str, ...] = BUILTIN_ORDER
ALL_TASKS: tuple[str, ...] = BUILTIN_ORDER  # the default model's tasks: the four built-in ones
_ORDER: list[str] = list(BUILTIN_ORDER)


def register_task(task: Task) -> Task:
    """Add ``task`` after the registered ones (its outputs come last in the flat vector).
    Its ``loss`` and ``scorer`` must name entries of the loss and metric tables (checked
    where those live, when used)."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered already: choose another name")
    if task.name != task.name.strip().lower() or not task.name or "," in task.name or "/" in task.name:
        raise ValueError(f"task name {task.name!r}: use lower case without ',' or '/'")
    TASKS[task.name] = task
    _ORDER.append(task.name)
    return task


def unregister_task(name: str) -> None:
    """Remove a task added by :func:`register_task` (the built-in tasks stay)."""
    if name in BUILTIN_ORDER:
        raise ValueError(f"task {name!r} is built in and cannot be removed")
    if name not in TASKS:
        raise ValueError(f"task {name!r} is not registered")
    del TASKS[name]
    _ORDER.remove(name)


def task_order() -> tuple[str, ...]:
    """Every registered task in canonical order (built-in first, then as registered)."""
    return tuple(_ORDER)


def normalize_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """Validate task names and return them in canonical order, without duplicates."""
    wanted = [t.strip().lower() for t in tasks]
    unknown = [t for t in wanted if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}: choose from {list(_ORDER)}")
    if not wanted:
        raise ValueError(f"no task selected: choose at least one of {list(_ORDER)}")
    return tuple(t for t in _ORDER if t in wanted)


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


def csv_columns(tasks: Sequence[str] | None = None) -> tuple[str, ...]:
    """The per-task columns of a prediction CSV: every task's value columns, then every
    task's flag columns (all registered tasks when ``tasks`` is None)."""
    names = task_order() if tasks is None else normalize_tasks(tasks)
    return (tuple(c for t in names for c in TASKS[t].csv_columns)
            + tuple(c for t in names for c in TASKS[t].flag_columns))


def csv_cells(task: Task, values: np.ndarray | None, flags: Any, number: Callable[[float], str]) -> dict[str, str]:
    """One task's CSV cells; all empty when the model does not estimate the task."""
    import numpy as np

    cells = {c: "" for c in task.csv_columns + task.flag_columns}
    if values is None:
        return cells
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    cells.update({c: number(float(v)) for c, v in zip(task.csv_columns, flat, strict=True)})
    if task.flag_columns:
        on = np.asarray(flags, dtype=bool).reshape(-1)
        cells.update({c: str(int(bool(f))) for c, f in zip(task.flag_columns, on, strict=True)})
    return cells


def message_values(task: Task, values: np.ndarray | None, flags: Any) -> dict[str, Any]:
    """One task's ``FaceAffect`` fields: one float per output (scalar fields) or one
    float32 array, NaN where the model does not estimate the task; flags false there."""
    import numpy as np

    if not task.message_fields:
        return {}
    if values is None:
        flat = np.full(task.size, np.nan, dtype=np.float32)
    else:
        flat = np.asarray(values, dtype=np.float32).reshape(-1)
        if flat.size != task.size:
            raise ValueError(f"task {task.name!r}: expected {task.size} outputs, got {flat.size}")
    if len(task.message_fields) == task.size:
        out: dict[str, Any] = {f: float(v) for f, v in zip(task.message_fields, flat, strict=True)}
    else:
        out = {task.message_fields[0]: flat}
    if task.flag_field:
        if task.threshold == "per_output":
            on = np.zeros(task.size, dtype=bool) if flags is None else np.asarray(flags, dtype=bool).reshape(-1)
            if on.size != task.size:
                raise ValueError(f"{task.flag_field}: expected {task.size} flags, got {on.size}")
            out[task.flag_field] = on
        else:
            out[task.flag_field] = bool(flags)
    return out


def values_from_message(task: Task, fields: Any) -> tuple[np.ndarray, Any] | None:
    """The inverse of :func:`message_values`: ``(values (size,) float32, flags)`` of one
    task from a ``FaceAffect`` message's fields (attributes, or a mapping), None for a task
    the message does not carry."""
    import numpy as np

    if not task.message_fields:
        return None
    get = fields.get if isinstance(fields, dict) else (lambda name: getattr(fields, name))
    if len(task.message_fields) == task.size:
        values = np.array([float(get(f)) for f in task.message_fields], dtype=np.float32)
    else:
        values = np.asarray(get(task.message_fields[0]), dtype=np.float32).reshape(-1)
    if not task.flag_field:
        return values, None
    flags = get(task.flag_field)
    return values, (np.asarray(flags, dtype=bool).reshape(-1) if task.threshold == "per_output" else bool(flags))
