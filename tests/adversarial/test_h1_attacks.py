"""Red team of the ``h1`` upstream transport: a hostile or broken CRM (or load balancer, or
network path) against the keep-alive pool.

The worst outcome is an answer meant for one request read as another's (one client would
see another client's records), so most tests send several requests and check that each
answer is its own: the servers below echo the request's ``X-Id`` into the body. Real
sockets on 127.0.0.1, no mocks; every test runs on asyncio and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import Overloaded, UpstreamTimeout, UpstreamUnreachable
from gateway.h1 import H1Upstream
from gateway.upstream import UpstreamResponse
from tests.test_h1 import (
    OK,
    Server,
    assert_cut_short,
    body,
    client,
    fixed,
    loop_factory,  # noqa: F401 (the autouse fixture: every test on both loops)
    read_request,
    run,
    serving,
)

Answer = Callable[[Server, int, bytes], Awaitable[bytes | None]]
GOOD = (UpstreamUnreachable, UpstreamTimeout)


def request_id(request: bytes) -> bytes:
    for line in request.split(b"\r\n"):
        if line.lower().startswith(b"x-id:"):
            return line.split(b":", 1)[1].strip()
    return b"?"


def own(rid: bytes) -> bytes:
    """The answer a request with ``X-Id: rid`` must get (and nobody else)."""
    text = b"for " + rid
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)


async def echo(_s: Server, _n: int, request: bytes) -> bytes | None:
    return own(request_id(request))


async def get(up: H1Upstream, url: str, rid: str) -> bytes:
    resp = await up.send("GET", url + "/", [("X-Id", rid)], b"")
    try:
        return await body(resp)
    finally:
        await resp.aclose()


def then_echo(*first: bytes | None) -> Answer:
    """The first request on the first connection gets ``first`` (written as given, with
    a pause between the parts); every other request gets its own answer."""

    async def answer(s: Server, n: int, request: bytes) -> bytes | None:
        if s.connections == 1 and n == 0:
            assert s.writer is not None
            for part in first[:-1]:
                s.writer.write(part or b"")
                await s.writer.drain()
                await asyncio.sleep(0.05)
            return first[-1]
        return own(request_id(request))

    return answer


# -- framing: every odd answer is either read right or refused, and the next is its own --


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Transfer-Encoding whose last coding is not chunked: the body ends at EOF
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello", None),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
            None,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\nhello", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhello", None),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5;a=b;c="d"\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n',
            b"hello",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\ngarbage\r\n\r\n", None),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n" + OK,
            None,
        ),
        # an answer to request 2 pipelined behind a 204 or a 304 that carries a "body"
        (b"HTTP/1.1 204 No Content\r\n\r\n" + own(b"2"), b""),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n" + own(b"2"), b""),
    ],
)
def test_odd_framing_is_read_right_or_refused_and_the_next_answer_is_its_own(
    answer: bytes, expected: bytes | None
) -> None:
    server = Server(then_echo(answer))

    async def main() -> None:
        async with serving(server) as url:
            up = client(read_timeout=0.3)
            if expected is None:
                with pytest.raises(GOOD):
                    await get(up, url, "1")
            else:
                assert await get(up, url, "1") == expected
            assert await get(up, url, "2") == b"for 2"
            assert await get(up, url, "3") == b"for 3"
            await up.aclose()

    run(main)


def test_a_status_below_100_is_refused_never_merged_into_the_next_answer() -> None:
    """``HTTP/1.1 099`` is not an interim answer (1xx) and not a final one: its body
    must not be read as the start of the final answer's body."""
    fake = b"HTTP/1.1 099 Odd\r\nContent-Length: 6\r\n\r\nSTOLEN"
    server = Server(then_echo(fake + own(b"1")))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            with pytest.raises(UpstreamUnreachable):
                await get(up, url, "1")
            assert await get(up, url, "2") == b"for 2"
            await up.aclose()

    run(main)


def test_a_head_answer_with_a_body_does_not_answer_the_next_request() -> None:
    server = Server(then_echo(own(b"1") + own(b"2")))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            resp = await up.send("HEAD", url + "/", [("X-Id", "1")], b"")
            assert (resp.status, await body(resp)) == (200, b"")
            assert await get(up, url, "2") == b"for 2"
            await up.aclose()
        assert server.connections == 2

    run(main)


# -- bytes nobody asked for, late answers --


