"""Timeline of a bag's predictions, with the labels beside them (PNG, matplotlib Agg).

Rows, top to bottom: valence, arousal (prediction and label lines), the 12 AU
probabilities as a heat strip and, when labelled, the AU labels as a second strip right
below, hesitancy probability with its label and the model's decision threshold, and the
number of faces per frame. Frames without a prediction or a valid label are left blank
(grey in the strips). The title names the face that was followed and, with labels, the
headline score of every scored task.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from abaw_ros.offline.annotations import AlignedLabels
from abaw_ros.offline.track import FACE_POLICIES, PredictionTrack
from abaw_ros.outputs import Staging, write_faults
from abaw_ros.tasks import AU_NAMES

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SIZE_PX: tuple[int, int] = (1600, 1000)
DEFAULT_DPI = 100
PRED_COLOR = "tab:blue"
LABEL_COLOR = "tab:orange"


def _time_axis(stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seconds from the first frame, and the cell edges between frames for the strips."""
    if len(stamps_ns) == 0:
        return np.zeros(0), np.array([0.0, 1.0])
    t = (stamps_ns - stamps_ns[0]) / 1e9
    if len(t) == 1:
        return t, np.array([-0.5, 0.5])
    mid = (t[1:] + t[:-1]) / 2
    edges = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return t, edges


def _masked(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).copy()
    if valid is not None:
        out[~valid] = np.nan
    return out


def face_caption(track: PredictionTrack) -> str:
    """Which face the values belong to: the policy and the tracker ids it followed."""
    ids = track.followed_ids
    shown = ", ".join(ids[:4]) + (f" +{len(ids) - 4} more" if len(ids) > 4 else "")
    if track.face_policy not in FACE_POLICIES:
        return f"face {track.face_policy}"
    return f"face: {track.face_policy} ({'ids ' + shown if ids else 'no face'})"


def metrics_caption(metrics: Mapping[str, Any] | None) -> str:
    """``va_ccc_mean 0.412 | au_f1_mean 0.538`` from a ``compute_metrics`` result."""
    parts = []
    for entry in (metrics or {}).values():
        if "scores" in entry:
            name = entry["primary"]
            parts.append(f"{name} {entry['scores'][name]:.3f} ({entry['frames_scored']} frames)")
    return " | ".join(parts)


