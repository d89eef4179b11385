"""ONNX bundle: files, metadata, dynamic batch, ONNX Runtime == PyTorch within tolerance.

Tolerance: ONNX Runtime (MLAS kernels, BatchNorm folded into the convolutions) and PyTorch
(oneDNN / MKL) sum the same float32 products in different orders. float32 has eps 1.2e-7;
a dot product of K terms then differs by about sqrt(K) * eps relative (K <= 4096 here:
~1e-5), and the ~20 layers of the encoder do not amplify that much (measured: 1e-6
relative on the feature maps, 1e-7 on the outputs). The test allows 1e-4: 10-100x the
measured error, so thread counts or another CPU (AVX2 vs AVX-512 FMA) do not make it
flaky, and still 100x below any effect a wrong graph would have (a missing activation,
a wrong token order or a dropped level changes outputs by 1e-2 or more). tanh and sigmoid
have slopes <= 1, so the activated outputs are no less precise than the raw ones.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from abaw_ros import tasks
from abaw_ros.cli import main as cli_main
from abaw_ros.models import (
    GRAPH_FILES,
    METADATA_KEY,
    create_affect_net,
    export_onnx,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    verify_bundle,
)

OUTPUT_ATOL = 1e-4  # activated outputs, absolute
FEATURE_RTOL = 1e-4  # encoder maps, relative to the largest magnitude


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _spread_outputs(net) -> None:
    """Scale the classifier so raw outputs span several units: activations then neither
    saturate nor sit at 0.5, and a wrong graph shows in every output."""
    with torch.no_grad():
        net.head.classifier.weight.mul_(40.0)


def test_bundle_files_and_metadata(model_bundle, untrained_checkpoint):
    model, info = load_checkpoint(untrained_checkpoint)
    assert sorted(p.name for p in model_bundle.iterdir()) == sorted([*GRAPH_FILES.values(), "bundle.json"])
    manifest = json.loads((model_bundle / "bundle.json").read_text())
    assert manifest["format"] == "abaw_ros.bundle" and sorted(manifest["files"]) == sorted(GRAPH_FILES.values())
    for graph, name in GRAPH_FILES.items():
        proto = onnx.load(str(model_bundle / name))
        assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
        raw = {p.key: p.value for p in proto.metadata_props}[METADATA_KEY]
        meta = json.loads(raw)
        assert meta == read_metadata(model_bundle / name)
        assert meta["graph"] == graph
        assert meta["feature_names"] == ["stride32", "stride16", "stride8"]
        assert meta["feature_shapes"] == [[960, 7, 7], [96, 14, 14], [64, 28, 28]]
        assert meta["window_length"] == 8 and meta["input_size"] == 224
        assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
        assert meta["tasks"] == list(tasks.ALL_TASKS)
        assert meta["output_names"] == tasks.output_names(tasks.ALL_TASKS)
        assert meta["au_thresholds"] == [0.5] * 12 and meta["ah_threshold"] == 0.5
        assert meta["trained"] is False and meta["activated"] is True
        assert meta["config"] == model.cfg.to_dict()
        assert meta["model_hash"] == manifest["model_hash"]  # every graph names the one model
    enc = _session(model_bundle / "encoder.onnx")
    assert [i.name for i in enc.get_inputs()] == ["crops"]
    assert [o.name for o in enc.get_outputs()] == ["stride32", "stride16", "stride8"]
    head = _session(model_bundle / "temporal_head.onnx")
    assert [i.name for i in head.get_inputs()] == ["stride32", "stride16", "stride8"]
    assert head.get_inputs()[2].shape[1:] == [8, 64, 28, 28]


@pytest.fixture(scope="module")
def spread_bundle(tmp_path_factory):
    torch.manual_seed(0)
    net = create_affect_net(window_length=8, n_levels=3).eval()
    _spread_outputs(net)
    out = tmp_path_factory.mktemp("spread")
    paths = export_onnx(net, out, thresholds={"au_thresholds": [0.4] * 12, "ah_threshold": 0.6}, trained=True)
    return net, paths


def test_onnx_runtime_matches_pytorch_with_dynamic_batch(spread_bundle):
    net, paths = spread_bundle
    rng = np.random.default_rng(1)
    crops = rng.standard_normal((3, 3, 224, 224), dtype=np.float32)  # exported with batch 2
    clips = rng.standard_normal((3, 8, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        ref_maps = [m.numpy() for m in net.encoder(torch.from_numpy(crops))]
        ref_windows = net.forward_features(torch.from_numpy(clips))
        ref_head = net.activate(net.head(ref_windows)).numpy()
        ref_clip = net.activate(net(torch.from_numpy(clips))).numpy()
    got_maps = _session(paths["encoder"]).run(None, {"crops": crops})
    for got, ref in zip(got_maps, ref_maps, strict=True):
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= FEATURE_RTOL * np.abs(ref).max()
    feeds = {n: w.numpy() for n, w in zip(net.cfg.feature_names, ref_windows, strict=True)}
    got_head = _session(paths["temporal_head"]).run(None, feeds)[0]
    got_clip = _session(paths["window"]).run(None, {"clips": clips})[0]
    assert got_head.shape == got_clip.shape == (3, 21)
    np.testing.assert_allclose(got_head, ref_head, rtol=0, atol=OUTPUT_ATOL)
    np.testing.assert_allclose(got_clip, ref_clip, rtol=0, atol=OUTPUT_ATOL)
    # outputs are activated, in range, and spread (the comparison above is not vacuous)
    va = got_clip[:, tasks.output_slices(tasks.ALL_TASKS)["va"]]
    rest = got_clip[:, 2:]
    assert va.min() >= -1 and va.max() <= 1 and rest.min() >= 0 and rest.max() <= 1
    assert got_clip.std() > 0.1
    assert read_metadata(paths["window"])["au_thresholds"] == [0.4] * 12
    assert read_metadata(paths["window"])["trained"] is True


def test_verify_bundle_reports_errors_within_tolerance(spread_bundle):
    net, paths = spread_bundle
    errors = verify_bundle(net, paths)
    assert set(errors) == set(GRAPH_FILES)
    assert errors["encoder"] <= FEATURE_RTOL
    assert errors["temporal_head"] <= OUTPUT_ATOL and errors["window"] <= OUTPUT_ATOL
    assert errors["projection"] <= FEATURE_RTOL and errors["tubelet_head"] <= OUTPUT_ATOL


def test_streaming_graphs_take_dynamic_batches_and_carry_their_shapes(spread_bundle):
    net, paths = spread_bundle
    meta = read_metadata(paths["projection"])
    assert meta["projection_shapes"] == [[4, 256, 7, 7]] * 3 and meta["time_patch_size"] == 4
    rng = np.random.default_rng(3)
    maps = [rng.standard_normal((3, *s), dtype=np.float32) for s in net.feature_shapes]  # exported with batch 2
    names = list(net.cfg.feature_names)
    got = _session(paths["projection"]).run(None, dict(zip(names, maps, strict=True)))
    with torch.no_grad():
        ref = [p.numpy() for p in net.head.project_frames([torch.from_numpy(m) for m in maps])]
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape == (3, 4, 256, 7, 7)
        assert np.abs(g - r).max() <= FEATURE_RTOL * np.abs(r).max()
    sums = [rng.standard_normal((3, 2, 256, 7, 7), dtype=np.float32) for _ in names]
    out = _session(paths["tubelet_head"]).run(None, {f"{n}_tubelets": x for n, x in zip(names, sums, strict=True)})[0]
    with torch.no_grad():
        ref_out = net.activate(net.head.forward_tubelets([torch.from_numpy(x) for x in sums])).numpy()
    assert out.shape == (3, 21) and out.std() > 0.1
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=OUTPUT_ATOL)


def test_frame_mode_export_gives_per_frame_outputs(tmp_path):
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=8, n_levels=2, output_mode="frame",
                            tasks=("va", "ah")).eval()
    _spread_outputs(net)
    paths = export_onnx(net, tmp_path, graphs=("temporal_head",))
    assert list(paths) == ["temporal_head"]
    meta = read_metadata(paths["temporal_head"])
    assert meta["output_mode"] == "frame" and meta["output_shape"] == ["batch", 8, 3]
    windows = [np.random.default_rng(2).standard_normal((2, 8, *s), dtype=np.float32) for s in net.feature_shapes]
    got = _session(paths["temporal_head"]).run(None, dict(zip(net.cfg.feature_names, windows, strict=True)))[0]
    with torch.no_grad():
        ref = net.activate(net.head([torch.from_numpy(w) for w in windows])).numpy()
    assert got.shape == (2, 8, 3)
    np.testing.assert_allclose(got, ref, rtol=0, atol=OUTPUT_ATOL)


def test_export_rejects_bad_arguments(tmp_path):
    net = create_affect_net(input_size=64, window_length=8, n_levels=1)
    with pytest.raises(ValueError, match="opset=13: must be >= 17"):
        export_onnx(net, tmp_path, opset=13)
    with pytest.raises(ValueError, match=r"graphs \['engine'\]"):
        export_onnx(net, tmp_path, graphs=("engine",))
    with pytest.raises(ValueError, match="au_thresholds has 2 values"):
        export_onnx(net, tmp_path, thresholds={"au_thresholds": [0.5, 0.5]})
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_export_command_writes_a_verified_bundle(tmp_path, capsys):
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=8, n_levels=1, tasks=("au",))
    ckpt = save_checkpoint(tmp_path / "au.pt", net, trained=True, au_thresholds=[0.3] * 12)
    assert cli_main(["export", str(ckpt)]) == 0
    out_dir = tmp_path / "au_onnx"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([*GRAPH_FILES.values(), "bundle.json"])
    meta = read_metadata(out_dir / "window.onnx")
    assert meta["tasks"] == ["au"] and meta["au_thresholds"] == [0.3] * 12 and meta["trained"] is True
    printed = capsys.readouterr().out
    assert "verify window" in printed and "encoder.onnx" in printed
    assert cli_main(["export", str(tmp_path / "missing.pt")]) == 2
