"""The metadata schema (abaw_ros/model_metadata.py): one module writes what every exported
graph carries and reads it back, reads the layouts earlier exports and checkpoints hold,
and imports without torch or onnx (an ONNX-Runtime-only install reads bundles with it)."""
from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from abaw_ros.model_metadata import GRAPH_FILES, METADATA_KEY, ModelMetadata, read_onnx_metadata
from abaw_ros.runtime.bundle import ModelBundle


@pytest.fixture(scope="module")
def stored(model_bundle) -> dict:
    return read_onnx_metadata(model_bundle / GRAPH_FILES["encoder"])


def test_what_export_writes_is_what_the_schema_writes_and_reads_back(stored):
    metadata = ModelMetadata.from_dict(stored)
    assert metadata.to_stored(stored["graph"]) == stored
    assert ModelMetadata.from_dict(metadata.to_stored("encoder")) == metadata
    assert metadata.model_hash == stored["model_hash"] and len(metadata.model_hash) == 64


def test_thresholds_are_stored_once(stored):
    assert "thresholds" not in stored
    assert stored["au_thresholds"] == [0.5] * 12 and stored["ah_threshold"] == 0.5


def test_layouts_of_earlier_exports_and_checkpoints_still_read(stored):
    current = ModelMetadata.from_dict(stored)
    # thresholds also under "thresholds" (as exports wrote them before), no streaming graphs
    # nor model hash yet
    earlier = {k: v for k, v in stored.items() if k not in ("projection_shapes", "model_hash", "time_patch_size")}
    earlier["thresholds"] = {"au_thresholds": [0.3] * 12, "ah_threshold": 0.7}
    earlier.update(au_thresholds=[0.3] * 12, ah_threshold=0.7)
    old = ModelMetadata.from_dict(earlier)
    assert (old.au_thresholds, old.ah_threshold, old.projection_shapes) == ((0.3,) * 12, 0.7, ())
    # thresholds only under "thresholds"
    nested = {k: v for k, v in earlier.items() if k not in ("au_thresholds", "ah_threshold")}
    assert ModelMetadata.from_dict(nested).ah_threshold == 0.7
    # a checkpoint's info: the values in the nested model config, feature shapes by name
    config = dict(stored["config"], feature_shapes=dict(zip(stored["feature_names"], stored["feature_shapes"],
                                                            strict=True)))
    info = {"config": config, "trained": True, "au_thresholds": [0.4] * 12}
    from_info = ModelMetadata.from_dict(info)
    assert from_info.feature_shapes == current.feature_shapes and from_info.feature_names == current.feature_names
    assert (from_info.window_length, from_info.input_size, from_info.trained) == (8, 224, True)


def test_a_bundle_exported_in_the_earlier_layout_still_opens(model_bundle, stored, tmp_path):
    for graph in ("encoder", "temporal_head"):
        proto = onnx.load(str(model_bundle / GRAPH_FILES[graph]))
        meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
        meta["thresholds"] = {"au_thresholds": meta["au_thresholds"], "ah_threshold": meta["ah_threshold"]}
        for key in ("projection_shapes", "model_hash"):
            meta.pop(key)
        del proto.metadata_props[:]
        proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
        onnx.save(proto, str(tmp_path / GRAPH_FILES[graph]))
    bundle = ModelBundle.open(tmp_path)
    assert bundle.metadata.window_length == stored["window_length"] and not bundle.streams_tubelets


def test_the_schema_imports_without_torch_or_onnx():
    code = ("import sys, abaw_ros.model_metadata, abaw_ros.backend_registry, abaw_ros.config; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
