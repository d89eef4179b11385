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
def lfw_faces() -> np.ndarray:
    """200 real face crops (25x25 float grey, 0..1) from Labeled Faces in the Wild."""
    from skimage import data

    images, _labels = data.lfw_subset()
    return images
