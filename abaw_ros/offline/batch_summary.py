"""A batch's summary: every bag's status, exit code and problem line, the batch's exit code
(the worst bag's), the pooled metrics, and the one-screen text."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abaw_ros.offline.bag_eval import EXIT_DAMAGED, EXIT_DONE, EXIT_ERROR, EXIT_SKIPPED
from abaw_ros.offline.batch_executors import BagOutcome

# Worst first: a bag that could not be used or that --strict stopped, a damaged bag, a
# --strict bag with skipped frames, a bag done. The batch exits with the worst bag's code.
EXIT_PRECEDENCE: tuple[int, ...] = (EXIT_ERROR, EXIT_DAMAGED, EXIT_SKIPPED, EXIT_DONE)


def problem_line(outcome: BagOutcome) -> str | None:
    """The one line for a bag that did not end as done, or None."""
    if outcome.result is None:
        return outcome.error
    return outcome.result.problem(outcome.status)


@dataclass
class BatchResult:
    outcomes: list[BagOutcome]
    pooled: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    summary_path: Path | None = None

    @property
    def failed(self) -> list[BagOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def frames_processed(self) -> int:
        return sum(o.result.frames_processed for o in self.outcomes if o.result is not None)

    @property
    def exit_code(self) -> int:
        """The worst bag's exit code (:data:`EXIT_PRECEDENCE`); 0 when every bag is done."""
        codes = {o.exit_code for o in self.outcomes}
        return next((code for code in EXIT_PRECEDENCE if code in codes), EXIT_DONE)

    def to_dict(self) -> dict[str, Any]:
        bags = []
        for o in self.outcomes:
            entry: dict[str, Any] = {"bag": str(o.bag), "status": o.status, "exit_code": o.exit_code,
                                     "labels_csv": str(o.labels_csv) if o.labels_csv else None,
                                     "worker": o.worker}
            if (problem := problem_line(o)) is not None:
                entry["problem"] = problem
            if o.result is None:
                entry["error"] = o.error
            else:
                entry.update(run=o.result.to_dict(), metrics=o.result.metrics,
                             report=str(o.result.report) if o.result.report else None,
                             plot=str(o.result.plot) if o.result.plot else None)
            bags.append(entry)
        return {
            "bags": bags,
            "pooled": self.pooled,
            "executor": self.executor,
            "exit_code": self.exit_code,
            "bags_done": sum(o.status == "done" for o in self.outcomes),
            "bags_failed": len(self.failed),
            "bags_by_status": {status: sum(o.status == status for o in self.outcomes)
                               for status in dict.fromkeys(o.status for o in self.outcomes)},
            "frames_processed": self.frames_processed,
            "elapsed_s": round(self.elapsed_s, 4),
            "frames_per_second": round(self.frames_processed / self.elapsed_s, 3) if self.elapsed_s > 0 else 0.0,
        }

    def summary(self) -> str:
        lines = []
        for o in self.outcomes:
            if o.result is None:
                lines.append(f"{o.bag}: FAILED: {o.error}")
                continue
            scores = "; ".join(f"{task} {e['primary']} {e['scores'][e['primary']]:.4f}"
                               for task, e in o.result.metrics.items() if "scores" in e)
            status = f" [{o.status.upper()}, exit {o.exit_code}]" if o.status != "done" else ""
            lines.append(f"{o.bag}: {o.result.frames_processed}/{o.result.frames_in_bag} frames{status}"
                         + (f"; {scores}" if scores else "") + f" -> {o.result.output}")
        pooled = "; ".join(f"{task} {e['primary']} {e['scores'][e['primary']]:.4f} over {e['frames_scored']} "
                           f"frames of {e['bags']} bags" for task, e in self.pooled.items() if "scores" in e)
        fps = self.frames_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0
        done = sum(o.status == "done" for o in self.outcomes)
        lines.append(f"{done} of {len(self.outcomes)} bags done, "
                     f"{self.frames_processed} frames in {self.elapsed_s:.1f} s ({fps:.2f} frames/s, "
                     f"{self.executor.get('kind')})" + (f"; pooled: {pooled}" if pooled else ""))
        if self.summary_path:
            lines.append(f"summary: {self.summary_path}")
        return "\n".join(lines)
