"""One temporal-head path on every backend: which TensorRT engines a bundle gets (decided
without TensorRT, so checked here; the engines themselves in tests/test_runtime_tensorrt.py
on a GPU), the fused head only where the user exported it alone, and the precision gate
judging each backend on the path the pipeline runs with it."""
from __future__ import annotations

import numpy as np
import pytest

from abaw_ros.cli import main as cli_main
from abaw_ros.config import PipelineConfig
from abaw_ros.perception.pipeline import PerceptionPipeline
from abaw_ros.runtime import BackendOptions, load_backend, preprocess_crops
from abaw_ros.runtime.accuracy import compare_backends
from abaw_ros.runtime.bundle import ModelBundle
from abaw_ros.runtime.samples import lfw_face_crops
from abaw_ros.runtime.tensorrt_plan import engine_plan


@pytest.fixture(scope="module")
def fused_bundle(untrained_checkpoint, tmp_path_factory):
    """What a user who asks for the fused head exports: the encoder and temporal_head.onnx only."""
    out = tmp_path_factory.mktemp("fused") / "bundle"
    assert cli_main(["export", str(untrained_checkpoint), "-o", str(out), "--graphs", "encoder", "temporal_head",
                     "--no-verify"]) == 0
    return out


@pytest.mark.parametrize(("precision", "head"), [("fp32", "fp32"), ("fp16", "fp16"), ("int8", "fp16")])
def test_tensorrt_builds_the_streaming_engines_for_a_bundle_that_has_them(model_bundle, precision, head):
    steps = engine_plan(ModelBundle.open(model_bundle), BackendOptions(precision=precision, max_batch_size=12,
                                                                       opt_batch_size=3, max_windows=5))
    assert [(s.graph, s.source.name, s.precision) for s in steps] == [
        ("encoder", "encoder.onnx", precision),
        ("projection", "frame_projection.onnx", head),
        ("tubelet_head", "tubelet_head.onnx", head),
    ]
    encoder, projection, tubelets = steps
    assert [(p.name, p.min, p.opt, p.max) for p in encoder.profiles] == [
        ("crops", (1, 3, 224, 224), (3, 3, 224, 224), (12, 3, 224, 224))]
    # the projection takes the encoder's batch: every map dynamic on the batch axis only
    meta = ModelBundle.open(model_bundle).metadata
    assert sorted(meta.feature_shapes) == [(64, 28, 28), (96, 14, 14), (960, 7, 7)]
    assert [(p.name, p.min[0], p.opt[0], p.max[0], p.max[1:]) for p in projection.profiles] == [
        (n, 1, 3, 12, shape) for n, shape in zip(meta.feature_names, meta.feature_shapes, strict=True)]
    # the tubelet head takes the due windows' tubelet sums (T/pt = 2 tubelets of 256 x 7 x 7)
    assert [(p.name, p.min, p.opt, p.max) for p in tubelets.profiles] == [
        (f"{n}_tubelets", (1, 2, 256, 7, 7), (1, 2, 256, 7, 7), (5, 2, 256, 7, 7))
        for n in meta.feature_names]
    assert (encoder.max_batch, projection.max_batch, tubelets.max_batch) == (12, 12, 5)


def test_the_fused_head_is_built_only_for_a_bundle_exported_without_the_streaming_graphs(fused_bundle):
    steps = engine_plan(ModelBundle.open(fused_bundle), BackendOptions(precision="int8"))
    assert [(s.graph, s.source.name, s.precision) for s in steps] == [
        ("encoder", "encoder.onnx", "int8"), ("temporal_head", "temporal_head.onnx", "fp16")]
    meta = ModelBundle.open(fused_bundle).metadata
    assert [p.max for p in steps[1].profiles] == [(8, 8, *s) for s in meta.feature_shapes]  # whole windows


def test_the_fused_export_runs_whole_windows_with_the_streaming_outputs(model_bundle, fused_bundle, moving_face_frames):
    """The user-facing knob for the fused head (export --graphs encoder temporal_head) still
    selects it, and the pipeline gives the streaming path's outputs, face by face."""
    frames = moving_face_frames(9)
    runs = {}
    for name, bundle in (("streaming", model_bundle), ("fused", fused_bundle)):
        backend = load_backend(bundle, "onnxruntime", num_threads=2)
        config = PipelineConfig(backend="onnxruntime", detection_interval=1, track_min_hits=1)
        pipeline = PerceptionPipeline(config, backend=backend)
        assert pipeline.streams_tubelets is (name == "streaming")
        assert pipeline.buffers.projected is (name == "streaming")
        runs[name] = [pipeline.process(f, i).faces for i, f in enumerate(frames)]
    for i, (new, old) in enumerate(zip(runs["streaming"], runs["fused"], strict=True)):
        assert len(new) == len(old) == 1
        np.testing.assert_allclose(new[0].outputs["au"], old[0].outputs["au"], rtol=0, atol=1e-5, err_msg=str(i))
        np.testing.assert_allclose(new[0].outputs["va"], old[0].outputs["va"], rtol=0, atol=1e-5, err_msg=str(i))
    assert np.abs(runs["streaming"][8][0].outputs["au"] - runs["streaming"][0][0].outputs["au"]).max() > 1e-4


def test_the_gate_runs_each_backend_on_its_own_head_path(model_bundle, fused_bundle):
    """A streaming candidate is judged through its projection and tubelet head, even
    against a reference that runs whole windows; the report says which path each ran."""
    streaming = load_backend(model_bundle, "onnxruntime", num_threads=2)
    fused = load_backend(fused_bundle, "onnxruntime", num_threads=2)
    crops = preprocess_crops(lfw_face_crops(12), streaming.metadata)

    class CountingProjection:
        def __init__(self, backend):
            self._backend, self.projected = backend, 0

        def __getattr__(self, name):
            return getattr(self._backend, name)

        def project(self, maps):
            self.projected += len(maps[0])
            return self._backend.project(maps)

    candidate = CountingProjection(streaming)
    report = compare_backends(fused, candidate, crops)
    assert report.head_paths == ("windows", "tubelets") and candidate.projected == len(crops)
    assert "head on tubelets (windows for the reference)" in report.format()
    assert report.max_output_error < 1e-5  # the two paths compute the same function
    both = compare_backends(streaming, CountingProjection(streaming), crops)
    assert both.head_paths == ("tubelets", "tubelets") and "head on tubelets)" in both.format()
