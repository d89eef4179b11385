"""How far one backend's outputs are from another's on the same face crops, and the
precision gate every reduced-precision build passes before it is used.

The report: feature-map similarity after the encoder, and per-task output error and
decision agreement after the temporal head (:func:`compare_backends` ->
:class:`AccuracyReport`, the table ``build-engine`` and ``bench`` print).

The gate (public API, for any code that decides whether a reduced precision may run):

>>> tolerances = Tolerances()            # decisions >= 90 % equal, VA |diff| <= 0.05
>>> crops = precision_check_crops(metadata, calibration)   # sample faces + the user's crops
>>> report = precision_report(candidate, fp32_reference, crops)
>>> result = check_precision(report, tolerances)
>>> result.passed, result.failures, result.summary()       # GateResult: verdict, misses, one line

- :class:`Tolerances` -- ``decision_agreement`` (binary tasks AU/AH, share of thresholded
  decisions equal to fp32's, at least; 0.90) and ``va_max_abs`` (largest |VA - fp32 VA|, at
  most; 0.05).
- :func:`check_precision` ``(report, tolerances) -> GateResult`` -- pure; tasks the model
  lacks are not judged.
- :func:`precision_report` ``(candidate, reference, crops, chunk=8) -> AccuracyReport`` --
  ``candidate`` against an fp32 ``reference`` (ONNX Runtime fp32 on CPU is what the backends
  use).
- :func:`precision_check_crops` ``(metadata, calibration=None) -> (N, 3, S, S)`` -- 48 real
  faces from :mod:`abaw_ros.runtime.samples` plus up to 32 of ``calibration``.
- :func:`enforce_precision` -- what the backends run after a build: reuses the verdict a
  cache entry carries, or runs the check, records it in the entries' key files, and raises
  :class:`PrecisionCheckError` (a ValueError, one line; ``.result`` holds the report) on a
  refusal unless ``accept`` (``BackendOptions.accept_precision``), which is recorded and
  warned about at every start.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from abaw_ros import tasks as task_registry

from .base import InferenceBackend, ModelMetadata
from .engine_cache import CachedEngine, EngineCache

LOG = logging.getLogger(__name__)


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
    head_paths: tuple[str, str] = ("", "")  # reference's, candidate's (see head_path)

    @property
    def min_cosine(self) -> float:
        return min(m.cosine_min for m in self.maps)

    @property
    def max_output_error(self) -> float:
        return max(t.max_abs for t in self.tasks)

    def _paths(self) -> str:
        ref, cand = self.head_paths
        if not ref:
            return ""
        return f"; head on {cand}" if ref == cand else f"; head on {cand} ({ref} for the reference)"

    def format(self) -> str:
        lines = [
            f"accuracy of {self.candidate} against {self.reference} "
            f"({self.n_crops} face crops, {self.n_windows} windows{self._paths()})",
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


def tubelet_sums(projections: list[np.ndarray], starts: list[int], t: int) -> list[np.ndarray]:
    """Per level ``(B, T/pt, dim, h, w)``: tubelet g of the window starting at s sums slice k
    of frame s + g*pt + k (what the streaming ring buffer hands the head)."""
    out = []
    for proj in projections:
        pt = proj.shape[1]
        frames = np.asarray(starts)[:, None, None] + np.arange(t).reshape(t // pt, pt)[None]  # (B, T/pt, pt)
        out.append(proj[frames, np.arange(pt)].sum(axis=2))
    return out


def head_path(backend: InferenceBackend) -> str:
    """The temporal-head path the pipeline runs on ``backend``: ``"tubelets"`` (per-frame
    projections summed per tubelet) where it streams them, ``"windows"`` (the fused head on
    whole windows of feature maps) otherwise."""
    return "tubelets" if backend.streams_tubelets else "windows"


def _head_outputs(backend: InferenceBackend, maps: list[np.ndarray], starts: list[int], t: int,
                  chunk: int) -> np.ndarray:
    """The head's outputs for the windows of T frames starting at ``starts``, through
    ``backend``'s own head path (so a reduced-precision projection is part of the check)."""
    streaming = head_path(backend) == "tubelets"
    projections = _project_all(backend, maps, chunk) if streaming else None
    out = []
    for i in range(0, len(starts), chunk):
        part = starts[i : i + chunk]
        if projections is not None:
            out.append(backend.temporal_tubelets(tubelet_sums(projections, part, t)))
        else:
            out.append(backend.temporal(_windows(maps, part, t)))
    return np.concatenate(out)


