"""Where a log's lines live on disk, and how to find its last good entry.

A log is its base file (``audit.jsonl``) plus the files rotation moved aside
(``audit.jsonl.1`` is the most recent, higher numbers are older). Rotation never deletes.
Its one writer holds ``audit.jsonl.lock`` (``WriterLock``).
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.canonical import GENESIS_HASH, entry_hash, is_hash


def rotated(base: Path, n: int) -> Path:
    return base.with_name(f"{base.name}.{n}")


def rotated_numbers(base: Path) -> list[int]:
    """The N of every ``base.N`` that exists, ascending (newest first)."""
    pattern = re.compile(re.escape(base.name) + r"\.([1-9][0-9]*)")
    try:
        names = os.listdir(base.parent)
    except FileNotFoundError:
        return []
    found = (pattern.fullmatch(name) for name in names)
    return sorted(int(m.group(1)) for m in found if m)


def log_files(base: Path) -> list[Path]:
    """Every file of the log, oldest first: ``base.N`` … ``base.1``, then ``base``."""
    files = [rotated(base, n) for n in reversed(rotated_numbers(base))]
    if base.exists():
        files.append(base)
    return files


def parse_entry(line: bytes) -> dict[str, Any] | None:
    """The entry on ``line`` if it is a whole, self-consistent audit entry, else None."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict):
        return None
    seq = entry.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None
    if not is_hash(entry.get("prev_hash")) or not is_hash(entry.get("hash")):
        return None
    return entry if entry_hash(entry) == entry["hash"] else None


def lines_backwards(path: Path, chunk: int = 1 << 16) -> Iterator[tuple[bytes, bool]]:
    """The lines of ``path`` from the last to the first, each with "ended in a newline"."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        ends_with_newline = f.read(1) == b"\n"
        pos = size - 1 if ends_with_newline else size
        pending = b""  # the start of a line whose beginning lies before ``pos``
        last = True
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            parts = (f.read(step) + pending).split(b"\n")
            pending = parts[0]
            for line in reversed(parts[1:]):
                yield line, ends_with_newline or not last
                last = False
        yield pending, ends_with_newline or not last


@dataclass(frozen=True, slots=True)
class Tail:
    """Where a new segment continues: the last good entry, and whether garbage follows it."""

    seq: int = 0
    head: str = GENESIS_HASH
    torn: bool = False  # the log ends in a line that is not a whole entry (a crash mid-write)


def read_tail(base: Path) -> Tail:
    """Find the last whole entry of the log, looking into rotated files when needed.

    Any unreadable line after it marks the tail as torn. The writer then links the new
    segment to that last good entry and says so; it never edits what is already written.
    """
    torn = False
    for path in reversed(log_files(base)):
        for line, _ in lines_backwards(path):
            entry = parse_entry(line)
            if entry is not None:
                return Tail(seq=entry["seq"], head=entry["hash"], torn=torn)
            torn = True
    return Tail(torn=torn)


def write_stdout(data: bytes) -> None:
    """Write to stdout's bytes, or its text where it has none (a captured stream)."""
    stream: Any = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        stream.write(data.decode())
        stream.flush()


class AuditLogInUse(OSError):
    """Another process writes this audit log: two writers would interleave one chain."""

    def __init__(self, log: Path) -> None:
        super().__init__(f"audit log {log} is in use: another process holds {lock_path(log)}")
        self.log = log


def lock_path(log: Path) -> Path:
    return log.with_name(f"{log.name}.lock")


class WriterLock:
    """An exclusive ``flock`` on ``<log>.lock``: one writer per audit log.

    A separate file, so rotation (which renames the log) never drops it; the kernel lets
    go of it when the process dies, however it dies, so a restart takes it straight back.
    """

    def __init__(self, log: Path) -> None:
        self.log = log
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise ``AuditLogInUse`` at once; a no-op when already held."""
        if self._fd is not None:
            return
        fd = os.open(lock_path(self.log), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditLogInUse(self.log) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the lock
