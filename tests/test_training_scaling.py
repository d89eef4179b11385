"""The recipe at another scale: gradient accumulation equals one big batch (for layers
without BatchNorm), the batching (effective batch, accumulation, SyncBatchNorm) and the
precision are recorded in the checkpoint, and ``amp``/``sync_bn`` resolve as documented."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from abaw_ros.data.fixtures import FixtureSpec, make_fixtures
from abaw_ros.data.sources import load_split
from abaw_ros.data.windows import training_windows
from abaw_ros.models import AffectNet, ModelConfig, load_checkpoint
from abaw_ros.training import load_train_config, train
from abaw_ros.training.losses import LossConfig, MultiTaskLoss
from abaw_ros.training.scaling import GradientAccumulator, resolve_amp, resolve_batching

REPO = Path(__file__).resolve().parents[1]


def head_and_data(batch: int, seed: int = 0):
    cfg = ModelConfig(n_levels=1, tasks=("au",), input_size=64, dropout=0.0, dim=32, out_dim=32)
    torch.manual_seed(seed)
    net = AffectNet(cfg)
    head = net.head  # LayerNorm, no BatchNorm
    g = torch.Generator().manual_seed(seed + 1)
    maps = torch.randn(batch, cfg.window_length, *net.encoder.feature_shapes[0], generator=g)
    target = (torch.rand(batch, cfg.output_size, generator=g) > 0.5).float()
    return head, maps, target


def run(head, maps, target, micro: int, accum: int, steps: int) -> torch.nn.Module:
    """``steps`` optimizer steps over ``maps`` in micro-batches of ``micro`` windows."""
    loss_fn = MultiTaskLoss(("au",), LossConfig(au_loss="bce"))
    params = list(head.parameters())
    # SGD: the comparison is of gradients; Adam would turn the float noise of gradients
    # that are about 0 into steps of +-lr (its first step is about lr x sign(g))
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    stepper = GradientAccumulator(head, params, optimizer, None, accum, grad_clip=1.0)
    chunks = list(zip(maps.split(micro), target.split(micro), strict=True))
    for _ in range(steps):
        for i, (x, y) in enumerate(chunks):
            with stepper.micro_batch(i, len(chunks)):
                raw = head([x])
                mask = torch.ones(len(x), 1, dtype=torch.bool)
                loss, _ = loss_fn(raw[:, None].expand(-1, 8, -1), y[:, None].expand(-1, 8, -1), mask[:, None].expand(-1, 8, 1))
                stepper.backward(loss)
    assert stepper.optimizer_steps == steps * -(-len(chunks) // accum)
    return head


def test_accumulating_k_micro_batches_equals_one_big_batch():
    head, maps, target = head_and_data(8)
    big = run(copy.deepcopy(head), maps, target, micro=8, accum=1, steps=3)
    accumulated = run(copy.deepcopy(head), maps, target, micro=2, accum=4, steps=3)
    unaccumulated = run(copy.deepcopy(head), maps, target, micro=2, accum=1, steps=3)
    for (name, a), b in zip(big.named_parameters(), accumulated.parameters(), strict=True):
        assert torch.allclose(a, b, atol=2e-6, rtol=1e-5), name
    # without accumulation the same micro-batches train another network
    assert any(not torch.allclose(a, c, atol=1e-4) for a, c in zip(big.parameters(), unaccumulated.parameters(),
                                                                   strict=True))


def test_a_short_last_group_is_averaged_over_its_own_micro_batches():
    head, maps, target = head_and_data(6)
    # 3 micro-batches of 2 with accum 2: groups [0, 1] and [2]; the same as batches of 4 and 2
    grouped = run(copy.deepcopy(head), maps, target, micro=2, accum=2, steps=1)
    ref = copy.deepcopy(head)
    loss_fn = MultiTaskLoss(("au",), LossConfig(au_loss="bce"))
    optimizer = torch.optim.SGD(list(ref.parameters()), lr=0.1, momentum=0.9)
    for x, y in ((maps[:4], target[:4]), (maps[4:], target[4:])):
        optimizer.zero_grad()
        mask = torch.ones(len(x), 8, 1, dtype=torch.bool)
        loss, _ = loss_fn(ref([x])[:, None].expand(-1, 8, -1), y[:, None].expand(-1, 8, -1), mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 1.0)
        optimizer.step()
    for a, b in zip(grouped.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, atol=2e-6, rtol=1e-5)


def test_batching_and_precision_resolve_as_documented():
    cfg = load_train_config(REPO / "config" / "train_au_l3.yaml",
                            ["train.batch_size=32", "train.effective_batch_size=128"])
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    four = resolve_batching(cfg, 4, gpu)
    assert (four.accum_steps, four.effective_batch_size, four.sync_bn) == (1, 128, True)
    one = resolve_batching(cfg, 1, gpu)
    assert (one.accum_steps, one.sync_bn) == (4, False)  # nothing to synchronize with
    assert resolve_batching(cfg, 4, cpu).sync_bn is False  # torch's SyncBatchNorm is GPU-only
    with pytest.raises(ValueError, match=r"effective_batch_size=128: must be a multiple of .* 32 x 3 = 96"):
        resolve_batching(cfg, 3, gpu)
    off = load_train_config(REPO / "config" / "train_au_l3.yaml", ["train.batch_size=32", "train.sync_bn=off"])
    assert resolve_batching(off, 4, gpu).sync_bn is False
    assert resolve_amp("auto", cpu) == "none"
    assert resolve_amp("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="amp=fp16 on cpu"):
        resolve_amp("fp16", cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="amp auto on a GPU: needs CUDA (none here)")
def test_amp_auto_on_this_gpu_is_bf16_where_supported_else_fp16():
    gpu = torch.device("cuda", 0)
    assert resolve_amp("auto", gpu) == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def test_sync_bn_and_accumulation_are_recorded_in_the_checkpoint(tmp_path):
    spec = FixtureSpec(frames_per_video=12, affwild2_videos=(2, 1), hume_videos=(1, 1), bah_videos=(1, 1))
    paths = make_fixtures(tmp_path / "data", spec)
    cfg = load_train_config(REPO / "config" / "train_au_l1.yaml", [
        f"data.affwild2_images={paths.affwild2_images}", f"data.affwild2_annotations={paths.affwild2_annotations}",
        "data.missing_frames=nearest", "model.freeze=paper", "model.input_size=64", "train.augment=false",
        "train.epochs=1", "train.batch_size=2", "train.effective_batch_size=4", "train.sync_bn=on",
        "train.train_fraction=0.3", "train.num_workers=0", "train.device=cpu", f"train.out_dir={tmp_path / 'run'}"])
    result = train(cfg)
    model, info = load_checkpoint(result.last_checkpoint)
    assert info["batching"] == {"batch_size": 2, "world_size": 1, "accum_steps": 2, "effective_batch_size": 4,
                                "sync_bn": True}
    assert info["amp"] == "none"
    # one optimizer (and scheduler) step per two micro-batches
    records = [r for recs in load_split(cfg.data, ("au",), "train", cfg.protocol).values() for r in recs]
    windows = len(training_windows([len(r) for r in records], 8))
    micro_batches = math.ceil(math.ceil(windows / 2) * 0.3)
    assert info["scheduler"]["last_epoch"] == math.ceil(micro_batches / 2)
    assert isinstance(model, AffectNet)  # the SyncBatchNorm run loads as the plain network
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
