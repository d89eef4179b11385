"""Reading bags (MCAP or sqlite3) without ROS: the camera frames of one image topic
(:class:`ImageBagReader`), and affect bags back with their own message definitions."""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from rosbags.rosbag2 import Reader

from abaw_ros.config import DEFAULT_MAX_IMAGE_PIXELS
from abaw_ros.offline.bag_damage import damage_message, messages_past_damage, single_mcap, storage_files
from abaw_ros.offline.bag_types import (
    DEFAULT_AFFECT_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    IMAGE,
    IMAGE_TYPES,
    BagError,
    BagReadError,
    BagTopicError,
    affect_typestore,
    stamp_ns,
    typestore_from_bag,
)
from abaw_ros.offline.mcap_recovery import RecoveredMcap
from abaw_ros.perception.image import (
    CorruptImageError,
    UnsupportedEncodingError,
    decode_compressed,
    decode_image,
)

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

log = logging.getLogger(__name__)


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
        files = storage_files(path)
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
        raise BagReadError(damage_message(path, exc, "cannot open")) from exc
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


class ImageBagReader:
    """Reads the frames of one Image or CompressedImage topic of a bag, in recording order.

    Use as a context manager. :meth:`frames` yields every message of the topic: decoded
    frames, and frames that are broken (bad CDR, short pixel buffer, undecodable JPEG) or
    in an encoding that cannot be decoded (``unsupported=True``) with ``image=None`` and
    the reason. When the storage itself fails part way (a damaged chunk or page), reading
    goes on past the damage where the format allows
    (:func:`~abaw_ros.offline.bag_damage.messages_past_damage`); the frames lost are counted
    (:attr:`frames_lost`, :attr:`frames_unread`) and keep their place in the topic index,
    and :attr:`damage` says what happened.

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
            mcap = single_mcap(self.path)
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
        yield from messages_past_damage(self.path, self.topic, self.msgtype, seen, notes)
        self.damage = "; ".join([first, *notes])

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
