"""Bulk-read results: a ZIP holding one CSV, rewritten while it streams to the client.

The upstream's ZIP is spooled to a temporary file, since a ZIP is read from its central
directory at the end. Then one thread per export (``Export``) reads each CSV row by row,
empties the columns of private fields (headers kept) and writes a new ZIP to a
non-seekable sink: each member's sizes follow its data in a data descriptor, since they are
not known when its header leaves. A member is written with ZIP64 sizes when its rewritten
size could reach ``zipfile.ZIP64_LIMIT`` (judged from the upstream member's size, which
bounds what is read of it), and with the classic 32-bit sizes otherwise: readers that pick
the descriptor's width from the sizes they counted (Java's ``ZipInputStream``, JDK 17 for
one) misread ZIP64 descriptors of small members. Rows go to the compressor through 64 KiB
buffers (never one row at a time: every call into zlib hands the GIL over, which is what
made concurrent exports cost twice their CPU), and the ZIP leaves in chunks of ``CHUNK``
through a queue of ``QUEUE_CHUNKS``: the thread waits while the client is slower, so
memory per export stays bounded whatever its size.

A member that is not a CSV (a directory entry holding bytes included), or a ZIP that does
not open, is refused before the first byte leaves. A failure half-way (a row with more
values than headers, a CSV or ZIP that stops making sense) stops the sink at once: nothing
more leaves, so the client's ZIP is cut short and never looks complete. The gateway never
passes on what it could not check.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO

from gateway.errors import Overloaded, UnreadableUpstream

#: the upstream ZIP stays in memory up to this size, then goes to a temporary file
SPOOL_IN_MEMORY = 1024 * 1024
#: what the compressor is fed and the client is handed at a time
CHUNK = 64 * 1024
#: chunks made but not yet sent: the most an export holds ahead of its client
QUEUE_CHUNKS = 4
_READ_BUFFER = 256 * 1024
#: an upstream CSV from this size on is rewritten with ZIP64 sizes: a rewritten CSV is at
#: most twice its size (a line end "\n" becomes "\r\n"), deflate adds under 1%
ZIP64_FROM = (zipfile.ZIP64_LIMIT - (1 << 20)) // 2
#: errors that mean the upstream's ZIP or CSV cannot be checked
_UNREADABLE = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    UnicodeDecodeError,
    csv.Error,
    EOFError,
    zlib.error,
)
#: how a member's data may be packed: what the CRM writes, and zipfile reads without help
_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
csv.field_size_limit(64 * 1024 * 1024)


def spooled() -> tempfile.SpooledTemporaryFile[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)


class ExportSlots:
    """At most ``limit`` exports at once (each holds a thread and a spooled file until its
    client has read it all); one more is refused at once, never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> Callable[[], None]:
        """Take a slot, or raise ``Overloaded``; return its release (idempotent)."""
        if self.taken >= self.limit:
            raise Overloaded("Too many bulk exports are running; retry later.", retry_after=5)
        self.taken += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.taken -= 1

        return release


class _Stopped(Exception):
    """The consumer went away: the thread unwinds."""


class _Sink:
    """The new ZIP's file object: write-only, not seekable (so ``zipfile`` writes data
    descriptors), handing ``CHUNK``-sized pieces to ``hand``. Once aborted, it drops
    everything: the end of a ZIP must never follow a failure."""

    def __init__(self, hand: Callable[[bytes], None]) -> None:
        self._hand = hand
        self._buf = bytearray()
        self._pos = 0
        self.aborted = False

    def write(self, data: bytes, /) -> int:
        if not self.aborted:
            self._buf += data
            self._pos += len(data)
            if len(self._buf) >= CHUNK:
                self._hand(bytes(self._buf))
                self._buf.clear()
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        """Chunks leave when full; ``finish`` sends the rest."""

    def close(self) -> None:
        """The export closes nothing of its own here."""

    def finish(self) -> None:
        if self._buf and not self.aborted:
            self._hand(bytes(self._buf))
            self._buf.clear()


_DONE = object()


