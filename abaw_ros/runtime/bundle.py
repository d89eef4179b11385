"""Model files a backend can load: an exported bundle directory or a checkpoint.

A bundle is what ``export_onnx`` writes: ``encoder.onnx``, ``temporal_head.onnx``, the
streaming graphs ``frame_projection.onnx`` + ``tubelet_head.onnx`` (bundles exported
before them still load; backends then stream whole windows of feature maps) and
optionally ``window.onnx``, each carrying the metadata JSON. A checkpoint (``.pt``) runs
directly in PyTorch; the ONNX-based backends export it once into the cache first.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .base import ModelMetadata
from .engine_cache import default_cache_dir, file_sha256

LOG = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
TEMPORAL_HEAD_FILE = "temporal_head.onnx"
WINDOW_FILE = "window.onnx"
PROJECTION_FILE = "frame_projection.onnx"
TUBELET_HEAD_FILE = "tubelet_head.onnx"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ModelBundle:
    directory: Path
    metadata: ModelMetadata

    @property
    def encoder(self) -> Path:
        return self.directory / ENCODER_FILE

    @property
    def temporal_head(self) -> Path:
        return self.directory / TEMPORAL_HEAD_FILE

    @property
    def projection(self) -> Path | None:
        """The per-frame projection graph, None in bundles that predate it."""
        path = self.directory / PROJECTION_FILE
        return path if path.is_file() else None

    @property
    def tubelet_head(self) -> Path | None:
        """The head over tubelet sums, None in bundles that predate it."""
        path = self.directory / TUBELET_HEAD_FILE
        return path if path.is_file() else None

    @property
    def streams_tubelets(self) -> bool:
        """Both streaming graphs present and described by the metadata."""
        return bool(self.metadata.projection_shapes) and self.projection is not None and self.tubelet_head is not None

    @property
    def window(self) -> Path | None:
        path = self.directory / WINDOW_FILE
        return path if path.is_file() else None

    @classmethod
    def open(cls, directory: str | Path) -> ModelBundle:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"model bundle directory not found: {directory}")
        missing = [n for n in (ENCODER_FILE, TEMPORAL_HEAD_FILE) if not (directory / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"model bundle {directory} lacks {missing}; a bundle holds {ENCODER_FILE} and "
                f"{TEMPORAL_HEAD_FILE} as written by `abaw-affect export`"
            )
        return cls(directory, ModelMetadata.from_onnx(directory / ENCODER_FILE))


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``model_path``: exactly one of ``checkpoint`` / ``bundle_dir`` is set."""

    path: Path
    checkpoint: Path | None = None
    bundle_dir: Path | None = None

    def onnx_bundle(self, cache_dir: str | Path | None = None) -> ModelBundle:
        """The ONNX graphs of this model: the bundle itself, or a checkpoint's export
        (made once into ``cache_dir``)."""
        if self.bundle_dir is not None:
            return ModelBundle.open(self.bundle_dir)
        return bundle_from_checkpoint(self.checkpoint, cache_dir)


def resolve_model_path(model_path: str | Path) -> ModelSource:
    """Classify ``model_path``: a checkpoint file, a bundle directory, or one ONNX file of
    a bundle (its directory is used)."""
    path = Path(model_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model file not found: {path} (expected a checkpoint {'/'.join(CHECKPOINT_SUFFIXES)} "
            "or a bundle directory from `abaw-affect export`)"
        )
    if path.is_dir():
        return ModelSource(path, bundle_dir=path)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return ModelSource(path, checkpoint=path)
    if path.suffix.lower() == ".onnx":
        return ModelSource(path, bundle_dir=path.parent)
    raise ValueError(
        f"model_path={str(path)!r}: unsupported file type {path.suffix!r}; give a checkpoint "
        f"({', '.join(CHECKPOINT_SUFFIXES)}) or a bundle directory"
    )


def model_id(model_path: str | Path, digits: int = 12) -> str:
    """``<name>@sha256:<hex>``: the model's file or directory name and a hash of its content
    (a checkpoint file; a bundle's encoder and temporal-head graphs), so a consumer of the
    outputs can tell which weights made them."""
    path = Path(model_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        path = path.parent
    files = [path] if path.is_file() else [path / ENCODER_FILE, path / TEMPORAL_HEAD_FILE]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file_sha256(file).encode())
    name = path.stem if path.is_file() else path.name
    return f"{name}@sha256:{digest.hexdigest()[:digits]}"


def bundle_from_checkpoint(checkpoint: str | Path, cache_dir: str | Path | None = None) -> ModelBundle:
    """Export ``checkpoint`` to ONNX once; later calls reuse the export (keyed by the
    checkpoint's hash). The export is written to a temporary directory and renamed, so
    a half-written bundle is never picked up."""
    checkpoint = Path(checkpoint)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(file_sha256(checkpoint).encode()).hexdigest()[:16]
    target = root / "bundles" / f"{checkpoint.stem}-{digest}"
    required = (ENCODER_FILE, TEMPORAL_HEAD_FILE, PROJECTION_FILE, TUBELET_HEAD_FILE)
    if all((target / name).is_file() for name in required):
        LOG.info("using exported bundle %s for %s", target, checkpoint)
        return ModelBundle.open(target)
    from abaw_ros.models import export_onnx, load_checkpoint  # torch + timm, only here

    LOG.info("exporting %s to ONNX under %s", checkpoint, target)
    model, info = load_checkpoint(checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        export_onnx(model, tmp, **_export_kwargs(info))
        if target.exists() and all((target / name).is_file() for name in required):
            shutil.rmtree(tmp)  # another process finished first
        else:
            if target.exists():  # an export made before the streaming graphs existed
                LOG.info("replacing %s: it lacks the streaming graphs", target)
                shutil.rmtree(target)
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ModelBundle.open(target)


def _export_kwargs(info: dict) -> dict:
    """Thresholds and the trained flag stored in the checkpoint travel into the export."""
    # the fused window graph is not run here
    kwargs: dict = {"graphs": ("encoder", "projection", "tubelet_head", "temporal_head")}
    thresholds = {k: info[k] for k in ("au_thresholds", "ah_threshold") if k in info}
    if thresholds:
        kwargs["thresholds"] = thresholds
    if "trained" in info:
        kwargs["trained"] = bool(info["trained"])
    return kwargs
