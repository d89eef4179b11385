"""Model files a backend can load: an exported bundle directory or a checkpoint.

A bundle is what ``export_onnx`` writes: ``encoder.onnx``, ``temporal_head.onnx``, the
streaming graphs ``frame_projection.onnx`` + ``tubelet_head.onnx`` (bundles exported
before them still load; backends then stream whole windows of feature maps) and
optionally ``window.onnx``, each carrying the metadata JSON. A checkpoint (``.pt``) runs
directly in PyTorch; the ONNX-based backends export it once into the cache first.

The export cache is never trusted blindly. Each entry is a directory named after the
checkpoint's hash, holding the graphs and a manifest written with them that records the
checkpoint's full SHA-256 and the SHA-256 of every file. An entry is used only when the
manifest matches the checkpoint and every file still hashes to what it recorded;
anything else (a flipped byte, a graph copied in from another export, a missing or extra
file) is logged and exported again. Exports are made in a directory of a unique
temporary name under an exclusive file lock and renamed into place, so several nodes
starting together on an empty cache export once and all start.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abaw_ros.config import ModelFileError, describe_file_kind
from abaw_ros.model_metadata import GRAPH_FILES, MetadataValueError, ModelMetadata, read_onnx_metadata

from .engine_cache import default_cache_dir, file_sha256

LOG = logging.getLogger(__name__)

ENCODER_FILE = GRAPH_FILES["encoder"]
TEMPORAL_HEAD_FILE = GRAPH_FILES["temporal_head"]
WINDOW_FILE = GRAPH_FILES["window"]
PROJECTION_FILE = GRAPH_FILES["projection"]
TUBELET_HEAD_FILE = GRAPH_FILES["tubelet_head"]
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
MANIFEST_FILE = "abaw_ros_cache.json"
MANIFEST_FORMAT = "abaw_ros.cached_export"
BUNDLE_MANIFEST = "bundle.json"  # written by export (abaw_ros.models.export, which needs torch)
# Crop sides a model may ask for: the backbone is trained at 224; warm-up allocates
# 3 x S x S floats per crop, so an input_size of 100000 would ask for 112 GiB.
INPUT_SIZE_RANGE = (16, 1024)


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
        missing = [n for n in (ENCODER_FILE, TEMPORAL_HEAD_FILE) if not (directory / n).exists()]
        if missing:
            raise FileNotFoundError(
                f"model bundle {directory} lacks {missing}; a bundle holds {ENCODER_FILE} and "
                f"{TEMPORAL_HEAD_FILE} as written by `abaw-affect export`"
            )
        for name in (ENCODER_FILE, TEMPORAL_HEAD_FILE, WINDOW_FILE):
            require_regular_file(directory / name, missing_ok=name == WINDOW_FILE)
        encoder = _graph_metadata(directory / ENCODER_FILE)
        head = _graph_metadata(directory / TEMPORAL_HEAD_FILE)
        _check_pair(directory, encoder, head)
        _check_one_model(directory)
        return cls(directory, encoder)


def require_regular_file(path: Path, missing_ok: bool = False) -> None:
    """Raise ModelFileError unless ``path`` is a regular file (a FIFO or a link to
    ``/dev/zero`` would block or never end when read)."""
    if missing_ok and not os.path.lexists(path):
        return
    kind = "a directory" if path.is_dir() else describe_file_kind(path)
    if kind is not None:
        raise ModelFileError(f"{path}: is {kind}, not a regular model file")


def _graph_metadata(path: Path) -> ModelMetadata:
    """The metadata of one ONNX graph; a file that is not a readable ONNX graph with
    sane metadata raises ModelFileError naming it."""
    try:
        metadata = ModelMetadata.from_onnx(path)
    except FileNotFoundError:
        raise
    except MetadataValueError as exc:
        raise ModelFileError(f"{path}: its metadata gives {exc}") from None
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, bad JSON, bad values, ...
        size = path.stat().st_size
        raise ModelFileError(
            f"{path}: not a readable abaw_ros ONNX graph ({size} bytes; "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        ) from None
    lo, hi = INPUT_SIZE_RANGE
    if not lo <= metadata.input_size <= hi:
        raise ModelFileError(f"{path}: its metadata gives input_size={metadata.input_size}; a face "
                             f"crop side must be {lo}..{hi} pixels (the network is trained at 224)")
    return metadata


def _check_pair(directory: Path, encoder: ModelMetadata, head: ModelMetadata) -> None:
    """The two graphs of a bundle must come from one model: same window, same features."""
    for field_name in ("window_length", "feature_shapes", "input_size", "tasks"):
        mine, theirs = getattr(encoder, field_name), getattr(head, field_name)
        if mine != theirs:
            raise ModelFileError(
                f"model bundle {directory}: {ENCODER_FILE} has {field_name}={mine} but "
                f"{TEMPORAL_HEAD_FILE} has {field_name}={theirs}; the two graphs come from "
                f"different models (export them together with `abaw-affect export`)"
            )


def _check_one_model(directory: Path) -> None:
    """Every graph of a bundle (and its ``bundle.json``) must name the same model hash
    (written by export since bundles carry one; graphs without it cannot be compared)."""
    hashes: dict[str, str] = {}
    try:
        manifest = json.loads((directory / BUNDLE_MANIFEST).read_text(encoding="utf-8"))
        if isinstance(manifest, dict) and isinstance(manifest.get("model_hash"), str):
            hashes[BUNDLE_MANIFEST] = manifest["model_hash"]
    except (OSError, ValueError):
        pass  # bundles exported before the manifest
    for name in (ENCODER_FILE, PROJECTION_FILE, TUBELET_HEAD_FILE, TEMPORAL_HEAD_FILE, WINDOW_FILE):
        path = directory / name
        if path.is_file():
            with contextlib.suppress(Exception):  # unreadable graphs are reported where they are loaded
                value = read_onnx_metadata(path).get("model_hash")
                if isinstance(value, str):
                    hashes[name] = value
    if len(set(hashes.values())) > 1:
        first = next(iter(hashes))
        other = next(n for n, h in hashes.items() if h != hashes[first])
        raise ModelFileError(
            f"model bundle {directory}: {other} comes from another model than {first} (model hash "
            f"{hashes[other][:12]}... vs {hashes[first][:12]}...); export the bundle again as a whole with "
            f"`abaw-affect export CHECKPOINT -o NEW_DIR`")


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
    if not path.is_dir():
        require_regular_file(path)
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


def bundle_from_checkpoint(checkpoint: str | Path, cache_dir: str | Path | None = None) -> ModelBundle:
    """Export ``checkpoint`` to ONNX once; later calls reuse the export after checking it
    against the manifest written with it (see the module docstring). Safe to call from
    several processes at once."""
    checkpoint = Path(checkpoint)
    require_regular_file(checkpoint)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    checkpoint_sha = file_sha256(checkpoint)
    target = export_dir(checkpoint, root, checkpoint_sha)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root / "locks" / f"bundle-{target.name}.lock"):
        problem = cached_export_problem(target, checkpoint_sha)
        if problem is None:
            LOG.info("using exported bundle %s for %s (hashes verified)", target, checkpoint)
            return ModelBundle.open(target)
        if target.exists():
            LOG.warning("cached export %s of %s is not used: %s; exporting it again", target, checkpoint,
                        problem)
        else:
            LOG.info("exporting %s to ONNX under %s", checkpoint, target)
        _export(checkpoint, checkpoint_sha, target)
    return ModelBundle.open(target)


def export_dir(checkpoint: Path, cache_dir: Path, checkpoint_sha: str | None = None) -> Path:
    """Where the export of ``checkpoint`` is cached: named after its stem and hash."""
    sha = checkpoint_sha or file_sha256(checkpoint)
    return cache_dir / "bundles" / f"{checkpoint.stem}-{hashlib.sha256(sha.encode()).hexdigest()[:16]}"


def cached_export_problem(target: Path, checkpoint_sha: str) -> str | None:
    """None when the export in ``target`` is the one its manifest describes, for the
    checkpoint of hash ``checkpoint_sha``; else what is wrong with it."""
    if not target.is_dir():
        return "no such export"
    try:
        manifest = json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8"))
        files: dict[str, str] = dict(manifest["files"])
        recorded = str(manifest["checkpoint_sha256"])
        if manifest.get("format") != MANIFEST_FORMAT:
            return f"{MANIFEST_FILE} is not a {MANIFEST_FORMAT} manifest"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest {MANIFEST_FILE} is missing or unreadable ({type(exc).__name__})"
    missing = [n for n in (ENCODER_FILE, TEMPORAL_HEAD_FILE, PROJECTION_FILE, TUBELET_HEAD_FILE) if n not in files]
    if missing:
        return f"it lacks {missing} (exported before the streaming graphs)"
    if recorded != checkpoint_sha:
        return (f"its manifest was written for another checkpoint (sha256 {recorded[:12]}..., this "
                f"one is {checkpoint_sha[:12]}...)")
    present = sorted(p.name for p in target.iterdir() if p.name != MANIFEST_FILE)
    if present != sorted(files):
        return f"it holds {present}, its manifest lists {sorted(files)}"
    for name, sha in sorted(files.items()):
        path = target / name
        if describe_file_kind(path) is not None or path.is_dir():
            return f"{name} is not a regular file"
        if file_sha256(path) != sha:
            return f"{name} does not match the SHA-256 recorded when it was written (changed on disk)"
    return None


def _export(checkpoint: Path, checkpoint_sha: str, target: Path) -> None:
    """Export into a fresh temporary directory, write the manifest, and swap it in for
    ``target`` (the caller holds the lock)."""
    from abaw_ros.models import export_onnx, load_checkpoint  # torch + timm, only here

    model, info = load_checkpoint(checkpoint)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        export_onnx(model, tmp, **_export_kwargs(info))
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": checkpoint_sha,
            "files": files,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        stale = None
        if target.exists():
            stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.stale."))
            os.replace(target, stale / "old")
        os.replace(tmp, target)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) held for the ``with`` block; other
    processes wait for it. The lock file itself is left in place (removing it would let
    two processes lock two different files)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the atomic renames remain
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _export_kwargs(info: dict) -> dict:
    """Thresholds and the trained flag stored in the checkpoint travel into the export."""
    # the fused window graph is not run here
    kwargs: dict = {"graphs": ("encoder", "projection", "tubelet_head", "temporal_head")}
    thresholds = {k: info[k] for k in ("au_thresholds", "ah_threshold") if k in info}
    if thresholds:
        kwargs["thresholds"] = thresholds
    if "trained" in info:
        kwargs["trained"] = bool(info["trained"])
    if info.get("provenance"):
        kwargs["provenance"] = info["provenance"]
    return kwargs
