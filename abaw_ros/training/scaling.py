"""One recipe on one GPU or many: effective batch, gradient accumulation, SyncBatchNorm, precision.

The reference trains with 128 windows (1,024 frames) per optimizer step on one GPU, and
its trainable BatchNorm layers normalize over those 1,024 frames. Spread over N GPUs with
``batch_size`` windows each, DDP averages the gradients of the N shards (the same as one
batch for every layer but BatchNorm), and BatchNorm would see only ``batch_size x T``
frames per GPU. ``sync_bn`` (auto: on when several processes share the effective batch)
makes BatchNorm compute its statistics over all processes' frames, so that
``torchrun --nproc_per_node 4`` with ``batch_size: 32`` equals the single-GPU recipe:
the same gradients and batch statistics per step, up to float summation order and the
order in which windows are drawn (DistributedSampler instead of RandomSampler).

``effective_batch_size`` keeps the recipe's batch when the processes hold less:
``accum_steps = effective_batch_size / (batch_size x processes)`` micro-batches are summed
before each optimizer step (each micro-batch's loss divided by the group's size). For
layers without BatchNorm this equals one big batch exactly (up to float order; pinned by
``tests/test_training_scaling.py``); BatchNorm layers still normalize each micro-batch
alone, which accumulation cannot change. Both, and the precision, are recorded in the
checkpoint (``extra.batching``, ``extra.amp``).

``amp: auto`` picks bf16 where the GPU supports it (Ampere and newer), fp16 with a
GradScaler where it does not (T4, V100), and float32 on CPU.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import torch

from abaw_ros.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batching:
    batch_size: int  # windows per process per micro-batch
    world_size: int
    accum_steps: int
    effective_batch_size: int  # windows per optimizer step, all processes
    sync_bn: bool

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_batching(cfg: TrainConfig, world_size: int, device: torch.device) -> Batching:
    per_step = cfg.batch_size * world_size
    effective = cfg.effective_batch_size or per_step
    if effective % per_step:
        raise ValueError(f"effective_batch_size={effective}: must be a multiple of batch_size x processes = "
                         f"{cfg.batch_size} x {world_size} = {per_step}")
    sync = cfg.sync_bn == "on" or (cfg.sync_bn == "auto" and world_size > 1 and cfg.batch_size < effective)
    if sync and world_size > 1 and device.type == "cpu":
        # torch's SyncBatchNorm synchronizes CUDA (and XPU/HPU) tensors only: its forward
        # raises "SyncBatchNorm expected input tensor to be on GPU" (torch/nn/modules/batchnorm.py)
        log.warning("sync_bn: SyncBatchNorm needs GPUs; on CPU every process normalizes its own batch")
        sync = False
    return Batching(cfg.batch_size, world_size, effective // per_step, effective, sync)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto|bf16|fp16|none`` -> the precision used: ``bf16``, ``fp16`` or ``none``."""
    if amp == "auto":
        if device.type != "cuda":
            return "none"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp=fp16 on {device}: float16 with a GradScaler is for GPUs; use bf16 or none")
    return amp


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (its gradients underflow without one); None otherwise."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


class GradientAccumulator:
    """Micro-batches -> an optimizer step every ``accum_steps`` of them (the last group of an
    epoch may be shorter: its losses are divided by its own size)::

        with stepper.micro_batch(step, steps_per_epoch):
            loss = loss_fn(net(inputs), ...)
            stepper.backward(loss)
    """

    def __init__(self, net: torch.nn.Module, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                 scheduler, accum_steps: int, grad_clip: float = 0.0,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        self.net = net
        self.params = params
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.accum_steps = max(1, int(accum_steps))
        self.grad_clip = grad_clip
        self.scaler = scaler
        self.optimizer_steps = 0
        self._group = 1

    @contextmanager
    def micro_batch(self, index: int, total: int) -> Iterator[None]:
        """Micro-batch ``index`` of ``total`` in this epoch (forward and backward inside);
        an optimizer step on leaving the last one of its group."""
        k = self.accum_steps
        first = index - index % k
        self._group = min(k, total - first)
        last = index - first == self._group - 1
        if index == first:
            self.optimizer.zero_grad(set_to_none=True)
        # DDP: exchange gradients only on the group's last backward
        with nullcontext() if last or not hasattr(self.net, "no_sync") else self.net.no_sync():
            yield
        if last:
            self._optimizer_step()

    def backward(self, loss: torch.Tensor) -> None:
        scaled = loss / self._group
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer_steps += 1
