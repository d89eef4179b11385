"""Training configuration: one dataclass per concern, read from a YAML file with
``model:``, ``data:``, ``loss:`` and ``train:`` sections (see ``config/train_*.yaml``)."""
from __future__ import annotations

import math
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
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
    # sigmoid outputs' starting bias: prior (log-odds of the training labels) or default
    # (nn.Linear's own init, as the reference); None: the protocol's choice
    output_bias_init: str | None = None
    dead_output_std: float = 1e-3  # warn when a task's validation outputs vary less than this
    # -- input pipeline and scale (docs/TRAINING.md, "Training at full scale")
    preprocess: str = "device"  # device: workers hand over uint8 crops, the step resizes/augments; worker: all in workers
    crop_size: int = 112  # stored crop size the workers hand over (preprocess: device)
    prefetch_factor: int = 2  # batches each worker keeps ready (in shared memory)
    feature_cache: str | None = None  # folder of the frozen part's outputs on disk (freeze paper/all, no augment)
    effective_batch_size: int | None = None  # windows per optimizer step over all processes; None = batch_size x world
    sync_bn: str | bool = "auto"  # auto (on when several processes share the batch) | on | off
    checkpoint_every: int = 0  # also write the recovery checkpoint (last.pt) every N steps; 0 = at epoch ends only
    max_steps: int = 0  # stop after this many optimizer steps in all (a time-boxed run); 0 = no limit
    track: bool = True  # steps.csv / epochs.csv in out_dir (and TensorBoard when installed)

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
        reference = self.protocol == "reference"
        # protocol presets fill what the user left open and never replace a given value
        if self.output_bias_init is None:
            self.output_bias_init = "default" if reference else "prior"
        if self.output_bias_init not in ("prior", "default"):
            raise ValueError(f"output_bias_init={self.output_bias_init!r}: choose prior or default")
        if self.loss.va_margin_weight is None:
            self.loss.va_margin_weight = 0.0 if reference else 1.0
        if self.loss.va_unbiased is None:
            self.loss.va_unbiased = reference
        for name in ("checkpoint_every", "max_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0 (0 = off)")
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
        for section in ("model", "data", "loss"):
            if not isinstance(raw.get(section) or {}, dict):
                raise ValueError(f"{section}={raw[section]!r}: expected a mapping of {section} keys")
        model = raw.get("model") or {}
        if set(model) - {f.name for f in fields(ModelConfig)}:
            ModelConfig.from_dict(model)  # names the unknown field
        return cls(
            model=ModelConfig.from_dict(typed_values(ModelConfig, model, "model")),
            data=_build(DataConfig, raw.get("data") or {}, "data"),
            loss=_build(LossConfig, raw.get("loss") or {}, "loss"),
            **typed_values(cls, train, "train"),
        )


def _build(cls, values: dict[str, Any], section: str):
    known = {f.name for f in fields(cls)}
    bad = set(values) - known
    if bad:
        raise ValueError(f"unknown {section} key(s) {sorted(bad)}: known keys are {sorted(known)}")
    return cls(**typed_values(cls, values, section))


# YAML 1.1 (PyYAML) reads ``1e-3`` and ``5E-4`` as strings: a float needs a dot there.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def typed_values(cls: type, values: dict[str, Any], section: str) -> dict[str, Any]:
    """``values`` converted to the field types of dataclass ``cls`` (numbers in any YAML
    spelling, ``au`` or ``[au, va]`` for a tuple of names, ``true``/``false``); a value that
    cannot be converted raises one ValueError naming ``section.key``, the value and the type."""
    hints = typing.get_type_hints(cls)
    return {name: _typed(hints[name], value, f"{section}.{name}") if name in hints else value
            for name, value in values.items()}


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return "a list of " + (_describe(args[0]) + "s" if args else "values")
    if origin is dict:
        return "a mapping of " + _describe(args[1]) + "s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _typed(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ValueError(f"{key}={value!r}: expected {_describe(hint)}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _typed(arg, value, key)
            except ValueError:
                continue
        raise bad
    if origin is tuple:
        if isinstance(value, str):  # "au" or "va,au" from a command line
            value = [v.strip() for v in value.strip("[]()").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise bad
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ValueError(f"{key}={value!r}: expected {len(item_types)} values")
        return tuple(_typed(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(item_types, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {str(k): _typed(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.strip().lower() in ("true", "yes", "on")
        raise bad
    if hint in (int, float):
        number = value
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            number = float(value)
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise bad
        if hint is int:
            if float(number) != int(number):
                raise ValueError(f"{key}={value!r}: expected an integer")
            return int(number)
        return float(number)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # out_dir=2024 from a command line
        raise bad
    return value


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


# Keys holding a file or folder: in a config file they are relative to the file's folder
# (a config names its data the same way from wherever it is run); on the command line
# (--set, --out-dir, --resume) to the working directory, as every shell path is.
PATH_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("backbone_weights",),
    "data": ("affwild2_images", "affwild2_annotations", "hume_root", "hume_train_csv", "hume_val_csv", "bah_root",
             "bah_frames_root"),
    "train": ("out_dir", "resume"),
}


def resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``raw`` with the relative paths of :data:`PATH_KEYS` made relative to ``base``."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section, keys in PATH_KEYS.items():
        values = raw.get(section)
        if not isinstance(values, dict):
            continue
        for key in keys:
            value = values.get(key)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                values[key] = os.path.normpath(base / value)
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
        raw = resolve_paths(raw, path.parent)
    try:
        return TrainConfig.from_dict(apply_overrides(raw, overrides or []))
    except (TypeError, ValueError) as exc:
        where = f"{path}: " if path is not None else ""
        raise ValueError(f"{where}{exc}") from None

