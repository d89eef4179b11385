"""AffectNet: config, shapes for every level count / window length / output mode, outputs."""
from __future__ import annotations

import pytest
import torch

from abaw_ros import tasks
from abaw_ros.models import (
    AffectNet,
    ModelConfig,
    TemporalHead,
    activate,
    broadcast_to_frames,
    create_affect_net,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_net() -> AffectNet:
    """A 64x64-input network (2x2 spatial tokens): the same code paths, 12x cheaper."""
    torch.manual_seed(0)
    return create_affect_net(input_size=64, window_length=8, n_levels=3).eval()


def test_encoder_gives_the_paper_maps_at_224_coarse_to_fine():
    torch.manual_seed(0)
    net = create_affect_net(window_length=8, n_levels=3).eval()
    with torch.no_grad():
        maps = net.encoder(torch.randn(2, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(2, 960, 7, 7), (2, 96, 14, 14), (2, 64, 28, 28)]
    assert net.feature_shapes == [(960, 7, 7), (96, 14, 14), (64, 28, 28)]
    assert net.cfg.feature_names == ("stride32", "stride16", "stride8")


@pytest.mark.parametrize("n_levels,names", [(1, ["stride32"]), (2, ["stride32", "stride16"]),
                                            (3, ["stride32", "stride16", "stride8"])])
def test_encoder_outputs_only_the_maps_the_head_uses(n_levels, names):
    net = create_affect_net(input_size=64, window_length=8, n_levels=n_levels).eval()
    with torch.no_grad():
        maps = net.encoder(torch.randn(1, 3, 64, 64))
    assert list(net.cfg.feature_names) == names
    assert len(maps) == len(net.head.mixers) == n_levels
    assert [tuple(m.shape[1:]) for m in maps] == net.feature_shapes


@pytest.mark.parametrize("mode", ["window", "frame"])
@pytest.mark.parametrize("t", [8, 16, 32])
@pytest.mark.parametrize("n_levels", [1, 2, 3])
def test_head_output_shapes(n_levels, t, mode):
    cfg = ModelConfig(window_length=t, n_levels=n_levels, output_mode=mode)
    shapes = [(960, 7, 7), (96, 14, 14), (64, 28, 28)][:n_levels]
    head = TemporalHead(cfg, shapes).eval()
    windows = [torch.randn(2, t, *s) for s in shapes]
    with torch.no_grad():
        out = head(windows)
    d = tasks.output_size(tasks.ALL_TASKS)
    assert out.shape == ((2, d) if mode == "window" else (2, t, d))
    assert head.num_features == 256 * n_levels


@pytest.mark.parametrize("mode", ["window", "frame"])
@pytest.mark.parametrize("n_levels,t", [(1, 8), (2, 16), (3, 32)])
def test_full_model_forward_shapes(n_levels, t, mode):
    net = create_affect_net(input_size=64, window_length=t, n_levels=n_levels, output_mode=mode).eval()
    with torch.no_grad():
        out = net(torch.randn(1, t, 3, 64, 64))
    assert out.shape == ((1, 21) if mode == "window" else (1, t, 21))
    assert torch.isfinite(out).all()


def test_task_selection_sets_output_size_and_canonical_order():
    net = create_affect_net(input_size=64, window_length=8, n_levels=1, tasks=("au", "va")).eval()
    assert net.cfg.tasks == ("va", "au")
    assert net.output_names[:3] == ["va/valence", "va/arousal", "au/AU1"]
    with torch.no_grad():
        out = net(torch.randn(2, 8, 3, 64, 64))
    assert out.shape == (2, 14)
    parts = net.split(out)
    assert parts["va"].shape == (2, 2) and parts["au"].shape == (2, 12)


def test_activate_applies_tanh_to_va_and_sigmoid_to_the_rest():
    raw = torch.linspace(-6, 6, 21).repeat(3, 1)
    out = activate(raw, tasks.ALL_TASKS)
    s = tasks.output_slices(tasks.ALL_TASKS)
    torch.testing.assert_close(out[:, s["va"]], torch.tanh(raw[:, s["va"]]))
    for name in ("au", "emi", "ah"):
        torch.testing.assert_close(out[:, s[name]], torch.sigmoid(raw[:, s[name]]))
    assert out[:, s["va"]].min() < 0 and out[:, s["au"]].min() > 0


def test_window_mode_broadcast_copies_the_window_vector_to_every_frame(small_net):
    with torch.no_grad():
        out = small_net(torch.randn(2, 8, 3, 64, 64))
    frames = broadcast_to_frames(out, 8)
    assert frames.shape == (2, 8, 21)
    assert torch.equal(frames[:, 3], out) and torch.equal(frames[:, 7], out)
    with pytest.raises(ValueError, match="window_length=16"):
        broadcast_to_frames(torch.zeros(2, 8, 21), 16)


def test_frame_mode_gives_each_frame_its_own_output():
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=8, n_levels=2, output_mode="frame").eval()
    clip = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        out = net(clip)
        changed = clip.clone()
        changed[:, 7] = torch.randn(3, 64, 64)  # last frame only (second tubelet)
        out2 = net(changed)
    assert out.shape == (1, 8, 21)
    # frames inside one tubelet differ (learned unfold, not a copy)
    assert not torch.allclose(out[0, 0], out[0, 1])
    # the token-mixing MLP spans the window: a late frame changes the first frame's output
    assert not torch.allclose(out[0, 0], out2[0, 0])


def test_dropout_is_active_in_train_mode_only(small_net):
    clip = torch.randn(2, 8, 3, 64, 64)
    small_net.eval()
    with torch.no_grad():
        a, b = small_net(clip), small_net(clip)
        assert torch.equal(a, b)
        small_net.head.train()
        torch.manual_seed(1)
        c = small_net.head(small_net.forward_features(clip))
        small_net.eval()
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("kwargs,message", [
    ({"window_length": 6}, "window_length=6: must be a multiple of 4"),
    ({"window_length": 0}, "window_length=0: must be a multiple of 4"),
    ({"n_levels": 4}, "n_levels=4"),
    ({"output_mode": "clip"}, "output_mode='clip'"),
    ({"freeze": "blocks"}, "freeze='blocks'"),
    ({"input_size": 100}, "input_size=100: must be a multiple of 32"),
    ({"tasks": ("va", "expr")}, "unknown task"),
    ({"dropout": 1.0}, "dropout=1.0"),
])
def test_bad_config_values_are_named_in_the_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_tasks_given_as_text_are_split():
    assert ModelConfig(tasks="au, va").tasks == ("va", "au")


def test_config_dict_round_trip_and_unknown_keys():
    cfg = ModelConfig(n_levels=2, window_length=16, tasks=("ah", "emi"), output_mode="frame", freeze="all")
    data = cfg.to_dict()
    assert data["tasks"] == ["emi", "ah"] and data["mean"] == [0.485, 0.456, 0.406]
    assert ModelConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['n_mixers'\]"):
        ModelConfig.from_dict({**data, "n_mixers": 3})


def test_clip_with_wrong_window_length_is_rejected(small_net):
    with pytest.raises(ValueError, match=r"expected \(B, 8, 3, 64, 64\)"):
        small_net(torch.randn(1, 4, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected \(N, 3, 64, 64\)"):
        small_net.encoder(torch.randn(1, 3, 32, 32))


def test_unknown_backbone_is_rejected_with_alternatives():
    with pytest.raises(ValueError, match="backbone='mobilenetv4_conv_tiny': not a timm model"):
        create_affect_net(backbone="mobilenetv4_conv_tiny")
