"""Damaged bags: which storage files a bag has, what to say when one cannot be opened, and
reading a topic on past damage (the next MCAP chunk, the next sqlite3 row)."""
from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from abaw_ros.offline.mcap_recovery import RecoveredMcap


def storage_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    return [path]


def damage_message(path: Path, exc: BaseException, what: str) -> str:
    files = storage_files(path)
    listing = ", ".join(f"{f.name} ({f.stat().st_size} bytes)" for f in files if f.exists())
    detail = str(exc).rstrip(".")
    if any(f.suffix == ".db3" for f in files):
        hint = "`sqlite3 <file>.db3 .recover` may salvage the readable part"
    else:
        hint = ("a recording that was killed leaves an MCAP file without its index; "
                "`mcap recover` or `ros2 bag reindex` can rebuild it")
    return (f"{what} bag {str(path)!r} [{listing}]: {type(exc).__name__}: {detail}. The file is "
            f"truncated or damaged ({hint})")


def single_mcap(path: Path) -> Path | None:
    files = storage_files(path) if path.exists() else []
    return files[0] if len(files) == 1 and files[0].suffix == ".mcap" else None


def messages_past_damage(bag: Path, topic: str, msgtype: str, seen: Counter[int],
                         notes: list[str]) -> Iterator[tuple[str, int, bytes | None]]:
    """``topic``'s messages not yet yielded (``seen``: log times already read, counted down),
    read around the damage: MCAP chunk by chunk (a damaged chunk is skipped; its Message
    Index says what it held), sqlite3 row by row (a row on a damaged page is lost, the
    others are read). What was lost is added to ``notes``."""
    for path in storage_files(bag):
        if path.suffix == ".mcap":
            walk = RecoveredMcap.scan(path)
            messages = ((lt, raw) for _, lt, raw in walk.messages({topic}))
        else:
            walk = None
            messages = sqlite_rows(path, topic, notes)
        for log_time, raw in messages:
            if seen[int(log_time)] > 0:
                seen[int(log_time)] -= 1
                continue
            yield msgtype, log_time, raw
        if walk is not None and walk.damage:
            notes.append(f"{path.name}: {walk.damage}")


def sqlite_rows(path: Path, topic: str, notes: list[str]) -> Iterator[tuple[int, bytes | None]]:
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
