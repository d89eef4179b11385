"""``import-reference``: a Lightning checkpoint of the reference code becomes our checkpoint
and computes the reference network's outputs.

The reference network is re-implemented here on its own, in plain torch and in the
reference's module layout (``nn.Sequential`` indices as in the reference code, so its
``state_dict`` keys are the reference's keys), independent of ``abaw_ros.models``: the
Rearranges are written as reshape/permute, the token MLP as ``Conv1d(N, 4N, 1)``, the
levels concatenated fine to coarse. Tolerance 1e-5 on the activated outputs: both sides
compute the same float32 function with sums in a different order (our tubelet Linear runs
as a strided convolution); a wrong mapping (column order, transposed layout, swapped
norms) gives errors of order 0.1.
"""
from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
import torch
from torch import nn

from abaw_ros._compat import import_timm
from abaw_ros.cli import main as cli_main
from abaw_ros.models import load_checkpoint
from abaw_ros.models.checkpoint import provenance_summary

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-5


class ToChannelsFirst(nn.Module):
    """einops ``b t c h w -> b c t h w``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 1, 3, 4)


class ToTubelets(nn.Module):
    """einops ``b c (t pt) (h p1) (w p2) -> b (h w t) (p1 p2 pt c)``."""

    def __init__(self, pt: int, p: int) -> None:
        super().__init__()
        self.pt, self.p = pt, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        pt, p = self.pt, self.p
        x = x.reshape(b, c, t // pt, pt, h // p, p, w // p, p)  # b c t pt h p1 w p2
        x = x.permute(0, 4, 6, 2, 5, 7, 3, 1)  # b h w t p1 p2 pt c
        return x.reshape(b, (h // p) * (w // p) * (t // pt), p * p * pt * c)


class MeanTokens(nn.Module):
    """einops ``Reduce('b n c -> b c', 'mean')``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class PreNormResidual(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


def feed_forward(dim: int, expansion: float, dense) -> nn.Sequential:
    inner = int(dim * expansion)
    return nn.Sequential(dense(dim, inner), nn.GELU(), nn.Dropout(0.0), dense(inner, dim), nn.Dropout(0.0))


def reference_mixer(channels: int, map_size: int, patch: int, seq_len: int, depth: int, dim: int = 256) -> nn.Sequential:
    pt = 4
    tokens = (map_size // patch) ** 2 * (seq_len // pt)
    token_dense, channel_dense = partial(nn.Conv1d, kernel_size=1), nn.Linear
    return nn.Sequential(
        ToChannelsFirst(),
        ToTubelets(pt, patch),
        nn.Linear(patch * patch * pt * channels, dim),
        *[nn.Sequential(PreNormResidual(dim, feed_forward(tokens, 4, token_dense)),
                        PreNormResidual(dim, feed_forward(dim, 0.5, channel_dense))) for _ in range(depth)],
        nn.LayerNorm(dim),
        MeanTokens(),
        nn.Linear(dim, 256),
    )


class ReferenceNet(nn.Module):
    """The reference LightningModule's network: attribute names are its state-dict prefixes."""

    def __init__(self, task: str, n_mixer: int, seq_len: int, depth: int = 1) -> None:
        super().__init__()
        timm = import_timm()
        self.task, self.n_mixer, self.seq_len = task, n_mixer, seq_len
        self.backbone = timm.create_model("mobilenetv4_conv_small", pretrained=False, features_only=True,
                                          out_indices=(2, 3, 4))
        if n_mixer >= 3:
            self.mid_mixer = reference_mixer(64, 28, 4, seq_len, depth)
        if n_mixer >= 2:
            self.low_mixer = reference_mixer(96, 14, 2, seq_len, depth)
        self.last_mixer = reference_mixer(960, 7, 1, seq_len, depth)
        self.classifier = nn.Linear(256 * n_mixer, 2 if task == "VA" else 12)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = x.shape[:2]
        mid, low, last = (f.reshape(b, t, *f.shape[1:]) for f in self.backbone(x.flatten(0, 1)))
        feats = [self.last_mixer(last)]
        if self.n_mixer >= 2:
            feats.insert(0, self.low_mixer(low))
        if self.n_mixer >= 3:
            feats.insert(0, self.mid_mixer(mid))
        raw = self.classifier(torch.cat(feats, dim=1))  # [28, 14, 7]
        return raw, torch.tanh(raw) if self.task == "VA" else torch.sigmoid(raw)


def randomize(net: nn.Module, seed: int) -> None:
    """Non-default values in every tensor (norm weights too), outputs kept out of saturation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("backbone."):
                continue
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen) if name.endswith("weight")
                        else 0.2 * torch.randn(p.shape, generator=gen))
        net.classifier.weight.mul_(4.0)
        for name, buf in net.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
            elif name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))


def lightning_checkpoint(net: ReferenceNet, threshold) -> dict:
    """What ``ModelCheckpoint(save_weights_only=True)`` writes (Lightning's
    ``_CheckpointConnector.dump_checkpoint(weights_only=True)``)."""
    return {
        "epoch": 7,
        "global_step": 1234,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": net.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8, "completed": 7}}}},
        "hparams_name": "kwargs",
        "hyper_parameters": {"task": net.task, "seq_len": net.seq_len, "n_mixer": net.n_mixer,
                             "threshold": threshold, "lr": 5e-4, "wd": 2e-5, "alpha": 0.75, "gamma": 2.0,
                             "label_smoothing": 0.0},
    }


@pytest.mark.parametrize("task,n_mixer,seq_len,depth", [("AU", 3, 8, 1), ("VA", 1, 16, 1), ("AU", 2, 4, 2)])
def test_imported_reference_checkpoint_gives_the_reference_outputs(tmp_path, task, n_mixer, seq_len, depth):
    torch.manual_seed(3)
    ref = ReferenceNet(task, n_mixer, seq_len, depth)
    randomize(ref, seed=n_mixer)
    ref.eval()
    ckpt = tmp_path / "epoch=7-step=1234.ckpt"
    torch.save(lightning_checkpoint(ref, 0.4), ckpt)

    out = tmp_path / "model.pt"
    assert cli_main(["import-reference", str(ckpt), "-o", str(out)]) == 0
    model, info = load_checkpoint(out)
    cfg = info["config"]
    assert (cfg.tasks, cfg.n_levels, cfg.window_length, cfg.depth) == ((task.lower(),), n_mixer, seq_len, depth)
    assert info["trained"] and provenance_summary(info["trained"], info["provenance"]).startswith(
        "imported from reference checkpoint epoch=7-step=1234.ckpt")
    if task == "AU":
        assert info["au_thresholds"] == [0.4] * 12

    clips = torch.randn(2, seq_len, 3, 224, 224)
    with torch.no_grad():
        ref_raw, ref_out = ref(clips)
        ours = model.activate(model(clips))
    assert ref_raw.std() > 0.3  # outputs spread out: saturated outputs would hide a wrong mapping
    torch.testing.assert_close(ours, ref_out, atol=TOLERANCE, rtol=0)


def test_imported_checkpoint_exports_and_runs_in_onnxruntime(tmp_path):
    import numpy as np
    import onnxruntime as ort

    torch.manual_seed(4)
    ref = ReferenceNet("VA", 1, 8)
    randomize(ref, seed=9)
    ref.eval()
    ckpt = tmp_path / "ref.ckpt"
    torch.save(lightning_checkpoint(ref, 0.5), ckpt)
    out = tmp_path / "va.pt"
    assert cli_main(["import-reference", str(ckpt), "-o", str(out)]) == 0
    assert cli_main(["export", str(out), "-o", str(tmp_path / "bundle"), "--graphs", "window", "--no-verify"]) == 0
    from abaw_ros.runtime.base import ModelMetadata

    metadata = ModelMetadata.from_onnx(tmp_path / "bundle" / "window.onnx")
    assert metadata.trained and metadata.provenance["source"] == "reference"
    assert provenance_summary(metadata.trained, metadata.provenance) == "imported from reference checkpoint ref.ckpt, epoch 7"
    clips = torch.randn(1, 8, 3, 224, 224)
    session = ort.InferenceSession(str(tmp_path / "bundle" / "window.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: clips.numpy()})[0]
    with torch.no_grad():
        _, ref_out = ref(clips)
    # ONNX Runtime fuses and reorders float32 sums further than PyTorch: 1e-4
    np.testing.assert_allclose(onnx_out, ref_out.numpy(), atol=1e-4, rtol=0)


def test_not_a_reference_checkpoint_is_one_line_and_exit_2(tmp_path):
    ref = ReferenceNet("AU", 1, 8)
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("last_mixer.")}
    bad = tmp_path / "other.ckpt"
    torch.save({"epoch": 1, "global_step": 2, "pytorch-lightning_version": "2.4.0", "state_dict": state,
                "hyper_parameters": {"task": "AU"}}, bad)
    proc = subprocess.run([sys.executable, "-m", "abaw_ros.cli", "import-reference", str(bad), "-o",
                           str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no last_mixer" in proc.stderr and str(bad) in proc.stderr
    mismatch = tmp_path / "mismatch.ckpt"
    torch.save({**lightning_checkpoint(ref, 0.5), "hyper_parameters": {"task": "AU", "seq_len": 16}}, mismatch)
    assert cli_main(["import-reference", str(mismatch), "-o", str(tmp_path / "y.pt")]) == 2
