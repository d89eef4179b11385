"""Streaming: per-face ring buffers of encoded frames + temporal head == fused window model.

Tubelet streaming (per-frame projections summed per tubelet) computes the tubelet
embedding in another order than the fused window model (pt convolutions over C channels
summed in float32, against one convolution over pt*C channels): the outputs then differ
by float32 rounding only, measured here about 3e-7 (raw outputs of magnitude ~0.5) in
PyTorch and 1e-6 through ONNX Runtime. The tests allow 1e-5 absolute: 10x the measured
error, far below what a wrong slice, frame order or missing bias gives (1e-2 and more;
the negative controls below show it).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from abaw_ros.models import (
    FaceWindows,
    FeatureRingBuffer,
    TubeletRingBuffer,
    create_affect_net,
    default_head_interval,
    newest_frame,
    read_metadata,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stream(net, frames: torch.Tensor) -> list[torch.Tensor]:
    """Encode frames one at a time, buffer them, run the head after every push."""
    buf = FeatureRingBuffer(net.feature_shapes, net.cfg.window_length)
    outs = []
    with torch.no_grad():
        for frame in frames:
            buf.push(net.encoder(frame[None]))
            window = [torch.from_numpy(w)[None] for w in buf.window()]
            outs.append(net.head(window))
    return outs


@pytest.mark.parametrize("mode", ["window", "frame"])
def test_ring_buffer_stream_equals_fused_window_model(mode):
    torch.manual_seed(0)
    t = 8
    net = create_affect_net(input_size=64, window_length=t, n_levels=3, output_mode=mode).eval()
    frames = torch.randn(t + 5, 3, 64, 64)  # wraps around the ring more than once per slot
    outs = _stream(net, frames)
    with torch.no_grad():
        for end in (t, t + 1, t + 4, t + 5):
            fused = net(frames[end - t:end][None])
            torch.testing.assert_close(outs[end - 1], fused, rtol=1e-5, atol=1e-5)
    # windows ending at different frames really differ (the check is not vacuous)
    assert not torch.allclose(outs[-1], outs[-2], atol=1e-4)


def test_warm_up_window_is_the_first_frame_repeated_in_front():
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=8, n_levels=2).eval()
    frames = torch.randn(3, 3, 64, 64)
    outs = _stream(net, frames)
    padded = torch.cat([frames[:1].expand(6, -1, -1, -1), frames[1:3]])
    with torch.no_grad():
        torch.testing.assert_close(outs[2], net(padded[None]), rtol=1e-5, atol=1e-5)


def test_ring_buffer_order_and_counts_exactly():
    buf = FeatureRingBuffer([(1, 1, 1), (2, 1, 1)], window_length=4)
    assert buf.frames_observed == 0 and not buf.is_full
    with pytest.raises(RuntimeError, match="before any push"):
        buf.window()
    for i in range(1, 11):
        buf.push([np.full((1, 1, 1), i, np.float32), np.full((1, 2, 1, 1), -i, np.float32)])
        first, second = buf.window()
        want = [max(1, j) for j in range(i - 3, i + 1)]
        assert first[:, 0, 0, 0].tolist() == want
        assert second[:, 1, 0, 0].tolist() == [-v for v in want]
        assert buf.frames_observed == min(i, 4)
    assert buf.is_full and buf.frames_pushed == 10
    with pytest.raises(ValueError, match=r"feature level 1: shape \(3, 1, 1\), expected \(2, 1, 1\)"):
        buf.push([np.zeros((1, 1, 1)), np.zeros((3, 1, 1))])
    with pytest.raises(ValueError, match="1 feature maps pushed: expected 2"):
        buf.push([np.zeros((1, 1, 1))])
    buf.reset()
    assert buf.frames_observed == 0


def test_face_windows_keep_faces_apart_and_batch_them():
    faces = FaceWindows([(1, 2, 2)], window_length=4)
    for i in range(6):
        batch = np.stack([np.full((1, 2, 2), i, np.float32), np.full((1, 2, 2), 100 + i, np.float32)])
        ids = ["a", "b"] if i % 2 == 0 else ["b", "a"]
        if i % 2:
            batch = batch[::-1]
        faces.push_batch(ids, [batch])
    faces.push("c", [np.full((1, 2, 2), 7, np.float32)])
    (stacked,) = faces.windows(["b", "a", "c"])
    assert stacked.shape == (3, 4, 1, 2, 2)
    assert stacked[0, :, 0, 0, 0].tolist() == [102, 103, 104, 105]
    assert stacked[1, :, 0, 0, 0].tolist() == [2, 3, 4, 5]
    assert stacked[2, :, 0, 0, 0].tolist() == [7, 7, 7, 7]
    assert faces.frames_observed("c") == 1 and faces.frames_observed("zzz") == 0
    assert faces.keep_only(["a", "c"]) == ["b"] and faces.face_ids == ["a", "c"]
    with pytest.raises(KeyError, match="b"):
        faces.windows(["b"])
    with pytest.raises(ValueError, match="2 rows for 1 face ids"):
        faces.push_batch(["a"], [np.zeros((2, 1, 2, 2))])


def test_head_interval_marks_faces_due_every_kth_frame():
    faces = FaceWindows([(1, 1, 1)], window_length=8, head_interval=3)
    due_at = []
    for i in range(1, 11):
        faces.push("a", [np.zeros((1, 1, 1), np.float32)])
        if faces.due("a"):
            due_at.append(i)
            faces.mark_run(["a"])
    assert due_at == [1, 4, 7, 10]
    assert not faces.due("unknown")
    with pytest.raises(ValueError, match="head_interval=0"):
        FaceWindows([(1, 1, 1)], 8, head_interval=0)


def test_default_head_interval_is_one_eighth_of_the_window():
    assert [default_head_interval(t) for t in (4, 8, 16, 32, 64)] == [1, 1, 2, 4, 8]


def test_newest_frame_picks_the_last_frame_output():
    frame_out = torch.arange(2 * 8 * 3).reshape(2, 8, 3)
    assert torch.equal(newest_frame(frame_out), frame_out[:, 7])
    window_out = torch.ones(2, 3)
    assert newest_frame(window_out) is window_out


def _stream_tubelets(net, frames: torch.Tensor) -> list[torch.Tensor]:
    """Encode and project frames one at a time, buffer the projections, run the tubelet
    head on the tubelet sums after every push."""
    buf = TubeletRingBuffer(net.head.projection_shapes, net.cfg.window_length)
    outs = []
    with torch.no_grad():
        for frame in frames:
            buf.push(net.head.project_frames(net.encoder(frame[None])))
            sums = [torch.from_numpy(x)[None] for x in buf.tubelet_sums()]
            outs.append(net.head.forward_tubelets(sums))
    return outs


@pytest.mark.parametrize(("mode", "t"), [("window", 8), ("frame", 8), ("window", 12)])
def test_tubelet_stream_equals_fused_window_model(mode, t):
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=t, n_levels=3, output_mode=mode).eval()
    with torch.no_grad():  # a bias that matters, so a missing or doubled one shows
        for mixer in net.head.mixers:
            mixer.embed.proj.bias.normal_(0, 0.5)
    frames = torch.randn(t + 6, 3, 64, 64)
    outs = _stream_tubelets(net, frames)
    with torch.no_grad():
        for end in (1, 3, t, t + 1, t + 3, t + 6):  # warm-up, full, every phase of the tubelets
            real = frames[max(0, end - t):end]
            clip = torch.cat([real[:1].expand(t - len(real), -1, -1, -1), real])
            torch.testing.assert_close(outs[end - 1], net(clip[None]), rtol=0, atol=1e-5)
        # negative control: the same frames one step out of phase give clearly other outputs
        assert (outs[t + 2] - net(frames[2:t + 2][None])).abs().max() > 1e-3


def test_projections_split_the_embedding_weight_by_frame_position():
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=8, n_levels=3).eval()
    with torch.no_grad():
        for mixer, shape in zip(net.head.mixers, net.feature_shapes, strict=True):
            window = torch.randn(2, 8, *shape)
            proj = mixer.embed.project_frames(window.flatten(0, 1)).reshape(2, 8, *mixer.projection_shape)
            tokens = mixer.embed.embed_tubelets(mixer.embed.sum_tubelets(proj))
            torch.testing.assert_close(tokens, mixer.embed(window), rtol=1e-5, atol=1e-5)
    assert net.head.projection_shapes == [(4, 256, 2, 2)] * 3  # 64 px input: 2x2 tokens per level
    assert net.head.tubelet_shapes == [(2, 256, 2, 2)] * 3


def test_tubelet_ring_buffer_sums_the_matching_slice_of_each_frame():
    """pt=2, T=4: tubelet g sums slice k of window frame 2g+k, exactly, warm-up included."""
    buf = TubeletRingBuffer([(2, 1, 1, 1), (2, 3, 1, 2)], window_length=4)
    assert buf.tubelet_shapes == [(2, 1, 1, 1), (2, 3, 1, 2)]
    with pytest.raises(RuntimeError, match="before any push"):
        buf.tubelet_sums()

    def frame(i):  # slice k of frame i holds 10*i + k
        return [np.broadcast_to(np.array([10 * i, 10 * i + 1], np.float32).reshape(2, 1, 1, 1), s).copy()
                for s in [(2, 1, 1, 1), (2, 3, 1, 2)]]

    history = []
    for i in range(1, 10):
        buf.push(frame(i))
        history.append(i)
        window = ([history[0]] * 4 + history)[-4:]
        want = [10 * window[0] + 10 * window[1] + 1, 10 * window[2] + 10 * window[3] + 1]
        first, second = buf.tubelet_sums()
        assert first[:, 0, 0, 0].tolist() == want
        assert np.all(second == np.asarray(want, np.float32)[:, None, None, None])
    assert buf.frames_observed == 4 and buf.nbytes == 4 * (2 + 12) * 4
    with pytest.raises(ValueError, match=r"projection level 0: shape \(3, 1, 1, 1\)"):
        buf.push([np.zeros((3, 1, 1, 1)), np.zeros((2, 3, 1, 2))])
    with pytest.raises(ValueError, match="window_length=6: must be a multiple of 4"):
        TubeletRingBuffer([(4, 1, 1, 1)], window_length=6)


def test_face_windows_batch_tubelet_sums_per_face():
    faces = FaceWindows([(2, 1, 1, 1)], window_length=4, projected=True, head_interval=2)
    for i in range(5):
        faces.push_batch(["a", "b"], [np.stack([np.full((2, 1, 1, 1), i, np.float32),
                                                np.full((2, 1, 1, 1), 100 * i, np.float32)])])
    (sums,) = faces.head_inputs(["b", "a"])
    assert sums.shape == (2, 2, 1, 1, 1)
    assert sums[:, :, 0, 0, 0].tolist() == [[300, 700], [3, 7]]  # frames 1..4: (1+2, 3+4)
    with pytest.raises(TypeError, match="tubelet_sums"):
        faces.windows(["a"])
    with pytest.raises(TypeError, match="windows"):
        FaceWindows([(1, 1, 1)], 4).tubelet_sums(["a"])
    with pytest.raises(KeyError, match="zzz"):
        faces.tubelet_sums(["zzz"])


def test_onnx_projection_and_tubelet_head_stream_equals_onnx_window(model_bundle):
    """The deployed streaming path: encoder.onnx -> frame_projection.onnx per frame ->
    tubelet ring buffer -> tubelet_head.onnx, against window.onnx on the same clip."""
    import onnxruntime as ort

    meta = read_metadata(model_bundle / "encoder.onnx")
    t, s = meta["window_length"], meta["input_size"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = {name: ort.InferenceSession(str(model_bundle / f"{name}.onnx"), opts,
                                           providers=["CPUExecutionProvider"])
                for name in ("encoder", "frame_projection", "tubelet_head", "window")}
    faces = FaceWindows(meta["projection_shapes"], t, projected=True)
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((t + 3, 3, s, s), dtype=np.float32)
    names = meta["feature_names"]
    for frame in frames:
        maps = sessions["encoder"].run(None, {"crops": frame[None]})
        faces.push("face", sessions["frame_projection"].run(None, dict(zip(names, maps, strict=True))))
    sums = faces.tubelet_sums(["face"])
    streamed = sessions["tubelet_head"].run(None, {f"{n}_tubelets": x for n, x in zip(names, sums, strict=True)})[0]
    fused = sessions["window"].run(None, {"clips": frames[3:][None]})[0]
    np.testing.assert_allclose(streamed, fused, rtol=0, atol=1e-5)
    shifted = sessions["window"].run(None, {"clips": frames[2:-1][None]})[0]
    assert np.abs(shifted - streamed).max() > 1e-4  # the clip one frame earlier is told apart


def test_onnx_encoder_plus_ring_buffer_plus_onnx_head_equals_onnx_window(model_bundle):
    """The deployed path: encoder.onnx per frame -> ring buffer -> temporal_head.onnx."""
    import onnxruntime as ort

    meta = read_metadata(model_bundle / "encoder.onnx")
    t, s = meta["window_length"], meta["input_size"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = {name: ort.InferenceSession(str(model_bundle / f"{name}.onnx"), opts,
                                           providers=["CPUExecutionProvider"])
                for name in ("encoder", "temporal_head", "window")}
    faces = FaceWindows(meta["feature_shapes"], t)
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((t + 2, 3, s, s), dtype=np.float32)
    for frame in frames:
        faces.push("face", sessions["encoder"].run(None, {"crops": frame[None]}))
    windows = faces.windows(["face"])
    streamed = sessions["temporal_head"].run(None, dict(zip(meta["feature_names"], windows, strict=True)))[0]
    fused = sessions["window"].run(None, {"clips": frames[2:][None]})[0]
    np.testing.assert_allclose(streamed, fused, rtol=0, atol=1e-5)


def test_streaming_imports_without_torch():
    """An ONNX-Runtime-only deployment can use the ring buffers without importing torch."""
    import subprocess
    import sys

    code = ("import sys; from abaw_ros.models import FaceWindows, default_head_interval; "
            "from abaw_ros.models.streaming import FeatureRingBuffer, TubeletRingBuffer; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves():
    import abaw_ros.models as models

    assert set(models.__all__) == set(models._EXPORTS)
    for name in models.__all__:
        assert getattr(models, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        models.Nope  # noqa: B018
