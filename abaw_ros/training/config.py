"""Training configuration: one dataclass per concern, read from a YAML file with
``model:``, ``data:``, ``loss:`` and ``train:`` sections (see ``config/train_*.yaml``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from abaw_ros.models import ModelConfig
from abaw_ros.safe_yaml import safe_load_file, safe_load_text
from abaw_ros.training.losses import LossConfig


@dataclass
class DataConfig:
    """Where each data set lives; a task whose data set is not given cannot be trained."""

    affwild2_images: str | None = None  # folder holding cropped_aligned/
    affwild2_annotations: str | None = None  # folder holding VA_Estimation_Challenge/ ...
    hume_root: str | None = None  # folder holding face_images/ and the split CSVs
    hume_train_csv: str | None = None  # default <hume_root>/train_split.csv
    hume_val_csv: str | None = None  # default <hume_root>/valid_split.csv
    bah_root: str | None = None  # folder holding annotation.yml and split/
    bah_frames_root: str | None = None  # default <bah_root>/cropped-aligned-faces
    missing_frames: str = "nearest"  # annotated frame without image: nearest | skip | error


@dataclass
class TrainConfig:
    """The paper's recipe by default (AdamW 5e-4, wd 2e-5, cosine warm restarts every
    2000 steps down to 1e-6, bf16 on GPU, best checkpoint on the validation metric)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    out_dir: str = "runs/train"
    epochs: int = 10
    batch_size: int = 32  # per process
    lr: float = 5e-4
    weight_decay: float = 2e-5
    restart_steps: int = 2000  # CosineAnnealingWarmRestarts T_0, in optimizer steps
    min_lr: float = 1e-6
    grad_clip: float = 1.0  # max gradient norm, 0 = off
    train_fraction: float = 1.0  # share of the training windows seen per epoch (reference: 0.5)
    patience: int = 0  # stop after this many evaluations without improvement, 0 = never
    eval_every: int = 1  # epochs
    eval_stride: int | None = None  # evaluation window stride, default window_length
    augment: bool = True
    per_frame_augment: bool = True  # reference draws augmentation parameters per frame
    tune_thresholds: bool = True  # per-AU thresholds tuned on validation, stored in the checkpoint
    cache_features: bool = False  # freeze="all" only: encode every frame once, train the head on maps
    num_workers: int = 2
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 where the GPU has it, else fp16 + GradScaler; none on CPU) | bf16 | fp16 | none
    seed: int = 1
    resume: str | None = None  # checkpoint written by a previous run (last.pt)
    log_every: int = 50  # steps
    # frames: every annotated frame kept, predicted and scored once (the challenge's view);
    # reference: the reference code's data handling, to reproduce its numbers (invalid and
    # image-less rows dropped before windowing, padding copies scored, no gradient
    # clipping, no dropped last batch). See docs/TRAINING.md.
    protocol: str = "frames"
    dead_output_std: float = 1e-3  # warn when a task's validation outputs vary less than this
    # -- input pipeline and scale (docs/TRAINING.md, "Training at full scale")
    preprocess: str = "device"  # device: workers hand over uint8 crops, the step resizes/augments; worker: all in workers
    crop_size: int = 112  # stored crop size the workers hand over (preprocess: device)
    prefetch_factor: int = 2  # batches each worker keeps ready (in shared memory)
    feature_cache: str | None = None  # folder of the frozen part's outputs on disk (freeze paper/all, no augment)
    effective_batch_size: int | None = None  # windows per optimizer step over all processes; None = batch_size x world
    sync_bn: str | bool = "auto"  # auto (on when several processes share the batch) | on | off

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}: must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction={self.train_fraction}: must be in (0, 1]")
        if self.amp not in ("auto", "bf16", "fp16", "none"):
            raise ValueError(f"amp={self.amp!r}: choose auto, bf16, fp16 or none")
        if self.cache_features and (self.model.freeze != "all" or self.augment):
            raise ValueError(
                f"cache_features needs model.freeze='all' and augment=false (got freeze={self.model.freeze!r}, "
                f"augment={self.augment}): cached maps are only valid for a fixed encoder and fixed inputs"
            )
        if self.protocol not in ("frames", "reference"):
            raise ValueError(f"protocol={self.protocol!r}: choose frames or reference")
        if self.protocol == "reference" and self.eval_stride not in (None, self.model.window_length):
            raise ValueError(f"eval_stride={self.eval_stride}: protocol reference scores non-overlapping windows "
                             f"(stride {self.model.window_length})")
        if self.data.missing_frames not in ("nearest", "skip", "error"):
            raise ValueError(f"data.missing_frames={self.data.missing_frames!r}: choose nearest, skip or error")
        self._check_scale()

    def _check_scale(self) -> None:
        if self.preprocess not in ("device", "worker"):
            raise ValueError(f"preprocess={self.preprocess!r}: choose device or worker")
        if self.crop_size < 16:
            raise ValueError(f"crop_size={self.crop_size}: must be >= 16 (Aff-Wild2 crops are 112)")
        if self.prefetch_factor < 1:
            raise ValueError(f"prefetch_factor={self.prefetch_factor}: must be >= 1")
        if self.feature_cache and (self.model.freeze not in ("paper", "all") or self.augment or self.cache_features):
            raise ValueError(
                f"feature_cache needs model.freeze paper or all, augment=false and cache_features=false (got "
                f"freeze={self.model.freeze!r}, augment={self.augment}, cache_features={self.cache_features}): the "
                f"cache holds the frozen part's output of the unaugmented crops")
        if self.effective_batch_size is not None and self.effective_batch_size < self.batch_size:
            raise ValueError(f"effective_batch_size={self.effective_batch_size}: must be >= batch_size="
                             f"{self.batch_size} (a multiple of batch_size x processes)")
        if isinstance(self.sync_bn, bool):  # YAML reads on/off as true/false
            self.sync_bn = "on" if self.sync_bn else "off"
        if self.sync_bn not in ("auto", "on", "off"):
            raise ValueError(f"sync_bn={self.sync_bn!r}: choose auto, on or off")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = dict(raw or {})
        sections = {"model", "data", "loss", "train"}
        unknown = set(raw) - sections - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config section(s)/key(s) {sorted(unknown)}: use {sorted(sections)}")
        train = dict(raw.pop("train", None) or {})
        train.update({k: v for k, v in raw.items() if k not in sections})
        known = {f.name for f in fields(cls)} - {"model", "data", "loss"}
        bad = set(train) - known
        if bad:
            raise ValueError(f"unknown train key(s) {sorted(bad)}: known keys are {sorted(known)}")
        return cls(
            model=ModelConfig.from_dict(raw.get("model") or {}),
            data=_build(DataConfig, raw.get("data") or {}, "data"),
            loss=_build(LossConfig, raw.get("loss") or {}, "loss"),
            **train,
        )