def compare_backends(
    reference: InferenceBackend, candidate: InferenceBackend, crops: np.ndarray, chunk: int = 8
) -> AccuracyReport:
    """Run both backends on ``crops`` (preprocessed, ``(N, 3, S, S)``, N >= T): every
    crop through each encoder, then windows of T consecutive crops (stride T/2) through
    each backend's head on its own features, on the path the pipeline runs with that
    backend (:func:`head_path`: per-frame projections and the tubelet head where it
    streams them, whole windows otherwise)."""
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
    r_all = _head_outputs(reference, ref_maps, starts, t, chunk)
    c_all = _head_outputs(candidate, cand_maps, starts, t, chunk)
    thresholds = {"au": np.asarray(meta.au_thresholds), "ah": np.asarray([meta.ah_threshold])}
    task_errors = []
    for task, sl in meta.output_slices.items():
        r, c = r_all[..., sl], c_all[..., sl]
        agreement = None
        if task_registry.TASKS[task].kind == "binary":
            agreement = float(((r >= thresholds[task]) == (c >= thresholds[task])).mean())
        task_errors.append(TaskError(task, float(np.abs(c - r).max()), float(np.abs(c - r).mean()), agreement))
    return AccuracyReport(reference.name + f" {reference.precision}", candidate.name + f" {candidate.precision}",
                          len(crops), len(starts), tuple(maps), tuple(task_errors),
                          (head_path(reference), head_path(candidate)))


# -- the precision gate (see the module docstring) ---------------------------------------


@dataclass(frozen=True)
class Tolerances:
    """How close a reduced-precision build must stay to fp32 (docs/RUNTIME.md)."""

    decision_agreement: float = 0.90  # binary tasks (AU, AH): share of equal thresholded decisions, at least
    va_max_abs: float = 0.05  # VA outputs: largest |candidate - fp32|, at most

    def describe(self) -> str:
        return f"decisions >= {100 * self.decision_agreement:.0f}% equal, VA |diff| <= {self.va_max_abs:g}"


DEFAULT_TOLERANCES = Tolerances()


