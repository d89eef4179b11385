"""Reading what is left of a damaged MCAP file, and chunk checksums for the ones we write.

A recorder that is killed (power loss, OOM, SIGKILL) leaves an MCAP file without its
summary and footer, often cut inside a record; readers that start from the footer refuse
it. The records before the cut are intact, so this module walks the file from the start
(schemas, channels, messages, chunks) and stops at the first record that is incomplete or
invalid. A chunk whose content is damaged (checksum mismatch, undecodable compression,
garbage records) while its length is intact is skipped as a whole: chunks are independent,
so the walk goes on with the next record, and the Message Index records that follow the
chunk say how many messages of each channel it held (reported as lost). Opening a file
that cannot be opened normally this way is only done on request (``bag-eval --recover``);
a file that opens but fails part way is continued past its bad chunks automatically.

rosbags' MCAP writer leaves every chunk's ``uncompressed_crc`` at 0 ("not available",
``rosbags/rosbag2/storage_mcap.py``, ``McapWriter.close_chunk``), and its reader checks a
chunk only when the field is non-zero (``decompress``: ``if crc and crc32(raw) != crc``).
libmcap, which ``ros2 bag record`` uses, computes it by default (``McapWriterOptions::
noChunkCRC = false``). :func:`write_chunk_crcs` fills the field in a finished file so that
damage to our own bags is detected like damage to a recording.

MCAP layout (https://mcap.dev/spec): magic, then records ``opcode u8 | length u64 |
content``; strings and byte arrays are ``u32`` length-prefixed; a chunk holds records
itself, optionally compressed (lz4, zstd).
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_MESSAGE_INDEX, OP_DATA_END = 0x07, 0x0F
_MAX_RECORD = 1 << 34  # a length beyond 16 GiB is garbage, not a record


class McapTruncation(Exception):
    """Internal: the walk reached damage; the message says where and what."""


@dataclass
class RecoveredChannel:
    id: int
    topic: str
    msgtype: str
    message_encoding: str
    count: int = 0


@dataclass
class RecoveredMcap:
    """The readable part of an MCAP file: channels with message counts and where the
    readable data ends. :meth:`messages` yields them in file order."""

    path: Path
    channels: dict[int, RecoveredChannel] = field(default_factory=dict)
    schemas: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # id -> name, encoding, text
    damage: str | None = None  # None: the file is complete
    readable_bytes: int = 0
    bad_chunks: list[str] = field(default_factory=list)  # one line per skipped chunk
    lost: int = 0  # messages in skipped chunks (from their Message Index records)

    @classmethod
    def scan(cls, path: str | Path) -> RecoveredMcap:
        """Walk the file once to learn its channels and message counts."""
        found = cls(Path(path))
        for channel_id, _, _ in found._walk():
            if channel_id in found.channels:
                found.channels[channel_id].count += 1
        return found

    def messages(self, topics: set[str]) -> Iterator[tuple[RecoveredChannel, int, bytes | None]]:
        """``(channel, log time ns, CDR bytes)`` of the given topics, in file order, up to
        the damage. A message of a skipped chunk comes as ``(channel, log time, None)``."""
        wanted = {cid for cid, ch in self.channels.items() if ch.topic in topics}
        for channel_id, log_time, data in self._walk():
            if channel_id in wanted:
                yield self.channels[channel_id], log_time, data

    def _walk(self) -> Iterator[tuple[int, int, bytes | None]]:
        self.readable_bytes = 0
        self.bad_chunks, self.lost = [], 0
        skipped_chunk = False  # the Message Index records after a skipped chunk list its messages
        with self.path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            magic = handle.read(len(MAGIC))
            if magic != MAGIC:
                raise ValueError(f"{self.path}: not an MCAP file (starts with {magic!r})")
            pos = self.readable_bytes = len(MAGIC)
            self._channels_from_summary(handle, size)
            handle.seek(pos)
            try:
                while pos < size:
                    op, content = _read_record(handle, pos, size)
                    if op in (OP_FOOTER, OP_DATA_END):
                        self.damage = self._bad_chunk_note()
                        return
                    if op == OP_CHUNK:
                        try:
                            records = self._chunk(content, pos)
                        except McapTruncation as exc:
                            self.bad_chunks.append(str(exc))
                            skipped_chunk = True
                        else:
                            skipped_chunk = False
                            yield from records
                    elif op == OP_MESSAGE_INDEX:
                        if skipped_chunk:
                            yield from self._lost_messages(content, pos)
                    else:
                        skipped_chunk = False
                        yield from self._plain(op, content, pos)
                    pos += 9 + len(content)
                    self.readable_bytes = pos
            except McapTruncation as exc:
                self.damage = "; ".join(
                    filter(None, [self._bad_chunk_note(),
                                  f"{exc}; {size - self.readable_bytes} bytes after offset "
                                  f"{self.readable_bytes} unreadable"]))
                return
            self.damage = "; ".join(filter(None, [self._bad_chunk_note(),
                                                  f"file ends at offset {pos} without a footer (recording cut short)"]))

    def _channels_from_summary(self, handle, size: int) -> None:
        """Schemas and channels from the summary section, when the file has its footer: a
        damaged first chunk then does not take the channel definitions with it (writers
        put them in the first chunk and repeat them in the summary)."""
        footer_at = size - len(MAGIC) - 9 - 20  # footer: opcode, length, 8 + 8 + 4 bytes
        if footer_at <= len(MAGIC):
            return
        handle.seek(footer_at)
        tail = handle.read(9 + 20 + len(MAGIC))
        if tail[0] != OP_FOOTER or tail[-len(MAGIC):] != MAGIC:
            return
        summary_start, summary_offsets = struct.unpack_from("<QQ", tail, 9)
        end = summary_offsets or footer_at
        if not len(MAGIC) <= summary_start < end <= footer_at:
            return
        pos = summary_start
        handle.seek(pos)
        try:
            while pos < end:
                op, content = _read_record(handle, pos, end)
                if op in (OP_SCHEMA, OP_CHANNEL):
                    list(self._plain(op, content, pos))
                pos += 9 + len(content)
        except (McapTruncation, struct.error):
            return  # a damaged summary: the data section still has the definitions

    def _bad_chunk_note(self) -> str | None:
        if not self.bad_chunks:
            return None
        return (f"{len(self.bad_chunks)} damaged chunk(s) skipped, {self.lost} messages lost: "
                + "; ".join(self.bad_chunks[:5]) + (" ..." if len(self.bad_chunks) > 5 else ""))

    def _lost_messages(self, content: memoryview, offset: int) -> Iterator[tuple[int, int, None]]:
        """The messages a skipped chunk held, from the Message Index record that follows it:
        ``channel_id u16 | records u32 byte length | (log_time u64, offset u64)...``."""
        if len(content) < 6:
            return
        cid, length = struct.unpack_from("<HI", content)
        count = min(length, len(content) - 6) // 16
        for k in range(count):
            (log_time,) = struct.unpack_from("<Q", content, 6 + 16 * k)
            self.lost += 1
            yield cid, log_time, None

    def _plain(self, op: int, content: memoryview, offset: int) -> Iterator[tuple[int, int, bytes]]:
        if op == OP_SCHEMA:
            (sid,) = struct.unpack_from("<H", content)
            name, p = _string(content, 2, offset)
            encoding, p = _string(content, p, offset)
            text, _ = _string(content, p, offset)
            self.schemas[sid] = (name, encoding, text)
        elif op == OP_CHANNEL:
            cid, sid = struct.unpack_from("<HH", content)
            topic, p = _string(content, 4, offset)
            encoding, _ = _string(content, p, offset)
            if cid not in self.channels:
                msgtype = self.schemas.get(sid, ("", "", ""))[0]
                self.channels[cid] = RecoveredChannel(cid, topic, msgtype, encoding)
        elif op == OP_MESSAGE:
            if len(content) < 22:
                raise McapTruncation(f"message record at offset {offset} is {len(content)} bytes, shorter than its header")
            cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", content)
            if cid not in self.channels:
                raise McapTruncation(f"message at offset {offset} names unknown channel {cid}")
            yield cid, log_time, bytes(content[22:])

    def _chunk(self, content: memoryview, offset: int) -> list[tuple[int, int, bytes]]:
        if len(content) < 40:
            raise McapTruncation(f"chunk record at offset {offset} is too short")
        _start, _end, size, crc = struct.unpack_from("<QQQI", content)
        compression, p = _string(content, 28, offset)
        (length,) = struct.unpack_from("<Q", content, p)
        records = content[p + 8:p + 8 + length]
        if len(records) != length:
            raise McapTruncation(f"chunk at offset {offset} holds {len(records)} of {length} bytes")
        try:
            from rosbags.rosbag2.storage_mcap import decompress

            raw = decompress(bytes(records), compression, size, crc)
        except Exception as exc:  # unknown codec, size or checksum mismatch
            raise McapTruncation(f"chunk at offset {offset} is damaged: {exc}") from None
        # Parse the whole chunk before yielding any of it: a chunk is kept or lost as a whole.
        view = memoryview(raw)
        pos, out = 0, []
        while pos < len(view):
            op, inner, end = _record(view, pos, len(view), f"chunk at offset {offset}")
            out.extend(self._plain(op, inner, offset))
            pos = end
        return out


def _read_record(handle, pos: int, size: int) -> tuple[int, memoryview]:
    header = handle.read(9)
    if len(header) < 9:
        raise McapTruncation(f"record header at offset {pos} cut off")
    op = header[0]
    (length,) = struct.unpack_from("<Q", header, 1)
    if length > min(_MAX_RECORD, size - pos - 9):
        raise McapTruncation(f"record (opcode 0x{op:02x}) at offset {pos} needs {length} bytes, "
                             f"{size - pos - 9} left")
    return op, memoryview(handle.read(length))


def _record(data: bytes | memoryview, pos: int, limit: int, where: str) -> tuple[int, memoryview, int]:
    if pos + 9 > limit:
        raise McapTruncation(f"{where}: record header at offset {pos} cut off")
    op = data[pos]
    (length,) = struct.unpack_from("<Q", data, pos + 1)
    end = pos + 9 + length
    if length > _MAX_RECORD or end > limit:
        raise McapTruncation(f"{where}: record (opcode 0x{op:02x}) at offset {pos} needs {length} bytes, "
                             f"{limit - pos - 9} left")
    return op, memoryview(data)[pos + 9:end], end


def _string(content: memoryview, pos: int, offset: int) -> tuple[str, int]:
    if pos + 4 > len(content):
        raise McapTruncation(f"record at offset {offset}: string length cut off")
    (length,) = struct.unpack_from("<I", content, pos)
    end = pos + 4 + length
    if end > len(content):
        raise McapTruncation(f"record at offset {offset}: string of {length} bytes cut off")
    return bytes(content[pos + 4:end]).decode("utf-8", errors="replace"), end


def write_chunk_crcs(path: str | Path) -> int:
    """Fill in ``uncompressed_crc`` (CRC-32 of the decompressed records, https://mcap.dev/spec
    "Chunk (op=0x06)") of every chunk of a finished MCAP file that has none; returns how
    many were filled. The field has a fixed size, so no offset in the file moves."""
    from rosbags.rosbag2.storage_mcap import decompress

    path = Path(path)
    filled = 0
    with path.open("r+b") as handle:
        size = handle.seek(0, 2)
        handle.seek(0)
        if handle.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path}: not an MCAP file")
        pos = len(MAGIC)
        while pos + 9 <= size:
            handle.seek(pos)
            op, content = _read_record(handle, pos, size)
            if op in (OP_DATA_END, OP_FOOTER):
                break
            if op == OP_CHUNK:
                _start, _end, uncompressed, crc = struct.unpack_from("<QQQI", content)
                if crc == 0:
                    compression, p = _string(content, 28, pos)
                    (length,) = struct.unpack_from("<Q", content, p)
                    raw = decompress(bytes(content[p + 8:p + 8 + length]), compression, uncompressed, 0)
                    handle.seek(pos + 9 + 24)  # opcode, length, then start/end/size (3 x u64)
                    handle.write(struct.pack("<I", zlib.crc32(raw)))
                    filled += 1
            pos += 9 + len(content)
    return filled
