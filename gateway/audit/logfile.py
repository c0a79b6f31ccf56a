"""The append-only log file: append, fsync, rotate by size.

Every method blocks; the trail calls them from one worker thread at a time, so this class
needs no locks. It is also the test seam for a slow or failing disk: ``AuditTrail`` builds
its file from the class attribute ``AuditTrail.file_class``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.audit.files import Tail, read_tail, rotated, rotated_numbers

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_MODE = 0o640


class LogFile:
    def __init__(self, path: Path, *, max_bytes: int, durable: bool = True) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.durable = durable  # fsync the directory after creating or renaming files
        self._fd: int | None = None
        self._size = 0

    def open(self) -> Tail:
        """Open for appending and return where the chain continues."""
        self.close()
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            mode = None
        # rotation renames the file: never do that to /dev/stdout or a FIFO by mistake
        if mode is not None and not stat.S_ISREG(mode):
            raise ValueError(f"audit log {self.path} is not a regular file")
        tail = read_tail(self.path)
        self._fd = os.open(self.path, _FLAGS, _MODE)
        self._size = os.fstat(self._fd).st_size
        if self._size and not self._ends_with_newline():
            # a crash cut the last line short: end it, so the next entry starts a line
            self._write_all(b"\n")
        self._sync_dir()
        return tail

    def append(self, lines: list[bytes]) -> None:
        """Write whole lines (each ending in a newline), rotating before one would overflow.

        Lines that fit go out in one ``write()``; a file only exceeds ``max_bytes`` when a
        single line is larger than that.
        """
        chunk: list[bytes] = []
        size = self._size
        for line in lines:
            if size and size + len(line) > self.max_bytes:
                self._write_all(b"".join(chunk))
                chunk, size = [], 0
                self._rotate()
            chunk.append(line)
            size += len(line)
        self._write_all(b"".join(chunk))

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _fileno(self) -> int:
        if self._fd is None:
            raise OSError("audit log is not open")
        return self._fd

    def _write_all(self, data: bytes) -> None:
        fd = self._fileno()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            self._size += n
            view = view[n:]

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _rotate(self) -> None:
        """``base`` becomes ``base.1``, older files move up one number; none is deleted.

        Renames run from the oldest down, so a crash half-way leaves a numbering gap but
        never two files out of order.
        """
        os.fsync(self._fileno())
        self.close()
        for n in reversed(rotated_numbers(self.path)):
            os.rename(rotated(self.path, n), rotated(self.path, n + 1))
        os.rename(self.path, rotated(self.path, 1))
        self._fd = os.open(self.path, _FLAGS, _MODE)
        self._size = 0
        self._sync_dir()

    def _sync_dir(self) -> None:
        if not self.durable:
            return
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
