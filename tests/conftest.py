"""Shared fixtures. Tests run against the real things: rclpy over Fast DDS, ONNX Runtime,
real face pictures (scikit-image), bags written by rosbags."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Keep DDS traffic on this machine.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture
def ros_domain_id(monkeypatch) -> int:
    """A ROS_DOMAIN_ID of its own for each test, also inherited by child processes."""
    domain = random.Random(os.getpid() ^ id(monkeypatch)).randint(1, 100)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    """A real face picture (512x512 RGB, one face)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_bgr(astronaut_rgb) -> np.ndarray:
    """The same picture in OpenCV's BGR order, as cameras publish it."""
    return np.ascontiguousarray(astronaut_rgb[:, :, ::-1])


@pytest.fixture(scope="session")
def moving_face_frames(astronaut_bgr):
    """``make(n)``: n 640x480 frames of one face moving down and right, a few pixels a frame."""
    def make(n: int) -> list[np.ndarray]:
        frames = []
        for i in range(n):
            frame = np.full((480, 640, 3), 100, np.uint8)
            frame[40 + 3 * i:260 + 3 * i, 20 + 6 * i:210 + 6 * i] = astronaut_bgr[20:240, 130:320]
            frames.append(frame)
        return frames

    return make


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory):
    """Path to a checkpoint of an untrained all-tasks AffectNet (T=8, n_levels=3)."""
    import torch

    from abaw_ros.models import ModelConfig, create_affect_net, save_checkpoint

    with torch.random.fork_rng():  # fixed weights without touching the global RNG
        torch.manual_seed(0)
        model = create_affect_net(ModelConfig(window_length=8, n_levels=3)).eval()
    return save_checkpoint(tmp_path_factory.mktemp("model") / "untrained.pt", model, trained=False)


@pytest.fixture(scope="session")
def model_bundle(untrained_checkpoint, tmp_path_factory):
    """Path to an ONNX bundle directory (encoder / temporal_head / window) exported with
    ``export_onnx`` from ``untrained_checkpoint``."""
    from abaw_ros.models import export_onnx, load_checkpoint

    model, info = load_checkpoint(untrained_checkpoint)
    out_dir = tmp_path_factory.mktemp("bundle")
    export_onnx(model, out_dir, thresholds=info["thresholds"], trained=info["trained"])
    return out_dir


@pytest.fixture(scope="module")
def one_torch_thread():
    """Single-threaded torch for a module: small models on a shared 2-core machine run
    faster and steadier without thread contention."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
