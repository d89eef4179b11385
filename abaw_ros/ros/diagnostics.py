"""What the node reports on ``/diagnostics`` once per period, in the shape
``diagnostic_updater`` gives it (ros/diagnostics, ``diagnostic_updater/include/
diagnostic_updater/update_functions.hpp``): one status per task named
``<node>: <task>``, each with the node's ``hardware_id``.

- ``<node>: affect pipeline``: the summary a behaviour node or an operator reads first
  (untrained weights, frames lost before the node, clock skew), with every counter;
- ``<node>: input image rate`` and ``<node>: affect output rate``: ``FrequencyStatus``
  reports of the frames arriving and of the messages published, against the camera's rate
  (``expected_input_rate``, or the rate estimated from the image stamps), with its keys
  and levels: ``No events recorded.`` (ERROR), ``Frequency too low.`` / ``Frequency too
  high.`` (WARN, outside the target -/+ 10 %), ``Desired frequency met`` (OK).

Rates and latency percentiles cover the period since the previous report; counts are
totals since start. Frames lost in transport (gaps in the image stamps, estimated over the
last :data:`LOSS_WINDOW_S` seconds) are kept apart from frames the node dropped itself
(a newer frame replaced one the worker had not taken yet).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

LOSS_WINDOW_S = 10.0
# A gap counts as a whole number of camera periods when it is within this share of one.
PERIOD_TOLERANCE = 0.25
# diagnostic_updater's FrequencyStatusParam default tolerance.
FREQUENCY_TOLERANCE = 0.1
# diagnostic_updater's TimeStampStatusParam defaults: a stamp more than 1 s ahead of this
# node's clock or more than 5 s behind it is not latency but a clock (or sim-time) problem.
STAMP_FUTURE_LIMIT_MS = -1000.0
STAMP_PAST_LIMIT_MS = 5000.0
LOSS_ADVICE = (
    "fixes: subscribe reliable to a reliable camera (image_qos: auto or reliable), use "
    "compressed transport (image_transport: compressed), give both sides the shipped Fast DDS "
    "profile (abaw_ros/ros/fastdds_large_frames.xml), or use rmw_zenoh / Cyclone DDS; see docs/NODE.md"
)


@dataclass
class LossEstimate:
    """Camera frames expected from the stamps against those that arrived."""

    camera_rate_hz: float  # NaN until enough frames arrived
    expected: int
    received: int

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    @property
    def fraction(self) -> float:
        return self.lost / self.expected if self.expected > 0 else 0.0


class StampGaps:
    """Estimates the camera rate and the frames that never arrived from the stamps of
    those that did, over the last ``window_s`` seconds of stamps.

    The period is the smallest typical gap: the 5th percentile of the gaps between
    consecutive stamps, refined as the median of each gap divided by the whole number of
    periods it spans, so stamp jitter and long gaps (lost frames) do not bias it."""

    def __init__(self, window_s: float = LOSS_WINDOW_S) -> None:
        self._window_ns = int(window_s * 1e9)
        self._stamps: deque[int] = deque()

    def add(self, stamp_ns: int) -> None:
        if stamp_ns <= 0:
            return
        if self._stamps and stamp_ns <= self._stamps[-1]:
            if self._stamps[-1] - stamp_ns > 1_000_000_000:  # the clock jumped back (a bag loops)
                self._stamps.clear()
            else:
                return  # a repeated or reordered stamp
        self._stamps.append(stamp_ns)
        while self._stamps[-1] - self._stamps[0] > self._window_ns:
            self._stamps.popleft()

    def period_ns(self, expected_rate_hz: float = 0.0) -> float:
        """The camera's frame period; NaN when there are too few stamps or they do not
        come at a fixed rate (a triggered camera, frames sent one at a time), where gaps
        say nothing about lost frames."""
        if expected_rate_hz > 0:
            return 1e9 / expected_rate_hz
        if len(self._stamps) < 4:
            return float("nan")
        gaps = np.diff(np.asarray(self._stamps, dtype=np.float64))
        first = float(np.percentile(gaps, 5))
        periods = np.maximum(1.0, np.rint(gaps / first))
        period = float(np.median(gaps / periods))
        ratio = gaps / period
        on_grid = np.abs(ratio - np.maximum(1.0, np.rint(ratio))) < PERIOD_TOLERANCE
        return period if on_grid.mean() >= 0.8 else float("nan")

    def estimate(self, expected_rate_hz: float = 0.0) -> LossEstimate:
        period = self.period_ns(expected_rate_hz)
        received = len(self._stamps)
        if not period == period or period <= 0 or received < 2:
            return LossEstimate(float("nan"), received, received)
        periods = (self._stamps[-1] - self._stamps[0]) / period
        if not periods < 1e12:  # a period far below any camera's (the rate is bounded in config)
            return LossEstimate(float("nan"), received, received)
        expected = max(received, int(round(periods)) + 1)
        return LossEstimate(1e9 / period, expected, received)


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
    received_in_period: int = 0
    published_in_period: int = 0
    loss: LossEstimate = field(default_factory=lambda: LossEstimate(float("nan"), 0, 0))
    skewed_in_period: int = 0  # frames whose stamp is too far from this node's clock
    skewed_total: int = 0
    clock_offset_ms: float = float("nan")  # median (now - stamp) of those frames
    stage_ms_mean: dict[str, float] = field(default_factory=dict)  # pipeline stage -> mean ms


@dataclass
class NodeStats:
    """Thread-safe counters fed by the subscription callbacks and the worker."""

    received_total: int = 0
    published_total: int = 0
    bad_total: int = 0
    skewed_total: int = 0
    faces_last: int = 0
    _latencies_ms: list[float] = field(default_factory=list)
    _processing_ms: list[float] = field(default_factory=list)
    _skew_ms: list[float] = field(default_factory=list)
    _stage_sums: dict[str, float] = field(default_factory=dict)
    _stage_count: int = 0
    _gaps: StampGaps = field(default_factory=StampGaps)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_time: float = field(default_factory=time.monotonic)
    _last_received: int = 0
    _last_published: int = 0

    def on_received(self, stamp_ns: int = 0) -> None:
        with self._lock:
            self.received_total += 1
            self._gaps.add(stamp_ns)

    def on_bad(self) -> None:
        with self._lock:
            self.bad_total += 1

    def on_published(self, latency_ms: float, processing_ms: float, faces: int,
                     stage_ms: dict[str, float] | None = None) -> None:
        """``latency_ms``: now minus the frame's stamp; outside the plausible range it is
        counted as clock skew, not latency."""
        with self._lock:
            self.published_total += 1
            self.faces_last = faces
            if stage_ms:
                self._stage_count += 1
                for stage, ms in stage_ms.items():
                    self._stage_sums[stage] = self._stage_sums.get(stage, 0.0) + float(ms)
            skewed = not STAMP_FUTURE_LIMIT_MS <= latency_ms <= STAMP_PAST_LIMIT_MS
            if skewed:
                self.skewed_total += 1
            # Bounded even if nobody reads the report (diagnostics run at ~1 Hz).
            if len(self._processing_ms) < 10_000:
                (self._skew_ms if skewed else self._latencies_ms).append(latency_ms)
                self._processing_ms.append(processing_ms)

    def report(self, dropped_total: int, expected_rate_hz: float = 0.0) -> PeriodReport:
        """Close the current period and return what it saw."""
        with self._lock:
            now = time.monotonic()
            period = max(now - self._last_time, 1e-6)
            latencies = np.asarray(self._latencies_ms, dtype=np.float64)
            processing = np.asarray(self._processing_ms, dtype=np.float64)
            received = self.received_total - self._last_received
            published = self.published_total - self._last_published
            rep = PeriodReport(
                period_s=period,
                input_rate_hz=received / period,
                output_rate_hz=published / period,
                latency_ms_p50=float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
                latency_ms_p95=float(np.percentile(latencies, 95)) if latencies.size else float("nan"),
                latency_ms_max=float(latencies.max()) if latencies.size else float("nan"),
                processing_ms_mean=float(processing.mean()) if processing.size else float("nan"),
                faces_last=self.faces_last,
                received_total=self.received_total,
                published_total=self.published_total,
                dropped_total=dropped_total,
                bad_total=self.bad_total,
                received_in_period=received,
                published_in_period=published,
                loss=self._gaps.estimate(expected_rate_hz),
                skewed_in_period=len(self._skew_ms),
                skewed_total=self.skewed_total,
                clock_offset_ms=float(np.median(self._skew_ms)) if self._skew_ms else float("nan"),
                stage_ms_mean={k: v / self._stage_count for k, v in self._stage_sums.items()}
                if self._stage_count else {},
            )
            self._last_time, self._last_received, self._last_published = now, self.received_total, self.published_total
            self._latencies_ms.clear()
            self._processing_ms.clear()
            self._skew_ms.clear()
            self._stage_sums.clear()
            self._stage_count = 0
            return rep


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.2f}"


def _status(level: int, name: str, message: str, hardware_id: str, values: dict[str, str]) -> DiagnosticStatus:
    return DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def frequency_status(name: str, hardware_id: str, events: int, window_s: float, total: int,
                     target_hz: float, tolerance: float = FREQUENCY_TOLERANCE) -> DiagnosticStatus:
    """A status as ``diagnostic_updater::FrequencyStatus::run`` writes it, for a target
    rate (min = max = ``target_hz``; NaN or 0 when unknown: no bounds are checked)."""
    freq = events / window_s if window_s > 0 else 0.0
    known = target_hz == target_hz and target_hz > 0
    if events == 0:
        level, message = DiagnosticStatus.ERROR, "No events recorded."
    elif known and freq < target_hz * (1 - tolerance):
        level, message = DiagnosticStatus.WARN, "Frequency too low."
    elif known and freq > target_hz * (1 + tolerance):
        level, message = DiagnosticStatus.WARN, "Frequency too high."
    else:
        level, message = DiagnosticStatus.OK, "Desired frequency met"
    values = {
        "Events in window": str(events),
        "Events since startup": str(total),
        "Duration of window (s)": f"{window_s:f}",
        "Actual frequency (Hz)": f"{freq:f}",
    }
    if known:
        values["Target frequency (Hz)"] = f"{target_hz:f}"
        values["Minimum acceptable frequency (Hz)"] = f"{target_hz * (1 - tolerance):f}"
        values["Maximum acceptable frequency (Hz)"] = f"{target_hz * (1 + tolerance):f}"
    return _status(int.from_bytes(level, "little"), name, message, hardware_id, values)


def build_diagnostics(
    header: Header,
    node_name: str,
    hardware_id: str,
    report: PeriodReport,
    info: dict[str, str],
    weights_trained: bool,
    loss_warn_fraction: float = 0.1,
    expected_rate_hz: float = 0.0,
) -> DiagnosticArray:
    """The node's statuses for one period (see the module docstring).

    The summary is WARN while the weights are untrained, when more than
    ``loss_warn_fraction`` of the camera's frames never arrived, when image stamps are
    too far from this node's clock, or when frames arrive but nothing is published; OK
    otherwise. Every reason is in its message."""
    loss = report.loss
    problems: list[str] = []
    if not weights_trained:
        problems.append("running with UNTRAINED weights: affect values are not estimates")
    if loss.fraction > loss_warn_fraction and loss.lost > 0:
        problems.append(
            f"{loss.fraction:.0%} of the camera's frames never reached the node ({loss.lost} of "
            f"{loss.expected} in the last {LOSS_WINDOW_S:.0f} s at {_fmt(loss.camera_rate_hz)} Hz); {LOSS_ADVICE}"
        )
    if report.skewed_in_period:
        problems.append(
            f"{report.skewed_in_period} image stamp(s) {abs(report.clock_offset_ms) / 1e3:.1f} s "
            f"{'ahead of' if report.clock_offset_ms < 0 else 'behind'} this node's clock: clock "
            f"skew between camera and node (or sim time without use_sim_time), not latency; "
            f"those frames are left out of the latency"
        )
    if report.received_in_period > 0 and report.published_in_period == 0:
        problems.append("frames arrive but nothing was published this period")
    level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
    values = {
        "input_rate_hz": _fmt(report.input_rate_hz),
        "output_rate_hz": _fmt(report.output_rate_hz),
        "camera_rate_hz": _fmt(loss.camera_rate_hz),
        "frames_lost_in_transport_fraction": f"{loss.fraction:.3f}",
        "frames_lost_in_transport": str(loss.lost),
        "frames_expected_in_loss_window": str(loss.expected),
        "latency_ms_p50": _fmt(report.latency_ms_p50),
        "latency_ms_p95": _fmt(report.latency_ms_p95),
        "latency_ms_max": _fmt(report.latency_ms_max),
        "clock_skew_frames": str(report.skewed_total),
        "clock_offset_ms": _fmt(report.clock_offset_ms),
        "processing_ms_mean": _fmt(report.processing_ms_mean),
        "faces": str(report.faces_last),
        "frames_received": str(report.received_total),
        "frames_published": str(report.published_total),
        "dropped_frames": str(report.dropped_total),  # by the node: a newer frame replaced it
        "bad_frames": str(report.bad_total),
        "weights_trained": "true" if weights_trained else "false",
        # Where the time goes, per pipeline stage (mean over the period's frames).
        **{f"stage_ms_{stage}": _fmt(ms) for stage, ms in report.stage_ms_mean.items()},
        **info,
    }
    summary = _status(int.from_bytes(level, "little"), f"{node_name}: affect pipeline",
                      "; ".join(problems) if problems else "ok", hardware_id, values)
    target = expected_rate_hz if expected_rate_hz > 0 else loss.camera_rate_hz
    statuses = [
        summary,
        frequency_status(f"{node_name}: input image rate", hardware_id, report.received_in_period,
                         report.period_s, report.received_total, target),
        frequency_status(f"{node_name}: affect output rate", hardware_id, report.published_in_period,
                         report.period_s, report.published_total, target),
    ]
    return DiagnosticArray(header=header, status=statuses)
