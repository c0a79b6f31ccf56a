"""``h1``: a lean HTTP/1.1 keep-alive client for the CRM, on ``asyncio.Protocol`` and httptools.

It exists for CPU: aiohttp's client spends ~80 µs of Python per request (URL objects,
multidicts, tracing, timers); this one builds the request bytes once, writes them once,
and lets httptools' C parser call back with the head and the body.

What it does: ``http://`` and ``https://`` origins (TLS with the default context), a
keep-alive pool (``max_connections`` in all, idle ones reused last-in first-out and
dropped after 15 s or once the peer closed them, a FIFO wait of at most ``pool_timeout``
when every connection is busy, then ``Overloaded``), Content-Length, chunked and
close-delimited bodies with back-pressure (reading pauses above 256 KiB buffered), 1xx
answers skipped, a read timeout on every wait for the head or the next chunk, and one
retry on a fresh connection for a GET, HEAD or OPTIONS whose reused connection died
before any byte of the answer came. A connection is kept only if its answer came after
its request was written whole, and reused only if nothing waits unread in its socket
(an answer nobody asked for must never be read as the next request's); bytes without
body (heads, interim answers, trailers) are bounded at 256 KiB in a row.

What it does not do: no proxy (``make_upstream`` gives the aiohttp transport when one is
configured), no cookies, no redirects, no decompression, no HTTP/2, no ``Expect``
handshake (the body goes with the head), no upgrade (a 101 is a protocol error).
Errors map as in ``gateway.upstream``: refused, reset or unparsable -> ``UpstreamUnreachable``,
connect or read timeout -> ``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import ssl
from collections import deque
from typing import cast
from urllib.parse import urlsplit

import httptools

from gateway.crm.request import HOP_BY_HOP
from gateway.errors import InvalidData, UpstreamTimeout, UpstreamUnreachable
from gateway.upstream import (
    Headers,
    UpstreamResponse,
    _content_length,
    _pool_exhausted,
    response_headers,
)

_IDLE_TTL = 15.0
_HIGH_WATER = 256 * 1024
# Bytes in a row that carry no body (a head, interim answers, trailers, chunk framing):
# far more than any CRM's head, far less than an endless one grows to before the timeout.
_MAX_FRAMING = 256 * 1024
_RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS"})
_WITH_LENGTH = frozenset({"POST", "PUT", "PATCH"})
_TARGET_START = re.compile(r"[/?#]")


class _Origin:
    """Where to connect and what to say in ``Host``; compared by identity (cached)."""

    __slots__ = ("host", "host_header", "port", "tls")

    def __init__(self, prefix: str) -> None:
        try:
            parts = urlsplit(prefix)
            scheme = parts.scheme.lower()
            host = parts.hostname
            default = {"http": 80, "https": 443}[scheme]
            port = parts.port or default
            if not host:
                raise ValueError(prefix)
            host = host.encode("idna").decode("ascii")
        except (KeyError, ValueError, UnicodeError) as exc:
            raise UpstreamUnreachable() from exc
        self.tls = scheme == "https"
        self.host = host
        self.port = port
        named = f"[{host}]" if ":" in host else host
        self.host_header = named if port == default else f"{named}:{port}"


class _Unasked(Exception):
    """Bytes of an answer nobody asked for (or no answer at all); raised in a parser
    callback to stop parsing."""


class _Conn(asyncio.Protocol):
    """One connection, and the state of the one exchange in flight on it."""

    transport: asyncio.Transport  # set by connection_made, before anyone sees the connection

    def __init__(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.dropped = False  # closed from this side: an EOF that follows ends no body
        self.idle_since = 0.0
        self.start(b"", False)

    def start(self, request: bytes, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0  # set by the final (non-1xx) head
        self.raw: Headers = []
        self.close_delimited = False
        self.complete = False
        self.received = False  # a byte of this answer came
        self.reusable = True
        self.broken = False
        self.cause: BaseException | None = None
        self.body: list[bytes] = []
        self.buffered = 0
        self.framing = 0  # bytes received since the last byte of body (see _MAX_FRAMING)
        self.progressed = False  # a byte of body in the bytes being fed
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        if not request:
            return
        if not self.alive():
            self._fail(None)
        else:
            self.transport.write(request)

    async def wait(self, timeout: float) -> None:
        """Until the next event of the exchange, at most ``timeout`` seconds."""
        self.waiter = fut = self.loop.create_future()
        timer = self.loop.call_later(timeout, self._time_out, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> bytes:
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self.buffered = 0
        self.resume()
        return data

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.transport.resume_reading()

    def alive(self) -> bool:
        return not self.lost and not self.transport.is_closing()

    def usable(self) -> bool:
        """Alive, and nothing waits unread in the socket: bytes that came before the next
        request is written (a busy loop has not read them yet) cannot be its answer."""
        if not self.alive():
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        poll = select.poll()  # not select(): descriptors above 1023 are common here
        poll.register(sock.fileno(), select.POLLIN)
        return not poll.poll(0)

    def close(self) -> None:
        self.reusable = False
        self.dropped = True
        self.transport.close()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _time_out(self, fut: asyncio.Future[None]) -> None:
        if not fut.done():
            self.reusable = False  # a late answer would be read as the next one's
            fut.set_exception(UpstreamTimeout())

    def _fail(self, cause: BaseException | None) -> None:
        self.close()
        if not self.complete and not self.broken:
            self.broken = True
            self.cause = cause
            self._wake()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.complete:  # bytes nobody asked for: the framing is lost
            self.close()
            return
        self.received = True
        self.progressed = False
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(exc)
            return
        self.framing = 0 if self.progressed else self.framing + len(data)
        if self.framing > _MAX_FRAMING:
            self._fail(None)  # an endless head or trailer would grow until the read timeout

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reusable = False
        if (
            exc is None
            and self.status
            and self.close_delimited
            and not self.dropped
            and not self.origin.tls
        ):
            # The peer's EOF is how this body ends. Not over TLS: a TCP close without
            # TLS's close_notify reaches us like a clean one, so anyone on the path could
            # cut such a body short unseen (a CRM frames its answers; this never serves it).
            self.complete = True
            self._wake()
        else:
            self._fail(exc)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            # A second answer in the bytes of the first: never parsed (its head would
            # overwrite the status and headers the caller is about to read).
            self.close()
            raise _Unasked()
        self.raw = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if status < 100:
            # Neither interim nor final: its body would be read as the final one's.
            raise _Unasked()
        if status < 200:
            return  # an interim answer: the final one follows
        self.status = status
        if self.head_only:
            # httptools cannot be told a HEAD answer has no body: end here, never reuse
            self.complete = True
            self.reusable = False
        elif status not in (204, 304):
            chunked = any(
                n == "transfer-encoding" and v.rsplit(",", 1)[-1].strip().lower() == "chunked"
                for n, v in self.raw
            )
            self.close_delimited = not chunked and all(n != "content-length" for n, _ in self.raw)
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.body.append(body)
        self.buffered += len(body)
        self.progressed = True
        if self.buffered > _HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.status or self.complete:
            return  # the end of an interim answer, or of a HEAD answer's phantom body
        self.complete = True
        if self.close_delimited or not self.parser.should_keep_alive():
            self.reusable = False
        elif self.transport.get_write_buffer_size():
            # Answered before the request was written whole: what the peer makes of the
            # rest of the body (more requests?) must not answer the next request here.
            self.reusable = False
        self._wake()


class _Body:
    """The chunks of one answer; the connection goes back to the pool at their end."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: H1Upstream, conn: _Conn) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        while conn is not None:
            if conn.body:
                return conn.take()
            if conn.broken:  # EOF or an error before the body's end: never a short body
                raise UpstreamUnreachable() from conn.cause
            if conn.complete:
                break
            await conn.wait(self._pool.read_timeout)
        await self.release()
        raise StopAsyncIteration

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool._checkin(conn)

    def __del__(self) -> None:
        # Dropped unreleased (its caller failed between send and reading it): the slot
        # comes back, as aiohttp's responses do, or the pool shrinks for good.
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to free
                conn.loop.call_soon_threadsafe(self._pool._checkin, conn)


