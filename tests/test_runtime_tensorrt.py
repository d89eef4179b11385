"""TensorRT engines against PyTorch and ONNX Runtime, where TensorRT and an NVIDIA GPU exist
(skipped elsewhere with the reason; `scripts/gpu_check.sh` runs this file on TensorRT 10.x
and 11.x). Tolerances: fp32 engines are built without TF32 but use other kernels than
PyTorch, so activated outputs agree to 1e-3; fp16 (a converted graph with LayerNorm and
reductions in fp32) keeps about 3 significant digits (outputs within 2e-2); int8 (Q/DQ
encoder, fp16 head) stays within 5e-2 with decisions mostly kept, as for the ONNX Runtime
int8 path. Every fp16/int8 configuration also passes the precision gate. The head runs the
streaming form (projection + tubelet-head engines) like every backend; the fused head
engine only for a bundle exported without the streaming graphs."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from abaw_ros.runtime import EngineCache, available_backends, load_backend, preprocess_crops
from abaw_ros.runtime.accuracy import compare_backends, tubelet_sums
from abaw_ros.runtime.samples import lfw_face_crops


def _skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install tensorrt-cu12 cuda-python, or JetPack on Jetson)"
    reason = available_backends()["tensorrt"]
    return f"TensorRT cannot run here: {reason}" if reason else None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

OUTPUT_ATOL = {"fp32": 1e-3, "fp16": 2e-2, "int8": 5e-2}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("trt-engines")


@pytest.fixture(scope="module")
def reference(untrained_checkpoint):
    return load_backend(untrained_checkpoint, "torch", device="cpu")


@pytest.fixture(scope="module")
def faces():
    crops = lfw_face_crops(200)
    return {"calibration": crops[:96], "evaluation": crops[100:132]}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_parity_with_torch(model_bundle, cache_dir, reference, faces, precision):
    backend = load_backend(model_bundle, "tensorrt", precision, engine_cache_dir=cache_dir,
                           calibration=faces["calibration"] if precision == "int8" else None)
    entries = backend.compiled_artifacts()
    assert set(entries) == {"encoder", "projection", "tubelet_head"} and backend.streams_tubelets
    report = compare_backends(reference, backend, preprocess_crops(faces["evaluation"], reference.metadata))
    print(report.format())
    print({g: (e.built, e.build_seconds) for g, e in entries.items()})
    assert report.max_output_error < OUTPUT_ATOL[precision]
    assert all(m.cosine_mean > (0.999 if precision == "fp32" else 0.95) for m in report.maps)


def test_engine_is_reused_then_rebuilt_on_force(model_bundle, cache_dir):
    first = load_backend(model_bundle, "tensorrt", "fp16", engine_cache_dir=cache_dir)
    second = load_backend(model_bundle, "tensorrt", "fp16", engine_cache_dir=cache_dir)
    assert not any(e.built for e in second.compiled_artifacts().values())
    assert {e.path for e in first.compiled_artifacts().values()} == {e.path for e in second.compiled_artifacts().values()}
    forced = load_backend(model_bundle, "tensorrt", "fp16", engine_cache_dir=cache_dir, force_engine_update=True)
    assert all(e.built for e in forced.compiled_artifacts().values())


def test_batches_beyond_the_profile_are_refused(model_bundle, cache_dir):
    backend = load_backend(model_bundle, "tensorrt", "fp16", engine_cache_dir=cache_dir, max_batch_size=4,
                           opt_batch_size=2)
    s = backend.metadata.input_size
    backend.encode(np.zeros((4, 3, s, s), np.float32))
    with pytest.raises(ValueError, match="max_batch_size"):
        backend.encode(np.zeros((5, 3, s, s), np.float32))


def test_auto_prefers_tensorrt(model_bundle, cache_dir):
    assert load_backend(model_bundle, "auto", "fp16", engine_cache_dir=cache_dir).name == "tensorrt"


def test_engines_carry_their_recipe_and_precision_verdict(model_bundle, cache_dir, faces):
    backend = load_backend(model_bundle, "tensorrt", "int8", engine_cache_dir=cache_dir,
                           calibration=faces["calibration"])
    entries = backend.compiled_artifacts()
    assert entries["encoder"].key.precision == "int8"
    assert entries["projection"].key.precision == entries["tubelet_head"].key.precision == "fp16"
    assert entries["encoder"].key.recipe.startswith("int8 qdq (tensorrt)")
    assert all("strongly typed" in e.key.recipe and e.key.compiler.startswith("tensorrt ") for e in entries.values())
    assert backend.precision_verdict["status"] == "passed"
    cache = EngineCache(cache_dir)
    assert all(cache.read_record(e.path)["precision_check"]["status"] == "passed" for e in entries.values())


def test_fp32_engine_matches_onnxruntime(model_bundle, cache_dir, faces):
    ort_fp32 = load_backend(model_bundle, "onnxruntime", "fp32", device="cpu")
    engine = load_backend(model_bundle, "tensorrt", "fp32", engine_cache_dir=cache_dir)
    report = compare_backends(ort_fp32, engine, preprocess_crops(faces["evaluation"], ort_fp32.metadata))
    print(report.format())
    assert report.max_output_error < OUTPUT_ATOL["fp32"]


def test_streaming_engines_agree_with_onnxruntime(model_bundle, cache_dir, faces):
    """project, temporal_tubelets and temporal (whole windows, computed through the two
    streaming engines) against ONNX Runtime's graphs, fp32."""
    ort_fp32 = load_backend(model_bundle, "onnxruntime", "fp32", device="cpu")
    engine = load_backend(model_bundle, "tensorrt", "fp32", engine_cache_dir=cache_dir)
    crops = preprocess_crops(faces["evaluation"][:16], ort_fp32.metadata)
    maps = ort_fp32.encode(crops[:8])
    for got, ref in zip(engine.project(maps), ort_fp32.project(maps), strict=True):
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    sums = tubelet_sums(ort_fp32.project(maps), [0], 8)  # the window of those 8 frames
    np.testing.assert_allclose(engine.temporal_tubelets(sums), ort_fp32.temporal_tubelets(sums), atol=OUTPUT_ATOL["fp32"])
    all_maps = ort_fp32.encode(crops)
    windows = [np.stack([m[0:8], m[8:16]]) for m in all_maps]
    np.testing.assert_allclose(engine.temporal(windows), ort_fp32.temporal(windows), atol=OUTPUT_ATOL["fp32"])
    assert set(engine.input_specs()) == {"encoder", "projection", "tubelet_head"}


