"""Engine cache: keys change with everything an engine depends on; a real on-disk cache
reuses valid entries and rebuilds stale, corrupted, foreign or forced ones, atomically.
The builder is a plain callable, so this runs without TensorRT."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from abaw_ros.runtime.engine_cache import EngineCache, EngineKey, InputProfile, onnx_sha256


def make_key(**changes) -> EngineKey:
    key = EngineKey(
        onnx_sha256="a" * 64,
        precision="fp16",
        profiles=(InputProfile("crops", (1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224)),),
        compiler="tensorrt 10.3.0",
        device_name="NVIDIA Jetson AGX Orin",
        compute_capability="8.7",
    )
    return dataclasses.replace(key, **changes)


class CountingBuilder:
    """Stands in for the TensorRT build: returns bytes that depend on the call number."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    def __call__(self) -> bytes:
        self.calls += 1
        time.sleep(self.delay)
        return f"engine bytes, build {self.calls}".encode() * 100


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "b" * 64},
        {"precision": "int8"},
        {"profiles": (InputProfile("crops", (1, 3, 224, 224), (4, 3, 224, 224), (32, 3, 224, 224)),)},
        {"profiles": (InputProfile("crops", (1, 3, 256, 256), (4, 3, 256, 256), (16, 3, 256, 256)),)},
        {"compiler": "tensorrt 10.7.0"},
        {"device_name": "NVIDIA GeForce RTX 4090"},
        {"compute_capability": "8.9"},
        {"extra": (("calibration_sha256", "c" * 64),)},
        {"recipe": "fp16 via onnxconverter-common 1.16.0, fp32 I/O, fp32 ops LayerNormalization"},
    ],
    ids=["model", "precision", "max-batch", "input-size", "tensorrt-version", "gpu", "compute-capability",
         "calibration", "precision-recipe"],
)
def test_key_changes_with_each_dependency(change):
    base, changed = make_key(), make_key(**change)
    assert base.digest() != changed.digest()
    assert base.differences(changed) == list(change)
    assert make_key().digest() == base.digest()  # deterministic


def test_key_round_trips_through_json():
    key = make_key(extra=(("calibration_sha256", "c" * 64),), recipe="int8 qdq (tensorrt)")
    assert EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key


def test_a_recorded_verdict_keeps_the_entry_valid_and_discard_removes_it(tmp_path: Path):
    cache = EngineCache(tmp_path)
    entry = cache.get_or_build(make_key(), CountingBuilder(), stem="bundle.encoder")
    cache.update_record(entry.path, precision_check={"status": "passed", "summary": "within tolerance"})
    assert cache.check(entry.path, make_key()) is None
    assert cache.read_record(entry.path)["precision_check"]["status"] == "passed"
    again = cache.get_or_build(make_key(), CountingBuilder(), stem="bundle.encoder")
    assert not again.built
    cache.discard(entry.path)
    assert not entry.path.exists() and not EngineCache.key_path(entry.path).exists()
    assert cache.read_record(entry.path) == {}
    with pytest.raises(FileNotFoundError, match="no key file"):
        cache.update_record(entry.path, precision_check={})


def test_onnx_hash_follows_the_model_file(tmp_path: Path):
    model = tmp_path / "encoder.onnx"
    model.write_bytes(b"graph v1")
    first = onnx_sha256(model)
    model.write_bytes(b"graph v2")
    assert onnx_sha256(model) != first
    (tmp_path / "encoder.onnx.data").write_bytes(b"external weights")  # external data counts too
    with_weights = onnx_sha256(model)
    (tmp_path / "encoder.onnx.data").write_bytes(b"other weights")
    assert onnx_sha256(model) != with_weights


def test_builds_once_then_reuses(tmp_path: Path):
    cache, build = EngineCache(tmp_path), CountingBuilder()
    first = cache.get_or_build(make_key(), build, stem="encoder")
    second = cache.get_or_build(make_key(), build, stem="encoder")
    assert (first.built, second.built) == (True, False)
    assert build.calls == 1
    assert first.path == second.path
    assert second.read_bytes() == b"engine bytes, build 1" * 100
    record = json.loads(EngineCache.key_path(first.path).read_text())
    assert EngineKey.from_dict(record["key"]) == make_key()
    assert not list(tmp_path.glob("*.tmp"))


