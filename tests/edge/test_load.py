"""Load at the edge (engineering-anchors §B.4, "Load"): past a limit the gateway answers
503 with ``Retry-After`` at once instead of queueing, and a slow client cannot hold a
request open past the body deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import AUTH, Crm, GatewayHandle, envelope
from tests.edge.conftest import EdgeGateway, RawClient, envelope_of, head, wait_for
from tests.servers import serve

SLOW = "/crm/v8/settings/modules"


@contextmanager
def in_background(call: Callable[[], httpx.Response]) -> Iterator[list[httpx.Response]]:
    """Run ``call`` in a thread; its response is in the list once the block ends."""
    out: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    try:
        yield out
    finally:
        thread.join(timeout=30)


def _slow_get(gw: GatewayHandle) -> Callable[[], httpx.Response]:
    return lambda: httpx.get(gw.url + SLOW, headers=AUTH, timeout=30)


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = call()
    return r, time.monotonic() - started


# -- 42: requests in flight ----------------------------------------------------------------


def test_c42_past_the_concurrency_limit_requests_get_503_at_once(
    crm: Crm, edge_gateway: EdgeGateway
) -> None:
    gw = edge_gateway({"limits": {"max_concurrent_requests": 2}})
    crm.clear()
    crm.fault(path_contains=SLOW, delay=4.0, times=2)
    with in_background(_slow_get(gw)) as first, in_background(_slow_get(gw)) as second:
        wait_for(lambda: len(crm.received(SLOW)) == 2)
        r, took = _timed(lambda: gw.http.get("/crm/v8/org"))
        envelope(r, 503, "GATEWAY_OVERLOADED")
        assert r.headers["retry-after"] == "1"
        assert took < 3.0  # never queued behind the slow two (4 s each): a bound, no speed
    assert [x.status_code for x in first + second] == [200, 200]
    assert not crm.received("/crm/v8/org")
    refused = [e for e in gw.requests() if e["status"] == 503]
    assert len(refused) == 1 and refused[0]["outcome"] == "error"
    # The slots are given back: the next request is admitted.
    assert gw.http.get(SLOW).status_code == 200


# -- 43: the upstream connection pool --------------------------------------------------------


@pytest.mark.parametrize("transport", ["aiohttp", "httpx", "h1"])
def test_c43_a_full_upstream_pool_gets_503_within_the_pool_timeout_not_504(
    crm: Crm, edge_gateway: EdgeGateway, transport: str
) -> None:
    gw = edge_gateway(
        {"limits": {"max_upstream_connections": 1, "pool_timeout_seconds": 0.3}},
        transport=transport,
    )
    crm.clear()
    crm.fault(path_contains=SLOW, delay=4.0, times=1)
    with in_background(_slow_get(gw)) as first:
        wait_for(lambda: crm.received(SLOW))
        r, took = _timed(lambda: gw.http.get(SLOW))
        envelope(r, 503, "GATEWAY_OVERLOADED")
        assert r.headers["retry-after"] == "1"
        assert 0.3 <= took < 3.0  # waited the pool timeout, not for the slow one (4 s)
    assert first[0].status_code == 200
    assert len(crm.received(SLOW)) == 1  # the refused one never reached the CRM
    # A full pool is no failure of the CRM: the breaker stays closed.
    assert gw.http.get(SLOW).status_code == 200


# -- 46: a slow-drip body --------------------------------------------------------------------


def test_c46_a_body_dripping_one_byte_a_second_is_cut_off_with_408(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    gw = edge_gateway({"limits": {"body_read_timeout_seconds": 1}}, http=parser)
    crm.clear()
    client = RawClient(gw.url)
    stop = threading.Event()

    def drip() -> None:
        try:
            while not stop.wait(1.0):
                client.send(b"x")
        except OSError:
            pass  # cut off

    started = time.monotonic()
    client.send(head("Content-Length: 60", method="POST", target="/crm/v8/Leads") + b"x")
    dripper = threading.Thread(target=drip)
    dripper.start()
    try:
        # Other clients are not slowed meanwhile.
        r, took = _timed(lambda: gw.http.get(SLOW))
        assert r.status_code == 200 and took < 5.0
        reply = client.reply(timeout=10)
        took = time.monotonic() - started
    finally:
        stop.set()
        dripper.join()
        client.close()
    envelope_of(reply, 408, "GATEWAY_BODY_TIMEOUT")
    assert 1.0 <= took < 30.0  # cut off at the deadline, long before 60 bytes dripped in
    assert reply.headers["connection"] == "close"
    assert not crm.received("/crm/v8/Leads")
    (entry,) = [e for e in gw.requests() if e["status"] == 408]
    assert entry["outcome"] == "refused"


# -- 47: slow readers of large responses ---------------------------------------------------

_META = {
    "/crm/v8/org": {"org": [{"id": "1", "privacy_settings": True}]},
    "/crm/v8/settings/modules": {"modules": [{"api_name": "Leads", "generated_type": "default"}]},
    "/crm/v8/settings/fields": {"fields": [{"api_name": "Last_Name", "data_type": "text"}]},
}


def test_c47_a_client_that_stops_reading_a_large_photo_holds_back_the_crm_not_memory(
    edge_gateway: EdgeGateway, parser: str
) -> None:
    """A 256 MiB photo streams through; the client reads its first bytes and then nothing
    for two seconds. Backpressure reaches the CRM: what it has been able to send (all that
    can sit in the gateway and the socket buffers between) stays a few MiB."""
    produced = [0]
    chunk = b"\x00" * 65536

    async def photo(request: Request) -> Response:
        if request.url.path in _META:
            return Response(orjson.dumps(_META[request.url.path]), media_type="application/json")

        async def body() -> AsyncIterator[bytes]:
            for _ in range(4096):  # 256 MiB
                produced[0] += len(chunk)
                yield chunk

        return StreamingResponse(body(), media_type="image/png")

    upstream_app = Starlette(routes=[Route("/{path:path}", photo)])
    with serve(upstream_app) as upstream:
        gw = edge_gateway(http=parser, upstream=upstream.url)
        client = RawClient(gw.url)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        try:
            client.send(head("Connection: close", target="/crm/v8/Leads/1/photo"))
            while b"\r\n\r\n" not in client.buffer:
                client._fill(time.monotonic() + 10)
            assert b" 200 " in client.buffer.split(b"\r\n")[0]
            time.sleep(2)
            held_back = produced[0]
            read = len(client.buffer)
            deadline = time.monotonic() + 10
            while read < 8 * 1024 * 1024 and client._fill(deadline):  # it still flows
                read += len(client.buffer)
                client.buffer = b""
        finally:
            client.close()
    assert held_back < 32 * 1024 * 1024, held_back  # of 256 MiB
    assert read >= 8 * 1024 * 1024
