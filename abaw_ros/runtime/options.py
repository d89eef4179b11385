"""The settings every backend is created with (:func:`abaw_ros.runtime.load_backend`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw_ros.backend_registry import PRECISIONS

from .engine_cache import default_cache_dir

__all__ = ["BackendOptions"]


@dataclass
class BackendOptions:
    """Settings of :func:`abaw_ros.runtime.load_backend`, passed to every backend; each
    reads the ones that concern it."""

    precision: str = "fp32"
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: the backend's best
    engine_cache_dir: Path | None = None  # None: ~/.cache/abaw_ros/engines (see cache_root)
    force_engine_update: bool = False
    num_threads: int | None = None  # CPU threads; None: the cores this process may use
    opt_batch_size: int = 4  # crops per encoder call the engines are tuned for
    max_batch_size: int = 16  # most crops per encoder call (TensorRT profile)
    max_windows: int = 8  # most windows per temporal-head call (TensorRT profile)
    calibration: Path | Sequence[np.ndarray] | None = None  # face crops for int8
    calibration_limit: int = 256
    workspace_bytes: int = 1 << 30  # TensorRT builder workspace
    accept_precision: bool = False  # use an int8/fp16 build that misses the precision tolerances (logged)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: choose one of {list(PRECISIONS)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads={self.num_threads}: must be >= 1 (or None for all usable cores)")
        if not 1 <= self.opt_batch_size <= self.max_batch_size:
            raise ValueError(
                f"opt_batch_size={self.opt_batch_size}, max_batch_size={self.max_batch_size}: "
                "need 1 <= opt_batch_size <= max_batch_size"
            )
        if self.max_windows < 1:
            raise ValueError(f"max_windows={self.max_windows}: must be >= 1")
        if self.engine_cache_dir is not None:
            self.engine_cache_dir = Path(self.engine_cache_dir).expanduser()

    @property
    def cache_root(self) -> Path:
        """Where engines, quantized graphs and exports from checkpoints are kept."""
        return self.engine_cache_dir if self.engine_cache_dir is not None else default_cache_dir() / "engines"
