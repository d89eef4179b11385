"""ROS 2 bags (MCAP or sqlite3) without ROS: camera frames in, ``FaceAffectArray`` out.

Everything goes through the ``rosbags`` library. Our own message types are registered in
its type store from the ``.msg`` files of this package, and every bag written here embeds
the full message definitions, so ``rosbags`` (with an empty type store) and the ROS 2
tools can read it back without this package.
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from abaw_ros.config import DEFAULT_MAX_IMAGE_PIXELS
from abaw_ros.offline.mcap_recovery import RecoveredMcap, write_chunk_crcs
from abaw_ros.offline.outputs import (
    AFFECT_BAG,
    IMAGE_BAG,
    MARKER_KEY,
    OutputError,
    StagedBag,
    check_bag_output,
)
from abaw_ros.outputs import describe_os_error, write_faults
from abaw_ros.perception.face_values import face_affect_values
from abaw_ros.perception.image import (
    CorruptImageError,
    UnsupportedEncodingError,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
)
from abaw_ros.share import PACKAGE, share_dirs

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

    from abaw_ros.perception.pipeline import FrameResult

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------
# Message types
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# FrameResult -> FaceAffectArray
# ---------------------------------------------------------------------------------------
def frame_result_to_msg(
    result: FrameResult,
    stamp: int,
    frame_id: str,
    image_shape: Sequence[int] | None = None,
    store: Typestore | None = None,
    weights_trained: bool = False,
    model_id: str = "",
) -> Any:
    """``FrameResult`` -> a rosbags ``abaw_ros/msg/FaceAffectArray`` with the source
    image's stamp (ns) and frame_id and the model's ``weights_trained`` / ``model_id``."""
    store = store or affect_typestore()
    roi_cls = store.types["sensor_msgs/msg/RegionOfInterest"]
    time_cls = store.types["builtin_interfaces/msg/Time"]
    face_cls = store.types[FACE_AFFECT]
    faces = []
    for face in result.faces:
        values = face_affect_values(face, image_shape)
        x, y, w, h = values.pop("roi")
        roi = roi_cls(x_offset=x, y_offset=y, height=h, width=w, do_rectify=False)
        sec, nanosec = divmod(max(0, values.pop("window_start_ns")), 1_000_000_000)
        faces.append(face_cls(roi=roi, window_start=time_cls(sec=sec, nanosec=nanosec), **values))
    array_cls = store.types[FACE_AFFECT_ARRAY]
    return array_cls(header=make_header(stamp, frame_id, store), faces=faces,
                     weights_trained=bool(weights_trained), model_id=model_id)


# ---------------------------------------------------------------------------------------
# Reading image frames
# ---------------------------------------------------------------------------------------
@dataclass
class ImageFrame:
    """One message of the image topic. ``image`` is None when the frame could not be
    decoded; ``error`` then says why."""

    index: int  # 0-based position on the topic, counting broken frames too
    log_time_ns: int  # when the recorder received it
    stamp_ns: int  # header stamp (log time when the header stamp is zero)
    header_stamp_ns: int  # header stamp as recorded (0 when unknown)
    frame_id: str
    image: np.ndarray | None
    error: str | None = None
    unsupported: bool = False  # the encoding cannot be decoded at all (e.g. 16UC1 depth, h264)


@dataclass
class TopicSummary:
    """One topic of a bag: name, message type, message count."""

    name: str
    msgtype: str
    count: int

    def __str__(self) -> str:
        return f"{self.name} ({self.msgtype}, {self.count} messages)"


def _storage_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    return [path]


def open_bag(path: str | Path) -> Reader:
    """Open a bag directory (with ``metadata.yaml``) or a single ``.mcap`` / ``.db3`` file.

    A directory without ``metadata.yaml`` (a recording that was killed before it could
    write one) is read from its single storage file. Raises :class:`BagReadError` naming
    the bag and its files when it cannot be opened.
    """
    path = Path(path)
    if not path.exists():
        raise BagReadError(f"bag {str(path)!r} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        files = _storage_files(path)
        if len(files) != 1:
            raise BagReadError(
                f"{str(path)!r} is not a ROS 2 bag: no metadata.yaml and "
                f"{'no' if not files else len(files)} storage files (.mcap/.db3) {[f.name for f in files]}"
            )
        log.warning("%s has no metadata.yaml; reading its storage file %s directly", path, files[0].name)
        path = files[0]
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise BagReadError(f"{str(path)!r} is not a ROS 2 bag: expected a bag directory, a .mcap "
                           f"or a .db3 file")
    if path.is_dir():
        _check_metadata(path / "metadata.yaml")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # ReaderError, OSError, and the storage back ends' own (apsw, zstd)
        raise BagReadError(_damage_message(path, exc, "cannot open")) from exc
    return reader


def _check_metadata(meta: Path) -> None:
    """Read ``metadata.yaml`` with our YAML rules (no aliases: a few hundred bytes of them
    expand into gigabytes) before rosbags parses it."""
    import yaml

    from abaw_ros.safe_yaml import safe_load_file

    try:
        safe_load_file(meta)
    except yaml.YAMLError as exc:
        raise BagReadError(f"bag metadata {str(meta)!r} cannot be used: {exc}") from None


def _damage_message(path: Path, exc: BaseException, what: str) -> str:
    files = _storage_files(path)
    listing = ", ".join(f"{f.name} ({f.stat().st_size} bytes)" for f in files if f.exists())
    detail = str(exc).rstrip(".")
    if any(f.suffix == ".db3" for f in files):
        hint = "`sqlite3 <file>.db3 .recover` may salvage the readable part"
    else:
        hint = ("a recording that was killed leaves an MCAP file without its index; "
                "`mcap recover` or `ros2 bag reindex` can rebuild it")
    return (f"{what} bag {str(path)!r} [{listing}]: {type(exc).__name__}: {detail}. The file is "
            f"truncated or damaged ({hint})")


def list_topics(reader: Reader) -> list[TopicSummary]:
    return [TopicSummary(name, info.msgtype or "?", info.msgcount) for name, info in sorted(reader.topics.items())]


def describe_topics(topics: Reader | Sequence[TopicSummary]) -> str:
    """``image topics: ...; other topics: ...`` with types and message counts."""
    if isinstance(topics, Reader):
        topics = list_topics(topics)
    if not topics:
        return "the bag has no topics"
    images = [str(t) for t in topics if t.msgtype in IMAGE_TYPES]
    others = [str(t) for t in topics if t.msgtype not in IMAGE_TYPES]
    parts = [f"image topics: {', '.join(images) if images else 'none'}"]
    if others:
        parts.append(f"other topics: {', '.join(others)}")
    return "; ".join(parts)


def _single_mcap(path: Path) -> Path | None:
    files = _storage_files(path) if path.exists() else []
    return files[0] if len(files) == 1 and files[0].suffix == ".mcap" else None


class ImageBagReader:
    """Reads the frames of one Image or CompressedImage topic of a bag, in recording order.

    Use as a context manager. :meth:`frames` yields every message of the topic: decoded
    frames, and frames that are broken (bad CDR, short pixel buffer, undecodable JPEG) or
    in an encoding that cannot be decoded (``unsupported=True``) with ``image=None`` and
    the reason. When the storage itself fails part way (a damaged chunk or page), reading
    goes on past the damage where the format allows (:meth:`_continue_past_damage`); the
    frames lost are counted (:attr:`frames_lost`, :attr:`frames_unread`) and keep their
    place in the topic index, and :attr:`damage` says what happened.

    ``recover=True`` reads an MCAP recording that cannot be opened normally (cut short,
    no footer) from its start up to the first incomplete record
    (:mod:`abaw_ros.offline.mcap_recovery`); :attr:`damage` then says what was lost.
    """

    def __init__(self, path: str | Path, topic: str | None = DEFAULT_IMAGE_TOPIC, recover: bool = False,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.path = Path(path)
        self.requested_topic = topic
        self.recover = recover
        self.max_pixels = max_pixels  # the node's max_image_pixels: larger frames are skipped unread
        self.damage: str | None = None
        self.frames_read = 0  # messages read from the storage (decoded or broken)
        self.frames_lost = 0  # messages known to be lost with a damaged chunk or page
        self._reader: Reader | None = None
        self._recovered: RecoveredMcap | None = None
        self._recovery_note = ""
        self._connections: list[Connection] = []
        self.topic = ""
        self.msgtype = ""
        self.message_count = 0

    def __enter__(self) -> ImageBagReader:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        try:
            reader = open_bag(self.path)
        except BagReadError as exc:
            mcap = _single_mcap(self.path)
            if mcap is None:
                raise
            if not self.recover:
                raise BagReadError(f"{exc}; or evaluate the complete records before the damage "
                                   f"with --recover") from exc.__cause__
            self._open_recovered(mcap, exc)
            return
        try:
            self._select(list_topics(reader))
            self._connections = [c for c in reader.connections if c.topic == self.topic]
        except BaseException:
            reader.close()
            raise
        self._reader = reader

    def _open_recovered(self, mcap: Path, error: BagReadError) -> None:
        recovered = RecoveredMcap.scan(mcap)
        topics: dict[str, TopicSummary] = {}
        for channel in recovered.channels.values():
            summary = topics.setdefault(channel.topic, TopicSummary(channel.topic, channel.msgtype, 0))
            summary.count += channel.count
        log.warning("%s cannot be opened (%s); recovered %d messages before the damage: %s",
                    mcap, error.__cause__ or error, sum(t.count for t in topics.values()), recovered.damage)
        self._select(sorted(topics.values(), key=lambda t: t.name))
        self._recovered = recovered
        self._recovery_note = (f"{mcap.name} could not be opened ({error.__cause__ or error}); "
                               f"read by recovery: {recovered.damage or 'every message record was intact'}")

    def close(self) -> None:
        self._recovered = None
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None

    @property
    def recovered(self) -> bool:
        """True when the bag was read with MCAP recovery."""
        return self._recovered is not None

    @property
    def storage(self) -> str:
        """``mcap`` or ``sqlite3``, from the bag's storage files. A bag compressed whole
        file by file (``compression_mode: file``) names them ``*.db3.zstd`` /
        ``*.mcap.zstd`` (rosbag2_compression's ZstdCompressor::compress_uri appends
        ``"." + "zstd"``), so the storage is the suffix before that one."""
        names = [p.name for p in self.path.iterdir()] if self.path.is_dir() else [self.path.name]
        return "sqlite3" if any(n.endswith((".db3", ".db3.zstd")) for n in names) else "mcap"

    def _select(self, topics: list[TopicSummary]) -> None:
        topic = self.requested_topic
        if not topic:
            images = [t for t in topics if t.msgtype in IMAGE_TYPES]
            if len(images) != 1:
                raise BagTopicError(
                    f"bag {str(self.path)!r}: no topic given and {len(images)} image topics found, "
                    f"name one ({describe_topics(topics)})")
            topic = images[0].name
        match = [t for t in topics if t.name == topic]
        if not match:
            raise BagTopicError(f"topic {topic!r} is not in bag {str(self.path)!r} ({describe_topics(topics)})")
        if match[0].msgtype not in IMAGE_TYPES:
            raise BagTopicError(
                f"topic {topic!r} in bag {str(self.path)!r} carries {match[0].msgtype}, expected "
                f"{' or '.join(IMAGE_TYPES)} ({describe_topics(topics)})")
        self.topic, self.msgtype, self.message_count = topic, match[0].msgtype, match[0].count

    def _raw_messages(self) -> Iterator[tuple[str, int, bytes | None]]:
        """``(msgtype, log time, CDR bytes)`` of the topic; ``None`` bytes for a message
        that the storage lost (a damaged chunk or page)."""
        if self._recovered is not None:
            for channel, log_time, raw in self._recovered.messages({self.topic}):
                yield channel.msgtype, log_time, raw
            self.damage = self._recovery_note
            return
        assert self._reader is not None
        seen: Counter[int] = Counter()  # log times already yielded, for the continuation
        try:
            for conn, log_time, raw in self._reader.messages(connections=self._connections):
                seen[int(log_time)] += 1
                yield conn.msgtype, log_time, raw
            return
        except Exception as exc:  # the storage failed part way (checksum, malformed page, codec)
            first = (f"{type(exc).__name__}: {str(exc).rstrip('.')} (after {sum(seen.values())} of "
                     f"{self.message_count} messages on {self.topic})")
        log.error("bag %s is damaged after %d messages of %s (%s); reading on past the damage",
                  self.path, sum(seen.values()), self.topic, first)
        notes: list[str] = []
        yield from self._continue_past_damage(seen, notes)
        self.damage = "; ".join([first, *notes])

    def _continue_past_damage(self, seen: Counter[int], notes: list[str]) -> Iterator[tuple[str, int, bytes | None]]:
        """The topic's messages not yet yielded, read around the damage: MCAP chunk by chunk
        (a damaged chunk is skipped; its Message Index says what it held), sqlite3 row by row
        (a row on a damaged page is lost, the others are read)."""
        msgtype = self.msgtype
        for path in _storage_files(self.path):
            if path.suffix == ".mcap":
                walk = RecoveredMcap.scan(path)
                messages = ((lt, raw) for _, lt, raw in walk.messages({self.topic}))
            else:
                walk = None
                messages = _sqlite_rows(path, self.topic, notes)
            for log_time, raw in messages:
                if seen[int(log_time)] > 0:
                    seen[int(log_time)] -= 1
                    continue
                yield msgtype, log_time, raw
            if walk is not None and walk.damage:
                notes.append(f"{path.name}: {walk.damage}")

    def frames(self) -> Iterator[ImageFrame]:
        if self._reader is None and self._recovered is None:
            raise BagError("reader is not open: use `with ImageBagReader(...) as bag:`")
        store = affect_typestore()
        index = 0
        for msgtype, log_time, raw in self._raw_messages():
            if raw is None:  # lost with a damaged chunk or page: counted, keeps its index
                self.frames_lost += 1
                index += 1
                continue
            frame = self._decode(store, msgtype, index, int(log_time), raw)
            index += 1
            self.frames_read += 1
            yield frame
        if self.damage is not None:
            log.log(logging.WARNING if self.recovered else logging.ERROR,
                    "bag %s is damaged: %s (%d of %d messages on %s not read)", self.path, self.damage,
                    self.frames_unread, self.message_count, self.topic)

    @property
    def frames_unread(self) -> int:
        """Messages of the topic that could not be read (lost to damage, or after it)."""
        return max(self.message_count - self.frames_read, 0) if self.damage is not None else 0

    def _decode(self, store: Typestore, msgtype: str, index: int, log_time: int, raw: bytes) -> ImageFrame:
        try:
            msg = store.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # any malformed CDR; the deserializer raises many types
            return ImageFrame(index, log_time, log_time, 0, "", None,
                              f"message {index} (log time {log_time}) is not a valid {msgtype}: "
                              f"{type(exc).__name__}: {exc}")
        header_stamp = stamp_ns(msg.header.stamp)
        frame = ImageFrame(index, log_time, header_stamp or log_time, header_stamp, msg.header.frame_id, None)
        try:
            if msgtype == IMAGE:
                frame.image = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                           msg.is_bigendian, max_pixels=self.max_pixels)
            else:
                frame.image = decode_compressed(msg.format, msg.data, max_pixels=self.max_pixels)
        except CorruptImageError as exc:
            frame.error = f"message {index} (stamp {frame.stamp_ns}): {exc}"
        except UnsupportedEncodingError as exc:
            frame.error = f"topic {self.topic!r} in bag {str(self.path)!r}, message {index}: {exc}"
            frame.unsupported = True
        return frame


def _sqlite_rows(path: Path, topic: str, notes: list[str]) -> Iterator[tuple[int, bytes | None]]:
    """``(log time, CDR bytes or None)`` of ``topic`` in a rosbag2 sqlite3 file, one row at a
    time, so that a row on a damaged page is lost alone (sqlite3 itself has no checksums:
    damage shows only where it breaks the page structure)."""
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        notes.append(f"{path.name}: cannot open for reading past the damage: {exc}")
        return
    try:
        try:
            rows = db.execute("SELECT messages.id, messages.timestamp FROM messages JOIN topics "
                              "ON messages.topic_id = topics.id WHERE topics.name = ? "
                              "ORDER BY messages.timestamp, messages.id", (topic,)).fetchall()
        except sqlite3.Error as exc:
            notes.append(f"{path.name}: the message table itself is damaged ({exc}): nothing more "
                         f"can be read")
            return
        lost = 0
        for row_id, log_time in rows:
            try:
                (data,) = db.execute("SELECT data FROM messages WHERE id = ?", (row_id,)).fetchone()
            except sqlite3.Error:
                lost += 1
                yield int(log_time), None
                continue
            yield int(log_time), bytes(data)
        if lost:
            notes.append(f"{path.name}: {lost} rows on damaged pages lost")
    finally:
        db.close()


# ---------------------------------------------------------------------------------------
# Writing bags
# ---------------------------------------------------------------------------------------
def _storage_plugin(storage: str) -> StoragePlugin:
    try:
        return STORAGES[storage]
    except KeyError:
        raise BagError(f"storage={storage!r}: choose from {list(STORAGES)}") from None


class _BagWriter:
    """One-topic bag writer (context manager) over ``rosbags.rosbag2.Writer``.

    ``path`` must be free, or (with ``overwrite``) a bag of the same ``kind`` that this
    package wrote (:mod:`abaw_ros.offline.outputs`); it may not overlap ``inputs``. The bag
    is written beside ``path`` and moved there by :meth:`close`, so an earlier bag stays
    whole until the new one is complete. Leaving the ``with`` block through an exception
    keeps what was written (:meth:`close` with ``complete=False``); :meth:`discard` drops it.
    MCAP chunks get their CRC (:func:`~abaw_ros.offline.mcap_recovery.write_chunk_crcs`).
    """

    kind = IMAGE_BAG
    # Leaving the ``with`` block through an exception keeps the frames written so far (a
    # results bag of bag-eval); False: nothing is left, and an empty bag is not kept either.
    keep_partial = True

    def __init__(self, path: str | Path, topic: str, msgtype: str, storage: str = "mcap",
                 overwrite: bool = False, inputs: Sequence[str | Path] = (),
                 version: int = DEFAULT_BAG_VERSION) -> None:
        if version not in BAG_VERSIONS:
            raise BagError(f"bag version {version!r}: choose from {list(BAG_VERSIONS)} (8 is read by Humble, "
                           f"Jazzy and Kilted; 9 by Jazzy and later only)")
        self.path = Path(path)
        self.topic = topic
        self.msgtype = msgtype
        self.storage = storage
        self.count = 0
        self.store = affect_typestore()
        plugin = _storage_plugin(storage)
        try:
            replace = check_bag_output(self.path, self.kind, overwrite, inputs)
        except OutputError as exc:
            raise BagError(str(exc)) from None
        self._stage = StagedBag(self.path, self.kind, replace)
        self._closed = False
        try:
            self._writer = Writer(self._stage.path, version=version, storage_plugin=plugin)
            self._writer.set_custom_data(MARKER_KEY, self.kind)
            self._writer.open()
            # The type store makes the writer embed the full definition (with dependencies).
            self._connection = self._writer.add_connection(topic, msgtype, typestore=self.store)
        except BaseException as exc:
            self._stage.discard()
            if isinstance(exc, WriterError):
                raise BagError(f"cannot write bag {str(self.path)!r}: {exc}") from exc
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write output bag {str(self.path)!r}: {describe_os_error(exc)}; "
                                  f"nothing of it was kept") from exc
            raise

    def write_message(self, msg: Any, log_time_ns: int) -> None:
        self.write_raw(self.store.serialize_cdr(msg, self.msgtype), log_time_ns)

    def write_raw(self, data: bytes, log_time_ns: int) -> None:
        """Write already serialized CDR bytes (used to copy or to build test input)."""
        with write_faults(self.path, "output bag"):  # disk full, read-only: one line naming the bag
            self._writer.write(self._connection, int(log_time_ns), data)
        self.count += 1

    def close(self, complete: bool = True) -> Path | None:
        """Finish the bag and move it into place; returns where it is. An incomplete bag
        with no message is dropped (None); one with messages is kept (see
        :meth:`StagedBag.commit`), and :attr:`path` then names where it went."""
        if self._closed:
            return self.path
        self._closed = True
        if self.count == 0 and (not complete or not self.keep_partial):
            self.discard()
            return None
        try:
            with write_faults(self.path, "output bag"):
                self._writer.close()
                if self.storage == "mcap":
                    for file in self._stage.path.glob("*.mcap"):
                        write_chunk_crcs(file)
                self.path = self._stage.commit(complete)
        except BaseException:
            # a bag that could not be finished is not readable: nothing to keep; the writer's
            # files are closed too, or a full disk would stay full until this process ends
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Drop the bag being written (nothing outside its staging folder is touched)."""
        self._closed = True
        try:
            with contextlib.suppress(Exception):  # the writer may have failed already
                self._writer.abort()
        finally:
            self._stage.discard()

    def __enter__(self) -> _BagWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and not self.keep_partial:
            self.discard()
        else:
            self.close(complete=exc_type is None)


