"""Our message types in ``rosbags``: the names, the type store, stamps and headers.

Everything offline goes through the ``rosbags`` library. Our own message types are
registered in its type store from the ``.msg`` files of this package, and every bag
written here embeds the full message definitions, so ``rosbags`` (with an empty type
store) and the ROS 2 tools can read it back without this package.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rosbags.rosbag2 import StoragePlugin
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from abaw_ros.share import PACKAGE, share_dirs

if TYPE_CHECKING:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys.store import Typestore

FACE_AFFECT = "abaw_ros/msg/FaceAffect"
FACE_AFFECT_ARRAY = "abaw_ros/msg/FaceAffectArray"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES: tuple[str, ...] = (IMAGE, COMPRESSED_IMAGE)
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# The standard types (std_msgs, sensor_msgs) are identical in every ROS 2 distribution
# since Humble; Kilted is the one installed on these machines.
BASE_STORE = Stores.ROS2_KILTED
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_AFFECT_TOPIC = "/affect"
# rosbag2 metadata versions the writers offer. Version 8 stores ``offered_qos_profiles`` as
# a YAML string, which Humble's reader requires (it reads the field with
# ``as<std::string>()`` for every version >= 4); Jazzy and later read 8 and 9. Version 9
# stores it as a YAML list, which only Jazzy and later read. See docs/BAGS.md.
BAG_VERSIONS: tuple[int, ...] = (8, 9)
DEFAULT_BAG_VERSION = 8
_OUR_MESSAGES: tuple[str, ...] = ("FaceAffect", "FaceAffectArray")


class BagError(RuntimeError):
    """A bag cannot be used as asked; the message names the bag, topic or value."""


class BagTopicError(BagError):
    """The requested topic is not in the bag, or does not carry images."""


class BagReadError(BagError):
    """The bag cannot be opened or read (missing, truncated, damaged)."""



def find_msg_dir() -> Path:
    """The folder holding ``FaceAffect.msg`` and ``FaceAffectArray.msg``.

    Looked up where :func:`abaw_ros.share.share_dirs` looks: the source tree, a colcon
    install, the Python environment (``pip install``).
    """
    candidates = [folder / "msg" for folder in share_dirs()]
    for folder in candidates:
        if all((folder / f"{name}.msg").is_file() for name in _OUR_MESSAGES):
            return folder
    raise FileNotFoundError(
        f"message definitions {[n + '.msg' for n in _OUR_MESSAGES]} not found in "
        f"{[str(c) for c in candidates]}: run from a source checkout or source the colcon install"
    )


@lru_cache(maxsize=1)
def affect_typestore() -> Typestore:
    """A ``rosbags`` type store with the standard ROS 2 types plus ``FaceAffect`` and
    ``FaceAffectArray`` parsed from this package's ``.msg`` files."""
    store = get_typestore(BASE_STORE)
    folder = find_msg_dir()
    types: dict[str, Any] = {}
    for name in _OUR_MESSAGES:
        text = (folder / f"{name}.msg").read_text(encoding="utf-8")
        types.update(get_types_from_msg(text, f"{PACKAGE}/msg/{name}"))
    store.register(types)
    return store


def typestore_from_bag(reader: Reader, topics: Sequence[str] = ()) -> Typestore:
    """A type store that knows only the types whose definitions ``reader``'s bag embeds
    (for the given topics, or all), proving the bag explains itself."""
    store = get_typestore(Stores.EMPTY)
    types: dict[str, Any] = {}
    for conn in reader.connections:
        if topics and conn.topic not in topics:
            continue
        if not conn.msgdef.data:
            raise BagReadError(f"bag {reader.path}: topic {conn.topic!r} ({conn.msgtype}) has no "
                               f"embedded message definition")
        if conn.msgdef.format.name == "IDL":
            from rosbags.typesys import get_types_from_idl

            types.update(get_types_from_idl(conn.msgdef.data))
        else:
            types.update(get_types_from_msg(conn.msgdef.data, conn.msgtype))
    store.register(types)
    return store


def stamp_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def make_header(stamp: int, frame_id: str, store: Typestore | None = None) -> Any:
    store = store or affect_typestore()
    time_cls = store.types["builtin_interfaces/msg/Time"]
    header_cls = store.types["std_msgs/msg/Header"]
    sec, nanosec = divmod(int(stamp), 1_000_000_000)
    return header_cls(stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id)
