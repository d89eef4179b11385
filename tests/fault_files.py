"""Broken model files and image bombs for the fault tests: each one a file a user could
really end up with (an interrupted download, a file from an untrusted source, graphs from
two exports mixed up, a pipe given by mistake)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def empty_checkpoint(out: Path) -> Path:
    path = out / "empty.pt"
    path.write_bytes(b"")
    return path


def garbage_checkpoint(out: Path) -> Path:
    path = out / "garbage.pt"
    path.write_bytes(np.random.default_rng(10).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def malicious_checkpoint(out: Path) -> tuple[Path, Path]:
    """A checkpoint whose loading would run a shell command; returns it and the file
    that command would create."""
    import torch

    marker = out / "code_was_run"
    path = out / "malicious.pt"
    torch.save({"format": "abaw_ros.affect_net", "state_dict": _RunsCode(marker)}, path)
    return path, marker


def truncated_bundle(out: Path, bundle: Path) -> Path:
    """A bundle whose encoder.onnx was cut to a third (an interrupted copy)."""
    target = out / "truncated_bundle"
    shutil.copytree(bundle, target)
    encoder = target / "encoder.onnx"
    data = encoder.read_bytes()
    encoder.write_bytes(data[: len(data) // 3])
    return target


def metadata_bundle(out: Path, bundle: Path, name: str, **changes) -> Path:
    """A copy of ``bundle`` whose graphs' metadata JSON has ``changes`` applied."""
    import onnx

    target = out / name
    shutil.copytree(bundle, target)
    for graph in ("encoder.onnx", "temporal_head.onnx", "window.onnx"):
        path = target / graph
        if not path.is_file():
            continue
        model = onnx.load(str(path))
        for prop in model.metadata_props:
            if prop.key == "abaw_ros":
                data = json.loads(prop.value)
                data.update(changes)
                prop.value = json.dumps(data)
        onnx.save(model, str(path))
    return target


def mixed_bundle(out: Path, bundle: Path, other_head: Path) -> Path:
    """The encoder of ``bundle`` with the temporal head of another export."""
    target = out / "mixed_bundle"
    shutil.copytree(bundle, target)
    (target / "window.onnx").unlink(missing_ok=True)
    shutil.copyfile(other_head, target / "temporal_head.onnx")
    return target


def fifo_model(out: Path) -> Path:
    path = out / "pipe.pt"
    os.mkfifo(path)
    return path


def dev_zero_model(out: Path) -> Path:
    path = out / "zero.pt"
    path.symlink_to("/dev/zero")
    return path


def garbage_yunet(out: Path) -> Path:
    path = out / "face_detection_yunet_2023mar.onnx"
    path.write_bytes(np.random.default_rng(11).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


# -- decompression bombs ---------------------------------------------------------------
def png_bomb(side: int = 8000) -> bytes:
    """A real PNG of ``side`` x ``side`` black pixels: about 60 KB for 8000 x 8000."""
    import cv2

    ok, data = cv2.imencode(".png", np.zeros((side, side), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return data.tobytes()


def jpeg_bomb(side: int = 12000) -> bytes:
    """A real baseline JPEG of ``side`` x ``side`` grey pixels (about 2 MB for 12000)."""
    import cv2

    ok, data = cv2.imencode(".jpg", np.full((side, side), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    return data.tobytes()
