"""Checkpoints store their own config: loading one is enough to rebuild and run."""
from __future__ import annotations

import pytest
import torch

from abaw_ros.models import create_affect_net, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perturb(net: torch.nn.Module) -> None:
    """Move every weight and BatchNorm statistic away from its init value."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for t in list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()]:
            t.add_(0.01 * torch.randn(t.shape, generator=gen))


@pytest.mark.parametrize("mode,n_levels,t", [("window", 3, 8), ("frame", 2, 16)])
def test_round_trip_gives_identical_outputs(tmp_path, mode, n_levels, t):
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=t, n_levels=n_levels, output_mode=mode,
                            tasks=("au", "ah"), freeze="all").eval()
    _perturb(net)
    path = save_checkpoint(tmp_path / "sub" / "net.pt", net, trained=True,
                           au_thresholds=[0.3 + 0.01 * i for i in range(12)], ah_threshold=0.4)
    loaded, info = load_checkpoint(path)
    clip = torch.randn(2, t, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(clip), loaded(clip))
    assert not loaded.training
    assert info["config"] == net.cfg
    assert info["tasks"] == ["au", "ah"]
    assert info["preprocessing"] == {"input_size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert info["au_thresholds"] == pytest.approx([0.3 + 0.01 * i for i in range(12)])
    assert info["ah_threshold"] == 0.4
    assert info["thresholds"] == {"au_thresholds": info["au_thresholds"], "ah_threshold": 0.4}
    assert info["trained"] is True
    # the freeze policy comes back too
    assert not any(p.requires_grad for p in loaded.encoder.backbone.parameters())


def test_defaults_and_untrained_flag(untrained_checkpoint, caplog):
    model, info = load_checkpoint(untrained_checkpoint)
    assert info["trained"] is False
    assert info["au_thresholds"] == [0.5] * 12 and info["ah_threshold"] == 0.5
    assert model.cfg.window_length == 8 and model.cfg.n_levels == 3
    assert info["tasks"] == ["va", "au", "emi", "ah"]
    assert "untrained" in caplog.text


def test_training_extras_come_back_for_resume(tmp_path):
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=8, n_levels=1, tasks=("va",))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    net(torch.randn(1, 8, 3, 64, 64)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "last.pt", net, optimizer=opt, epoch=4, metrics={"va_ccc": 0.41})
    loaded, info = load_checkpoint(path)
    assert info["epoch"] == 4 and info["metrics"] == {"va_ccc": 0.41}
    opt2 = torch.optim.AdamW([p for p in loaded.parameters() if p.requires_grad], lr=1e-3)
    opt2.load_state_dict(info["optimizer"])
    state = next(iter(opt2.state.values()))
    assert int(state["step"]) == 1


def test_reserved_extra_names_and_bad_thresholds_are_rejected(tmp_path):
    net = create_affect_net(input_size=64, window_length=8, n_levels=1)
    with pytest.raises(ValueError, match=r"extra keys \['config'\] are reserved"):
        save_checkpoint(tmp_path / "x.pt", net, config={})
    with pytest.raises(ValueError, match="au_thresholds has 11 values: need 12"):
        save_checkpoint(tmp_path / "x.pt", net, au_thresholds=[0.5] * 11)
    with pytest.raises(ValueError, match="ah_threshold=1.5"):
        save_checkpoint(tmp_path / "x.pt", net, ah_threshold=1.5)
    assert not (tmp_path / "x.pt").exists()


def test_foreign_files_are_rejected(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"conv_stem.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not an abaw_ros checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")
