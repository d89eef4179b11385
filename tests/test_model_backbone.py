"""Backbone: freeze policies (gradients, BatchNorm statistics) and weight files."""
from __future__ import annotations

import logging

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


@pytest.mark.parametrize("freeze", ["none", "stem", "all"])
def test_gradients_reach_only_unfrozen_parameters(freeze):
    grads = _grads_after_backward(freeze)

    def frozen(name: str) -> bool:
        if freeze == "all":
            return name.startswith("encoder.backbone.")
        if freeze == "stem":
            return name.startswith(("encoder.backbone.conv_stem.", "encoder.backbone.bn1."))
        return False

    for name, has_grad in grads.items():
        assert has_grad is not frozen(name), f"{name}: grad={has_grad} under freeze={freeze!r}"
    assert any(n.startswith("encoder.backbone.conv_stem.") for n in grads)
    assert any(n.startswith("head.mixers.2.") for n in grads)


@pytest.mark.parametrize("freeze,frozen_bn,training_bn", [
    ("stem", "encoder.backbone.bn1", "encoder.backbone.blocks.1.0.bn1"),
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
