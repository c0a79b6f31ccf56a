"""The seam between the gateway and the CRM: one method, ``send``, two transports.

Foreign exceptions are translated here and only here: a refused or reset connection becomes
``UpstreamUnreachable`` (502), a connect or read timeout ``UpstreamTimeout`` (504).
Neither transport keeps a cookie jar (a shared jar would leak one caller's session to
another), follows redirects, reads proxy settings from the environment, or decodes bodies:
the gateway decodes itself, with a bound, in ``decode_body``.

A request that finds every connection busy waits at most the pool timeout, then gets
``Overloaded`` (503 with ``Retry-After``): a full pool is the gateway's capacity, not a slow
CRM, so it is not reported as a 504. ``BreakerUpstream`` wraps either transport with one
``CircuitBreaker`` per CRM host.

``h1`` (``gateway.h1``), a lean HTTP/1.1 client on httptools' parser, is the default: it
costs about 0.03 ms of CPU per call against aiohttp's 0.06 to 0.1 ms (``make bench``,
README "Performance"). aiohttp serves when a proxy is configured (h1 has no CONNECT) and
on ``--transport aiohttp``; httpx is kept behind the same seam so ``make bench`` can measure
it too (httpcore's pool bookkeeping grows with concurrency, encode/httpx#3215).
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson

from gateway.crm.request import end_to_end
from gateway.errors import (
    BodyTooLarge,
    Overloaded,
    Reason,
    UnreadableUpstream,
    UpstreamTimeout,
    UpstreamUnreachable,
)

Headers = list[tuple[str, str]]

# The gateway's own server writes these for every answer.
_SERVER_WRITTEN = frozenset({"date", "server"})


def response_headers(raw: Headers) -> Headers:
    """The CRM's answer headers that may reach the client: end-to-end ones, without those
    the gateway's server writes, and never one in the gateway's own namespace (an upstream
    ``X-Privacy-Withheld`` beside the gateway's would contradict it)."""
    return [
        (n, v)
        for n, v in end_to_end(raw)
        if n not in _SERVER_WRITTEN
        and n != "x-request-id"  # the gateway answers with its own
        and not n.startswith(("x-privacy-", "x-gateway-"))
    ]


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Headers  # names lower-case, hop-by-hop already removed
    chunks: AsyncIterator[bytes]
    _release: Callable[[], Awaitable[None]]
    content_length: str | None = None  # as the CRM sent it, for bodies passed on unchanged

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    async def read(self, limit: int) -> bytes:
        """The whole (still encoded) body; refuses, never truncates, a body over ``limit``."""
        declared = self.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self.aclose()
            raise BodyTooLarge("The CRM's answer is larger than the gateway inspects.")
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in self.chunks:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge("The CRM's answer is larger than the gateway inspects.")
                parts.append(chunk)
        finally:
            await self.aclose()
        return b"".join(parts)

    async def aclose(self) -> None:
        await self._release()


def _content_length(raw: Headers) -> str | None:
    values = {v.strip() for n, v in raw if n == "content-length"}
    # Several differing lengths is a framing attack (RFC 9112 §6.3); such a body is not
    # given a length here and is re-framed by the server.
    if len(values) == 1 and (value := values.pop()).isdigit():
        return value
    return None


class Upstream(Protocol):
    async def send(
        self, method: str, url: str, headers: Headers, body: bytes
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


def _pool_exhausted() -> Overloaded:
    return Overloaded("Every connection to the CRM is busy; retry later.")


class _PoolWait:
    """The deadline of one request's wait for a pooled connection (aiohttp's ``connect``
    timeout covers that wait and the connecting alike, so it cannot tell them apart)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.deadline: asyncio.Timeout | None = None
        self.expired = False

    def queued(self) -> None:
        if self.deadline is not None:
            self.expired = True  # stays true only if the wait is not over in time
            self.deadline.reschedule(asyncio.get_running_loop().time() + self.limit)

    def dequeued(self) -> None:
        if self.deadline is not None:
            self.expired = False
            self.deadline.reschedule(None)


async def _on_queued(_s: object, ctx: SimpleNamespace, _p: object) -> None:
    if isinstance(ctx.trace_request_ctx, _PoolWait):
        ctx.trace_request_ctx.queued()


async def _on_dequeued(_s: object, ctx: SimpleNamespace, _p: object) -> None:
    if isinstance(ctx.trace_request_ctx, _PoolWait):
        ctx.trace_request_ctx.dequeued()


class AiohttpUpstream:
    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 200,
        pool_timeout: float = 5.0,
        proxy: str | None = None,
    ):
        self._proxy = proxy
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            # aiohttp's connect bound includes the pool wait; the pool wait has its own
            # (shorter) deadline in send(), so this bounds only the rest.
            connect=connect_timeout + pool_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the server's running event loop.
        if self._session is None:
            tracing = aiohttp.TraceConfig()
            tracing.on_connection_queued_start.append(_on_queued)
            tracing.on_connection_queued_end.append(_on_dequeued)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                auto_decompress=False,
                trust_env=False,  # a proxy only when configured (settings.upstream_proxy)
                proxy=self._proxy,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                trace_configs=[tracing],
            )
        return self._session

    async def send(self, method: str, url: str, headers: Headers, body: bytes) -> UpstreamResponse:
        wait = _PoolWait(self._pool_timeout)
        try:
            async with asyncio.timeout(None) as wait.deadline:
                resp = await self._client().request(
                    method,
                    url,
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    trace_request_ctx=wait,
                )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if wait.expired:
                raise _pool_exhausted() from exc
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable() from exc

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.content.iter_any():
                    yield chunk
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise UpstreamTimeout() from exc
            except aiohttp.ClientError as exc:
                raise UpstreamUnreachable() from exc

        async def release() -> None:
            resp.release()

        raw = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in resp.raw_headers]
        return UpstreamResponse(
            resp.status, response_headers(raw), chunks(), release, _content_length(raw)
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class HttpxUpstream:
    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 200,
        pool_timeout: float = 5.0,
        proxy: str | None = None,
    ):
        # The transport alone: no Client, hence no cookie jar, no redirects, no env proxies.
        self._transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=100),
            trust_env=False,
            proxy=proxy,
        )
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=pool_timeout
        )

    async def send(self, method: str, url: str, headers: Headers, body: bytes) -> UpstreamResponse:
        request = httpx.Request(
            method,
            url,
            headers=headers,
            content=body,
            extensions={"timeout": self._timeout.as_dict()},
        )
        try:
            resp = await self._transport.handle_async_request(request)
        except httpx.PoolTimeout as exc:
            raise _pool_exhausted() from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout() from exc
        except httpx.TransportError as exc:
            raise UpstreamUnreachable() from exc

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.stream:  # type: ignore[union-attr]
                    yield chunk
            except httpx.TimeoutException as exc:
                raise UpstreamTimeout() from exc
            except httpx.TransportError as exc:
                raise UpstreamUnreachable() from exc

        raw = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in resp.headers.raw]
        return UpstreamResponse(
            resp.status_code, response_headers(raw), chunks(), resp.aclose, _content_length(raw)
        )

    async def aclose(self) -> None:
        await self._transport.aclose()


def make_upstream(
    kind: str,
    connect_timeout: float,
    read_timeout: float,
    max_connections: int = 200,
    pool_timeout: float = 5.0,
    proxy: str | None = None,
) -> Upstream:
    """``kind``: "aiohttp", "httpx" or "h1" (``gateway.h1``). ``proxy``: an HTTP(S) proxy
    URL every upstream call goes through, or None; h1 has no proxy support, so with a proxy
    "h1" gives the aiohttp transport."""
    if kind == "h1" and proxy is None:
        from gateway.h1 import H1Upstream  # it imports this module

        return H1Upstream(connect_timeout, read_timeout, max_connections, pool_timeout)
    cls = HttpxUpstream if kind == "httpx" else AiohttpUpstream
    return cls(connect_timeout, read_timeout, max_connections, pool_timeout, proxy)


# -- the circuit breaker ------------------------------------------------------------------


class _State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    PROBING = "probing"  # half-open, with its one probe in flight


class CircuitBreaker:
    """The failure record of one CRM host; pure (the caller passes the time).

    ``failures`` consecutive failures (a connection that failed or timed out, or a 5xx)
    open the circuit: ``admit`` then answers how long to wait, without calling the CRM,
    for ``cooldown`` seconds. After that one request is admitted as a probe; its success
    closes the circuit, its failure opens it for another ``cooldown``. A 4xx, 429
    included, is the CRM answering, so it counts as a success.
    """

    def __init__(self, failures: int, cooldown: float) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.state = _State.CLOSED
        self._count = 0
        self._until = 0.0

    def admit(self, now: float) -> float:
        """0.0 to go ahead; otherwise the seconds until a request may be admitted."""
        if self.state is _State.CLOSED:
            return 0.0
        if self.state is _State.OPEN:
            if now >= self._until:
                self.state = _State.PROBING
                return 0.0
            return self._until - now
        return min(self.cooldown, 1.0)  # the probe's answer is due soon

    def succeeded(self) -> None:
        self.state = _State.CLOSED
        self._count = 0

    def failed(self, now: float) -> None:
        self._count += 1
        if self.state is _State.PROBING or self._count >= self.failures:
            self.state = _State.OPEN
            self._until = now + self.cooldown

    def abandoned(self) -> None:
        """An admitted request ended without a verdict (cancelled, or never sent): a probe's
        turn passes to the next request."""
        if self.state is _State.PROBING:
            self.state = _State.OPEN


_UNAVAILABLE = frozenset({502, 503, 504})


class BreakerUpstream:
    """An ``Upstream`` that consults one ``CircuitBreaker`` per host before each call."""

    def __init__(
        self,
        inner: Upstream,
        failures: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self._failures = failures
        self._cooldown = cooldown
        self._clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, url: str) -> CircuitBreaker:
        host = urlsplit(url).netloc.lower()
        found = self.breakers.get(host)
        if found is None:
            found = self.breakers[host] = CircuitBreaker(self._failures, self._cooldown)
        return found

    async def send(self, method: str, url: str, headers: Headers, body: bytes) -> UpstreamResponse:
        breaker = self.breaker(url)
        wait = breaker.admit(self._clock())
        if wait:
            raise Overloaded(
                "The CRM is failing; requests to it are paused.",
                retry_after=math.ceil(wait),
                code="GATEWAY_UPSTREAM_UNAVAILABLE",
                reason=Reason.UPSTREAM_UNREACHABLE,
            )
        try:
            resp = await self.inner.send(method, url, headers, body)
        except (UpstreamUnreachable, UpstreamTimeout):
            breaker.failed(self._clock())
            raise
        except BaseException:
            breaker.abandoned()
            raise
        # Only an answer that says the CRM itself is unavailable counts: a 500 to one
        # client's malformed query must not let that client pause everyone's traffic.
        if resp.status in _UNAVAILABLE:
            breaker.failed(self._clock())
        else:
            breaker.succeeded()
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The identity form of a body. Only what the gateway asked for (identity, gzip) is
    accepted; anything else could hide data from the redactor, so it is refused."""
    coding = (content_encoding or "identity").strip().lower()
    if coding == "identity" or coding == "":
        return body
    if coding not in ("gzip", "x-gzip"):
        raise UnreadableUpstream()
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        # max_length bounds the expansion: a decompression bomb stops at the limit.
        out = decoder.decompress(body, limit + 1)
        if len(out) > limit or decoder.unconsumed_tail:
            raise BodyTooLarge("The CRM's answer expands beyond what the gateway inspects.")
        out += decoder.flush()
        if not decoder.eof or len(out) > limit:
            raise UnreadableUpstream()
    except zlib.error as exc:
        raise UnreadableUpstream() from exc
    return out


class GzipStreamDecoder:
    """Streaming gzip decoding of a body the gateway spools to read (a bulk result)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def pieces(self, chunk: bytes, most: int = 1 << 20) -> Iterator[bytes]:
        """``chunk`` decoded, in pieces of at most ``most`` bytes: one compressed chunk of a
        bomb never expands in memory all at once."""
        data = chunk
        while data:
            try:
                piece = self._d.decompress(data, most)
            except zlib.error as exc:
                raise UnreadableUpstream() from exc
            yield piece
            data = self._d.unconsumed_tail

    def flush(self) -> bytes:
        return self._d.flush()


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    status: int
    headers: Headers
    raw: bytes  # identity-decoded body
    body: object  # parsed JSON; None for an empty body


async def fetch_json(
    upstream: Upstream, method: str, url: str, headers: Headers, body: bytes, limit: int
) -> JsonAnswer:
    """One request whose answer the gateway reads itself (metadata, record state, job status)."""
    resp = await upstream.send(method, url, headers, body)
    raw = decode_body(await resp.read(limit), resp.header("content-encoding"), limit)
    if not raw.strip():
        return JsonAnswer(resp.status, resp.headers, raw, None)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnreadableUpstream() from exc
    return JsonAnswer(resp.status, resp.headers, raw, parsed)
