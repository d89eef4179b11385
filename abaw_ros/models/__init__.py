"""The network: MobileNetV4 frame encoder + multi-scale 3D MLP-Mixer temporal head.

Public API (see docs/MODEL.md):

- :class:`ModelConfig`, :class:`AffectNet` (``.encoder``, ``.head``, ``.activate``),
  :func:`create_affect_net`, :func:`broadcast_to_frames`;
- :func:`save_checkpoint` / :func:`load_checkpoint`;
- :func:`export_onnx` / :func:`read_metadata` / :func:`build_metadata` (ONNX model bundle
  and its metadata, the same dict for a checkpoint-backed runtime);
- :class:`FeatureRingBuffer` / :class:`TubeletRingBuffer` / :class:`FaceWindows` (streaming).

Names are imported on first use, so ``abaw_ros.models.streaming`` (numpy only) can be used
by an ONNX-Runtime-only deployment without importing torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from abaw_ros._lazy import lazy_exports

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "LEVELS": "affect_net",
    "OUTPUT_MODES": "affect_net",
    "AffectNet": "affect_net",
    "FrameEncoder": "affect_net",
    "ModelConfig": "affect_net",
    "TemporalHead": "affect_net",
    "activate": "affect_net",
    "broadcast_to_frames": "affect_net",
    "create_affect_net": "affect_net",
    "FREEZE_POLICIES": "backbone",
    "BackboneLoadReport": "backbone",
    "load_backbone_weights": "backbone",
    "default_thresholds": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "GRAPH_FILES": "export",
    "METADATA_KEY": "export",
    "build_metadata": "export",
    "export_onnx": "export",
    "read_metadata": "export",
    "verify_bundle": "export",
    "TemporalMixer3D": "mixer",
    "FaceWindows": "streaming",
    "FeatureRingBuffer": "streaming",
    "TubeletRingBuffer": "streaming",
    "default_head_interval": "streaming",
    "newest_frame": "streaming",
}

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
    "TubeletRingBuffer",
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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, __all__)

if TYPE_CHECKING:
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
    from abaw_ros.models.streaming import (
        FaceWindows,
        FeatureRingBuffer,
        TubeletRingBuffer,
        default_head_interval,
        newest_frame,
    )
