"""The streaming form of the interface (project + temporal_tubelets) on ONNX Runtime and
PyTorch, on real face crops; bundles exported before the streaming graphs still load and
stream whole windows of feature maps.

Tolerance: projections agree like the encoder maps (1e-4 of the largest magnitude, measured
about 1e-6), activated outputs within 1e-5 absolute (measured about 1e-7 between the two
runtimes, about 1e-6 between the tubelet and the window form): see
tests/test_model_streaming.py for why the two forms differ by float rounding only.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from abaw_ros.models import FaceWindows, export_onnx, load_checkpoint
from abaw_ros.runtime import load_backend, preprocess_crops
from abaw_ros.runtime.samples import lfw_face_crops

PROJ_RTOL = 1e-4
OUTPUT_ATOL = 1e-5


@pytest.fixture(scope="module")
def ort_backend(model_bundle):
    return load_backend(model_bundle, "onnxruntime", num_threads=2)


@pytest.fixture(scope="module")
def torch_backend(untrained_checkpoint):
    return load_backend(untrained_checkpoint, "torch")


@pytest.fixture(scope="module")
def faces(ort_backend) -> np.ndarray:
    """11 real faces (LFW), preprocessed: a window of 8 sliding by 3 frames."""
    return preprocess_crops(lfw_face_crops(11), ort_backend.metadata)


def _stream(backend, crops: np.ndarray) -> list[np.ndarray]:
    """Push the crops one by one through project + tubelet buffer + temporal_tubelets."""
    meta = backend.metadata
    windows = FaceWindows(meta.projection_shapes, meta.window_length, projected=True)
    outs = []
    for crop in crops:
        windows.push("face", backend.project(backend.encode(crop[None])))
        outs.append(backend.temporal_tubelets(windows.tubelet_sums(["face"]))[0])
    return outs


def test_both_backends_stream_tubelets_and_agree(ort_backend, torch_backend, faces):
    assert ort_backend.streams_tubelets and torch_backend.streams_tubelets
    meta = ort_backend.metadata
    assert meta.projection_shapes == ((4, 256, 7, 7),) * 3 and meta.tubelet_shapes == ((2, 256, 7, 7),) * 3
    maps = torch_backend.encode(faces[:4])
    for got, ref in zip(ort_backend.project(maps), torch_backend.project(maps), strict=True):
        assert got.shape == ref.shape == (4, 4, 256, 7, 7)
        assert np.abs(got - ref).max() <= PROJ_RTOL * np.abs(ref).max()
    streamed = {b.name: _stream(b, faces) for b in (ort_backend, torch_backend)}
    for end in (3, 8, 11):  # warm-up, first full window, slid by 3
        real = list(faces[max(0, end - 8):end])
        clip = np.stack([real[0]] * (8 - len(real)) + real)[None]
        fused = torch_backend.infer_clips(clip)[0]
        for name, outs in streamed.items():
            np.testing.assert_allclose(outs[end - 1], fused, rtol=0, atol=OUTPUT_ATOL, err_msg=f"{name} frame {end}")
    # negative control: real faces give windows that differ beyond the tolerance
    assert np.abs(streamed["onnxruntime"][10] - streamed["onnxruntime"][7]).max() > 100 * OUTPUT_ATOL


def test_streaming_inputs_are_validated(ort_backend, faces):
    maps = ort_backend.encode(faces[:2])
    with pytest.raises(ValueError, match="project takes 3"):
        ort_backend.project(maps[:2])
    with pytest.raises(ValueError, match=r"feature map 'stride32'.*expected \(N, 960, 7, 7\)"):
        ort_backend.project([maps[0][:, :10], *maps[1:]])
    with pytest.raises(ValueError, match=r"tubelet sums 'stride32'.*expected \(B, 2, 256, 7, 7\)"):
        ort_backend.temporal_tubelets([np.zeros((1, 8, 256, 7, 7), np.float32)] * 3)
    specs = ort_backend.input_specs()
    assert [s.name for s in specs["tubelet_head"]] == [f"{n}_tubelets" for n in ort_backend.metadata.feature_names]


def test_a_bundle_without_the_streaming_graphs_still_runs(untrained_checkpoint, tmp_path, caplog, faces):
    """A bundle exported before frame_projection/tubelet_head existed: its metadata has no
    projection_shapes and it lacks the two files. It loads, says so, and the pipeline's
    fallback (encode + whole windows) gives the streaming outputs."""
    import json

    import onnx

    model, info = load_checkpoint(untrained_checkpoint)
    old = tmp_path / "old_bundle"
    export_onnx(model, old, graphs=("encoder", "temporal_head"))
    (old / "bundle.json").unlink()  # an old export wrote the graphs alone
    for path in old.glob("*.onnx"):  # strip the newer metadata keys, as an old export wrote them
        graph = onnx.load(str(path))
        meta = json.loads(graph.metadata_props[0].value)
        for key in ("projection_shapes", "time_patch_size", "model_hash"):
            meta.pop(key)
        graph.metadata_props[0].value = json.dumps(meta)
        onnx.save(graph, str(path))
    with caplog.at_level(logging.INFO):
        backend = load_backend(old, "onnxruntime", num_threads=2)
    assert not backend.streams_tubelets and backend.metadata.projection_shapes == ()
    assert "re-export" in caplog.text
    with pytest.raises(NotImplementedError, match="re-export it with `abaw-affect export`"):
        backend.project(backend.encode(faces[:1]))
    windows = FaceWindows(backend.metadata.feature_shapes, 8)
    for crop in faces[:9]:
        windows.push("face", backend.encode(crop[None]))
    new = load_backend(untrained_checkpoint, "torch")
    np.testing.assert_allclose(backend.temporal(windows.windows(["face"])), _stream(new, faces[:9])[-1][None],
                               rtol=0, atol=OUTPUT_ATOL)


def test_int8_quantizes_the_projection_and_is_checked_on_the_streaming_path(model_bundle, tmp_path, faces):
    """precision='int8' on ONNX Runtime: the per-frame projection graph is quantized too
    (calibrated on the encoder's maps of the calibration crops), and compare_backends
    judges int8 through project + tubelet sums, the path the pipeline runs."""
    import onnx

    from abaw_ros.runtime.accuracy import compare_backends

    int8 = load_backend(model_bundle, "onnxruntime", "int8", num_threads=2, engine_cache_dir=tmp_path,
                        calibration=lfw_face_crops(200)[100:132])
    fp32 = load_backend(model_bundle, "onnxruntime", num_threads=2)
    entry = int8.compiled_artifacts()["projection"]
    ops = {node.op_type for node in onnx.load(str(entry.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    maps = fp32.encode(faces[:2])
    for got, ref in zip(int8.project(maps), fp32.project(maps), strict=True):
        rel_l2 = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert 1e-4 < rel_l2 < 0.15  # really quantized, and still close (measured 0.04-0.08)
    report = compare_backends(fp32, int8, faces)
    errors = {t.task: t for t in report.tasks}
    assert errors["va"].max_abs < 0.05 and errors["au"].decision_agreement >= 0.9
    # the report saw the int8 projection: hiding it (fp32 projection) changes the outputs
    class Fp32Projection:
        def __init__(self, backend):
            self._b = backend

        def __getattr__(self, name):
            return getattr(self._b, name)

        def project(self, maps):
            return fp32.project(maps)

    mixed = compare_backends(fp32, Fp32Projection(int8), faces)
    assert {t.task: t.max_abs for t in mixed.tasks} != {t.task: t.max_abs for t in report.tasks}
