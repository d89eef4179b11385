"""The cache of checkpoint exports and of the untrained checkpoint is verified before every
use: a cached graph with flipped bytes, an export swapped in from another checkpoint or
a tampered checkpoint is noticed, logged and rebuilt, never used."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from abaw_ros.runtime import load_backend
from abaw_ros.runtime.bundle import MANIFEST_FILE, bundle_from_checkpoint, export_dir

pytestmark = pytest.mark.timeout(300)


def _encoder_output(backend, crops: np.ndarray) -> np.ndarray:
    return backend.encode(crops)[-1]


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)


def test_flipped_bytes_in_a_cached_graph_are_detected_and_the_export_rebuilt(
        untrained_checkpoint, tmp_path, crops, caplog):
    backend = load_backend(untrained_checkpoint, "onnxruntime", engine_cache_dir=tmp_path, num_threads=1)
    reference = _encoder_output(backend, crops)
    target = export_dir(untrained_checkpoint, tmp_path)
    assert (target / MANIFEST_FILE).is_file()

    encoder = target / "encoder.onnx"
    data = bytearray(encoder.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(b ^ 0xFF for b in data[middle:middle + 2000])
    encoder.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="abaw_ros.runtime.bundle"):
        rebuilt = load_backend(untrained_checkpoint, "onnxruntime", engine_cache_dir=tmp_path, num_threads=1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("encoder.onnx does not match the SHA-256" in w and "exporting it again" in w
               for w in warnings), warnings
    np.testing.assert_allclose(_encoder_output(rebuilt, crops), reference, rtol=1e-5, atol=1e-5)
    assert bytes(data) != encoder.read_bytes()
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no temporary or stale directories left behind


def test_an_export_swapped_in_from_another_checkpoint_is_not_used(untrained_checkpoint, tmp_path, caplog):
    from abaw_ros.models import load_checkpoint, save_checkpoint

    model, _info = load_checkpoint(untrained_checkpoint)
    trained = save_checkpoint(tmp_path / "trained.pt", model, trained=True)  # same weights, says trained
    untrained_export = bundle_from_checkpoint(untrained_checkpoint, tmp_path).directory
    assert bundle_from_checkpoint(untrained_checkpoint, tmp_path).metadata.trained is False

    # The trained checkpoint's cache entry holds the untrained one's export, manifest and all.
    target = export_dir(trained, tmp_path)
    shutil.copytree(untrained_export, target)
    with caplog.at_level(logging.WARNING, logger="abaw_ros.runtime.bundle"):
        bundle = bundle_from_checkpoint(trained, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("written for another checkpoint" in w for w in warnings), warnings
    assert bundle.directory == target and bundle.metadata.trained is True


def test_the_cached_untrained_checkpoint_is_verified_before_use(tmp_path, caplog):
    from abaw_ros.runtime.opening import untrained_checkpoint

    path = untrained_checkpoint(8, tmp_path)
    record = path.with_name(path.name + ".sha256")
    assert record.is_file()
    original = path.read_bytes()
    assert untrained_checkpoint(8, tmp_path) == path and path.read_bytes() == original  # reused as is

    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    path.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="abaw_ros.runtime.opening"):
        again = untrained_checkpoint(8, tmp_path)
    assert any("does not match the SHA-256" in r.getMessage() for r in caplog.records)
    assert again.read_bytes() != bytes(damaged)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, record.name]  # no temp files
