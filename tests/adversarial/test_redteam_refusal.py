"""Red team of 5a13432: a request the HTTP parser refused is answered only once its audit
entry is written, the connection paused meanwhile (``gateway.http1``). What that wait
opened, under both parsers, over real sockets:

- httptools refused one read twice: a malformed head in a read over the head bound got
  its 400 and then a 431 (two audit entries for one request, one never answered);
- h11 parses a pipelined request right after arming uvicorn's keep-alive timer: an entry
  slower than the timer lost the refusal (the connection closed with no answer);
- a graceful shutdown closed a connection whose refusal waited for its entry (the entry
  says 400, the client got nothing).

The rest are guards for attacks that did not work.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.audit import AuditTrail
from gateway.audit.logfile import LogFile
from gateway.policy import policy_from_mapping
from gateway.settings import Settings
from tests.conftest import Crm
from tests.edge.conftest import (
    EdgeGateway,
    RawClient,
    edge_gateway,
    envelope_of,
    exchange,
    head,
    wait_for,
)
from tests.servers import ThreadedServer

__all__ = ["edge_gateway"]  # the fixture, for this directory

MODULES = "/crm/v8/settings/modules"
BAD = head("X-Note: a", eol="\n")  # a bare LF: refused by both parsers


class SlowDisk(LogFile):
    """An audit disk whose fsync takes ``delay`` seconds."""

    delay = 0.3

    def sync(self) -> None:
        time.sleep(SlowDisk.delay)
        super().sync()


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> type[SlowDisk]:
    monkeypatch.setattr(AuditTrail, "file_class", SlowDisk)
    monkeypatch.setattr(SlowDisk, "delay", 0.3)
    return SlowDisk


class Served:
    def __init__(self, server: ThreadedServer, log: Path) -> None:
        self.server, self.url, self.log = server, server.url, log

    def requests(self) -> list[dict[str, object]]:
        import json

        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [e for e in map(json.loads, lines) if e.get("event") == "request"]


@pytest.fixture
def served(crm: Crm, tmp_path: Path) -> Iterator[object]:
    """A gateway (fsync "always") whose uvicorn keep-alive timeout the test picks."""
    started: list[ThreadedServer] = []

    def make(parser: str, keep_alive: float = 5.0) -> Served:
        log = tmp_path / f"audit{len(started)}.jsonl"
        settings = Settings.build(
            upstream=crm.url,
            audit_log=str(log),
            policy=policy_from_mapping({"audit": {"fsync": "always"}}),
            env={"GATEWAY_SECRET": "test-secret"},
        )
        server = ThreadedServer(create_app(settings), http=parser, graceful_shutdown_s=3)
        server.server.config.timeout_keep_alive = keep_alive  # read by each new connection
        started.append(server.start())
        return Served(server, log)

    yield make
    for server in started:
        server.stop()


# -- findings ---------------------------------------------------------------------------


def test_a_malformed_head_over_the_bound_in_one_read_is_refused_and_audited_once(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """httptools counted the bytes of a read its parser had just refused as a head still
    incomplete and, past the bound, refused the same request again with 431: a second
    audit entry for an answer that never left (the connection, only paused now, was no
    longer closing)."""
    gw = edge_gateway(http=parser)
    reply = exchange(gw.url, head("Bad Header Line", "X-Pad: " + "a" * 60_000))
    envelope_of(reply, 400, "INVALID_DATA")
    assert reply.closed
    time.sleep(0.3)  # a second entry would be written in the same batch
    (entry,) = gw.requests()
    assert entry["request_id"] == reply.headers["x-gateway-request-id"]
    assert entry["status"] == 400 and entry["reasons"] == ["malformed_http"], entry


def test_a_pipelined_refusal_outlives_the_keep_alive_timer(
    crm: Crm, served: object, parser: str, slow_disk: type[SlowDisk]
) -> None:
    """h11 parses a pipelined request right after arming the keep-alive timer for the
    answer before it: an entry slower than the timer (here 0.2 s against a 0.6 s fsync, in
    production 5 s against a stalled disk) closed the connection with no answer."""
    slow_disk.delay = 0.6
    gw = served(parser, keep_alive=0.2)  # type: ignore[operator]
    client = RawClient(gw.url)
    try:
        client.send(head(target=MODULES) + BAD)
        assert client.reply().status == 200
        second = client.reply()
        assert client.closed()
    finally:
        client.close()
    envelope_of(second, 400, "INVALID_DATA")
    ids = [e["request_id"] for e in gw.requests()]
    assert len(ids) == 2 and ids[1] == second.headers["x-gateway-request-id"], ids


def test_a_refusal_waiting_for_its_entry_is_answered_through_a_graceful_shutdown(
    crm: Crm, served: object, parser: str, slow_disk: type[SlowDisk]
) -> None:
    """uvicorn's shutdown closed every connection with no request in the application at
    once, a refusal waiting for its entry included: its entry said 400, the client got
    a bare close. The shutdown now waits for the answer, as for any request."""
    slow_disk.delay = 0.6
    gw = served(parser)  # type: ignore[operator]
    client = RawClient(gw.url)
    stopper = threading.Thread(target=gw.server.stop)
    try:
        client.send(BAD)
        time.sleep(0.2)  # the entry is being fsynced
        stopper.start()
        reply = client.reply()
        assert client.closed()
    finally:
        stopper.join()
        client.close()
    envelope_of(reply, 400, "INVALID_DATA")
    (entry,) = gw.requests()
    assert entry["request_id"] == reply.headers["x-gateway-request-id"]


# -- guards: attacks that did not work ------------------------------------------------------


def test_nothing_after_a_refusal_reaches_the_crm_same_packet_or_trickled(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, slow_disk: type[SlowDisk]
) -> None:
    """A request in the application (the CRM slow), a malformed one behind it, then a
    valid one in the same packet and more trickled in while the entry is written: only
    the first reaches the CRM; the refusal comes after its answer, then the close."""
    gw = edge_gateway({"audit": {"fsync": "always"}}, http=parser)
    crm.clear()
    crm.fault(path_contains="/settings/modules", delay=0.4, times=1)
    after = head(target="/crm/v8/settings/modules?after=1")
    client = RawClient(gw.url)
    try:
        client.send(head(target=MODULES) + BAD + after)
        for _ in range(3):
            time.sleep(0.1)
            try:
                client.send(after)
            except OSError:
                break
        first, second = client.reply(), client.reply()
        assert client.closed()
    finally:
        client.close()
    assert first.status == 200
    envelope_of(second, 400, "INVALID_DATA")
    assert [r["path"] for r in crm.received()] == [MODULES]
    assert len(gw.requests()) == 2


def test_a_client_gone_before_the_entry_is_written_still_leaves_one_entry(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, slow_disk: type[SlowDisk]
) -> None:
    gw = edge_gateway({"audit": {"fsync": "always"}}, http=parser)
    sock = socket.create_connection(gw.url.removeprefix("http://").split(":"))  # type: ignore[arg-type]
    sock.sendall(BAD)
    sock.close()
    (entry,) = wait_for(gw.requests)
    assert entry["status"] == 400 and entry["reasons"] == ["malformed_http"]
    assert gw.http.get(MODULES).status_code == 200  # the worker still serves


def test_a_trickled_head_over_the_bound_is_one_431_and_one_entry(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, slow_disk: type[SlowDisk]
) -> None:
    gw = edge_gateway({"audit": {"fsync": "always"}}, http=parser)
    client = RawClient(gw.url)
    try:
        client.send(head(target=MODULES)[:-2])  # the head is never ended
        for _ in range(12):
            try:
                client.send(b"X-Pad: " + b"a" * 8000 + b"\r\n")
            except OSError:
                break
            time.sleep(0.01)
        reply = client.reply()
        assert client.closed()
    finally:
        client.close()
    envelope_of(reply, 431, "GATEWAY_HEADERS_TOO_LARGE")
    time.sleep(0.4)
    (entry,) = gw.requests()
    assert entry["request_id"] == reply.headers["x-gateway-request-id"]


def test_many_refusals_at_once_are_each_answered_once_their_entries_are_written(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, slow_disk: type[SlowDisk]
) -> None:
    gw = edge_gateway({"audit": {"fsync": "always"}}, http=parser)
    clients = [RawClient(gw.url) for _ in range(40)]
    try:
        for client in clients:
            client.send(BAD)
        replies = [client.reply() for client in clients]
    finally:
        for client in clients:
            client.close()
    for reply in replies:
        envelope_of(reply, 400, "INVALID_DATA")
    written = {e["request_id"] for e in gw.requests()}
    assert written == {r.headers["x-gateway-request-id"] for r in replies}
    assert len(written) == 40