def plot_timeline(
    track: PredictionTrack,
    path: str | Path,
    labels: AlignedLabels | None = None,
    title: str = "",
    size_px: tuple[int, int] = DEFAULT_SIZE_PX,
    dpi: int = DEFAULT_DPI,
    ah_threshold: float = 0.5,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Draw the timeline and write it to ``path`` (PNG of exactly ``size_px`` pixels).

    ``ah_threshold`` is the model's hesitancy decision threshold (drawn as a dotted line);
    ``metrics`` (from :func:`abaw_ros.offline.report.compute_metrics`) go into the title
    next to ``title`` and the followed face. A track that follows a tracker id no frame
    shows raises :class:`~abaw_ros.offline.track.UnknownFaceError` listing the ids."""
    fig = timeline_figure(track, labels, title, size_px, dpi, ah_threshold, metrics)
    # the caller checked the path (abaw_ros.offline.outputs.check_file_output)
    with Staging(path, "plot", replace=True) as staging, write_faults(path, "plot"):
        fig.savefig(staging.path, dpi=dpi, format="png")
        return staging.commit()


def timeline_figure(
    track: PredictionTrack,
    labels: AlignedLabels | None = None,
    title: str = "",
    size_px: tuple[int, int] = DEFAULT_SIZE_PX,
    dpi: int = DEFAULT_DPI,
    ah_threshold: float = 0.5,
    metrics: Mapping[str, Any] | None = None,
) -> Figure:
    """The figure :func:`plot_timeline` writes; ``fig.axes_by_row[name]`` gives the axes
    of each row (valence, arousal, au_pred, au_true, hesitancy, faces)."""
    track.require_face()
    width, height = (int(v) for v in size_px)
    if width < 200 or height < 200:
        raise ValueError(f"size_px={size_px}: the timeline needs at least 200x200 pixels")
    t, edges = _time_axis(track.stamp_array)
    tasks = labels.tasks if labels is not None else ()
    au_labelled = "au" in tasks

    rows = ["valence", "arousal", "au_pred"] + (["au_true"] if au_labelled else []) + ["hesitancy", "faces"]
    ratios = {"valence": 1.2, "arousal": 1.2, "au_pred": 1.8, "au_true": 1.8, "hesitancy": 1.0, "faces": 0.5}
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 1, sharex=True, gridspec_kw={"height_ratios": [ratios[r] for r in rows]})
    ax_of = dict(zip(rows, axes, strict=True))

    va = track.output("va")
    for i, name in enumerate(("valence", "arousal")):
        ax = ax_of[name]
        ax.plot(t, _masked(va[:, i]) if len(va) else [], color=PRED_COLOR, lw=1.2, label="prediction")
        if "va" in tasks:
            ax.plot(t, _masked(labels.values["va"][:, i], labels.valid["va"]), color=LABEL_COLOR, lw=1.2,
                    ls="--", label="label")
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0.0, color="0.8", lw=0.6, zorder=0)
        ax.set_ylabel(name)
        ax.legend(loc="upper right", fontsize="small", ncol=2)

    cmap = _strip_cmap()
    au = track.output("au")
    _strip(ax_of["au_pred"], edges, au, cmap, "AU prob.")
    if au_labelled:
        _strip(ax_of["au_true"], edges, _masked(labels.values["au"], labels.valid["au"]), cmap, "AU label")

    ax = ax_of["hesitancy"]
    ah = track.output("ah")
    ax.plot(t, _masked(ah[:, 0]) if len(ah) else [], color=PRED_COLOR, lw=1.2, label="probability")
    if "ah" in tasks:
        ax.step(t, _masked(labels.values["ah"][:, 0], labels.valid["ah"]), where="mid", color=LABEL_COLOR,
                lw=1.2, ls="--", label="label")
    ax.axhline(float(ah_threshold), color="0.45", lw=0.8, ls=":", zorder=0,
               label=f"threshold {float(ah_threshold):g}")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("hesitancy")
    ax.legend(loc="upper right", fontsize="small", ncol=3)

    ax = ax_of["faces"]
    ax.step(t, np.asarray(track.n_faces, dtype=float), where="mid", color="0.3", lw=1.0)
    ax.set_ylabel("faces")
    ax.set_ylim(-0.2, max([1, *track.n_faces]) + 0.2)
    ax.set_xlabel("time since first frame [s]")
    if len(edges) > 1:
        ax.set_xlim(edges[0], edges[-1])

    lines = [" - ".join(p for p in (title or f"{len(track)} frames", face_caption(track)) if p)]
    if score_line := metrics_caption(metrics):
        lines.append(score_line)
    fig.suptitle("\n".join(lines), fontsize="medium")
    fig.subplots_adjust(left=0.07, right=0.93, top=0.95 - 0.025 * (len(lines) - 1), bottom=0.06, hspace=0.12)
    colorbar_ax = fig.add_axes((0.945, 0.3, 0.012, 0.35))
    fig.colorbar(ax_of["au_pred"].collections[0], cax=colorbar_ax)
    fig.axes_by_row = ax_of
    return fig


def _strip_cmap():
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="0.85")


def _strip(ax, edges: np.ndarray, values: np.ndarray, cmap, ylabel: str) -> None:
    """One row per AU, one column per frame, colour = value in [0, 1]."""
    data = np.ma.masked_invalid(np.asarray(values, dtype=np.float64).reshape(-1, len(AU_NAMES)).T)
    if data.shape[1] == 0:
        data = np.ma.masked_all((len(AU_NAMES), 1))
        edges = np.array([0.0, 1.0])
    ax.pcolormesh(edges, np.arange(len(AU_NAMES) + 1), data, cmap=cmap, vmin=0.0, vmax=1.0, shading="flat")
    ax.set_yticks(np.arange(len(AU_NAMES)) + 0.5)
    ax.set_yticklabels(AU_NAMES, fontsize="x-small")
    ax.invert_yaxis()
    ax.set_ylabel(ylabel)