class AffectBagWriter(_BagWriter):
    """Writes ``FaceAffectArray`` messages, one per processed frame."""

    kind = AFFECT_BAG

    def __init__(self, path: str | Path, topic: str = DEFAULT_AFFECT_TOPIC, storage: str = "mcap",
                 overwrite: bool = False, inputs: Sequence[str | Path] = (), weights_trained: bool = False,
                 model_id: str = "", version: int = DEFAULT_BAG_VERSION) -> None:
        super().__init__(path, topic, FACE_AFFECT_ARRAY, storage, overwrite, inputs, version)
        self.weights_trained, self.model_id = weights_trained, model_id

    def write(self, result: FrameResult, frame: ImageFrame) -> None:
        """The result of ``frame``: header stamp and frame_id copied from the image, written
        at the image's log time so both bags replay in step."""
        shape = frame.image.shape if frame.image is not None else None
        msg = frame_result_to_msg(result, frame.header_stamp_ns, frame.frame_id, shape, self.store,
                                  self.weights_trained, self.model_id)
        self.write_message(msg, frame.log_time_ns)


class ImageBagWriter(_BagWriter):
    """Writes camera frames as ``sensor_msgs/Image`` (``compression=None``, pixels in
    ``encoding``) or ``sensor_msgs/CompressedImage`` (``compression='jpeg'`` or ``'png'``).
    A camera bag is made from a whole source: one left unfinished by an exception, or
    without a frame, is dropped, never moved under its name."""

    keep_partial = False

    def __init__(self, path: str | Path, topic: str = DEFAULT_IMAGE_TOPIC, storage: str = "mcap", *,
                 compression: str | None = None, encoding: str = "bgr8", frame_id: str = "camera",
                 jpeg_quality: int = 90, overwrite: bool = False, version: int = DEFAULT_BAG_VERSION,
                 inputs: Sequence[str | Path] = ()) -> None:
        if compression is not None and compression not in ("jpeg", "png"):
            raise BagError(f"compression={compression!r}: choose jpeg, png or None (raw Image)")
        self.compression = compression
        self.encoding = encoding
        self.frame_id = frame_id
        self.jpeg_quality = jpeg_quality
        super().__init__(path, topic, IMAGE if compression is None else COMPRESSED_IMAGE, storage, overwrite,
                         inputs, version=version)

    def write(self, image_bgr: np.ndarray, stamp_ns: int, log_time_ns: int | None = None) -> None:
        header = make_header(stamp_ns, self.frame_id, self.store)
        if self.compression is None:
            height, width, step, data = encode_image(image_bgr, self.encoding)
            msg = self.store.types[IMAGE](header=header, height=height, width=width, encoding=self.encoding,
                                          is_bigendian=0, step=step, data=data)
        else:
            fmt, data = encode_compressed(image_bgr, self.compression, self.jpeg_quality)
            msg = self.store.types[COMPRESSED_IMAGE](header=header, format=fmt, data=data)
        self.write_message(msg, stamp_ns if log_time_ns is None else log_time_ns)


# ---------------------------------------------------------------------------------------
# Reading affect bags back
# ---------------------------------------------------------------------------------------
@dataclass
class AffectMessage:
    log_time_ns: int
    stamp_ns: int
    msg: Any  # FaceAffectArray, as the bag's embedded definition describes it


def read_affect_bag(path: str | Path, topic: str = DEFAULT_AFFECT_TOPIC) -> list[AffectMessage]:
    """Every ``FaceAffectArray`` of ``topic``, decoded with the definitions the bag embeds."""
    reader = open_bag(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise BagTopicError(f"topic {topic!r} is not in bag {str(path)!r} "
                                f"(topics: {', '.join(map(str, list_topics(reader))) or 'none'})")
        store = typestore_from_bag(reader, [topic])
        out = []
        for conn, log_time, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            out.append(AffectMessage(int(log_time), stamp_ns(msg.header.stamp), msg))
        return out
    finally:
        reader.close()
