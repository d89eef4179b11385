"""Backbone: freeze policies (gradients, BatchNorm statistics) and weight files."""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys

import pytest
import torch

from abaw_ros._compat import import_timm
from abaw_ros.models import create_affect_net, load_backbone_weights
from abaw_ros.models.backbone import create_backbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grads_after_backward(freeze: str) -> dict[str, bool]:
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=8, n_levels=3, freeze=freeze).train()
    out = net(torch.randn(2, 8, 3, 64, 64))
    out.square().mean().backward()
    return {name: p.grad is not None and bool(p.grad.abs().sum() > 0) for name, p in net.named_parameters()}


@pytest.mark.parametrize("freeze", ["none", "stem", "paper", "all"])
def test_gradients_reach_only_unfrozen_parameters(freeze):
    grads = _grads_after_backward(freeze)

    def frozen(name: str) -> bool:
        if freeze == "all":
            return name.startswith("encoder.backbone.")
        if freeze == "stem":
            return name.startswith(("encoder.backbone.conv_stem.", "encoder.backbone.bn1."))
        if freeze == "paper":  # "all but the final layers": only the last stage trains
            return name.startswith("encoder.backbone.") and not name.startswith("encoder.backbone.blocks.4.")
        return False

    for name, has_grad in grads.items():
        assert has_grad is not frozen(name), f"{name}: grad={has_grad} under freeze={freeze!r}"
    assert any(n.startswith("encoder.backbone.conv_stem.") for n in grads)
    assert any(n.startswith("head.mixers.2.") for n in grads)


@pytest.mark.parametrize("freeze,frozen_bn,training_bn", [
    ("stem", "encoder.backbone.bn1", "encoder.backbone.blocks.1.0.bn1"),
    ("paper", "encoder.backbone.blocks.3.0.pw_exp.bn", "encoder.backbone.blocks.4.0.bn1"),
    ("all", "encoder.backbone.blocks.1.0.bn1", None),
])
def test_frozen_batchnorm_keeps_its_statistics_in_train_mode(freeze, frozen_bn, training_bn):
    torch.manual_seed(0)
    net = create_affect_net(input_size=64, window_length=8, n_levels=1, freeze=freeze)
    net.eval().train()  # train() must not wake frozen BatchNorm up
    modules = dict(net.named_modules())
    before = modules[frozen_bn].running_mean.clone()
    other_before = modules[training_bn].running_mean.clone() if training_bn else None
    net(torch.randn(1, 8, 3, 64, 64) * 3 + 1)
    assert not modules[frozen_bn].training
    assert torch.equal(modules[frozen_bn].running_mean, before)
    if training_bn:
        assert modules[training_bn].training
        assert not torch.equal(modules[training_bn].running_mean, other_before)


@pytest.fixture(scope="module")
def classifier_state() -> dict[str, torch.Tensor]:
    """A full timm classification model's weights (as a published checkpoint holds them)."""
    timm = import_timm()
    torch.manual_seed(123)
    return timm.create_model("mobilenetv4_conv_small", pretrained=False, num_classes=8).state_dict()


def test_full_classifier_checkpoint_with_prefix_loads_and_reports(tmp_path, classifier_state, caplog):
    path = tmp_path / "model_best.pth.tar"
    state = {f"backbone.{k}": v for k, v in classifier_state.items()}
    state["backbone.extra_adapter.weight"] = torch.zeros(3)
    torch.save({"epoch": 10, "state_dict": state}, path)
    backbone = create_backbone()
    with caplog.at_level(logging.INFO, logger="abaw_ros.models.backbone"):
        report = load_backbone_weights(backbone, path)
    assert report.stripped_prefix == "backbone."
    assert report.missing == []
    assert report.unexpected == ["extra_adapter.weight"]
    assert "classifier.weight" in report.ignored_classifier and "conv_head.weight" in report.ignored_classifier
    loaded = backbone.state_dict()
    assert set(loaded) <= set(classifier_state)
    for key, value in loaded.items():
        assert torch.equal(value, classifier_state[key]), key
    assert "extra_adapter.weight" in caplog.text and "1 unexpected" in caplog.text


def test_missing_keys_are_reported(tmp_path, classifier_state):
    path = tmp_path / "partial.pth"
    state = {k: v for k, v in classifier_state.items() if not k.startswith("blocks.4.")}
    torch.save(state, path)
    report = load_backbone_weights(create_backbone(), path)
    assert report.missing and all(k.startswith("blocks.4.") for k in report.missing)
    assert "missing" in report.summary() and "blocks.4." in report.summary()


def test_config_backbone_weights_are_loaded_at_build(tmp_path, classifier_state):
    path = tmp_path / "weights.pth"
    torch.save(classifier_state, path)
    net = create_affect_net(input_size=64, window_length=8, backbone_weights=str(path))
    torch.testing.assert_close(net.encoder.backbone.bn1.running_var, classifier_state["bn1.running_var"])
    assert net.backbone_report is not None and net.backbone_report.loaded > 100


