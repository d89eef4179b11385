"""Loaders for the ABAW data sets, windowing, preprocessing and the fixture generator.

Every loader returns ``list[VideoRecord]`` (see :mod:`abaw_ros.data.records`).

Names are imported on first use: the parsers and records (numpy only) serve the offline
tools of a torch-free install (``pip install ".[bags]"``), while ``ClipDataset`` and the
transforms, which need torch, load only when training asks for them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from abaw_ros._lazy import lazy_exports

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "load_affwild2": "affwild2",
    "parse_annotation_file": "affwild2",
    "load_bah": "bah",
    "normalize_video_path": "bah",
    "ClipDataset": "dataset",
    "FrameFeatures": "dataset",
    "load_hume": "hume",
    "DataFormatError": "records",
    "VideoRecord": "records",
    "AugmentConfig": "transforms",
    "ClipTransform": "transforms",
    "read_rgb": "transforms",
    "Window": "windows",
    "evaluation_windows": "windows",
    "training_windows": "windows",
}

__all__ = [
    "AugmentConfig", "ClipDataset", "ClipTransform", "DataFormatError", "FrameFeatures", "VideoRecord",
    "Window", "evaluation_windows", "load_affwild2", "load_bah", "load_hume", "normalize_video_path",
    "parse_annotation_file", "read_rgb", "training_windows",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, __all__)

if TYPE_CHECKING:
    from abaw_ros.data.affwild2 import load_affwild2, parse_annotation_file
    from abaw_ros.data.bah import load_bah, normalize_video_path
    from abaw_ros.data.dataset import ClipDataset, FrameFeatures
    from abaw_ros.data.hume import load_hume
    from abaw_ros.data.records import DataFormatError, VideoRecord
    from abaw_ros.data.transforms import AugmentConfig, ClipTransform, read_rgb
    from abaw_ros.data.windows import Window, evaluation_windows, training_windows
