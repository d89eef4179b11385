"""Several seeds of one configuration, and what they agree on.

``abaw-affect train --config X --seeds N`` trains seeds ``train.seed .. train.seed + N - 1``
into ``<out_dir>/seed<k>/`` and writes ``<out_dir>/seeds.json`` and ``seeds.csv``: for every
metric of the best epoch (and of the organisers' frames under protocol reference), the
mean, the sample standard deviation (N - 1) and each seed's value. A difference between
two configurations smaller than about two standard deviations is within seed noise.
Metrics at thresholds tuned on the validation set they are reported on are flagged
``optimistic``; their ``_tuned_heldout`` twins are tuned on the other half of the videos.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from abaw_ros.outputs import write_bytes
from abaw_ros.training.config import TrainConfig
from abaw_ros.training.evaluation import write_json

log = logging.getLogger(__name__)


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """``metrics.json`` -> ``{name: value}``: the best epoch's score and task metrics, the
    organisers' frames (``frames/``) when reported beside them."""
    out: dict[str, float] = {}
    for prefix, block in (("", report.get("best") or {}), ("frames/", report.get("best_frames") or {})):
        if "score" in block:
            out[f"{prefix}score"] = float(block["score"])
        for metrics in (block.get("tasks") or {}).values():
            out.update({f"{prefix}{name}": float(v) for name, v in metrics.items()})
    return out


def summarize_seeds(reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std and per-seed values of every metric the runs share."""
    flats = {seed: flat_metrics(r) for seed, r in reports.items()}
    names = [n for n in next(iter(flats.values()), {}) if all(n in f for f in flats.values())]
    metrics = {}
    for name in names:
        values = np.array([flats[s][name] for s in flats], dtype=np.float64)
        metrics[name] = {"mean": float(values.mean()),
                         "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                         "values": {str(s): float(flats[s][name]) for s in flats},
                         "optimistic": name.endswith("_tuned")}
    return {"seeds": list(reports), "best_epochs": {str(s): r.get("best_epoch") for s, r in reports.items()},
            "metrics": metrics}


def train_seeds(cfg: TrainConfig, n: int, overwrite: bool = False) -> dict[str, Any]:
    from abaw_ros.training.loop import train

    if n < 1:
        raise ValueError(f"--seeds {n}: must be >= 1")
    if cfg.resume:
        raise ValueError("--seeds with --resume: resume each seed's run on its own (<out_dir>/seed<k>/last.pt)")
    out = Path(cfg.out_dir)
    reports = {}
    for seed in range(cfg.seed, cfg.seed + n):
        run = replace(cfg, seed=seed, out_dir=str(out / f"seed{seed}"))
        log.info("seed %d (%d of %d) -> %s", seed, seed - cfg.seed + 1, n, run.out_dir)
        train(run, overwrite=overwrite)
        reports[seed] = json.loads((Path(run.out_dir) / "metrics.json").read_text())
    summary = summarize_seeds(reports)
    write_json(out / "seeds.json", summary)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["metric", "mean", "std", "n", "optimistic", *(f"seed{s}" for s in reports)])
    for name, m in summary["metrics"].items():
        writer.writerow([name, f"{m['mean']:.6g}", f"{m['std']:.6g}", len(reports), int(m["optimistic"]),
                         *(f"{v:.6g}" for v in m["values"].values())])
    # staged like seeds.json: a crash or a full disk leaves the earlier table whole
    write_bytes(out / "seeds.csv", table.getvalue().encode("utf-8"), "seeds.csv")
    return summary
