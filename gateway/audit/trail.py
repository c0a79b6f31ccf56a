"""The audit trail: one hash-chained JSON line per request, durable before it is acknowledged.

Group commit: ``record()`` reserves the next ``seq`` synchronously (one event loop, so no
gaps and no duplicates) and queues the entry with a future. One writer task takes every
queued entry at once, runs the processor chain in seq order, writes the lines with one
``write()`` and, with ``fsync="always"``, one ``fsync()``, then resolves the futures. Many
concurrent requests therefore share one disk flush.

Back-pressure, by ``on_full``:

- ``"block"`` (default): a full queue makes ``record()`` wait up to ``block_timeout_s``,
  then raise ``AuditUnavailable`` (the gateway answers 503). After a write error every
  pending and later ``record()`` raises it too: nothing is lost silently.
- ``"drop"``: a full queue or a failing sink counts the entry in ``dropped`` and returns.
  A dropped entry never takes a seq, so the chain on disk stays verifiable. After a write
  error the writer reopens the file, reads its tail (the truth, whatever part of the
  failed write reached it) and starts a new segment from there; entries offered while it
  recovers are dropped and counted.

One writer: ``claim()`` (and ``start()``, which calls it) takes an exclusive lock on
``<path>.lock`` (on stdout only, ``<checkpoint_path>.lock``) and raises ``AuditLogInUse``
when another process holds it: two writers on one file would interleave one chain, which
verifies as tampering. Every entry carries ``instance``, the writer's name (host or pod and
worker number, from ``gateway.audit.config.instance_name``), inside what the hash covers.

Segments: every ``start()`` writes ``{"event": "segment_start"}`` linked to the last whole
entry already on disk, so restarts are visible in the chain. Torn tail: a crash mid-write
can leave a partial last line. History is never edited, so that line stays; the new
segment links to the last *whole* entry and carries ``reasons: ["previous_tail_unreadable"]``.
``verify_log`` accepts exactly that shape (one unreadable line directly followed by such a
segment start) as a recovered crash and says so; anywhere else an unreadable line is damage.

Checkpoints are written by the writer task too (every ``checkpoint_interval_s``, idle or
not, and on close), after the entries they name are fsynced, and signed with
``signing_key`` (an Ed25519 key) or, without one, HMAC-SHA256 with ``secret``. They go to
``checkpoint_path``, by default ``<path>.checkpoints``. With the trail on stdout only and no
``checkpoint_path``, they are lines of their own kind (``{"event": "checkpoint", ...}``) in
the stdout stream, beside the entries they pin (``StreamCheckpoints``; ``audit verify``
reads such a captured stream). With a ``checkpoint_path`` the stdout chain continues
from the last checkpoint in that file (its segment start says ``resumed_from_checkpoint``),
so the captured stream of several process lifetimes verifies against one checkpoints file.
A crash between checkpoints in stdout mode cannot be resumed exactly: the entries written
after the last checkpoint and the new segment then share seqs, and verify reports the fork
at the new segment start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway import __version__
from gateway.audit.canonical import GENESIS_HASH
from gateway.audit.checkpoints import (
    CheckpointFile,
    StreamCheckpoints,
    default_checkpoint_path,
    last_checkpoint,
    make_checkpoint,
)
from gateway.audit.files import Tail, WriterLock, write_stdout
from gateway.audit.iothread import IoThread
from gateway.audit.logfile import LogFile
from gateway.audit.processors import AuditChain, ChainHasher, Enrich
from gateway.audit.scrub import SCHEMA_VERSION
from gateway.errors import AuditUnavailable
from gateway.keys import SigningKey

log = logging.getLogger("gateway.audit")

SEGMENT_ROUTE = "/_gateway/segment"
_RECOVERY_BACKOFF_S = (0.05, 1.0)  # first and longest pause between reopen attempts


@dataclass(frozen=True, slots=True)
class FsyncPolicy:
    mode: Literal["always", "interval", "never"]
    interval_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> FsyncPolicy:
        if text == "always":
            return cls("always")
        if text == "never":
            return cls("never")
        if text.startswith("interval:") and text[9:].isdigit() and int(text[9:]) > 0:
            return cls("interval", int(text[9:]) / 1000)
        raise ValueError(f'fsync must be "always", "interval:<ms>" or "never", not {text!r}')


@dataclass(slots=True)
class _Pending:
    seq: int
    event: str
    fields: dict[str, Any]
    done: asyncio.Future[None]


class AuditTrail:
    #: the log file class; tests swap in a slow or failing disk here
    file_class: type[LogFile] = LogFile
    #: told how long each fsync took, in seconds (called from the writer's thread)
    on_fsync: Callable[[float], None] | None = None

    def __init__(
        self,
        path: Path | None,
        *,
        secret: bytes,
        signing_key: SigningKey | None = None,
        stdout: bool = False,
        fsync: str = "always",
        max_bytes: int = 100_000_000,
        checkpoint_path: Path | None = None,
        checkpoint_interval_s: float = 30.0,
        on_full: str = "block",
        queue_size: int = 10_000,
        block_timeout_s: float = 5.0,
        instance: str | None = None,
    ) -> None:
        if path is None and not stdout:
            raise ValueError("the audit trail needs a path, stdout, or both")
        if on_full not in ("block", "drop"):
            raise ValueError(f'on_full must be "block" or "drop", not {on_full!r}')
        if queue_size < 1 or max_bytes < 1 or checkpoint_interval_s <= 0:
            raise ValueError("queue_size, max_bytes and checkpoint_interval_s must be positive")
        self._fsync = FsyncPolicy.parse(fsync)
        self._secret = secret
        self._signing_key = signing_key
        self._stdout = stdout
        self._drop = on_full == "drop"
        self._queue_size = queue_size
        self._block_timeout_s = block_timeout_s
        self._checkpoint_interval_s = checkpoint_interval_s
        self._file = (
            self.file_class(path, max_bytes=max_bytes, durable=self._fsync.mode != "never")
            if path is not None
            else None
        )
        if checkpoint_path is None and path is not None:
            checkpoint_path = default_checkpoint_path(path)
        self._checkpoints: CheckpointFile | StreamCheckpoints | None = None
        if checkpoint_path is not None:
            self._checkpoints = CheckpointFile(checkpoint_path)
        elif stdout:
            self._checkpoints = StreamCheckpoints(instance or "")
        anchor = path or checkpoint_path
        self._lock = WriterLock(anchor) if anchor is not None else None

        self._io = IoThread()  # every blocking call of the trail, one at a time
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()  # the writer has work
        self._space = asyncio.Event()  # the queue has room again
        self._hasher = ChainHasher()
        #: which process wrote an entry, and in which format (see docs/audit-schema.md)
        self._chain = AuditChain(
            self._hasher,
            Enrich(instance=instance),
            {"gateway_version": __version__, "schema": SCHEMA_VERSION},
        )
        self._state: Literal["new", "open", "recovering", "failed", "closed"] = "new"
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._next_seq = 1
        self._seq = 0  # last entry written
        self._head = GENESIS_HASH
        self._synced = (0, GENESIS_HASH)  # last entry known to be on disk
        self._dirty = False  # written but not yet fsynced
        self._checkpoint_failed = False
        self._written = 0
        self._dropped = 0

    # -- what the gateway reads -------------------------------------------------------------

    @property
    def written(self) -> int:
        return self._written

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def blocks(self) -> bool:
        """Whether a full queue or a failing sink refuses entries (``on_full = "block"``,
        as the trail was built: a reloaded policy does not change it)."""
        return not self._drop

    @property
    def accepting(self) -> bool:
        """Whether an entry recorded now is written: open, with room in the queue."""
        return self._state == "open" and len(self._queue) < self._queue_size

    @property
    def healthy(self) -> bool:
        """``accepting``, and checkpoints being written (for readiness: a late proof of the
        entries is no reason to refuse requests)."""
        return self.accepting and not self._checkpoint_failed

    @property
    def head(self) -> str:
        """Hash of the last entry written."""
        return self._head

    @property
    def seq(self) -> int:
        """Seq of the last entry written."""
        return self._seq

    # -- lifecycle --------------------------------------------------------------------------

    def claim(self) -> None:
        """Become the one writer of the log (see the module doc); idempotent."""
        if self._lock is not None:
            self._lock.acquire()

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError("an AuditTrail starts once")
        self.claim()
        try:
            tail = await self._io.run(self._open_blocking)
        except BaseException:
            self._release()
            self._io.stop()
            raise
        resumed = False
        if self._file is None and isinstance(self._checkpoints, CheckpointFile):
            # stdout only: the checkpoints file is the one record of where the chain got to
            pinned = await self._io.run(last_checkpoint, self._checkpoints.path)
            if pinned is not None:
                tail, resumed = pinned, True
        self._continue_from(tail)
        self._state = "open"
        self._writer = asyncio.create_task(self._run(), name="audit-writer")
        reasons = ["previous_tail_unreadable"] if tail.torn else []
        if resumed:
            reasons.append("resumed_from_checkpoint")
        if tail.torn:
            log.warning("audit log ended in a partial line; new segment links past it")
        await self._enqueue_segment_start(reasons)

    async def record(self, fields: Mapping[str, object], event: str = "request") -> None:
        """Write one entry; return once it is written (and fsynced, with ``fsync="always"``)."""
        if self._state == "recovering":
            self._dropped += 1
            return
        self._check_open()
        if len(self._queue) >= self._queue_size:
            if self._drop:
                self._dropped += 1
                return
            await self._wait_for_space()
        # the caller's object is not ours to keep (the scrub reads only its own keys, so a
        # key that is not a name is carried along harmlessly and never written)
        await self._enqueue(event, dict(fields))

    async def close(self) -> None:
        """Drain the queue, fsync, write a final checkpoint, close the files."""
        if self._state == "closed" or self._closing:
            return
        self._closing = True
        self._wakeup.set()
        self._space.set()
        if self._writer is not None:
            await self._writer
        self._state = "closed"
        try:
            await self._io.run(self._close_blocking)
        finally:
            self._io.stop()

    # -- the producer side ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state == "failed":
            raise AuditUnavailable()
        if self._state != "open" or self._closing:
            raise AuditUnavailable(message="The audit trail is not running.")

    async def _wait_for_space(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._block_timeout_s
        while len(self._queue) >= self._queue_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AuditUnavailable(message="The audit trail is too far behind.")
            self._space.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._space.wait()
            self._check_open()

    async def _enqueue(self, event: str, fields: dict[str, Any]) -> None:
        # no await between reserving the seq and queueing: queue order is seq order
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(self._next_seq, event, fields, done))
        self._next_seq += 1
        self._wakeup.set()
        await done

    async def _enqueue_segment_start(self, reasons: list[str]) -> None:
        await self._enqueue("segment_start", {"route": SEGMENT_ROUTE, "reasons": reasons})

    def _continue_from(self, tail: Tail) -> None:
        self._seq, self._head = tail.seq, tail.head
        self._synced = (tail.seq, tail.head)
        self._hasher.head = tail.head
        self._next_seq = tail.seq + 1

    # -- the writer task --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._write_loop()
        except Exception as exc:  # a bug here must not leave record() callers waiting forever
            log.error("audit writer stopped: %s", _describe(exc))
            self._drop = False
            self._write_failed([], exc)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_checkpoint = loop.time()  # the first one right after the segment start
        last_sync = loop.time()
        backoff = _RECOVERY_BACKOFF_S[0]
        while True:
            if self._state == "failed":
                return
            if self._state == "recovering":
                if self._closing:
                    return
                if await self._recover():
                    backoff = _RECOVERY_BACKOFF_S[0]
                else:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _RECOVERY_BACKOFF_S[1])
                continue
            if not self._queue and not self._closing:
                deadline = next_checkpoint if self._checkpoints else loop.time() + 3600
                if self._dirty and self._fsync.mode == "interval":
                    deadline = min(deadline, last_sync + self._fsync.interval_s)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._wakeup.wait()
            self._wakeup.clear()
            if self._queue:
                batch = list(self._queue)
                self._queue.clear()
                self._space.set()
                await self._commit(batch)
            if self._state != "open":
                continue
            interval_due = (
                self._fsync.mode == "interval" and loop.time() >= last_sync + self._fsync.interval_s
            )
            if self._dirty and (interval_due or self._closing):
                await self._sync()
                last_sync = loop.time()
            # due on the timer even under constant load; on close, once the queue is drained
            checkpoint_due = loop.time() >= next_checkpoint or (self._closing and not self._queue)
            if self._checkpoints and checkpoint_due:
                await self._checkpoint()
                next_checkpoint = loop.time() + self._checkpoint_interval_s
            if self._closing and not self._queue and self._state == "open":
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        fsync_now = self._fsync.mode == "always"
        try:
            # Rendering holds the GIL wherever it runs, so it runs here; the trail's thread
            # costs a hand-off each way (gateway.audit.iothread), which only an fsync or a
            # stdout pipe (either may block for long) is worth.
            lines = self._render(batch)
            if fsync_now or self._stdout:
                await self._io.run(self._write, lines, fsync_now)
            else:
                self._write(lines, False)  # into the page cache; _sync() fsyncs in a thread
        except Exception as exc:  # any failure, not only OSError: never hang a record()
            self._write_failed(batch, exc)
            return
        self._seq, self._head = batch[-1].seq, self._hasher.head
        self._written += len(batch)
        if fsync_now:
            self._synced = (self._seq, self._head)
        else:
            self._dirty = True
        for pending in batch:
            if not pending.done.done():  # the caller may have been cancelled
                pending.done.set_result(None)

    def _write_failed(self, batch: list[_Pending], exc: Exception) -> None:
        log.error("audit write failed: %s", _describe(exc))
        self._hasher.head = self._head  # the chain continues from what is known written
        pending = batch + list(self._queue)
        self._queue.clear()
        self._space.set()
        if self._drop:
            self._state = "recovering"
            self._dropped += len(pending)
            for p in pending:
                if not p.done.done():
                    p.done.set_result(None)
        else:
            self._state = "failed"
            for p in pending:
                if not p.done.done():
                    p.done.set_exception(AuditUnavailable())

    async def _recover(self) -> bool:
        """Drop mode: reopen the file and start a segment from its real tail."""
        try:
            tail = await self._io.run(self._open_blocking)
        except Exception as exc:
            log.error("audit log reopen failed: %s", _describe(exc))
            return False
        if self._file is None:  # stdout only: continue from what was last written whole
            tail = Tail(self._seq, self._head, torn=False)
        # synchronous from here to the enqueue: no record() can take a seq in between
        self._continue_from(tail)
        self._state = "open"
        self._dirty = False
        reasons = ["sink_recovered"] + (["previous_tail_unreadable"] if tail.torn else [])
        # the writer is this task, so it cannot await its own entry: queue it, and the
        # next turn of the loop writes it ahead of anything recorded after this point
        fields: dict[str, Any] = {"route": SEGMENT_ROUTE, "reasons": reasons}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(self._next_seq, "segment_start", fields, done))
        self._next_seq += 1
        return True

    async def _sync(self) -> None:
        try:
            await self._io.run(self._sync_blocking)
        except Exception as exc:
            self._write_failed([], exc)
            return
        self._synced = (self._seq, self._head)
        self._dirty = False

    async def _checkpoint(self) -> None:
        if self._dirty:  # a checkpoint only ever names entries already on disk
            await self._sync()
            if self._state != "open":
                return
        seq, head = self._synced
        if seq == 0 or self._checkpoints is None:
            return
        checkpoint = make_checkpoint(seq, head, self._signing_key or self._secret)
        try:
            await self._io.run(self._checkpoints.append, checkpoint)
        except Exception as exc:
            # the entries are safe; only the proof of them is late, so do not fail requests
            log.error("audit checkpoint write failed: %s", _describe(exc))
            self._checkpoint_failed = True
        else:
            self._checkpoint_failed = False

    # -- blocking work, run on the trail's thread (or inline where it cannot block for long) --

    def _open_blocking(self) -> Tail:
        if self._file is None:
            return Tail(self._seq, self._head)
        return self._file.open()

    def _render(self, batch: list[_Pending]) -> list[bytes]:
        line = self._chain.line
        return [line(p.event, p.seq, p.fields) + b"\n" for p in batch]

    def _write(self, lines: list[bytes], fsync_now: bool) -> None:
        if self._file is not None:
            self._file.append(lines)
            if fsync_now:
                self._timed_sync(self._file)
        if self._stdout:
            write_stdout(b"".join(lines))

    def _sync_blocking(self) -> None:
        if self._file is not None:
            self._timed_sync(self._file)

    def _timed_sync(self, file: LogFile) -> None:
        started = time.perf_counter()
        file.sync()
        if self.on_fsync is not None:
            self.on_fsync(time.perf_counter() - started)

    def _close_blocking(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._checkpoints is not None:
            self._checkpoints.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()


def _describe(exc: BaseException) -> str:
    """The kind of failure, never a message that might quote what was being written."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return type(exc).__name__