def test_changed_key_builds_a_new_entry(tmp_path: Path):
    cache, build = EngineCache(tmp_path), CountingBuilder()
    fp16 = cache.get_or_build(make_key(), build, stem="encoder")
    int8 = cache.get_or_build(make_key(precision="int8"), build, stem="encoder")
    new_model = cache.get_or_build(make_key(onnx_sha256="b" * 64), build, stem="encoder")
    assert build.calls == 3 and len({fp16.path, int8.path, new_model.path}) == 3
    assert cache.get_or_build(make_key(), build, stem="encoder").built is False


def test_stale_entry_at_a_fixed_path_is_rebuilt(tmp_path: Path):
    """An engine_path reused after a TensorRT upgrade: the key file no longer matches."""
    cache, build = EngineCache(tmp_path), CountingBuilder()
    path = tmp_path / "affect.engine"
    cache.get_or_build(make_key(compiler="tensorrt 10.0.1"), build, engine_path=path)
    entry = cache.get_or_build(make_key(compiler="tensorrt 10.3.0"), build, engine_path=path)
    assert entry.built and "compiler" in entry.reason and build.calls == 2
    assert EngineKey.from_dict(json.loads(EngineCache.key_path(path).read_text())["key"]).compiler == "tensorrt 10.3.0"


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "no-key-file", "garbled-key-file"])
def test_damaged_entry_is_rebuilt_never_used(tmp_path: Path, damage: str):
    cache, build = EngineCache(tmp_path), CountingBuilder()
    entry = cache.get_or_build(make_key(), build, stem="encoder")
    data = bytearray(entry.path.read_bytes())
    if damage == "flip-byte":
        data[len(data) // 2] ^= 0xFF
        entry.path.write_bytes(bytes(data))
    elif damage == "truncate":
        entry.path.write_bytes(bytes(data[:-10]))
    elif damage == "no-key-file":
        EngineCache.key_path(entry.path).unlink()
    else:
        EngineCache.key_path(entry.path).write_text("{not json")
    assert cache.check(entry.path, make_key()) is not None
    again = cache.get_or_build(make_key(), build, stem="encoder")
    assert again.built and build.calls == 2
    assert cache.check(again.path, make_key()) is None


def test_force_engine_update_rebuilds(tmp_path: Path):
    cache, build = EngineCache(tmp_path), CountingBuilder()
    cache.get_or_build(make_key(), build, stem="encoder")
    entry = cache.get_or_build(make_key(), build, stem="encoder", force=True)
    assert entry.built and entry.reason == "force_engine_update=True" and build.calls == 2


def test_failed_build_leaves_nothing_that_validates(tmp_path: Path):
    cache, build = EngineCache(tmp_path), CountingBuilder()
    good = cache.get_or_build(make_key(), build, stem="encoder")

    def broken() -> bytes:
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        cache.get_or_build(make_key(), broken, stem="encoder", force=True)
    # the old entry was invalidated before building, so it is not trusted afterwards
    assert cache.check(good.path, make_key()) is not None
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(RuntimeError, match="no bytes"):
        cache.get_or_build(make_key(precision="int8"), lambda: b"", stem="encoder")
    assert not cache.path_for(make_key(precision="int8"), "encoder").exists()


def test_concurrent_starts_build_once(tmp_path: Path):
    cache, build = EngineCache(tmp_path), CountingBuilder(delay=0.3)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_build(make_key(), build, stem="encoder")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert build.calls == 1
    assert sorted(r.built for r in results) == [False, False, True]


def test_profile_validation_names_the_bad_shapes():
    with pytest.raises(ValueError, match=r"min <= opt <= max"):
        InputProfile("crops", (8, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224))
    assert InputProfile("crops", (1, 3), (4, 3), (16, 3)).contains((16, 3))
    assert not InputProfile("crops", (1, 3), (4, 3), (16, 3)).contains((17, 3))


def test_int8_entry_calibrated_earlier_is_found_without_the_crops(tmp_path: Path):
    cache, build = EngineCache(tmp_path), CountingBuilder()
    wanted = make_key(precision="int8")  # no calibration hash: the deployment has no crops
    assert cache.find_calibrated(wanted, "encoder") is None
    calibrated = make_key(precision="int8", extra=(("calibration_sha256", "c" * 64),))
    other_gpu = make_key(precision="int8", device_name="NVIDIA RTX A2000", extra=(("calibration_sha256", "d" * 64),))
    built = cache.get_or_build(calibrated, build, stem="encoder")
    cache.get_or_build(other_gpu, build, stem="encoder")
    found = cache.find_calibrated(wanted, "encoder")
    assert found is not None and found.path == built.path and found.key == calibrated and not found.built
    built.path.write_bytes(b"damaged")  # a damaged entry is never picked
    assert cache.find_calibrated(wanted, "encoder") is None
