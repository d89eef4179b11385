"""How far one backend's outputs are from another's on the same face crops: feature-map
similarity after the encoder, and per-task output error and decision agreement after the
temporal head. Used to report what int8 (or fp16) costs against fp32."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from abaw_ros import tasks as task_registry

from .base import InferenceBackend


@dataclass(frozen=True)
class MapError:
    name: str
    cosine_mean: float  # per-crop cosine similarity of the flattened map
    cosine_min: float
    rel_l2: float  # ||candidate - reference|| / ||reference|| over all crops
    max_abs: float


@dataclass(frozen=True)
class TaskError:
    task: str
    max_abs: float
    mean_abs: float
    decision_agreement: float | None  # binary tasks: share of equal thresholded decisions


@dataclass(frozen=True)
class AccuracyReport:
    reference: str
    candidate: str
    n_crops: int
    n_windows: int
    maps: tuple[MapError, ...]
    tasks: tuple[TaskError, ...]

    @property
    def min_cosine(self) -> float:
        return min(m.cosine_min for m in self.maps)

    @property
    def max_output_error(self) -> float:
        return max(t.max_abs for t in self.tasks)

    def format(self) -> str:
        lines = [
            f"accuracy of {self.candidate} against {self.reference} "
            f"({self.n_crops} face crops, {self.n_windows} windows)",
            f"  {'feature map':<12} {'cos mean':>9} {'cos min':>9} {'rel L2':>9} {'max |d|':>10}",
        ]
        lines += [
            f"  {m.name:<12} {m.cosine_mean:9.5f} {m.cosine_min:9.5f} {m.rel_l2:9.5f} {m.max_abs:10.4g}"
            for m in self.maps
        ]
        lines.append(f"  {'task output':<12} {'max |d|':>9} {'mean |d|':>9} {'decisions':>9}")
        for t in self.tasks:
            agree = "-" if t.decision_agreement is None else f"{100 * t.decision_agreement:.1f}%"
            lines.append(f"  {t.task:<12} {t.max_abs:9.5f} {t.mean_abs:9.5f} {agree:>9}")
        return "\n".join(lines)


def _encode_all(backend: InferenceBackend, crops: np.ndarray, chunk: int) -> list[np.ndarray]:
    parts = [backend.encode(crops[i : i + chunk]) for i in range(0, len(crops), chunk)]
    return [np.concatenate(level) for level in zip(*parts, strict=True)]


def _windows(maps: list[np.ndarray], starts: list[int], t: int) -> list[np.ndarray]:
    return [np.stack([m[s : s + t] for s in starts]) for m in maps]


def _project_all(backend: InferenceBackend, maps: list[np.ndarray], chunk: int) -> list[np.ndarray]:
    parts = [backend.project([m[i : i + chunk] for m in maps]) for i in range(0, len(maps[0]), chunk)]
    return [np.concatenate(level) for level in zip(*parts, strict=True)]


def _tubelet_sums(projections: list[np.ndarray], starts: list[int], t: int) -> list[np.ndarray]:
    """Per level ``(B, T/pt, dim, h, w)``: tubelet g of the window starting at s sums slice k
    of frame s + g*pt + k (what the streaming ring buffer hands the head)."""
    out = []
    for proj in projections:
        pt = proj.shape[1]
        frames = np.asarray(starts)[:, None, None] + np.arange(t).reshape(t // pt, pt)[None]  # (B, T/pt, pt)
        out.append(proj[frames, np.arange(pt)].sum(axis=2))
    return out


def compare_backends(
    reference: InferenceBackend, candidate: InferenceBackend, crops: np.ndarray, chunk: int = 8
) -> AccuracyReport:
    """Run both backends on ``crops`` (preprocessed, ``(N, 3, S, S)``, N >= T): every
    crop through each encoder, then windows of T consecutive crops (stride T/2) through
    each backend's head on its own features, as the streaming node would (through the
    per-frame projections and the tubelet head when both backends stream tubelets)."""
    meta = reference.metadata
    t = meta.window_length
    if len(crops) < t:
        raise ValueError(f"{len(crops)} crops: need at least window_length={t} to form a window")
    ref_maps = _encode_all(reference, crops, chunk)
    cand_maps = _encode_all(candidate, crops, chunk)
    maps = []
    for name, r, c in zip(meta.feature_names, ref_maps, cand_maps, strict=True):
        rf, cf = r.reshape(len(r), -1).astype(np.float64), c.reshape(len(c), -1).astype(np.float64)
        cos = (rf * cf).sum(1) / np.maximum(np.linalg.norm(rf, axis=1) * np.linalg.norm(cf, axis=1), 1e-30)
        maps.append(MapError(
            name=name,
            cosine_mean=float(cos.mean()),
            cosine_min=float(cos.min()),
            rel_l2=float(np.linalg.norm(cf - rf) / max(np.linalg.norm(rf), 1e-30)),
            max_abs=float(np.abs(cf - rf).max()),
        ))
    starts = list(range(0, len(crops) - t + 1, max(1, t // 2)))
    # Judge the path the pipeline runs: per-frame projections summed per tubelet when both
    # backends stream them (a reduced-precision projection is then part of the check).
    streaming = reference.streams_tubelets and candidate.streams_tubelets
    if streaming:
        ref_proj, cand_proj = _project_all(reference, ref_maps, chunk), _project_all(candidate, cand_maps, chunk)
    ref_out, cand_out = [], []
    for i in range(0, len(starts), chunk):
        part = starts[i : i + chunk]
        if streaming:
            ref_out.append(reference.temporal_tubelets(_tubelet_sums(ref_proj, part, t)))
            cand_out.append(candidate.temporal_tubelets(_tubelet_sums(cand_proj, part, t)))
        else:
            ref_out.append(reference.temporal(_windows(ref_maps, part, t)))
            cand_out.append(candidate.temporal(_windows(cand_maps, part, t)))
    r_all, c_all = np.concatenate(ref_out), np.concatenate(cand_out)
    thresholds = {"au": np.asarray(meta.au_thresholds), "ah": np.asarray([meta.ah_threshold])}
    task_errors = []
    for task, sl in meta.output_slices.items():
        r, c = r_all[..., sl], c_all[..., sl]
        agreement = None
        if task_registry.TASKS[task].kind == "binary":
            agreement = float(((r >= thresholds[task]) == (c >= thresholds[task])).mean())
        task_errors.append(TaskError(task, float(np.abs(c - r).max()), float(np.abs(c - r).mean()), agreement))
    return AccuracyReport(reference.name + f" {reference.precision}", candidate.name + f" {candidate.precision}",
                          len(crops), len(starts), tuple(maps), tuple(task_errors))