class Export:
    """One rewritten export: ``start`` opens the spooled ZIP and reads each CSV's header row
    (so a ZIP that cannot be checked is refused before the first byte), then a thread of its
    own rewrites it; ``chunks`` yields the new ZIP and raises what ended it early;
    ``aclose`` stops the thread, waits for it, closes the spooled file and calls
    ``on_close``. ``counts`` gains the number of values per field that ``blank`` names:
    emptied, or with ``empty=False`` (redaction in shadow or off) counted and kept.

    Only what the gateway wrote leaves: the new ZIP names its members itself (``name``,
    then ``name`` with ``-2``, ``-3``... before ``.csv``), dates them with the time of the
    export, and carries no comment or extra field of the CRM's, whose bytes no check
    reads. A CSV header cell goes on as the CRM wrote it: ``blank`` refuses (raises
    ``UnreadableUpstream`` for) one that is not a plain field name."""

    def __init__(
        self,
        source: IO[bytes],
        blank: Callable[[str], str | None],
        on_close: Callable[[], None],
        *,
        name: str = "export.csv",
        empty: bool = True,
    ) -> None:
        self.counts: dict[str, int] = {}
        self._source = source
        self._blank = blank
        self._on_close = on_close
        self._name = name
        self._empty = empty
        self._date = time.localtime()[:6]
        self._zin: zipfile.ZipFile | None = None
        self._members: list[zipfile.ZipInfo] = []
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._space = threading.Semaphore(QUEUE_CHUNKS)
        self._stopped = False
        self._closed = False
        self._finished: asyncio.Future[None] | None = None

    async def start(self) -> list[str]:
        """Open the ZIP and start the rewrite; return the fields whose columns are emptied."""
        try:
            fields = await asyncio.to_thread(self._open)
        except BaseException:
            await self.aclose()
            raise
        loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        threading.Thread(target=self._run, args=(loop,), name="bulk-export", daemon=True).start()
        return fields

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if isinstance(item, bytes):
                self._space.release()
                yield item
            elif item is _DONE:
                return
            else:
                assert isinstance(item, BaseException)
                raise item

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopped = True
        self._space.release(QUEUE_CHUNKS + 1)  # a thread waiting for room sees the stop
        try:
            if self._finished is not None:
                await asyncio.shield(self._finished)
        finally:
            if self._zin is not None:
                self._zin.close()
            self._source.close()
            self._on_close()

    # -- in threads -----------------------------------------------------------------------

    def _open(self) -> list[str]:
        try:
            self._zin = zipfile.ZipFile(self._source)
            fields: set[str] = set()
            for member in self._zin.infolist():
                if member.is_dir():
                    if member.file_size:
                        raise UnreadableUpstream()  # bytes no CSV reader looks at
                    continue
                if not member.filename.lower().endswith(".csv"):
                    raise UnreadableUpstream()
                if member.flag_bits & 0x1 or member.compress_type not in _METHODS:
                    raise UnreadableUpstream()  # encrypted, or packed in a way not read here
                self._members.append(member)
                with self._zin.open(member) as raw:
                    header: list[str] = next(_reader(raw), [])
                fields.update(n for h in header if (n := self._blank(h)) is not None)
        except _UNREADABLE as exc:
            raise UnreadableUpstream() from exc
        return sorted(fields)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        def hand(item: object) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, item)

        def hand_chunk(chunk: bytes) -> None:
            self._space.acquire()
            if self._stopped:
                raise _Stopped()
            hand(chunk)

        sink = _Sink(hand_chunk)
        end: object = _DONE
        try:
            self._rewrite(sink)
        except _Stopped:
            pass
        except _UNREADABLE as exc:
            end = UnreadableUpstream()
            end.__cause__ = exc
        except BaseException as exc:
            end = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            hand(end)
            loop.call_soon_threadsafe(_settle, self._finished)

    def _rewrite(self, sink: _Sink) -> None:
        assert self._zin is not None
        zout = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED)
        text: io.TextIOWrapper | None = None
        try:
            stem = self._name.removesuffix(".csv")
            for n, member in enumerate(self._members, 1):
                name = self._name if n == 1 else f"{stem}-{n}.csv"
                info = zipfile.ZipInfo(name, self._date)
                info.compress_type = zipfile.ZIP_DEFLATED
                dst = zout.open(info, "w", force_zip64=member.file_size >= ZIP64_FROM)
                text = io.TextIOWrapper(
                    io.BufferedWriter(dst, CHUNK),
                    encoding="utf-8",
                    newline="",
                )
                with self._zin.open(member) as raw:
                    _rewrite_csv(_reader(raw), text, self._blank, self.counts, self._empty)
                text.close()
                text = None
            zout.close()
            sink.finish()
        except BaseException:
            sink.aborted = True  # nothing more leaves: the client's ZIP stays cut short
            for f in (text, zout):
                if f is not None:
                    with contextlib.suppress(Exception):
                        f.close()  # frees what they hold; what they write is dropped
            raise


def _settle(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _reader(raw: IO[bytes]) -> Iterator[list[str]]:
    buffered = io.BufferedReader(raw, _READ_BUFFER)  # type: ignore[type-var]
    return csv.reader(io.TextIOWrapper(buffered, encoding="utf-8-sig", newline=""))


def _rewrite_csv(
    reader: Iterator[list[str]],
    out: io.TextIOWrapper,
    blank: Callable[[str], str | None],
    counts: dict[str, int],
    empty: bool = True,
) -> None:
    header = next(reader, None)
    if header is None:
        return
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    targets = [(i, name) for i, h in enumerate(header) if (name := blank(h)) is not None]
    for _, name in targets:  # a withheld column is named even when it held nothing
        counts.setdefault(name, 0)
    width = len(header)
    for row in reader:
        if len(row) > width:  # a value under no header cannot be checked
            raise UnreadableUpstream()
        for i, name in targets:
            if i < len(row):
                if empty:
                    row[i] = ""
                counts[name] += 1
        writer.writerow(row)
