"""The offline tools' one frame loop: source -> pipeline -> sinks.

``bag-eval`` and ``predict`` read their frames from a :class:`~abaw_ros.offline.sources.FrameSource`
and hand every decoded frame to :meth:`PerceptionPipeline.process` — the code the node
runs — one after the other, then to their sinks (the affect bag and the prediction track;
the CSV and the annotated video). A frame that cannot be decoded is skipped and counted
here, the same way for every tool (:class:`FrameCounts`); with ``strict`` the first frame
in an encoding that cannot be decoded at all stops the loop instead.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from abaw_ros.offline.sources import FrameSource, SourceFrame
    from abaw_ros.perception.pipeline import FrameResult

log = logging.getLogger(__name__)

# Skipped frames listed one by one in a report (the count is always complete).
MAX_LISTED_SKIPS = 1000
# Skipped frames named one by one in the log; the rest are only counted there.
MAX_LOGGED_SKIPS = 10

# A sink gets every processed frame with its result, in order.
Sink = Callable[["SourceFrame", "FrameResult"], None]


@dataclass
class SkippedFrame:
    """A frame that was not processed, and why."""

    index: int  # position in the source, counting skipped frames too
    stamp_ns: int
    reason: str
    name: str = ""  # file name (image folders)
    unsupported: bool = False  # an encoding that cannot be decoded at all (not a broken frame)


@dataclass(kw_only=True)
class FrameCounts:
    """What the loop did: frames read, processed, skipped (and why), timings. The results
    of ``bag-eval`` and ``predict`` are these counts plus their own fields."""

    frames_read: int = 0  # frames the source gave, decoded or not
    frames_processed: int = 0
    frames_with_face: int = 0
    faces_total: int = 0
    skipped: list[SkippedFrame] = field(default_factory=list)
    frames_skipped_broken: int = 0
    frames_skipped_unsupported: int = 0  # encodings that cannot be decoded
    stopped: str | None = None  # why a strict run ended before the end of the source
    stopped_at_max_frames: bool = False
    interrupted: bool = False  # Ctrl-C (only where the caller lets the loop catch it)
    elapsed_s: float = 0.0  # the whole run: reading, pipeline, writing
    pipeline_s: float = 0.0  # the pipeline alone

    @property
    def frames_per_second(self) -> float:
        """Processed frames per second of the whole run."""
        return self.frames_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def pipeline_frames_per_second(self) -> float:
        """Processed frames per second of the pipeline alone."""
        return self.frames_processed / self.pipeline_s if self.pipeline_s > 0 else 0.0

    def skip(self, frame: SourceFrame) -> None:
        """Count and list a frame that could not be decoded; the first few are logged."""
        if frame.unsupported:
            self.frames_skipped_unsupported += 1
        else:
            self.frames_skipped_broken += 1
        self.skipped.append(SkippedFrame(frame.index, frame.stamp_ns, frame.error or "broken", frame.name,
                                         frame.unsupported))
        if len(self.skipped) <= MAX_LOGGED_SKIPS:
            log.warning("skipping frame %d: %s", frame.index, frame.error)
            if len(self.skipped) == MAX_LOGGED_SKIPS:
                log.warning("further skipped frames are counted, not logged (the report lists them)")

    def no_frame_detail(self) -> str:
        """``; first: <reason>`` of the first skipped frame, for a run that processed none."""
        return f"; first: {self.skipped[0].reason}" if self.skipped else ""


def run_frames(
    source: FrameSource,
    pipeline: Any,
    sinks: Sequence[Sink],
    counts: FrameCounts,
    *,
    strict: bool = False,
    max_frames: int | None = None,
    interruptible: bool = False,
    progress: bool = True,
    total: int | None = None,
    desc: str = "",
) -> None:
    """Every frame of ``source`` through ``pipeline.process``, one after the other, then to
    each sink; ``counts`` records what happened. ``strict``: stop at the first frame in an
    encoding that cannot be decoded (``counts.stopped``). ``max_frames``: stop after that
    many processed frames. ``interruptible``: Ctrl-C ends the loop (``counts.interrupted``)
    instead of propagating, so the caller keeps what was written."""
    from tqdm import tqdm

    with tqdm(total=total, unit="frame", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        try:
            for frame in source.frames():
                counts.frames_read += 1
                bar.update(1)
                if frame.image is None:
                    if frame.unsupported and strict:
                        counts.stopped = frame.error
                        log.error("stopping at frame %d (--strict): %s", frame.index, frame.error)
                        break
                    counts.skip(frame)
                    continue
                t0 = time.perf_counter()
                result = pipeline.process(frame.image, frame.stamp_ns)
                counts.pipeline_s += time.perf_counter() - t0
                for sink in sinks:
                    sink(frame, result)
                counts.frames_processed += 1
                counts.faces_total += len(result.faces)
                counts.frames_with_face += bool(result.faces)
                if max_frames is not None and counts.frames_processed >= max_frames:
                    counts.stopped_at_max_frames = True
                    break
        except KeyboardInterrupt:
            if not interruptible:
                raise
            counts.interrupted = True
