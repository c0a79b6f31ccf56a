"""The seam between the gateway and the CRM: one method, ``send``, two transports.

Foreign exceptions are translated here and only here: a refused or reset connection becomes
``UpstreamUnreachable`` (502), a connect or read timeout ``UpstreamTimeout`` (504).
Neither transport keeps a cookie jar (a shared jar would leak one caller's session to
another), follows redirects, reads proxy settings from the environment, or decodes bodies:
the gateway decodes itself, with a bound, in ``decode_body``.

aiohttp is the default transport. httpx is kept behind the same seam so ``make bench`` can
measure both on this machine (httpcore's pool bookkeeping grows with concurrency,
encode/httpx#3215).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
import orjson

from gateway.errors import BodyTooLarge, UnreadableUpstream, UpstreamTimeout, UpstreamUnreachable

Headers = list[tuple[str, str]]

# RFC 9110 §7.6.1: "a proxy MUST ... remove any header or trailer fields [listed in Connection]"
# and the hop-by-hop fields themselves; Host and Content-Length are recomputed per hop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "trailers",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "host",
        "content-length",
    }
)


# The gateway's own server writes these for every answer.
_SERVER_WRITTEN = frozenset({"date", "server"})


def response_headers(raw: Headers) -> Headers:
    return [(n, v) for n, v in end_to_end(raw) if n not in _SERVER_WRITTEN]


def end_to_end(headers: Headers) -> Headers:
    """Headers with hop-by-hop fields removed, including every field named in Connection."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
    }
    return [
        (n, v)
        for n, v in headers
        if n not in HOP_BY_HOP and n not in named and not n.startswith("proxy-")
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


class AiohttpUpstream:
    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int = 200):
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the server's running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def send(self, method: str, url: str, headers: Headers, body: bytes) -> UpstreamResponse:
        try:
            resp = await self._client().request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
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
    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int = 200):
        # The transport alone: no Client, hence no cookie jar, no redirects, no env proxies.
        self._transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=100),
            trust_env=False,
        )
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
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


def make_upstream(kind: str, connect_timeout: float, read_timeout: float) -> Upstream:
    if kind == "httpx":
        return HttpxUpstream(connect_timeout, read_timeout)
    return AiohttpUpstream(connect_timeout, read_timeout)


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
    """Streaming gzip decoding for pass-through bodies sent to a client that did not ask
    for gzip (the gateway always asks the CRM for gzip)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, chunk: bytes) -> bytes:
        try:
            return self._d.decompress(chunk)
        except zlib.error as exc:
            raise UnreadableUpstream() from exc

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
