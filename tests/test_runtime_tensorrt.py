"""TensorRT engines against PyTorch and ONNX Runtime, where TensorRT and an NVIDIA GPU exist
(skipped elsewhere with the reason; `scripts/gpu_check.sh` runs this file on TensorRT 10.x
and 11.x). Tolerances: fp32 engines are built without TF32 but use other kernels than
PyTorch, so activated outputs agree to 1e-3; fp16 (a converted graph with LayerNorm and
reductions in fp32) keeps about 3 significant digits (outputs within 2e-2); int8 (Q/DQ
encoder, fp16 head) stays within 5e-2 with decisions mostly kept, as for the ONNX Runtime
int8 path. Every fp16/int8 configuration also passes the precision gate."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from abaw_ros.runtime import EngineCache, available_backends, load_backend, preprocess_crops
from abaw_ros.runtime.accuracy import compare_backends
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
    assert set(entries) == {"encoder", "temporal_head"}
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
    assert entries["encoder"].key.precision == "int8" and entries["temporal_head"].key.precision == "fp16"
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
