"""Counters the node reports on ``/diagnostics`` once per period.

Rates and latency percentiles cover the period since the previous report; drop and
bad-frame counts are totals since start.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header


@dataclass
class PeriodReport:
    """What one diagnostics period saw."""

    period_s: float
    input_rate_hz: float
    output_rate_hz: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_max: float
    processing_ms_mean: float
    faces_last: int
    received_total: int
    published_total: int
    dropped_total: int
    bad_total: int
    stage_ms_mean: dict[str, float] = field(default_factory=dict)  # pipeline stage -> mean ms


@dataclass
class NodeStats:
    """Thread-safe counters fed by the subscription callbacks and the worker."""

    received_total: int = 0
    published_total: int = 0
    bad_total: int = 0
    faces_last: int = 0
    _latencies_ms: list[float] = field(default_factory=list)
    _processing_ms: list[float] = field(default_factory=list)
    _stage_sums: dict[str, float] = field(default_factory=dict)
    _stage_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_time: float = field(default_factory=time.monotonic)
    _last_received: int = 0
    _last_published: int = 0

    def on_received(self) -> None:
        with self._lock:
            self.received_total += 1

    def on_bad(self) -> None:
        with self._lock:
            self.bad_total += 1

    def on_published(self, latency_ms: float, processing_ms: float, faces: int,
                     stage_ms: dict[str, float] | None = None) -> None:
        with self._lock:
            self.published_total += 1
            self.faces_last = faces
            if stage_ms:
                self._stage_count += 1
                for stage, ms in stage_ms.items():
                    self._stage_sums[stage] = self._stage_sums.get(stage, 0.0) + float(ms)
            # Bounded even if nobody reads the report (diagnostics run at ~1 Hz).
            if len(self._latencies_ms) < 10_000:
                self._latencies_ms.append(latency_ms)
                self._processing_ms.append(processing_ms)

    def report(self, dropped_total: int) -> PeriodReport:
        """Close the current period and return what it saw."""
        with self._lock:
            now = time.monotonic()
            period = max(now - self._last_time, 1e-6)
            latencies = np.asarray(self._latencies_ms, dtype=np.float64)
            processing = np.asarray(self._processing_ms, dtype=np.float64)
            rep = PeriodReport(
                period_s=period,
                input_rate_hz=(self.received_total - self._last_received) / period,
                output_rate_hz=(self.published_total - self._last_published) / period,
                latency_ms_p50=float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
                latency_ms_p95=float(np.percentile(latencies, 95)) if latencies.size else float("nan"),
                latency_ms_max=float(latencies.max()) if latencies.size else float("nan"),
                processing_ms_mean=float(processing.mean()) if processing.size else float("nan"),
                faces_last=self.faces_last,
                received_total=self.received_total,
                published_total=self.published_total,
                dropped_total=dropped_total,
                bad_total=self.bad_total,
                stage_ms_mean={k: v / self._stage_count for k, v in self._stage_sums.items()}
                if self._stage_count else {},
            )
            self._last_time, self._last_received, self._last_published = now, self.received_total, self.published_total
            self._latencies_ms.clear()
            self._processing_ms.clear()
            self._stage_sums.clear()
            self._stage_count = 0
            return rep


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.2f}"


def build_diagnostics(
    header: Header,
    name: str,
    hardware_id: str,
    report: PeriodReport,
    info: dict[str, str],
    weights_trained: bool,
) -> DiagnosticArray:
    """One ``DiagnosticStatus`` for the node. Level WARN while the weights are untrained
    or when frames arrive but nothing is published; OK otherwise."""
    if not weights_trained:
        level, message = DiagnosticStatus.WARN, "running with UNTRAINED weights: affect values are not estimates"
    elif report.input_rate_hz > 0 and report.output_rate_hz == 0:
        level, message = DiagnosticStatus.WARN, "frames arrive but nothing was published this period"
    else:
        level, message = DiagnosticStatus.OK, "ok"
    values = {
        "input_rate_hz": _fmt(report.input_rate_hz),
        "output_rate_hz": _fmt(report.output_rate_hz),
        "latency_ms_p50": _fmt(report.latency_ms_p50),
        "latency_ms_p95": _fmt(report.latency_ms_p95),
        "latency_ms_max": _fmt(report.latency_ms_max),
        "processing_ms_mean": _fmt(report.processing_ms_mean),
        "faces": str(report.faces_last),
        "frames_received": str(report.received_total),
        "frames_published": str(report.published_total),
        "dropped_frames": str(report.dropped_total),
        "bad_frames": str(report.bad_total),
        "weights_trained": "true" if weights_trained else "false",
        # Where the time goes, per pipeline stage (mean over the period's frames).
        **{f"stage_ms_{stage}": _fmt(ms) for stage, ms in report.stage_ms_mean.items()},
        **info,
    }
    status = DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )
    return DiagnosticArray(header=header, status=[status])
