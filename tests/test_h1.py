"""The ``h1`` transport against raw servers on 127.0.0.1 that answer with exact bytes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop

from gateway.errors import InvalidData, Overloaded, UpstreamTimeout, UpstreamUnreachable
from gateway.h1 import H1Upstream
from gateway.upstream import AiohttpUpstream, UpstreamResponse, make_upstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"


class Server:
    """Counts connections and keeps every request it read (head and body)."""

    def __init__(
        self,
        answer: Callable[[Server, int, bytes], Awaitable[bytes | None]],
        close_after: bool = False,
    ) -> None:
        self.answer = answer  # (server, request number on the connection, request) -> bytes
        self.close_after = close_after  # each answer ends with the connection
        self.connections = 0
        self.requests: list[bytes] = []
        self.writer: asyncio.StreamWriter | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writer = writer
        n = 0
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                out = await self.answer(self, n, request)
                n += 1
                if out is None:  # close without answering
                    break
                writer.write(out)
                await writer.drain()
                if self.close_after:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def fixed(*answers: bytes | None) -> Callable[[Server, int, bytes], Awaitable[bytes | None]]:
    """The n-th request on each connection gets ``answers[n]`` (None: the server closes)."""

    async def answer(_s: Server, n: int, _r: bytes) -> bytes | None:
        return answers[n] if n < len(answers) else None

    return answer


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[str]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


LOOP: list[Callable[[], asyncio.AbstractEventLoop]] = []


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test on both loops: the gateway serves on uvloop (its transports are not
    ``asyncio.Transport`` subclasses)."""
    LOOP.append(asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop)
    yield
    LOOP.pop()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOP[-1]) as runner:
        runner.run(test())


async def body(resp: UpstreamResponse) -> bytes:
    return b"".join([chunk async for chunk in resp.chunks])


def client(**kwargs: Any) -> H1Upstream:
    return H1Upstream(**{"connect_timeout": 2.0, "read_timeout": 2.0, **kwargs})


def test_make_upstream_picks_h1_unless_a_proxy_is_configured() -> None:
    assert isinstance(make_upstream("h1", 1, 1), H1Upstream)
    assert isinstance(make_upstream("h1", 1, 1, proxy="http://proxy:3128"), AiohttpUpstream)


