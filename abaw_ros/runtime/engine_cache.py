"""On-disk cache of compiled models (TensorRT engines, quantized ONNX graphs).

An entry is a pair of files: the compiled bytes (``<stem>.<precision>.<digest>.engine``)
and a key file beside it (``.json``) recording everything the bytes depend on: the
source ONNX hash, precision, input shapes/optimisation profiles, the compiler version,
the GPU (name and compute capability) and the precision recipe (how a reduced-precision
graph was made from the source). The key file also keeps the verdict of the precision
check the build went through (``precision_check``: passed, or accepted below tolerance). An entry is used only when its key file
matches the wanted key exactly and the bytes still hash to what the key file recorded;
anything else (missing, truncated, replaced, built elsewhere) is rebuilt, never used.
Writes are atomic (temporary file + ``os.replace``), and the key file is written last,
so an interrupted build never leaves an entry that looks valid.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

Shape = tuple[int, ...]


def default_cache_dir() -> Path:
    """``$ABAW_ROS_CACHE`` or ``$XDG_CACHE_HOME/abaw_ros`` (``~/.cache/abaw_ros``)."""
    if os.environ.get("ABAW_ROS_CACHE"):
        return Path(os.environ["ABAW_ROS_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "abaw_ros"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def onnx_sha256(path: str | Path) -> str:
    """Hash of an ONNX graph including its external weight files, if any."""
    path = Path(path)
    digest = hashlib.sha256(file_sha256(path).encode())
    for extra in sorted(path.parent.glob(f"{path.name}.data")) + sorted(path.parent.glob(f"{path.stem}.onnx_data")):
        digest.update(file_sha256(extra).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class InputProfile:
    """Shapes one graph input is compiled for (a TensorRT optimisation profile)."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"profile for '{self.name}': min/opt/max ranks differ ({self.min}, {self.opt}, {self.max})")
        if any(a > b for a, b in zip(self.min, self.opt, strict=True)) or any(
            a > b for a, b in zip(self.opt, self.max, strict=True)
        ):
            raise ValueError(f"profile for '{self.name}': need min <= opt <= max, got {self.min}, {self.opt}, {self.max}")

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )

    @classmethod
    def for_onnx(cls, onnx_path: str | Path, opt_batch: int, max_batch: int) -> tuple[InputProfile, ...]:
        """One profile per input of ``onnx_path``: the leading (batch) dimension spans
        1..max_batch (tuned for ``opt_batch``), every other dimension must be static."""
        onnx_path = Path(onnx_path)
        profiles = []
        for name, shape in _onnx_input_shapes(onnx_path):
            if any(d < 0 for d in shape[1:]):
                raise ValueError(
                    f"{onnx_path.name} input '{name}' has shape {shape}: only the batch dimension may be dynamic"
                )
            if shape[0] >= 0:  # static batch: the profile is that shape
                profiles.append(cls(name, shape, shape, shape))
                continue
            rest = shape[1:]
            profiles.append(cls(name, (1, *rest), (min(opt_batch, max_batch), *rest), (max_batch, *rest)))
        return tuple(profiles)


def _onnx_input_shapes(path: Path) -> list[tuple[str, Shape]]:
    """``(name, shape)`` of each graph input, -1 for a symbolic dimension (read with
    ``onnx``, or ONNX Runtime where ``onnx`` is not installed)."""
    try:
        import onnx
    except ImportError:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape)) for i in session.get_inputs()]
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [
        (i.name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim))
        for i in graph.input if i.name not in weights
    ]


@dataclass(frozen=True)
class EngineKey:
    """Everything a compiled engine depends on. Two keys are equal iff an engine built
    for one can be used for the other."""

    onnx_sha256: str
    precision: str
    profiles: tuple[InputProfile, ...]
    compiler: str  # e.g. "tensorrt 10.3.0" or "onnxruntime 1.32.0"
    device_name: str  # e.g. "NVIDIA Jetson AGX Orin" or "cpu"
    compute_capability: str = ""  # e.g. "8.7"; empty for CPU
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # e.g. calibration set hash
    recipe: str = ""  # how the graph the engine was built from was made (fp16 converter, Q/DQ settings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = [
            {"name": p.name, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in self.profiles
        ]
        data["extra"] = {k: v for k, v in self.extra}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineKey:
        return cls(
            onnx_sha256=str(data["onnx_sha256"]),
            precision=str(data["precision"]),
            profiles=tuple(
                InputProfile(p["name"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])) for p in data["profiles"]
            ),
            compiler=str(data["compiler"]),
            device_name=str(data["device_name"]),
            compute_capability=str(data.get("compute_capability", "")),
            extra=tuple(sorted((str(k), str(v)) for k, v in dict(data.get("extra", {})).items())),
            recipe=str(data.get("recipe", "")),
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: EngineKey) -> list[str]:
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if mine[k] != theirs.get(k)]