def test_extra_bytes_in_a_later_packet_while_idle_never_answer_the_next_request() -> None:
    server = Server(then_echo(own(b"1"), own(b"2") * 3))

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            assert await get(up, url, "1") == b"for 1"
            await asyncio.sleep(0.2)  # the extra answers come while the connection is idle
            assert await get(up, url, "2") == b"for 2"
            assert await get(up, url, "3") == b"for 3"
            await up.aclose()

    run(main)


def test_an_answer_that_comes_after_its_request_timed_out_is_never_the_next_ones() -> None:
    async def late(s: Server, n: int, request: bytes) -> bytes | None:
        if s.connections == 1 and n == 0:
            await asyncio.sleep(0.3)  # after the read timeout: answers request 1 late
            return own(b"1")
        return own(request_id(request))

    server = Server(late)

    async def main() -> None:
        async with serving(server) as url:
            up = client(read_timeout=0.1)
            with pytest.raises(UpstreamTimeout):
                await get(up, url, "1")
            for rid in ("2", "3", "4"):
                assert await get(up, url, rid) == b"for " + rid.encode()
                await asyncio.sleep(0.1)
            await up.aclose()

    run(main)


@pytest.fixture
def thread_server() -> Iterator[tuple[int, list[int]]]:
    """A server in a thread (so it writes while the client's event loop is busy). On its
    first connection it answers request 1, then 50 ms later a second, unasked answer
    shaped as the next one's; every other request gets its own answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []

    def serve(conn: socket.socket, first: bool) -> None:
        buf = b""
        with conn, contextlib.suppress(OSError):  # the client may close it: ours to see
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                conn.sendall(own(request_id(head)))
                if first:
                    first = False
                    time.sleep(0.05)
                    conn.sendall(own(b"2"))  # as if it answered a request 2

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            threading.Thread(target=serve, args=(conn, len(connections) == 1), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], connections
    listener.close()


@pytest.mark.parametrize("queued", [False, True], ids=["from-the-idle-list", "handed-to-a-waiter"])
def test_an_unasked_answer_waiting_unread_in_the_socket_is_not_read_as_the_next_one(
    thread_server: tuple[int, list[int]], queued: bool
) -> None:
    """A busy event loop (the gateway redacting a large page) has not yet read what came
    on a connection when the next request takes it (from the idle list, or as the one
    waiter it was handed to): bytes already waiting in the socket before the request is
    written cannot be its answer."""
    port, connections = thread_server
    url = f"http://127.0.0.1:{port}"

    async def first(up: H1Upstream) -> bytes:
        got = await get(up, url, "1")
        time.sleep(0.2)  # the loop is busy; meanwhile the unasked answer arrives
        return got

    async def main() -> None:
        up = client(max_connections=1)
        if queued:
            held = asyncio.ensure_future(first(up))
            await asyncio.sleep(0)
            assert await asyncio.gather(held, get(up, url, "3")) == [b"for 1", b"for 3"]
        else:
            assert await first(up) == b"for 1"
            assert await get(up, url, "3") == b"for 3"
        assert await get(up, url, "4") == b"for 4"
        await up.aclose()
        assert len(connections) == 2

    run(main)


def test_an_answer_before_the_request_body_is_written_does_not_keep_the_connection() -> None:
    """The CRM (or a load balancer) answers a large upload at once, before reading it,
    and keeps the connection: whatever it then reads from the rest of the body must not
    decide the answer to the next request (here the body holds a request of its own)."""
    smuggled = b"GET /smuggled HTTP/1.1\r\nX-Id: smuggled\r\n\r\n"
    upload = smuggled * (8 * 1024 * 1024 // len(smuggled))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a naive server: answers each head at once and reads the body as more requests
        server.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(own(request_id(head)))
                await writer.drain()
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = Server(echo)
    server.handle = handle  # type: ignore[method-assign]

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            resp = await up.send("POST", url + "/upload", [("X-Id", "1")], upload)
            assert await body(resp) == b"for 1"
            assert await get(up, url, "2") == b"for 2"
            await up.aclose()

    run(main)


# -- bounds --


PAD = b"X-Pad: " + b"a" * 1000 + b"\r\n"


@pytest.mark.parametrize(
    ("start", "lines"),
    [
        (b"HTTP/1.1 200 OK\r\n", PAD),  # an endless head
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", PAD),
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),  # a storm of interim answers
    ],
    ids=["head", "trailers", "interim"],
)
def test_endless_header_lines_are_refused_before_they_fill_memory(
    start: bytes, lines: bytes
) -> None:
    """Header lines without end (or interim answers without end): the answer is refused
    once they are far larger than any CRM's head, long before the read timeout (the
    head grew by gigabytes at loopback speed)."""

    async def endless(s: Server, _n: int, _r: bytes) -> bytes | None:
        assert s.writer is not None
        s.writer.write(start)
        while not s.writer.is_closing():
            s.writer.write(lines * (64 * 1024 // len(lines)))
            await s.writer.drain()
        return None

    server = Server(endless)

    async def main() -> None:
        async with serving(server) as url:
            up = client(read_timeout=5.0)
            started = time.monotonic()
            with pytest.raises(UpstreamUnreachable):
                await body(await up.send("GET", url + "/", [], b""))
            assert time.monotonic() - started < 1.0
            await up.aclose()

    run(main)


# -- cancellation and the pool --


def test_cancellation_at_every_await_point_leaks_nothing_and_desyncs_nothing() -> None:
    """The caller is cancelled while connecting, waiting for the head, in the middle of
    the body and while queued for the one connection; each later answer is its own and
    the pool still serves (no slot lost: max_connections=1)."""

    async def slow(s: Server, n: int, request: bytes) -> bytes | None:
        rid = request_id(request)
        if rid.startswith(b"head"):
            await asyncio.sleep(0.1)
            return own(rid)
        if rid.startswith(b"body"):
            assert s.writer is not None
            s.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfor ")
            await asyncio.sleep(0.1)
            return rid[:8].ljust(8, b".")
        return own(rid)

    server = Server(slow)

    async def cancelled_after(delay: float, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def main() -> None:
        async with serving(server) as url:
            up = client(max_connections=1, pool_timeout=1.0)
            await cancelled_after(0, get(up, url, "connect"))  # during the connect
            assert await get(up, url, "a") == b"for a"
            await cancelled_after(0.02, get(up, url, "head1"))
            assert await get(up, url, "b") == b"for b"
            await cancelled_after(0.02, get(up, url, "body1"))
            assert await get(up, url, "c") == b"for c"
            # queued behind a request that holds the one connection
            holder = asyncio.ensure_future(get(up, url, "head2"))
            await asyncio.sleep(0.01)
            await cancelled_after(0.01, get(up, url, "queued"))
            assert await holder == b"for head2"
            assert await get(up, url, "d") == b"for d"
            # released without reading the body
            resp = await up.send("GET", url + "/", [("X-Id", "body2")], b"")
            await resp.aclose()
            assert await get(up, url, "e") == b"for e"
            await up.aclose()

    run(main)


@pytest.mark.parametrize("hostile", [False, True], ids=["honest", "hostile"])
@pytest.mark.parametrize("max_connections", [1, 2, 3])
def test_random_concurrency_and_cancellation_never_crosses_answers(
    max_connections: int, hostile: bool
) -> None:
    """300 requests, some cancelled at random; a hostile server also answers some late
    (after the read timeout), some twice, some not at all, and cuts some bodies short.
    Every answer a caller reads is its own; every failure is one of the gateway's."""
    rng = random.Random(max_connections)
    hostility = [hostile]  # off again once the storm is over

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            while (request := await read_request(reader)) is not None:
                await asyncio.sleep(rng.random() * 0.004)
                rid = request_id(request)
                roll = rng.random() if hostility[0] else 1.0
                if roll < 0.05:
                    await asyncio.sleep(0.06)  # late: after the read timeout
                elif roll < 0.1:
                    # and an unasked one in the same packet (one that comes after the next
                    # request is written cannot be told from its answer, by any client)
                    writer.write(own(rid) + own(b"unasked"))
                    continue
                elif roll < 0.15:
                    break  # no answer
                elif roll < 0.2:
                    writer.write(own(rid)[:-2])  # cut short
                    break
                if int(rid) % 5 == 0:  # chunked, written in two parts
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfor \r\n"
                    )
                    await asyncio.sleep(rng.random() * 0.004)
                    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rid), rid))
                else:
                    writer.write(own(rid))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = Server(echo)
    server.handle = handle  # type: ignore[method-assign]

    answered: list[int] = []

    async def one(up: H1Upstream, url: str, i: int) -> None:
        try:
            got = await get(up, url, str(i))
        except (Overloaded, UpstreamUnreachable, UpstreamTimeout):
            return
        assert got == b"for %d" % i
        answered.append(i)

    async def main() -> None:
        async with serving(server) as url:
            up = client(max_connections=max_connections, pool_timeout=2.0, read_timeout=0.05)
            tasks = []
            for i in range(300):
                tasks.append(asyncio.ensure_future(one(up, url, i)))
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.random() * 0.003)
                if rng.random() < 0.2:
                    rng.choice(tasks).cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                assert r is None or isinstance(r, asyncio.CancelledError), r
            # nothing leaked: every slot is an idle connection, and the pool still serves
            assert up._slots == sum(len(idle) for idle in up._idle.values())
            hostility[0] = False
            for i in range(1000, 1000 + max_connections + 2):
                assert await get(up, url, str(i)) == b"for %d" % i
            await up.aclose()
        assert len(answered) > 100

    run(main)