def test_content_length_body_and_the_request_bytes() -> None:
    server = Server(fixed(OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            headers = [("Host", "evil"), ("Connection", "close"), ("X-Id", "7")]
            resp = await up.send("GET", url + "/crm/v8/Leads?a=1&b=%20", headers, b"")
            assert resp.status == 200
            assert resp.header("x-a") == "b"
            assert resp.content_length == "5"
            assert await body(resp) == b"hello"
            await resp.aclose()
            await up.aclose()
        port = url.rsplit(":", 1)[1]
        assert server.requests == [
            f"GET /crm/v8/Leads?a=1&b=%20 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "X-Id: 7\r\n\r\n".encode()
        ]

    run(main)


def test_a_post_carries_its_length() -> None:
    server = Server(fixed(OK, OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            for payload in (b'{"a":1}', b""):
                resp = await up.send("POST", url + "/w", [("Content-Length", "99")], payload)
                assert await body(resp) == b"hello"
            await up.aclose()
        assert server.requests[0].endswith(b'Content-Length: 7\r\n\r\n{"a":1}')
        assert server.requests[1].endswith(b"Content-Length: 0\r\n\r\n")
        assert server.connections == 1

    run(main)


def test_chunked_body_and_interim_answer() -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    server = Server(fixed(chunked, OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            resp = await up.send("GET", url + "/", [], b"")
            assert resp.status == 201
            assert resp.header("transfer-encoding") is None  # hop-by-hop
            assert resp.content_length is None
            assert await body(resp) == b"hello world"
            resp = await up.send("GET", url + "/", [], b"")
            assert await body(resp) == b"hello"
            await up.aclose()
        assert server.connections == 1

    run(main)


def test_close_delimited_body_is_whole_and_its_connection_not_reused() -> None:
    server = Server(fixed(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"), close_after=True)

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            for _ in range(2):
                resp = await up.send("GET", url + "/", [], b"")
                assert await body(resp) == b"until the end"
            await up.aclose()
        assert server.connections == 2

    run(main)


def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    server = Server(fixed(OK, OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            for _ in range(2):
                resp = await up.send("GET", url + "/", [], b"")
                assert await body(resp) == b"hello"
            await up.aclose()
        assert server.connections == 1

    run(main)


def test_a_second_answer_in_the_bytes_of_the_first_is_never_read() -> None:
    """An answer nobody asked for, sent with the first one: the caller reads the first
    answer's status, headers and body, and the connection is not kept (a later request
    must never be answered with it)."""
    unasked = b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nX-Unasked: 1\r\n\r\nnope"
    server = Server(fixed(OK + unasked, OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            first = await up.send("GET", url + "/", [], b"")
            assert (first.status, first.header("x-a"), first.header("x-unasked")) == (
                200,
                "b",
                None,
            )
            assert await body(first) == b"hello"
            second = await up.send("GET", url + "/", [], b"")
            assert second.status == 200 and await body(second) == b"hello"
            await up.aclose()
        assert server.connections == 2

    run(main)


def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    server = Server(fixed(OK), close_after=True)  # no "Connection: close" said

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            resp = await up.send("GET", url + "/", [], b"")
            assert await body(resp) == b"hello"
            await asyncio.sleep(0.05)  # the server closes the connection meanwhile
            resp = await up.send("POST", url + "/", [], b"x")
            assert await body(resp) == b"hello"
            await up.aclose()
        assert server.connections == 2

    run(main)


def test_a_reused_connection_that_dies_is_retried_once_for_a_get_only() -> None:
    # each connection answers its first request, then closes on the second unanswered
    server = Server(fixed(OK, None))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            assert await body(await up.send("GET", url + "/", [], b"")) == b"hello"
            assert await body(await up.send("GET", url + "/", [], b"")) == b"hello"
            assert server.connections == 2
            with pytest.raises(UpstreamUnreachable):
                await up.send("POST", url + "/", [], b"x")
            await up.aclose()
        assert server.connections == 2  # the POST was not sent again
        assert [r.split(b" ", 1)[0] for r in server.requests] == [b"GET"] * 3 + [b"POST"]

    run(main)


def test_head_has_no_body_and_its_connection_is_not_reused() -> None:
    server = Server(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            resp = await up.send("HEAD", url + "/", [], b"")
            assert (resp.status, resp.content_length) == (200, "100")
            assert await body(resp) == b""
            assert await body(await up.send("HEAD", url + "/", [], b"")) == b""
            await up.aclose()
        assert server.connections == 2

    run(main)


def test_no_content_has_no_body_and_keeps_the_connection() -> None:
    server = Server(fixed(b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 304 Not Modified\r\n\r\n"))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            for status in (204, 304):
                resp = await up.send("GET", url + "/", [], b"")
                assert resp.status == status
                assert await body(resp) == b""
            await up.aclose()
        assert server.connections == 1

    run(main)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
)
def test_a_truncated_body_is_an_error_never_a_short_body(answer: bytes) -> None:
    assert_cut_short(Server(fixed(answer), close_after=True))


def assert_cut_short(server: Server) -> None:
    """A GET to ``server``: its head arrives, its body raises, never ends short."""

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            resp = await up.send("GET", url + "/", [], b"")
            with pytest.raises(UpstreamUnreachable):
                await body(resp)
            await resp.aclose()
            await up.aclose()

    run(main)


def test_a_garbage_status_line_is_unreachable() -> None:
    server = Server(fixed(b"HTXP/1.1 2oo OK\r\n\r\n"))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            with pytest.raises(UpstreamUnreachable):
                await up.send("GET", url + "/", [], b"")
            await up.aclose()

    run(main)


def test_a_refused_connection_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        up = client()
        with pytest.raises(UpstreamUnreachable):
            await up.send("GET", f"http://127.0.0.1:{port}/", [], b"")
        await up.aclose()

    run(main)


def test_a_head_that_never_comes_times_out() -> None:
    async def silent(_s: Server, _n: int, _r: bytes) -> bytes | None:
        await asyncio.sleep(5)
        return None

    server = Server(silent)

    async def main() -> None:
        async with serving(server) as url:
            up = client(read_timeout=0.2)
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await up.send("GET", url + "/", [], b"")
            assert time.monotonic() - started < 1.0
            await up.aclose()
            assert server.writer is not None
            server.writer.close()

    run(main)


def test_a_full_pool_waits_then_is_overloaded_and_a_cancelled_waiter_leaks_nothing() -> None:
    server = Server(fixed(OK, OK, OK, OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client(max_connections=1, pool_timeout=0.2)
            held = await up.send("GET", url + "/", [], b"")
            with pytest.raises(Overloaded):
                await up.send("GET", url + "/", [], b"")
            waiter = asyncio.create_task(up.send("GET", url + "/", [], b""))
            await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            queued = asyncio.create_task(up.send("GET", url + "/", [], b""))
            await asyncio.sleep(0.05)
            assert await body(held) == b"hello"  # hands the connection to the queued one
            assert await body(await queued) == b"hello"
            assert await body(await up.send("GET", url + "/", [], b"")) == b"hello"
            await up.aclose()
        assert server.connections == 1

    run(main)


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ([("X-A", "a\r\nX-Evil: 1")], "/"),
        ([("X-A\nX-Evil", "1")], "/"),
        ([("X-A", "a\0")], "/"),
        ([], "/a\r\nX-Evil: 1"),
    ],
)
def test_a_header_with_a_line_break_is_refused_and_nothing_is_written(
    headers: list[tuple[str, str]], path: str
) -> None:
    server = Server(fixed(OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            with pytest.raises(InvalidData) as caught:
                await up.send("GET", url + path, headers, b"")
            assert caught.value.details == {"reason": "a header cannot be forwarded"}
            await asyncio.sleep(0.05)
            await up.aclose()
        assert (server.connections, server.requests) == (0, [])

    run(main)


def test_a_large_body_read_slowly_keeps_the_buffer_bounded() -> None:
    size = 5 * 1024 * 1024
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    server = Server(fixed(big))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            resp = await up.send("GET", url + "/", [], b"")
            conn = resp.chunks._conn  # type: ignore[attr-defined]
            received = peak = 0
            async for chunk in resp.chunks:
                received += len(chunk)
                await asyncio.sleep(0.01)
                peak = max(peak, conn.buffered)
            assert received == size
            assert 0 < peak <= 256 * 1024 + 256 * 1024  # the high-water mark and one read
            await up.aclose()

    run(main)


def test_a_next_chunk_that_never_comes_times_out() -> None:
    async def stall(s: Server, _n: int, _r: bytes) -> bytes | None:
        assert s.writer is not None
        s.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await asyncio.sleep(5)
        return None

    server = Server(stall)

    async def main() -> None:
        async with serving(server) as url:
            up = client(read_timeout=0.2)
            resp = await up.send("GET", url + "/", [], b"")
            with pytest.raises(UpstreamTimeout):
                await body(resp)
            await resp.aclose()
            await up.aclose()
            assert server.writer is not None
            server.writer.close()

    run(main)
