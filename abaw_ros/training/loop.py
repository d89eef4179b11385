"""The training loop, top to bottom: data, model, optimizer, epochs, evaluation, checkpoints.

Single process: ``abaw-affect train --config config/train_au_l3.yaml``.
Several GPUs (or CPU processes): ``torchrun --nproc_per_node 4 -m abaw_ros.cli train ...``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, get_worker_info
from tqdm import tqdm

from abaw_ros.data.dataset import ClipDataset
from abaw_ros.data.sources import load_split
from abaw_ros.data.transforms import ClipTransform
from abaw_ros.models import AffectNet, load_checkpoint, save_checkpoint
from abaw_ros.training.config import TrainConfig
from abaw_ros.training.distributed import DistContext, barrier, close_distributed, init_distributed
from abaw_ros.training.evaluation import (
    EvalResult,
    autocast_for,
    metrics_table,
    predict,
    score,
    write_json,
)
from abaw_ros.training.feature_cache import training_feature_cache
from abaw_ros.training.features import encode_frames
from abaw_ros.training.frozen_split import CachedForward
from abaw_ros.training.input_pipeline import (
    device_preprocess,
    log_shared_memory,
    step_inputs,
    with_preprocess,
    worker_transforms,
)
from abaw_ros.training.losses import MultiTaskLoss
from abaw_ros.training.provenance import training_provenance
from abaw_ros.training.resume import EpochItems, EpochSampler, rng_state, set_rng_state
from abaw_ros.training.run_dir import check_run_dir, hold_run_dir
from abaw_ros.training.scaling import GradientAccumulator, grad_scaler, resolve_amp, resolve_batching
from abaw_ros.training.task_setup import au_pos_weight, aus_never_positive, init_output_biases, output_spread
from abaw_ros.training.tracking import RunLog

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_score: float
    best_epoch: int
    best_checkpoint: Path
    last_checkpoint: Path
    best_metrics: dict
    history: list[dict] = field(default_factory=list)


def _seed_worker(_worker_id: int) -> None:
    info = get_worker_info()
    ds = info.dataset
    ds = getattr(ds, "dataset", ds)
    if getattr(ds, "transform", None) is not None:  # each worker its own augmentation stream
        ds.transform.rng = np.random.default_rng(info.seed % 2**32)


def build_datasets(cfg: TrainConfig, model: AffectNet, ctx: DistContext) -> tuple[ClipDataset, ClipDataset]:
    tasks, mc = cfg.model.tasks, cfg.model
    train_records = [r for recs in load_split(cfg.data, tasks, "train", cfg.protocol).values() for r in recs]
    val_records = [r for recs in load_split(cfg.data, tasks, "val", cfg.protocol).values() for r in recs]
    reference = cfg.protocol == "reference"
    plain = ClipTransform(mc.input_size, mc.mean, mc.std)
    if cfg.cache_features:
        paths = [p for r in train_records + val_records for p in r.frames]
        features = encode_frames(model.encoder, paths, plain, ctx.device, progress=ctx.is_main)
        return (ClipDataset(train_records, tasks, mc.window_length, True, features=features),
                ClipDataset(val_records, tasks, mc.window_length, False, eval_stride=cfg.eval_stride,
                            features=features, score_padding=reference))
    if cfg.feature_cache:
        table = training_feature_cache(cfg.feature_cache, model, [p for r in train_records + val_records for p in r.frames],
                                       cfg.crop_size, ctx, cfg.num_workers)
        return (ClipDataset(train_records, tasks, mc.window_length, True, features=table),
                ClipDataset(val_records, tasks, mc.window_length, False, eval_stride=cfg.eval_stride,
                            features=table, score_padding=reference))
    train_tf, plain = worker_transforms(cfg, seed=cfg.seed + ctx.rank)
    return (ClipDataset(train_records, tasks, mc.window_length, True, transform=train_tf),
            ClipDataset(val_records, tasks, mc.window_length, False, transform=plain, eval_stride=cfg.eval_stride,
                        score_padding=reference))


def frames_view(cfg: TrainConfig, model: AffectNet, val_ds: ClipDataset, ctx: DistContext) -> ClipDataset | None:
    """Under ``protocol: reference``, the validation set as the organisers score it (every
    annotated frame once), evaluated and reported beside the reference's own numbers."""
    if cfg.protocol != "reference":
        return None
    mc = cfg.model
    records = [r for recs in load_split(cfg.data, mc.tasks, "val", "frames").values() for r in recs]
    plain = ClipTransform(mc.input_size, mc.mean, mc.std)
    features = None
    if val_ds.features is not None:  # the frames view shows some images the reference drops
        features = encode_frames(model.encoder, [p for r in records for p in r.frames], plain, ctx.device,
                                 progress=False)
    if features is not None:
        return ClipDataset(records, mc.tasks, mc.window_length, False, features=features)
    # the validation set's own input form (uint8 crops when the step preprocesses on the device)
    return ClipDataset(records, mc.tasks, mc.window_length, False, transform=worker_transforms(cfg, cfg.seed)[1])


