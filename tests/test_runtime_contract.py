"""The backend contract, for every backend in the registry (abaw_ros.backend_registry):
on the same model and the same real faces each gives the checkpoint's own outputs within
the tolerance its spec states, and the same error for the same bad input. A backend that
cannot run here (TensorRT without its package or a GPU) is skipped with the reason
available_backends gives; a new backend entry is tested without a new test.

Tolerances (BackendSpec.fp32_output_atol / fp32_feature_rtol): ONNX Runtime and PyTorch
sum the same float32 products in other orders (measured 1e-6 relative on the maps, 1e-7
on the outputs; 1e-4 allowed, as tests/test_model_export.py explains); TensorRT fp32
engines run without TF32 but with other kernels (1e-3, as tests/test_runtime_tensorrt.py);
torch is the reference itself."""
from __future__ import annotations

import numpy as np
import pytest

from abaw_ros.backend_registry import AUTO_CANDIDATES, BACKENDS
from abaw_ros.runtime import BackendUnavailableError, load_backend, preprocess_crops
from abaw_ros.runtime.samples import lfw_face_crops

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(untrained_checkpoint):
    return load_backend(untrained_checkpoint, "torch", device="cpu")


@pytest.fixture(scope="module")
def crops(reference) -> np.ndarray:
    return preprocess_crops(lfw_face_crops(8), reference.metadata)


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request, model_bundle, untrained_checkpoint, tmp_path_factory):
    """Each registered backend on the same model: the checkpoint for a backend that runs
    only checkpoints, else the bundle exported from it."""
    spec = BACKENDS[request.param]
    model = untrained_checkpoint if spec.checkpoint_only else model_bundle
    try:
        loaded = load_backend(model, spec.name, "fp32", num_threads=1,
                              engine_cache_dir=tmp_path_factory.mktemp(f"contract_{spec.name}"))
    except BackendUnavailableError as exc:
        from abaw_ros.runtime import available_backends

        reasons = {c: r for c, r in available_backends().items() if AUTO_CANDIDATES[c][0] == spec.name}
        pytest.skip(f"backend {spec.name} cannot run here: {' '.join(str(exc).split())} ({reasons})")
    yield loaded
    loaded.close()


def _assert_maps_close(got, ref, rtol: float) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape and g.dtype == np.float32
        assert np.abs(g - r).max() <= rtol * np.abs(r).max() + 1e-7


def test_outputs_match_the_checkpoint_within_the_stated_tolerance(backend, reference, crops):
    spec = BACKENDS[backend.name]
    meta = backend.metadata
    assert meta.window_length == reference.metadata.window_length
    assert meta.feature_shapes == reference.metadata.feature_shapes and meta.tasks == reference.metadata.tasks
    maps, ref_maps = backend.encode(crops), reference.encode(crops)
    _assert_maps_close(maps, ref_maps, spec.fp32_feature_rtol)
    # a window of the eight faces, and the same window reversed: two different windows
    windows = [np.stack([m, m[::-1]]) for m in ref_maps]
    out, ref_out = backend.temporal(windows), reference.temporal(windows)
    assert out.shape == ref_out.shape == (2, meta.output_dim)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=spec.fp32_output_atol + 1e-7)
    assert np.abs(ref_out[0] - ref_out[1]).max() > 10 * (spec.fp32_output_atol + 1e-6)  # not vacuous
    clips = np.stack([crops, crops[::-1]])
    np.testing.assert_allclose(backend.infer_clips(clips), ref_out, rtol=0, atol=2 * spec.fp32_output_atol + 1e-5)
    if backend.streams_tubelets:
        projected = backend.project(ref_maps)
        _assert_maps_close(projected, reference.project(ref_maps), spec.fp32_feature_rtol)
        pt = meta.time_patch_size
        # tubelet k sums the projection of frame k*pt+j by time slice j
        sums = [np.stack([np.stack([level[f * pt + j, j] for j in range(pt)]).sum(0)
                          for f in range(meta.window_length // pt)]) for level in reference.project(ref_maps)]
        sums = [np.stack([s, s]) for s in sums]
        np.testing.assert_allclose(backend.temporal_tubelets(sums), reference.temporal_tubelets(sums), rtol=0,
                                   atol=spec.fp32_output_atol + 1e-7)


def _error(call) -> tuple[str, str]:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return type(exc).__name__, str(exc)
    return "no error", ""


def _bad_inputs(backend, crops):
    meta = backend.metadata
    s, t = meta.input_size, meta.window_length
    windows = [np.zeros((1, t, *shape), np.float32) for shape in meta.feature_shapes]
    return {
        "crops without the channel axis": lambda: backend.encode(crops[:, 0]),
        "crops of the wrong size": lambda: backend.encode(np.zeros((2, 3, s, s + 1), np.float32)),
        "no crops": lambda: backend.encode(np.zeros((0, 3, s, s), np.float32)),
        "crops that are not numbers": lambda: backend.encode(np.full((1, 3, s, s), "x")),
        "a level missing": lambda: backend.temporal(windows[:-1]),
        "a window one frame short": lambda: backend.temporal([w[:, 1:] for w in windows]),
        "windows of two batch sizes": lambda: backend.temporal([windows[0], *(np.concatenate([w, w])
                                                                            for w in windows[1:])]),
        "clips without the time axis": lambda: backend.infer_clips(crops),
        "clips of the wrong length": lambda: backend.infer_clips(np.zeros((1, t + 1, 3, s, s), np.float32)),
    }


def test_bad_input_gives_the_same_error_on_every_backend(backend, reference, crops):
    ours = {what: _error(call) for what, call in _bad_inputs(backend, crops).items()}
    theirs = {what: _error(call) for what, call in _bad_inputs(reference, crops).items()}
    assert ours == theirs
    assert all(kind == "ValueError" and message for kind, message in ours.values()), ours


def test_a_missing_model_file_is_the_same_error_on_every_backend(backend, tmp_path):
    missing = tmp_path / "no_such_model.pt"
    kind, message = _error(lambda: load_backend(missing, backend.name))
    assert kind == "FileNotFoundError" and str(missing) in message
    assert (kind, message) == _error(lambda: load_backend(missing, "torch"))
