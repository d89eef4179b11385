"""Loaders for the ABAW data sets, windowing, preprocessing and the fixture generator.

Every loader returns ``list[VideoRecord]`` (see :mod:`abaw_ros.data.records`).
"""
from abaw_ros.data.affwild2 import load_affwild2, parse_annotation_file
from abaw_ros.data.bah import load_bah, normalize_video_path
from abaw_ros.data.dataset import ClipDataset, FrameFeatures
from abaw_ros.data.hume import load_hume
from abaw_ros.data.records import DataFormatError, VideoRecord
from abaw_ros.data.transforms import AugmentConfig, ClipTransform, read_rgb
from abaw_ros.data.windows import Window, evaluation_windows, training_windows

__all__ = [
    "AugmentConfig", "ClipDataset", "ClipTransform", "DataFormatError", "FrameFeatures", "VideoRecord",
    "Window", "evaluation_windows", "load_affwild2", "load_bah", "load_hume", "normalize_video_path",
    "parse_annotation_file", "read_rgb", "training_windows",
]
