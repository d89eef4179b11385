"""Bags that Humble, Jazzy and Kilted read: the metadata.yaml our writers produce (image
bags, affect bags, video-to-bag, bag-eval) is checked against what each distribution's
rosbag2 reader decodes, field by field.

The readers, as their sources write them (ros2/rosbag2):

- Humble (branch humble, d256a5b), rosbag2_storage/src/rosbag2_storage/metadata_io.cpp:
  TopicMetadata decode lines 65-76 (``offered_qos_profiles`` read with
  ``as<std::string>()`` when version >= 4), BagMetadata decode lines 206-229 (version,
  storage_identifier, duration, starting_time, message_count, topics_with_message_count,
  relative_file_paths; compression_* from 3; files from 5). No upper bound on the version.
- Jazzy (branch jazzy, 64717ee), rosbag2_storage/include/rosbag2_storage/yaml.hpp:
  TopicMetadata decode lines 125-143 (``offered_qos_profiles`` a list of QoS mappings
  from version 9, a YAML string for 4..8; ``type_description_hash`` from 7), BagMetadata
  decode lines 277-307 (as Humble, plus custom_data from 6 and ros_distro from 8).
- Kilted: the rolling branch the mirror holds (25304dd, 2024-10-17, after Jazzy branched)
  has Jazzy's decoders line for line; Kilted branched from rolling later.

yaml-cpp's ``as<std::string>()`` accepts a scalar (a null reads as the text "null") and
throws on a sequence or a mapping, which is why a version-9 bag does not open on Humble.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from abaw_ros import cli
from abaw_ros.offline.bag_types import BagError
from abaw_ros.offline.bag_writers import AffectBagWriter, ImageBagWriter
from abaw_ros.perception.pipeline import FaceResult, FrameResult

QOS_KEYS = ("history", "depth", "reliability", "durability", "deadline", "lifespan", "liveliness",
            "liveliness_lease_duration", "avoid_ros_namespace_conventions")


def _uint(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _time(node, key: str) -> bool:
    return isinstance(node, dict) and _uint(node.get(key))


def _common(info: dict) -> list[str]:
    """The fields every reader decodes, in the types its decoder asks for."""
    problems = []
    version = info.get("version")
    if not isinstance(version, int):
        return [f"version {version!r} is not an int"]
    if not isinstance(info.get("storage_identifier"), str):
        problems.append("storage_identifier is not a string")
    if not _time(info.get("duration"), "nanoseconds"):
        problems.append("duration.nanoseconds missing")
    if not _time(info.get("starting_time"), "nanoseconds_since_epoch"):
        problems.append("starting_time.nanoseconds_since_epoch missing")
    if not _uint(info.get("message_count")):
        problems.append("message_count is not an unsigned int")
    paths = info.get("relative_file_paths")
    if not (isinstance(paths, list) and all(isinstance(p, str) for p in paths)):
        problems.append("relative_file_paths is not a list of strings")
    if version >= 3 and not all(isinstance(info.get(k), str) for k in ("compression_format", "compression_mode")):
        problems.append("compression_format/compression_mode are not strings")
    if version >= 5:
        files = info.get("files")
        if not isinstance(files, list) or not all(
                isinstance(f, dict) and isinstance(f.get("path"), str) and _uint(f.get("message_count"))
                and _time(f.get("starting_time"), "nanoseconds_since_epoch") and _time(f.get("duration"), "nanoseconds")
                for f in files):
            problems.append("files is not a list of {path, starting_time, duration, message_count}")
    topics = info.get("topics_with_message_count")
    if not isinstance(topics, list):
        return [*problems, "topics_with_message_count is not a list"]
    for entry in topics:
        meta = entry.get("topic_metadata", {}) if isinstance(entry, dict) else {}
        if not all(isinstance(meta.get(k), str) for k in ("name", "type", "serialization_format")):
            problems.append(f"topic {meta.get('name')!r}: name/type/serialization_format are not strings")
        if not _uint(entry.get("message_count") if isinstance(entry, dict) else None):
            problems.append(f"topic {meta.get('name')!r}: message_count is not an unsigned int")
    return problems


def humble_problems(info: dict) -> list[str]:
    problems = _common(info)
    version = info.get("version", 0)
    for entry in info.get("topics_with_message_count", []):
        meta = entry["topic_metadata"]
        if version >= 4 and not isinstance(meta.get("offered_qos_profiles"), str):
            problems.append(f"topic {meta['name']!r}: offered_qos_profiles is a "
                            f"{type(meta.get('offered_qos_profiles')).__name__}, Humble reads a string")
    return problems


def jazzy_problems(info: dict) -> list[str]:
    """Jazzy's decoders; Kilted's are the same."""
    problems = _common(info)
    version = info.get("version", 0)
    for entry in info.get("topics_with_message_count", []):
        meta = entry["topic_metadata"]
        qos = meta.get("offered_qos_profiles")
        if version >= 9:
            if not isinstance(qos, list) or not all(isinstance(q, dict) and set(QOS_KEYS) <= set(q) for q in qos):
                problems.append(f"topic {meta['name']!r}: offered_qos_profiles must be a list of QoS mappings")
        elif version >= 4:
            if not isinstance(qos, str):
                problems.append(f"topic {meta['name']!r}: offered_qos_profiles must be a YAML string")
            elif qos and not isinstance(yaml.safe_load(qos), list):
                problems.append(f"topic {meta['name']!r}: offered_qos_profiles does not parse to a list")
        if version >= 7 and not isinstance(meta.get("type_description_hash"), str):
            problems.append(f"topic {meta['name']!r}: type_description_hash is not a string")
    if version >= 6 and not (info.get("custom_data") is None or isinstance(info.get("custom_data"), dict)):
        problems.append("custom_data is not a mapping")
    if version >= 8 and not isinstance(info.get("ros_distro"), str):
        problems.append("ros_distro is not a string")
    return problems


READERS = {"humble": humble_problems, "jazzy": jazzy_problems, "kilted": jazzy_problems}
# Which distributions read which version, from the decoders above.
READABLE_BY = {8: {"humble", "jazzy", "kilted"}, 9: {"jazzy", "kilted"}}


def bag_info(bag: Path) -> dict:
    return yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def readers_of(bag: Path) -> set[str]:
    info = bag_info(bag)
    return {name for name, problems in READERS.items() if not problems(info)}


def _frame_result() -> FrameResult:
    face = FaceResult("face_1", (10, 10, 40, 40), 0.9, 8, 8, {"va": np.array([0.1, -0.2], np.float32)},
                      np.zeros(12, bool), False)
    return FrameResult(1_000, [face])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("version", [None, 8, 9])
def test_writers_produce_what_each_distro_reads(tmp_path, astronaut_bgr, storage, version):
    kwargs = {} if version is None else {"version": version}
    with ImageBagWriter(tmp_path / "images", "/camera/image_raw", storage, **kwargs) as writer:
        for i in range(3):
            writer.write(astronaut_bgr[:64, :64], 1_000 + i)
    from abaw_ros.offline.bag_reader import ImageFrame

    frame = ImageFrame(0, 1_000, 1_000, 1_000, "camera", astronaut_bgr[:64, :64])
    with AffectBagWriter(tmp_path / "affect", storage=storage, **kwargs) as writer:
        writer.write(_frame_result(), frame)
    expected = version or 8  # the default reads on every distribution
    for bag in (tmp_path / "images", tmp_path / "affect"):
        info = bag_info(bag)
        assert info["version"] == expected
        assert readers_of(bag) == READABLE_BY[expected], {d: p(info) for d, p in READERS.items()}
        qos = info["topics_with_message_count"][0]["topic_metadata"]["offered_qos_profiles"]
        assert isinstance(qos, str if expected == 8 else list)


def test_an_unknown_version_is_refused(tmp_path):
    with pytest.raises(BagError, match="bag version 7"):
        ImageBagWriter(tmp_path / "bag", version=7)
    assert not (tmp_path / "bag").exists()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for i in range(4):
        frame = np.full((120, 160, 3), 90, np.uint8)
        frame[10:110, 10 + 5 * i:110 + 5 * i] = cv2.resize(data.astronaut()[:, :, ::-1], (100, 100))
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize("version", [None, 9])
def test_video_to_bag_and_bag_eval_write_the_chosen_version(tmp_path, clip, model_bundle, version):
    extra = [] if version is None else ["--bag-version", str(version)]
    bag = tmp_path / "clip_bag"
    assert cli.main(["video-to-bag", str(clip), str(bag), "--start", "1", "--no-progress", *extra]) == 0
    out = tmp_path / "clip_affect"
    assert cli.main(["bag-eval", str(bag), "-o", str(out), "--model-file-path", str(model_bundle),
                     "-p", "backend:=onnxruntime", "-p", "warmup:=false", "--no-plot", "--no-progress",
                     *extra]) == 0
    expected = version or 8
    for written in (bag, out):
        assert bag_info(written)["version"] == expected
        assert readers_of(written) == READABLE_BY[expected]
