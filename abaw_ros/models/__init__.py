"""The network: MobileNetV4 frame encoder + multi-scale 3D MLP-Mixer temporal head.

Public API (see docs/MODEL.md):

- :class:`ModelConfig`, :class:`AffectNet` (``.encoder``, ``.head``, ``.activate``),
  :func:`create_affect_net`, :func:`broadcast_to_frames`;
- :func:`save_checkpoint` / :func:`load_checkpoint`;
- :func:`export_onnx` / :func:`read_metadata` / :func:`build_metadata` (ONNX model bundle
  and its metadata, the same dict for a checkpoint-backed runtime);
- :class:`FeatureRingBuffer` / :class:`FaceWindows` (streaming).
"""
from abaw_ros.models.affect_net import (
    LEVELS,
    OUTPUT_MODES,
    AffectNet,
    FrameEncoder,
    ModelConfig,
    TemporalHead,
    activate,
    broadcast_to_frames,
    create_affect_net,
)
from abaw_ros.models.backbone import FREEZE_POLICIES, BackboneLoadReport, load_backbone_weights
from abaw_ros.models.checkpoint import default_thresholds, load_checkpoint, save_checkpoint
from abaw_ros.models.export import (
    GRAPH_FILES,
    METADATA_KEY,
    build_metadata,
    export_onnx,
    read_metadata,
    verify_bundle,
)
from abaw_ros.models.mixer import TemporalMixer3D
from abaw_ros.models.streaming import FaceWindows, FeatureRingBuffer, default_head_interval, newest_frame

__all__ = [
    "LEVELS",
    "OUTPUT_MODES",
    "FREEZE_POLICIES",
    "GRAPH_FILES",
    "METADATA_KEY",
    "AffectNet",
    "BackboneLoadReport",
    "FaceWindows",
    "FeatureRingBuffer",
    "FrameEncoder",
    "ModelConfig",
    "TemporalHead",
    "TemporalMixer3D",
    "activate",
    "broadcast_to_frames",
    "build_metadata",
    "create_affect_net",
    "default_head_interval",
    "default_thresholds",
    "export_onnx",
    "load_backbone_weights",
    "load_checkpoint",
    "newest_frame",
    "read_metadata",
    "save_checkpoint",
    "verify_bundle",
]