def _build(cls, values: dict[str, Any], section: str):
    known = {f.name for f in fields(cls)}
    bad = set(values) - known
    if bad:
        raise ValueError(f"unknown {section} key(s) {sorted(bad)}: known keys are {sorted(known)}")
    return cls(**values)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=2", "model.n_levels=1"]`` -> nested dict updates (values parsed as YAML)."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in (raw or {}).items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override {item!r}: expected section.key=value, e.g. train.epochs=2")
        section, name = key.split(".", 1)
        raw.setdefault(section, {})
        raw[section][name] = safe_load_text(value, f"override {item!r}")
    return raw


def load_train_config(path: Path | str | None, overrides: list[str] | None = None) -> TrainConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path}: no such file")
        try:
            raw = safe_load_file(path) or {}  # no aliases, no repeated keys
        except yaml.YAMLError as exc:
            raise ValueError(f"training config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping with model/data/loss/train sections")
    try:
        return TrainConfig.from_dict(apply_overrides(raw, overrides or []))
    except (TypeError, ValueError) as exc:
        where = f"{path}: " if path is not None else ""
        raise ValueError(f"{where}{exc}") from None


def with_model(cfg: TrainConfig, **model_overrides: Any) -> TrainConfig:
    return replace(cfg, model=replace(cfg.model, **model_overrides))