class H1Upstream:
    """The ``Upstream`` seam over pooled HTTP/1.1 connections (see the module docstring)."""

    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 200,
        pool_timeout: float = 5.0,
        proxy: str | None = None,
    ) -> None:
        if proxy is not None:
            raise ValueError("H1Upstream has no proxy support; make_upstream picks aiohttp")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[_Origin, list[_Conn]] = {}
        self._conns: set[_Conn] = set()
        self._slots = 0  # connections open or being opened, and slots handed to waiters
        self._waiters: deque[tuple[asyncio.Future[_Conn | None], _Origin]] = deque()
        self._tls: ssl.SSLContext | None = None

    async def send(self, method: str, url: str, headers: Headers, body: bytes) -> UpstreamResponse:
        origin, target = self._split(url)
        request = _request(method, target, origin.host_header, headers, body)
        head_only = method == "HEAD"
        conn, reused = await self._checkout(origin)
        try:
            await self._exchange(conn, request, head_only)
        except UpstreamUnreachable:
            if not reused or conn.received or method not in _RETRYABLE:
                self._checkin(conn)
                raise
            # A kept-alive connection the CRM had closed: once more, on a new one, in
            # the same slot (_connect frees it if that fails).
            self._forget(conn)
            conn = await self._connect(origin)
            try:
                await self._exchange(conn, request, head_only)
            except BaseException:
                self._checkin(conn)
                raise
        except BaseException:
            self._checkin(conn)
            raise
        chunks = _Body(self, conn)
        raw = conn.raw
        return UpstreamResponse(
            conn.status, response_headers(raw), chunks, chunks.release, _content_length(raw)
        )

    async def _exchange(self, conn: _Conn, request: bytes, head_only: bool) -> None:
        conn.start(request, head_only)
        while not conn.status:
            if conn.broken:
                raise UpstreamUnreachable() from conn.cause
            await conn.wait(self.read_timeout)

    def _split(self, url: str) -> tuple[_Origin, str]:
        scheme_end = url.find("://")
        found = _TARGET_START.search(url, scheme_end + 3) if scheme_end > 0 else None
        end = found.start() if found else len(url)
        prefix, target = url[:end], url[end:].partition("#")[0]
        if not target.startswith("/"):
            target = "/" + target
        origin = self._origins.get(prefix)
        if origin is None:
            if len(self._origins) >= 64:
                self._origins.clear()
            origin = self._origins[prefix] = _Origin(prefix)
        return origin, target

    # the pool

    async def _checkout(self, origin: _Origin) -> tuple[_Conn, bool]:
        """A connection to ``origin`` and whether it served an earlier request."""
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        now = loop.time()
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since <= _IDLE_TTL:
                return conn, True
            self._forget(conn)
            self._free_slot()
        if self._slots >= self.max_connections:
            self._evict_idle()
        if self._slots < self.max_connections:
            self._slots += 1
            return await self._connect(origin), False
        fut: asyncio.Future[_Conn | None] = loop.create_future()
        waiter = (fut, origin)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.pool_timeout):
                got = await fut
        except BaseException as exc:
            if not fut.done() or fut.cancelled():
                with contextlib.suppress(ValueError):  # _pass_on may have dropped it
                    self._waiters.remove(waiter)
                if isinstance(exc, TimeoutError):
                    raise _pool_exhausted() from exc
                raise
            if not isinstance(exc, TimeoutError):  # cancelled as it was served: pass it on
                self._pass_on(fut.result())
                raise
            got = fut.result()
        if got is not None and got.usable():
            return got, True
        if got is not None:  # closed, or unasked bytes came, since it was handed over
            self._forget(got)
        return await self._connect(origin), False  # in the slot handed over

    async def _connect(self, origin: _Origin) -> _Conn:
        """A new connection in a slot the caller holds (freed if this fails)."""
        loop = asyncio.get_running_loop()
        tls = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(origin, loop),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except BaseException as exc:
            self._free_slot()
            if isinstance(exc, TimeoutError):  # before OSError: it is one
                raise UpstreamTimeout() from exc
            if isinstance(exc, OSError):
                raise UpstreamUnreachable() from exc
            raise
        self._conns.add(conn)
        return conn

    def _checkin(self, conn: _Conn) -> None:
        """Back to the pool (or to the first waiter) if it is clean; closed otherwise."""
        conn.resume()
        if not (conn.complete and conn.reusable and conn.alive()):
            self._forget(conn)
            self._free_slot()
            return
        self._pass_on(conn)

    def _pass_on(self, got: _Conn | None) -> None:
        """A clean connection, or a bare slot, to the first waiter, or to the pool."""
        while self._waiters:
            fut, origin = self._waiters.popleft()
            if fut.done():
                continue
            if got is not None and got.origin is not origin:
                self._forget(got)  # its slot serves the waiter's origin
                got = None
            fut.set_result(got)
            return
        if got is None:
            self._slots -= 1
            return
        got.idle_since = got.loop.time()
        self._idle.setdefault(got.origin, []).append(got)

    def _free_slot(self) -> None:
        self._pass_on(None)

    def _evict_idle(self) -> None:
        """Close one idle connection (to another origin) to make room."""
        for conns in self._idle.values():
            if conns:
                self._forget(conns.pop(0))
                self._slots -= 1
                return

    def _forget(self, conn: _Conn) -> None:
        """Close ``conn``; its slot stays with the caller."""
        conn.close()
        self._conns.discard(conn)

    async def aclose(self) -> None:
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run


def _request(method: str, target: str, host: str, headers: Headers, body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    # The framing is this hop's own (the caller's headers are end-to-end already; the
    # project's one list of hop-by-hop fields keeps it so whatever the caller passed).
    lines += [f"{n}: {v}\r\n" for n, v in headers if n.lower() not in HOP_BY_HOP]
    if body or method in _WITH_LENGTH:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # Each line above ends in one CRLF (the first holds two): any other CR, LF or NUL
    # came from a name, a value or the target and would split or end the head.
    breaks = len(lines) + 1
    if head.count("\r") != breaks or head.count("\n") != breaks or "\0" in head:
        raise InvalidData(details={"reason": "a header cannot be forwarded"})
    try:
        return head.encode("latin-1") + body
    except UnicodeEncodeError as exc:
        raise InvalidData(details={"reason": "a header cannot be forwarded"}) from exc