def test_window_batches_beyond_the_profile_are_refused(model_bundle, cache_dir):
    backend = load_backend(model_bundle, "tensorrt", "fp32", engine_cache_dir=cache_dir, max_windows=2)
    assert backend.compiled_artifacts()["tubelet_head"].key.profiles[0].max[0] == 2
    backend.temporal_tubelets(backend.zero_tubelets(2))
    with pytest.raises(ValueError, match="max_windows"):
        backend.temporal_tubelets(backend.zero_tubelets(3))
    with pytest.raises(ValueError, match="max_windows"):
        backend.temporal(backend.zero_windows(3))


def test_the_pipeline_streams_tubelets_on_tensorrt(model_bundle, cache_dir, moving_face_frames):
    """The pipeline on TensorRT runs the tubelet path and gives ONNX Runtime's outputs."""
    from abaw_ros.config import PipelineConfig
    from abaw_ros.perception.pipeline import PerceptionPipeline

    frames = moving_face_frames(10)
    runs = {}
    for name, backend in (("onnxruntime", load_backend(model_bundle, "onnxruntime", "fp32", device="cpu")),
                          ("tensorrt", load_backend(model_bundle, "tensorrt", "fp32", engine_cache_dir=cache_dir))):
        pipeline = PerceptionPipeline(PipelineConfig(backend=name, detection_interval=1, track_min_hits=1),
                                      backend=backend)
        assert pipeline.streams_tubelets and pipeline.buffers.projected
        runs[name] = [pipeline.process(f, i).faces for i, f in enumerate(frames)]
    for i, (got, ref) in enumerate(zip(runs["tensorrt"], runs["onnxruntime"], strict=True)):
        assert [f.face_id for f in got] == [f.face_id for f in ref] and len(got) == 1
        for task in ("va", "au", "emi", "ah"):
            np.testing.assert_allclose(got[0].outputs[task], ref[0].outputs[task], atol=OUTPUT_ATOL["fp32"],
                                       err_msg=f"frame {i} {task}")


def test_a_bundle_exported_with_the_fused_head_alone_gets_the_fused_engine(untrained_checkpoint, cache_dir, tmp_path):
    from abaw_ros.cli import main as cli_main

    fused = tmp_path / "fused"
    assert cli_main(["export", str(untrained_checkpoint), "-o", str(fused), "--graphs", "encoder", "temporal_head",
                     "--no-verify"]) == 0
    engine = load_backend(fused, "tensorrt", "fp16", engine_cache_dir=cache_dir)
    assert set(engine.compiled_artifacts()) == {"encoder", "temporal_head"} and not engine.streams_tubelets
    assert engine.precision_verdict["status"] == "passed"
    ort_fp32 = load_backend(fused, "onnxruntime", "fp32", device="cpu")
    windows = [np.random.default_rng(0).standard_normal((2, 8, *s)).astype(np.float32)
               for s in ort_fp32.metadata.feature_shapes]
    np.testing.assert_allclose(engine.temporal(windows), ort_fp32.temporal(windows), atol=OUTPUT_ATOL["fp16"])
