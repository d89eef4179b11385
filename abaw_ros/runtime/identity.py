"""Which model a backend runs, said the same way by every tool: the node's messages and
diagnostics, bag-eval's bag and report, predict's CSV sidecar and predict-abaw."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from abaw_ros.model_metadata import GRAPH_FILES

__all__ = ["ModelIdentity", "model_id"]


def model_id(model_path: str | Path, digits: int = 12) -> str:
    """``<name>@sha256:<hex>``: the model's file or directory name and a hash of its content
    (a checkpoint file; a bundle's encoder and temporal-head graphs), so a consumer of the
    outputs can tell which weights made them."""
    from .engine_cache import file_sha256

    path = Path(model_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        path = path.parent
    files = [path] if path.is_file() else [path / GRAPH_FILES["encoder"], path / GRAPH_FILES["temporal_head"]]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file_sha256(file).encode())
    name = path.stem if path.is_file() else path.name
    return f"{name}@sha256:{digest.hexdigest()[:digits]}"


@dataclass(frozen=True)
class ModelIdentity:
    """``model_file_path``: what the user named ("" for the untrained stand-in built when
    none is named); ``loaded``: the file or bundle the backend was loaded from (the
    stand-in's cached checkpoint included), whose content :func:`model_id` names."""

    model_file_path: str = ""
    loaded: Path | None = None

    @property
    def model_id(self) -> str:
        """``<name>@sha256:<hex>`` of what was loaded; "" for a backend built without files
        or whose files are gone. Computed once (it hashes the weights)."""
        cached = self.__dict__.get("_model_id")
        if cached is None:
            try:
                cached = model_id(self.loaded) if self.loaded is not None else ""
            except OSError:
                cached = ""
            object.__setattr__(self, "_model_id", cached)
        return cached