def evaluate_model(forward, val_ds: ClipDataset, cfg: TrainConfig, ctx: DistContext, amp: bool
                   ) -> tuple[EvalResult, dict[str, float]]:
    preds = predict(forward, val_ds, ctx, cfg.batch_size, cfg.num_workers, amp, progress=True)
    return score(val_ds, preds, tune_thresholds=cfg.tune_thresholds), output_spread(val_ds, preds)


def train(cfg: TrainConfig, overwrite: bool = False) -> TrainResult:
    """Train as ``cfg`` says. ``cfg.out_dir`` holding an earlier run is refused unless
    ``cfg.resume`` continues it or ``overwrite`` replaces it (:mod:`abaw_ros.training.run_dir`)."""
    # every rank checks (read only) before the rendezvous: all refuse alike, none waits forever
    replace = check_run_dir(cfg.out_dir, cfg.resume, overwrite)
    ctx = init_distributed(cfg.device)
    try:
        with hold_run_dir(cfg.out_dir, replace) if ctx.is_main else contextlib.nullcontext():
            return _train(cfg, ctx)
    finally:
        close_distributed(ctx)


def _train(cfg: TrainConfig, ctx: DistContext) -> TrainResult:
    out_dir = Path(cfg.out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "train_config.json", cfg.to_dict())
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)

    # -- model and data
    provenance = training_provenance(cfg)
    if not cfg.model.backbone_weights and ctx.is_main:
        # on real data the pretrained file is expected; on generated fixtures a random
        # backbone is deliberate (smoke tests)
        log.log(logging.INFO if provenance.get("fixture") else logging.WARNING,
                "model.backbone_weights is empty: the backbone starts from random weights, and results will be "
                "far below the paper: the paper starts from an AffectNet-pretrained MobileNetV4 (timm "
                "model_best.pth.tar); set model.backbone_weights to that file")
    model = AffectNet(cfg.model).to(ctx.device)
    batching = resolve_batching(cfg, ctx.world_size, ctx.device)
    if batching.sync_bn:
        model.convert_sync_batchnorm()
    train_ds, val_ds = build_datasets(cfg, model, ctx)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ValueError(f"empty data set: {len(train_ds)} training and {len(val_ds)} validation windows")
    # With cached maps only the temporal head runs (and trains).
    trainable: torch.nn.Module = model.head if cfg.cache_features else model
    if cfg.feature_cache:  # only what follows the stored outputs runs (and trains)
        trainable = CachedForward(model, train_ds.features.plan)
    net: torch.nn.Module = trainable
    if ctx.distributed:
        net = DistributedDataParallel(trainable, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    sampler = EpochSampler(len(train_ds), cfg.seed, ctx.rank, ctx.world_size)
    reference = cfg.protocol == "reference"
    # the reference keeps the last, smaller batch; frames drops it (steady batch statistics)
    drop_last = not reference and len(train_ds) > cfg.batch_size * ctx.world_size
    grad_clip = 0.0 if reference else cfg.grad_clip  # the reference does not clip
    cached = cfg.cache_features or cfg.feature_cache
    pre = None if cached else device_preprocess(cfg, cfg.seed + ctx.rank, ctx.device)
    if ctx.is_main:
        log_shared_memory(cfg, train_ds.features.plan.frame_bytes if cfg.feature_cache else None)
    # the loader's own generator: its worker base seed must not draw from the global RNG
    loader = DataLoader(EpochItems(train_ds, cfg.seed), batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, worker_init_fn=_seed_worker, drop_last=drop_last,
                        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=cfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(cfg.seed))
    steps_per_epoch = max(1, math.ceil(len(loader) * cfg.train_fraction))
    loss_fn = MultiTaskLoss(cfg.model.tasks, cfg.loss, au_pos_weight(train_ds)).to(ctx.device)
    never_positive = aus_never_positive(train_ds)
    if never_positive and ctx.is_main:
        log.warning("%s never active in the training split: the network cannot learn %s, and %s F1 will be 0 "
                    "(recorded in metrics.json as au_never_positive)", ", ".join(never_positive),
                    "it" if len(never_positive) == 1 else "them", "its" if len(never_positive) == 1 else "their")
    if not cfg.resume and cfg.output_bias_init == "prior":
        biases = init_output_biases(model, train_ds, cfg.loss.au_loss)
        if biases and ctx.is_main:
            log.info("output biases at the training label priors (log-odds): %s", biases)
    elif not cfg.resume:  # the reference: nn.Linear's own initialisation, every sigmoid output near 0.5
        model.head.classifier.reset_parameters()

    # -- optimizer, schedule (per step), precision
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cfg.restart_steps,
                                                                     T_mult=1, eta_min=cfg.min_lr)
    amp = resolve_amp(cfg.amp, ctx.device)
    stepper = GradientAccumulator(net, params, optimizer, scheduler, batching.accum_steps, grad_clip,
                                  grad_scaler(amp, ctx.device))

    start_epoch, best_score, best_epoch, best_metrics, history, stale = 0, -math.inf, -1, {}, [], 0
    dead_tasks: set[str] = set()  # tasks whose outputs stopped varying at some evaluation
    start_step, global_step, resumed_running, resumed_seen = 0, 0, 0.0, 0
    last_eval: dict = {}  # thresholds and metrics of the latest evaluation, for last.pt
    if cfg.resume:
        stored, info = load_checkpoint(cfg.resume)
        model.load_state_dict(stored.state_dict())
        optimizer.load_state_dict(info["optimizer"])
        scheduler.load_state_dict(info["scheduler"])
        # where to go on: a recovery checkpoint names the epoch and step; older ones the epoch done
        at = info.get("resume_at") or {"epoch": int(info["epoch"]) + 1, "step": 0}
        start_epoch, start_step = int(at["epoch"]), int(at["step"])
        global_step = int(at.get("global_step", start_epoch * steps_per_epoch + start_step))
        resumed_running, resumed_seen = float(at.get("running", 0.0)), int(at.get("seen", 0))
        best_score, best_epoch = float(info.get("best_score", -math.inf)), int(info.get("best_epoch", -1))
        history = list(info.get("history", []))
        stale, dead_tasks = int(info.get("stale", 0)), set(info.get("dead_tasks", []))
        # the best evaluation's metrics, so that metrics.json keeps them when no later epoch improves
        best_metrics = next((h["val"] for h in history if h.get("epoch") == best_epoch and "val" in h), {})
        last_eval = {"au_thresholds": info.get("au_thresholds"), "ah_threshold": info.get("ah_threshold"),
                     "metrics": info.get("metrics") or {}}
        if info.get("rng") is not None:
            set_rng_state(info["rng"])
        log.info("resumed from %s at epoch %d step %d (best %.4f at epoch %d)", cfg.resume, start_epoch + 1,
                 start_step, best_score, best_epoch + 1)
    frames_ds = frames_view(cfg, model, val_ds, ctx)
    runlog = RunLog(out_dir, cfg.model.tasks, global_step if cfg.resume else None) if cfg.track and ctx.is_main else None

    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"
    if ctx.is_main:
        log.info("%d training windows (%d steps/epoch x %d processes), %d validation windows, tasks %s, device %s%s",
                 len(train_ds), steps_per_epoch, ctx.world_size, len(val_ds), list(cfg.model.tasks),
                 ctx.device, "" if amp == "none" else f", {amp}")
        log.info("batch: %d windows x %d processes x %d accumulated = %d per optimizer step; SyncBatchNorm %s; "
                 "precision %s (amp=%s)", batching.batch_size, batching.world_size, batching.accum_steps,
                 batching.effective_batch_size, "on" if batching.sync_bn else "off", amp, cfg.amp)

    def save_recovery(epoch: int, next_epoch: int, next_step: int, running: float, seen: int) -> None:
        """last.pt: everything a resumed run needs to go on exactly where this one is."""
        provenance["epochs"] = epoch + 1
        save_checkpoint(last_path, model, au_thresholds=last_eval.get("au_thresholds"),
                        ah_threshold=last_eval.get("ah_threshold"), trained=True,
                        provenance=provenance, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                        best_score=best_score, best_epoch=best_epoch, history=history,
                        metrics=last_eval.get("metrics", {}), train_config=cfg.to_dict(),
                        resume_at={"epoch": next_epoch, "step": next_step, "global_step": global_step,
                                   "running": running, "seen": seen},
                        stale=stale, dead_tasks=sorted(dead_tasks), rng=rng_state(),
                        batching=batching.to_dict(), amp=amp)

    stopped = False
    for epoch in range(start_epoch, cfg.epochs):
        skip = start_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip * cfg.batch_size)
        model.train()
        running, seen = (resumed_running, resumed_seen) if skip else (0.0, 0)
        bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not ctx.is_main, leave=False)
        ready = time.perf_counter()
        for step, batch in enumerate(loader, start=skip):
            if step >= steps_per_epoch:
                break
            fetched = time.perf_counter()
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            if pre is not None:  # augmentation draws seeded by the step, so a resumed run draws the same
                pre.reseed(((cfg.seed * 1_000_003 + epoch) * 1_000_003 + step) * 64 + ctx.rank)
            with stepper.micro_batch(step, steps_per_epoch):
                with autocast_for(ctx.device, amp):
                    raw = net(step_inputs(batch["inputs"], ctx.device, pre, train=True))
                loss, parts = loss_fn(raw.float(), batch["target"].to(ctx.device), batch["mask"].to(ctx.device))
                stepper.backward(loss)
            step_loss = float(loss.detach())  # waits for the device: the step time below is real
            running += step_loss
            seen += 1
            global_step += 1
            done = time.perf_counter()
            bar.update()
            bar.set_postfix(loss=f"{running / seen:.4f}", **{k: f"{v:.3f}" for k, v in parts.items()})
            if runlog is not None:
                runlog.step(epoch, global_step, step_loss, parts, lr, fetched - ready, done - fetched,
                            len(batch["target"]) * ctx.world_size)
            if ctx.is_main and cfg.log_every and (step + 1) % cfg.log_every == 0:
                log.info("epoch %d step %d/%d: loss %.4f %s, lr %.3g, data %.3f s, step %.3f s", epoch + 1, step + 1,
                         steps_per_epoch, running / seen, {k: round(v, 4) for k, v in parts.items()}, lr,
                         fetched - ready, done - fetched)
            if ctx.is_main and cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                save_recovery(epoch - 1, epoch, step + 1, running, seen)
            if cfg.max_steps and global_step >= cfg.max_steps:
                stopped = True
                break
            ready = time.perf_counter()
        bar.close()
        if stopped:
            if ctx.is_main:
                log.info("max_steps=%d reached in epoch %d: stopping (resume from %s)", cfg.max_steps, epoch + 1,
                         last_path)
            break
        entry = {"epoch": epoch, "train_loss": running / max(seen, 1), "lr": scheduler.get_last_lr()[0]}

        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            model.eval()
            # The unwrapped module: ranks may run different numbers of evaluation batches,
            # and DDP's forward would wait for the others (buffer broadcast).
            result, spread = evaluate_model(with_preprocess(trainable, pre, ctx.device), val_ds, cfg, ctx, amp)
            last_eval = {"au_thresholds": result.au_thresholds, "ah_threshold": result.ah_threshold,
                         "metrics": result.to_dict()}
            entry["val"] = result.to_dict()
            entry["output_std"] = spread
            if frames_ds is not None:  # the organisers' view, beside the reference's own
                frames_result, _ = evaluate_model(with_preprocess(trainable, pre, ctx.device), frames_ds, cfg, ctx,
                                                  amp)
                entry["val_frames"] = frames_result.to_dict()
            dead = sorted(t for t, v in spread.items() if v < cfg.dead_output_std)
            if dead:
                entry["dead_outputs"] = dead
                dead_tasks.update(dead)
                if ctx.is_main:
                    log.warning("epoch %d: the outputs of %s stopped varying (std over the validation pass %s < "
                                "%g): a saturated or collapsed head; check the learning rate and the backbone weights",
                                epoch + 1, ", ".join(dead), {t: f"{spread[t]:.2e}" for t in dead}, cfg.dead_output_std)
            improved = result.score > best_score
            if improved:
                best_score, best_epoch, best_metrics, stale = result.score, epoch, result.to_dict(), 0
            else:
                stale += 1
            history.append(entry)
            if ctx.is_main:
                log.info("epoch %d: train loss %.4f, validation score %.4f%s\n%s", epoch + 1, entry["train_loss"],
                         result.score, " (best)" if improved else "", metrics_table(result))
                if "val_frames" in entry:
                    log.info("epoch %d, the organisers' frames (every annotated frame once): score %.4f",
                             epoch + 1, entry["val_frames"]["score"])
                if improved:
                    provenance["epochs"] = epoch + 1
                    save_checkpoint(best_path, model, au_thresholds=result.au_thresholds,
                                    ah_threshold=result.ah_threshold, trained=True, provenance=provenance,
                                    optimizer=optimizer, scheduler=scheduler, epoch=epoch, best_score=best_score,
                                    best_epoch=best_epoch, history=history, metrics=result.to_dict(),
                                    train_config=cfg.to_dict(), batching=batching.to_dict(), amp=amp)
                best_frames = next((h.get("val_frames") for h in history if h["epoch"] == best_epoch), None)
                write_json(out_dir / "metrics.json", {"best_epoch": best_epoch, "best": best_metrics,
                                                      **({"best_frames": best_frames} if best_frames else {}),
                                                      "dead_outputs": sorted(dead_tasks), "history": history,
                                                      "au_never_positive": never_positive})
        else:
            history.append(entry)
        if ctx.is_main:
            save_recovery(epoch, epoch + 1, 0, 0.0, 0)
            if runlog is not None:
                runlog.epochs(history, global_step)
        if cfg.patience and stale >= cfg.patience and "val" in entry:
            if ctx.is_main:
                log.info("no improvement for %d evaluations: stopping", stale)
            break
    if runlog is not None:
        runlog.close()
    barrier(ctx)
    return TrainResult(best_score, best_epoch, best_path, last_path, best_metrics, history)
