"""Frames per second of an offline run, shared by the results of ``predict`` and ``bag-eval``."""
from __future__ import annotations


class FrameRates:
    """Mixed into a result dataclass with ``frames_processed``, ``elapsed_s`` (the whole
    run: reading, pipeline, writing) and ``pipeline_s`` (the pipeline alone)."""

    frames_processed: int
    elapsed_s: float
    pipeline_s: float

    @property
    def frames_per_second(self) -> float:
        """Processed frames per second of the whole run."""
        return self.frames_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def pipeline_frames_per_second(self) -> float:
        """Processed frames per second of the pipeline alone."""
        return self.frames_processed / self.pipeline_s if self.pipeline_s > 0 else 0.0
