"""The TAM mixer levels: sizes of the reference code, tubelet layout, time-resolved mode."""
from __future__ import annotations

import pytest
import torch

from abaw_ros.models.affect_net import LEVELS, ModelConfig, TemporalHead
from abaw_ros.models.mixer import Mlp, TemporalMixer3D, TokenMlp, TubeletEmbed

# The public reference code's mixers at T=8, depth 1, 224 input: parameters per level
# (the paper itself gives no per-level counts).
REFERENCE_PARAMS = {"stride8": 1.259e6, "stride16": 0.604e6, "stride32": 1.194e6}
BACKBONE_SHAPES = {"stride32": (960, 7, 7), "stride16": (96, 14, 14), "stride8": (64, 28, 28)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.name)
def test_level_parameter_count_matches_reference_code(level):
    cfg = ModelConfig(window_length=8, depth=1, n_levels=3)
    head = TemporalHead(cfg, [BACKBONE_SHAPES[lv.name] for lv in cfg.levels])
    mixer = head.mixers[cfg.feature_names.index(level.name)]
    assert n_params(mixer) == pytest.approx(REFERENCE_PARAMS[level.name], rel=0.01)


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.name)
def test_every_level_gives_7x7_spatial_tokens_times_t_over_4(level):
    c, h, _ = BACKBONE_SHAPES[level.name]
    for t in (8, 16, 32):
        mixer = TemporalMixer3D(c, h, level.patch_size, window_length=t)
        assert mixer.num_tokens == 49 * t // 4
        assert mixer.embed.proj.in_features == level.patch_size ** 2 * 4 * c


def test_tubelet_token_layout_is_h_w_t_and_values_p_p_pt_c():
    """Token (gh, gw, gt) holds frames 4gt..4gt+3, pixels of its p x p patch, channel last
    (the reference's einops layout), whatever way the projection is computed."""
    b, t, c, h, p, pt = 1, 8, 3, 4, 2, 4
    k = p * p * pt * c
    embed = TubeletEmbed(c, p, pt, dim=k)
    with torch.no_grad():  # identity projection: each token comes out as its raw values
        embed.proj.weight.copy_(torch.eye(k))
        embed.proj.bias.zero_()
    # every value encodes its own (t, c, y, x) coordinates
    tt, cc, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(c), torch.arange(h), torch.arange(h), indexing="ij")
    x = (tt * 1000 + cc * 100 + yy * 10 + xx).double().reshape(b, t, c, h, h)
    with torch.no_grad():
        tokens = embed.double()(x)[0]
    gt_n, g = t // pt, h // p
    assert tokens.shape == (g * g * gt_n, k)
    for gy in range(g):
        for gx in range(g):
            for gt in range(gt_n):
                token = tokens[(gy * g + gx) * gt_n + gt].reshape(p, p, pt, c)
                for py in range(p):
                    for px in range(p):
                        for kt in range(pt):
                            for ch in range(c):
                                want = (gt * pt + kt) * 1000 + ch * 100 + (gy * p + py) * 10 + gx * p + px
                                assert token[py, px, kt, ch].item() == want


def test_tubelet_embedding_equals_the_reference_linear_over_token_vectors():
    torch.manual_seed(0)
    embed = TubeletEmbed(16, 2, 4, dim=32).double()
    x = torch.randn(2, 8, 16, 6, 6, dtype=torch.float64)
    # reference: b (t pt) c (h p1) (w p2) -> b (h w t) (p1 p2 pt c), then the Linear
    tokens = x.reshape(2, 2, 4, 16, 3, 2, 3, 2).permute(0, 4, 6, 1, 5, 7, 2, 3).reshape(2, 18, 2 * 2 * 4 * 16)
    with torch.no_grad():
        torch.testing.assert_close(embed(x), embed.proj(tokens))


def test_token_mlp_equals_the_mlp_on_transposed_tokens():
    torch.manual_seed(0)
    mlp = TokenMlp(12, 48).double()
    x = torch.randn(3, 12, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), Mlp.forward(mlp, x.transpose(1, 2)).transpose(1, 2))


def test_time_resolved_mixer_keeps_one_vector_per_tubelet_and_same_parameters():
    torch.manual_seed(0)
    pooled = TemporalMixer3D(96, 14, 2, window_length=16)
    resolved = TemporalMixer3D(96, 14, 2, window_length=16, time_resolved=True)
    resolved.load_state_dict(pooled.state_dict())
    x = torch.randn(2, 16, 96, 14, 14)
    with torch.no_grad():
        per_tubelet = resolved(x)
        window = pooled(x)
    assert per_tubelet.shape == (2, 4, 256)
    # the final Linear is affine, so the mean of the per-tubelet vectors is the window vector
    torch.testing.assert_close(per_tubelet.mean(dim=1), window, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(per_tubelet[:, 0], per_tubelet[:, 1])


def test_token_mixing_mixes_all_space_time_tokens():
    """Changing one frame changes every tubelet's vector (the mixer spans the window)."""
    torch.manual_seed(0)
    mixer = TemporalMixer3D(8, 7, 1, window_length=8, dim=16, out_dim=16, time_resolved=True).eval()
    x = torch.randn(1, 8, 8, 7, 7)
    y = x.clone()
    y[:, 0] += 1.0  # first frame only: belongs to tubelet 0
    with torch.no_grad():
        a, b = mixer(x), mixer(y)
    assert not torch.allclose(a[:, 1], b[:, 1])


@pytest.mark.parametrize("t", [0, 2, 6, 10])
def test_window_length_not_multiple_of_4_is_rejected(t):
    with pytest.raises(ValueError, match=f"window_length={t}: must be a multiple of 4"):
        TemporalMixer3D(96, 14, 2, window_length=t)


def test_wrong_window_shape_names_expected_shape():
    mixer = TemporalMixer3D(96, 14, 2, window_length=8)
    with pytest.raises(ValueError, match=r"expected \(B, 8, 96, 14, 14\)"):
        mixer(torch.zeros(1, 4, 96, 14, 14))