def test_unrelated_file_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="no key matches this backbone"):
        load_backbone_weights(create_backbone(), path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_backbone_weights(create_backbone(), tmp_path / "absent.pth")


def test_shape_mismatch_names_the_key(tmp_path, classifier_state):
    path = tmp_path / "bad.pth"
    torch.save({**classifier_state, "conv_stem.weight": torch.zeros(16, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match=r"conv_stem.weight \(16, 3, 3, 3\)"):
        load_backbone_weights(create_backbone(), path)


def test_ema_weights_are_preferred_and_safetensors_load(tmp_path, classifier_state):
    from safetensors.torch import save_file

    ema = {k: v + 1 if v.is_floating_point() else v for k, v in classifier_state.items()}
    path = tmp_path / "train.pth.tar"
    torch.save({"state_dict": classifier_state, "state_dict_ema": ema}, path)
    backbone = create_backbone()
    load_backbone_weights(backbone, path)
    assert torch.equal(backbone.conv_stem.weight, ema["conv_stem.weight"])

    st = tmp_path / "model.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in classifier_state.items()}, str(st))
    report = load_backbone_weights(backbone, st)
    assert report.stripped_prefix == "module." and not report.missing
    assert torch.equal(backbone.conv_stem.weight, classifier_state["conv_stem.weight"])


def timm_train_args(argv: list[str]) -> argparse.Namespace:
    """The ``args`` timm's train.py hands its CheckpointSaver: a real argparse.Namespace
    from a real parser (a subset of train.py's options, same kinds of values)."""
    parser = argparse.ArgumentParser(description="PyTorch ImageNet Training")
    parser.add_argument("--model", default="resnet50", type=str)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--input-size", default=None, nargs=3, type=int)
    parser.add_argument("--mean", type=float, nargs="+", default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--model-ema", action="store_true", default=False)
    parser.add_argument("--model-ema-decay", type=float, default=0.9998)
    parser.add_argument("--output", default="", type=str)
    args = parser.parse_args(argv)
    args.device, args.world_size, args.rank, args.distributed = "cuda:0", 1, 0, False  # set by train.py
    return args


def save_like_timm_checkpoint_saver(path, model, ema_state, optimizer, args, epoch, metric):
    """The dict timm's ``CheckpointSaver._save`` writes (timm/utils/checkpoint_saver.py):
    epoch, arch (= args.model), optimizer state, version 2, args, the AMP scaler's state
    under its ``state_dict_key``, state_dict, state_dict_ema, metric."""
    torch.save({
        "epoch": epoch,
        "arch": args.model,
        "optimizer": optimizer.state_dict(),
        "version": 2,
        "args": args,
        "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                       "growth_interval": 2000, "_growth_tracker": 0},
        "state_dict": model.state_dict(),
        "state_dict_ema": ema_state,
        "metric": metric,
    }, path)


def test_timm_training_script_checkpoint_loads_ema_weights_safely(tmp_path):
    timm = import_timm()
    torch.manual_seed(5)
    model = timm.create_model("mobilenetv4_conv_small", pretrained=False, num_classes=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # a real optimizer state (step counters, moments)
    ema = {k: v.clone() + 0.5 if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}
    args = timm_train_args(["--model", "mobilenetv4_conv_small", "--num-classes", "8", "--input-size", "3", "224",
                            "224", "--mean", "0.485", "0.456", "0.406", "--lr", "0.002", "--model-ema"])
    path = tmp_path / "model_best.pth.tar"
    save_like_timm_checkpoint_saver(path, model, ema, optimizer, args, epoch=41, metric=63.2)
    with pytest.raises(Exception, match="argparse.Namespace"):  # what plain weights_only loading says
        torch.load(path, weights_only=True)

    backbone = create_backbone()
    report = load_backbone_weights(backbone, path)
    assert report.missing == [] and report.unexpected == []
    assert report.source_key == "state_dict_ema"
    assert report.checkpoint["arch"] == "mobilenetv4_conv_small" and report.checkpoint["epoch"] == 41
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, ema[key]), key
    assert "state_dict_ema" in report.summary()


def test_lightning_checkpoint_backbone_keys_load(tmp_path, classifier_state):
    features = create_backbone().state_dict()
    state = {f"backbone.{k}": classifier_state[k] for k in features}
    state["last_mixer.2.weight"] = torch.zeros(256, 960)
    state["classifier.weight"] = torch.zeros(12, 768)
    path = tmp_path / "epoch=3-step=100.ckpt"
    torch.save({"epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.5.0", "state_dict": state,
                "loops": {"fit_loop": {"state_dict": {}}}, "hparams_name": "kwargs",
                "hyper_parameters": {"task": "AU", "seq_len": 8}}, path)
    backbone = create_backbone()
    report = load_backbone_weights(backbone, path)
    assert report.stripped_prefix == "backbone." and report.missing == [] and report.source_key == "state_dict"
    assert torch.equal(backbone.bn1.running_var, classifier_state["bn1.running_var"])


class _Payload:
    """An object whose unpickling would run code: must never be unpickled."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_files_needing_other_globals_are_refused_with_one_line(tmp_path, classifier_state):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": classifier_state, "extra": _Payload()}, path)
    with pytest.raises(ValueError, match=r"refusing to unpickle builtins.print") as info:
        load_backbone_weights(create_backbone(), path)
    assert "\n" not in str(info.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_backbone_weights(create_backbone(), garbage)


def test_train_command_rejects_unreadable_backbone_weights_with_exit_2(tmp_path):
    bad = tmp_path / "model_best.pth.tar"
    bad.write_bytes(b"\x00" * 64)
    proc = subprocess.run(
        [sys.executable, "-m", "abaw_ros.cli", "train", "--set", f"model.backbone_weights={bad}",
         "--set", "model.tasks=[va]", "--out-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "not a PyTorch checkpoint" in proc.stderr