def test_a_reset_in_the_middle_of_the_body_is_an_error_never_a_short_body() -> None:
    async def reset(s: Server, _n: int, _r: bytes) -> bytes | None:
        assert s.writer is not None
        s.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
        await s.writer.drain()
        await asyncio.sleep(0.05)
        sock = s.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.writer.transport.abort()  # RST
        return None

    assert_cut_short(Server(reset))


def test_a_body_until_eof_cut_by_closing_the_transport_is_an_error_never_a_short_body() -> None:
    """A body that ends at EOF (no length, not chunked) is cut when the gateway shuts the
    transport down (``aclose``) while a client still streams it: the EOF that follows our
    own close is not the CRM's end of the body."""

    async def stream(s: Server, _n: int, _r: bytes) -> bytes | None:
        assert s.writer is not None
        s.writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one;")
        await asyncio.sleep(0.5)
        return b"part two"

    server = Server(stream, close_after=True)

    async def main() -> None:
        async with serving(server) as url:
            up = client()
            resp = await up.send("GET", url + "/", [], b"")
            reading = asyncio.ensure_future(body(resp))
            await asyncio.sleep(0.1)
            await up.aclose()
            with pytest.raises(UpstreamUnreachable):
                await reading

    run(main)


def test_a_response_dropped_unreleased_gives_its_slot_back() -> None:
    """A caller that fails between ``send`` and reading the answer (a handler whose next
    await raises, as the bulk export's non-200 branch may) drops the response without
    ``aclose``: its slot must come back, or the pool shrinks until every request is 503."""
    server = Server(then_echo(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"))

    async def main() -> None:
        async with serving(server) as url:
            up = client(max_connections=1, pool_timeout=0.5)
            resp = await up.send("GET", url + "/", [("X-Id", "1")], b"")
            del resp
            gc.collect()
            assert await get(up, url, "2") == b"for 2"
            await up.aclose()

    run(main)


def test_a_body_released_unread_gives_its_slot_to_the_queued_request() -> None:
    server = Server(fixed(OK, OK, OK))

    async def main() -> None:
        async with serving(server) as url:
            up = client(max_connections=1, pool_timeout=1.0)
            held = await up.send("GET", url + "/", [], b"")
            queued = asyncio.ensure_future(up.send("GET", url + "/", [], b""))
            await asyncio.sleep(0.02)
            await held.aclose()  # body unread: closed, the slot goes to the queued one
            resp: UpstreamResponse = await queued
            assert await body(resp) == b"hello"
            assert await body(await up.send("GET", url + "/", [], b"")) == b"hello"
            await up.aclose()

    run(main)


def test_over_tls_a_body_that_only_a_close_ends_is_never_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS a TCP close without close_notify looks like a clean one, so whoever sits on
    the path could cut a close-delimited body short: such a body is refused, while a framed
    one on the same server reads whole."""
    from tests.test_forward import _self_signed

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client's default context trusts it
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    unframed = b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nhello"

    async def main() -> None:
        for answer, whole in ((OK, True), (unframed, False)):
            server = Server(fixed(answer), close_after=True)
            listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=server_tls)
            port = listener.sockets[0].getsockname()[1]
            up = client()
            try:
                resp = await up.send("GET", f"https://127.0.0.1:{port}/", [], b"")
                assert resp.status == 200
                if whole:
                    assert await body(resp) == b"hello"
                else:
                    with pytest.raises(UpstreamUnreachable):
                        await body(resp)
            finally:
                await up.aclose()
                listener.close()

    run(main)