@dataclass(frozen=True)
class GateResult:
    """The verdict on one accuracy report: ``passed``, and each missed tolerance."""

    passed: bool
    failures: tuple[str, ...]
    report: AccuracyReport
    tolerances: Tolerances

    def summary(self) -> str:
        """One line: what was compared and, if it failed, every tolerance it missed."""
        what = f"{self.report.candidate} against {self.report.reference} on {self.report.n_crops} face crops"
        if self.passed:
            return f"{what}: within tolerance ({self.tolerances.describe()})"
        return f"{what}: misses the tolerance ({'; '.join(self.failures)})"

    def format(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        return f"{self.report.format()}\n  precision check {verdict}: {self.summary()}"

    def to_record(self, accepted: bool = False) -> dict[str, object]:
        """What a cache entry keeps about this check (see :func:`enforce_precision`)."""
        return {
            "status": "passed" if self.passed else ("accepted" if accepted else "refused"),
            "summary": self.summary(),
            "failures": list(self.failures),
            "tolerances": {"decision_agreement": self.tolerances.decision_agreement,
                           "va_max_abs": self.tolerances.va_max_abs},
            "report": self.report.format(),
        }


class PrecisionCheckError(ValueError):
    """A reduced-precision build missed the tolerances and was not accepted. ``result``
    holds the report; the message is one line."""

    def __init__(self, result: GateResult, what: str) -> None:
        super().__init__(
            f"{what}: precision check failed: {result.summary()}. The build was discarded; pass "
            "accept_precision=True (--accept-precision) to use it anyway, or recalibrate with face crops "
            "from the deployment camera"
        )
        self.result = result


def check_precision(report: AccuracyReport, tolerances: Tolerances = DEFAULT_TOLERANCES) -> GateResult:
    """Judge ``report`` (candidate against fp32): every binary task's decisions must agree
    at least ``tolerances.decision_agreement`` of the time, and the VA outputs must differ
    by at most ``tolerances.va_max_abs``. Tasks the model lacks are not judged."""
    failures = []
    for task in report.tasks:
        if task.decision_agreement is not None and task.decision_agreement < tolerances.decision_agreement:
            failures.append(f"{task.task} decisions {100 * task.decision_agreement:.1f}% equal "
                            f"< {100 * tolerances.decision_agreement:.0f}%")
        if task.task == "va" and task.max_abs > tolerances.va_max_abs:
            failures.append(f"va |diff| {task.max_abs:.3g} > {tolerances.va_max_abs:g}")
    return GateResult(not failures, tuple(failures), report, tolerances)


def precision_report(
    candidate: InferenceBackend, reference: InferenceBackend, crops: np.ndarray, chunk: int = 8
) -> AccuracyReport:
    """The report the gate judges: ``candidate`` against the fp32 ``reference`` on
    ``crops`` (preprocessed; see :func:`precision_check_crops`), ``chunk`` crops / windows
    per call (at most what the candidate's engines take)."""
    return compare_backends(reference, candidate, crops, chunk=chunk)


SAMPLE_CHECK_CROPS = 48  # sample faces (runtime/samples.py) every check runs on
USER_CHECK_CROPS = 32  # most of the user's calibration crops added to them


def precision_check_crops(metadata: ModelMetadata, calibration: object = None) -> np.ndarray:
    """The preprocessed face crops a precision check runs on: the sample faces of
    :mod:`abaw_ros.runtime.samples` (real faces, independent of the calibration set, so a
    build calibrated on unsuitable images is caught) plus up to 32 of the user's
    ``calibration`` crops (a folder or a list of HxWx3 uint8 RGB crops)."""
    from .preprocess import as_crop_list, preprocess_crops

    crops: list[np.ndarray] = []
    try:
        from .samples import lfw_face_crops

        crops += lfw_face_crops(SAMPLE_CHECK_CROPS)
    except RuntimeError as exc:  # scikit-image missing: the user's crops must do
        LOG.info("precision check without the sample faces: %s", exc)
    if calibration is not None:
        crops += as_crop_list(calibration, USER_CHECK_CROPS)
    if len(crops) < metadata.window_length:
        raise ValueError(
            f"checking a reduced-precision build needs at least {metadata.window_length} face crops, found "
            f"{len(crops)}: pass calibration=<folder of face crops> or install scikit-image (sample faces)"
        )
    return preprocess_crops(crops, metadata)


def enforce_precision(
    candidate: InferenceBackend,
    entries: Mapping[str, CachedEngine],
    cache: EngineCache,
    *,
    reference: Callable[[], InferenceBackend],
    crops: Callable[[], np.ndarray],
    accept: bool = False,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
    chunk: int = 8,
) -> dict[str, object]:
    """Make sure the compiled ``entries`` ``candidate`` runs have passed (or were
    explicitly accepted by) the precision check, and return the verdict record.

    Entries that carry a verdict from their build are not checked again; the verdict is
    logged at every start (a warning when it was accepted below tolerance). Otherwise the
    check runs now on ``crops()`` against ``reference()`` (an fp32 backend): a pass is
    recorded in every entry's key file; a miss with ``accept`` is recorded as accepted and
    logged as a warning; a miss without it removes the entries that have no verdict and
    raises :class:`PrecisionCheckError` (the report is logged) after removing the
    entries built by this call, so no later start can pick them up."""
    what = f"{candidate.name} {candidate.precision}"
    # A verdict holds for the entries checked together (an fp16 head serves fp16 and int8).
    config = " + ".join(f"{graph} {entry.key.digest()[:16]}" for graph, entry in sorted(entries.items()))
    verdicts = {}
    for graph, entry in entries.items():
        stored = cache.read_record(entry.path).get("precision_check")
        valid = isinstance(stored, dict) and stored.get("config") == config
        verdicts[graph] = stored if valid and stored.get("status") in ("passed", "accepted") else None
    if verdicts and all(v is not None for v in verdicts.values()):
        record = next(iter(verdicts.values()))
        accepted = [g for g, v in verdicts.items() if v.get("status") == "accepted"]
        if accepted:
            LOG.warning("%s runs a build ACCEPTED below the precision tolerance (accept_precision, %s): %s",
                        what, ", ".join(accepted), verdicts[accepted[0]].get("summary"))
            return verdicts[accepted[0]]
        LOG.info("%s: precision check passed when built: %s", what, record.get("summary"))
        return record
    ref = reference()
    try:
        result = check_precision(precision_report(candidate, ref, crops(), chunk), tolerances)
    finally:
        ref.close()
    record = {**result.to_record(accepted=accept), "config": config}
    if not result.passed and not accept:
        LOG.error("%s refused:\n%s", what, result.format())
        for entry in entries.values():
            # Builds made now, and entries never checked; one checked with other entries may still serve those.
            if entry.built or "precision_check" not in cache.read_record(entry.path):
                cache.discard(entry.path)
        raise PrecisionCheckError(result, what)
    for entry in entries.values():
        cache.update_record(entry.path, precision_check=record)
    if result.passed:
        LOG.info("%s:\n%s", what, result.format())
    else:
        LOG.warning("%s ACCEPTED below the precision tolerance (accept_precision):\n%s", what, result.format())
    return record