@dataclass(frozen=True)
class CachedEngine:
    """Where an engine lies, and whether this call built it (and why) or reused it."""

    path: Path
    key: EngineKey
    built: bool
    reason: str
    build_seconds: float | None = None

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise builders of one entry across processes (two nodes starting together)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, writes stay atomic
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EngineCache:
    """A directory of compiled engines, each checked against its key before use."""

    def __init__(self, directory: str | Path | None = None, suffix: str = ".engine") -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir() / "engines"
        self.suffix = suffix

    def path_for(self, key: EngineKey, stem: str) -> Path:
        return self.directory / f"{stem}.{key.precision}.{key.digest()[:16]}{self.suffix}"

    @staticmethod
    def key_path(engine_path: Path) -> Path:
        return engine_path.with_name(engine_path.name + ".json")

    def check(self, engine_path: Path, key: EngineKey) -> str | None:
        """``None`` when the entry at ``engine_path`` is valid for ``key``, else the
        reason it must be rebuilt."""
        if not engine_path.is_file():
            return "no cached engine"
        key_file = self.key_path(engine_path)
        if not key_file.is_file():
            return f"no key file {key_file.name} beside the engine (unknown origin)"
        try:
            record = json.loads(key_file.read_text(encoding="utf-8"))
            stored = EngineKey.from_dict(record["key"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable key file {key_file.name} ({exc})"
        if stored != key:
            return "stale: built for a different " + ", ".join(stored.differences(key))
        size = engine_path.stat().st_size
        if size != record.get("engine_bytes"):
            return f"engine file is {size} bytes, key file recorded {record.get('engine_bytes')} (truncated or replaced)"
        if file_sha256(engine_path) != record.get("engine_sha256"):
            return "engine file hash differs from the key file (modified or replaced)"
        return None

    def read_record(self, engine_path: Path) -> dict[str, Any]:
        """The key file's content (key, hashes, build time, precision-check verdict);
        empty when there is none or it cannot be read."""
        try:
            record = json.loads(self.key_path(engine_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def update_record(self, engine_path: Path, **fields: Any) -> None:
        """Add ``fields`` to an entry's key file (atomically; the key itself is kept)."""
        record = self.read_record(engine_path)
        if not record:
            raise FileNotFoundError(f"no key file for {engine_path}: cannot record {sorted(fields)}")
        record.update(fields)
        atomic_write_bytes(self.key_path(engine_path), json.dumps(record, indent=2, sort_keys=True).encode())

    def discard(self, engine_path: Path) -> None:
        """Remove an entry (key file first, so nothing half-removed validates)."""
        for path in (self.key_path(engine_path), engine_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        LOG.info("removed %s from the cache", engine_path.name)

    def find_calibrated(self, key: EngineKey, stem: str) -> CachedEngine | None:
        """The newest valid entry that matches ``key`` in everything but ``extra`` (the
        calibration set): lets a deployment run an int8 engine calibrated earlier by
        ``abaw-affect build-engine`` without shipping the calibration crops."""
        candidates = []
        for key_file in self.directory.glob(f"{stem}.{key.precision}.*{self.suffix}.json"):
            engine_path = key_file.with_name(key_file.name[: -len(".json")])
            try:
                stored = EngineKey.from_dict(json.loads(key_file.read_text(encoding="utf-8"))["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if dataclasses.replace(stored, extra=key.extra) == key and self.check(engine_path, stored) is None:
                candidates.append((engine_path.stat().st_mtime, engine_path, stored))
        if not candidates:
            return None
        _mtime, path, stored = max(candidates, key=lambda c: c[0])
        LOG.info("using cached calibrated engine %s", path)
        return CachedEngine(path, stored, built=False, reason="cached, calibrated earlier")

    def get_or_build(
        self,
        key: EngineKey,
        build: Callable[[], bytes],
        *,
        stem: str = "model",
        force: bool = False,
        engine_path: str | Path | None = None,
    ) -> CachedEngine:
        """Return a valid entry for ``key``, calling ``build()`` (which returns the
        compiled bytes) only when none exists, the existing one does not match, or
        ``force`` is set (``force_engine_update``)."""
        path = Path(engine_path) if engine_path is not None else self.path_for(key, stem)
        with _exclusive(path.with_name(path.name + ".lock")):
            reason = "force_engine_update=True" if force else self.check(path, key)
            if reason is None:
                LOG.info("using cached engine %s", path)
                return CachedEngine(path, key, built=False, reason="cached, key matches")
            LOG.info("building %s: %s", path.name, reason)
            # Drop the old key file first: a crash mid-build then leaves nothing that validates.
            with contextlib.suppress(FileNotFoundError):
                self.key_path(path).unlink()
            start = time.perf_counter()
            data = build()
            seconds = time.perf_counter() - start
            if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
                raise RuntimeError(f"engine builder for {path.name} returned no bytes ({type(data).__name__})")
            data = bytes(data)
            atomic_write_bytes(path, data)
            record = {
                "key": key.to_dict(),
                "digest": key.digest(),
                "engine_bytes": len(data),
                "engine_sha256": hashlib.sha256(data).hexdigest(),
                "build_seconds": round(seconds, 3),
                "created_unix": int(time.time()),
            }
            atomic_write_bytes(self.key_path(path), json.dumps(record, indent=2, sort_keys=True).encode())
            LOG.info("built %s in %.1f s", path.name, seconds)
            return CachedEngine(path, key, built=True, reason=reason, build_seconds=seconds)
