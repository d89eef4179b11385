"""ONNX Runtime and PyTorch backends agree on real face crops; metadata travels with the
exported graphs; preprocessing and input validation behave.

Tolerance (both fp32): the two runtimes differ only in kernels and summation order (ONNX
Runtime folds BatchNorm into convolutions and blocks GEMMs differently), which moves
results by a few float32 roundings per layer. Measured here: encoder maps differ by
about 1e-6 of their largest magnitude, activated outputs by about 1e-7. The bounds
below (1e-4 relative, 1e-5 absolute) leave about 100x headroom and are still far below
what a real defect produces (a wrong normalisation, a swapped feature map or a missing
activation moves outputs by 1e-2 or more; the negative controls show the same check
catching such a change)."""
from __future__ import annotations

import numpy as np
import pytest

from abaw_ros import tasks as task_registry
from abaw_ros.runtime import ModelMetadata, load_backend, preprocess_crops
from abaw_ros.runtime.samples import lfw_face_crops

MAP_RTOL = 1e-4  # of the largest magnitude of each reference map
OUTPUT_ATOL = 1e-5  # activated outputs lie in [-1, 1] / [0, 1]


@pytest.fixture(scope="module")
def ort_backend(model_bundle, tmp_path_factory):
    return load_backend(model_bundle, "onnxruntime", engine_cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def torch_backend(untrained_checkpoint):
    return load_backend(untrained_checkpoint, "torch")


@pytest.fixture(scope="module")
def face_batch(ort_backend) -> np.ndarray:
    """16 real faces (LFW), preprocessed: two windows of T=8."""
    return preprocess_crops(lfw_face_crops(16), ort_backend.metadata)


def map_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def torch_maps(torch_backend, face_batch) -> list[np.ndarray]:
    return torch_backend.encode(face_batch)


def test_encoder_maps_agree(ort_backend, torch_maps, face_batch):
    ort_maps = ort_backend.encode(face_batch)
    meta = ort_backend.metadata
    assert [m.shape for m in ort_maps] == [(16, *s) for s in meta.feature_shapes]
    for name, got, ref in zip(meta.feature_names, ort_maps, torch_maps, strict=True):
        assert got.dtype == np.float32
        assert map_error(got, ref) < MAP_RTOL, name
    # negative control: the same check sees a one-pixel-row shift of the input
    shifted = ort_backend.encode(np.roll(face_batch, 1, axis=2))
    assert max(map_error(g, r) for g, r in zip(shifted, torch_maps, strict=True)) > 100 * MAP_RTOL


def test_temporal_head_outputs_agree(ort_backend, torch_backend, torch_maps):
    meta = ort_backend.metadata
    t = meta.window_length
    windows = [m.reshape(2, t, *m.shape[1:]) for m in torch_maps]
    got, ref = ort_backend.temporal(windows), torch_backend.temporal(windows)
    assert got.shape == ref.shape == (2, meta.output_dim)
    assert np.abs(got - ref).max() < OUTPUT_ATOL
    va = got[:, meta.output_slices["va"]]
    others = np.delete(got, np.r_[meta.output_slices["va"]], axis=1)
    assert np.all(np.abs(va) <= 1) and np.all((others >= 0) & (others <= 1))  # activated
    # negative control: windows in another frame order give different outputs
    reordered = ort_backend.temporal([w[:, ::-1] for w in windows])
    assert np.abs(reordered - ref).max() > 10 * OUTPUT_ATOL


def test_whole_clips_agree(ort_backend, torch_backend, face_batch):
    clip = face_batch[None, : ort_backend.metadata.window_length]
    np.testing.assert_allclose(ort_backend.infer_clips(clip), torch_backend.infer_clips(clip), atol=OUTPUT_ATOL)


def test_metadata_from_bundle_matches_checkpoint(ort_backend, torch_backend):
    bundle_meta, ckpt_meta = ort_backend.metadata, torch_backend.metadata
    assert bundle_meta == ckpt_meta
    assert bundle_meta.tasks == task_registry.TASK_ORDER
    assert bundle_meta.output_names == tuple(task_registry.output_names(task_registry.TASK_ORDER))
    assert bundle_meta.feature_shapes == ((960, 7, 7), (96, 14, 14), (64, 28, 28))
    assert (bundle_meta.window_length, bundle_meta.input_size, bundle_meta.trained) == (8, 224, False)
    assert ModelMetadata.from_dict(bundle_meta.to_dict()) == bundle_meta


def test_specs_describe_both_graphs(ort_backend, torch_backend):
    for backend in (ort_backend, torch_backend):
        inputs, outputs = backend.input_specs(), backend.output_specs()
        assert [s.name for s in inputs["temporal_head"]] == list(backend.metadata.feature_names)
        assert [s.name for s in outputs["encoder"]] == list(backend.metadata.feature_names)
        assert inputs["encoder"][0].shape[1:] == (3, 224, 224)
        assert inputs["encoder"][0].dtype == "float32"
        text = backend.describe()
        assert backend.name in text and "stride8" in text


def test_warmup_and_batch_sizes(ort_backend, face_batch):
    ort_backend.warmup(batch_size=2)
    single = ort_backend.encode(face_batch[:1])
    batched = ort_backend.encode(face_batch[:5])
    for s, b in zip(single, batched, strict=True):
        assert map_error(s[0], b[0]) < MAP_RTOL  # batch composition does not change a crop's result


def test_bad_inputs_name_the_expected_shape(ort_backend, face_batch):
    with pytest.raises(ValueError, match=r"expected \(N, 3, 224, 224\)"):
        ort_backend.encode(face_batch[:, :, :112, :112])
    maps = ort_backend.encode(face_batch[:8])
    windows = [m.reshape(1, 8, *m.shape[1:]) for m in maps]
    with pytest.raises(ValueError, match="takes 3"):
        ort_backend.temporal(windows[:2])
    with pytest.raises(ValueError, match=r"window 'stride32'.*expected \(B, 8, 960, 7, 7\)"):
        ort_backend.temporal([windows[0][:, :4], *windows[1:]])


def test_checkpoint_runs_on_onnxruntime_via_cached_export(untrained_checkpoint, torch_backend, torch_maps, face_batch,
                                                           tmp_path):
    backend = load_backend(untrained_checkpoint, "onnxruntime", engine_cache_dir=tmp_path)
    exports = list((tmp_path / "bundles").iterdir())
    assert len(exports) == 1 and (exports[0] / "encoder.onnx").is_file()
    windows = [m[None, :8] for m in torch_maps]
    np.testing.assert_allclose(backend.temporal(windows), torch_backend.temporal(windows), atol=OUTPUT_ATOL)
    assert map_error(backend.encode(face_batch[:2])[0], torch_maps[0][:2]) < MAP_RTOL
    load_backend(untrained_checkpoint, "onnxruntime", engine_cache_dir=tmp_path)  # reuses the export
    assert list((tmp_path / "bundles").iterdir()) == exports


def test_num_threads_is_applied(model_bundle, tmp_path):
    backend = load_backend(model_bundle, "onnxruntime", num_threads=1, engine_cache_dir=tmp_path)
    assert backend.device == "cpu x1"
    assert backend._encoder.get_session_options().intra_op_num_threads == 1
