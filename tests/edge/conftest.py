"""Gateways at the HTTP edge: the real gateway under a chosen uvicorn parser, and a raw
socket client for requests no HTTP library will send.

``edge_gateway`` starts a gateway like ``make_gateway`` does, but with the parser and the
header bound ``serve`` would pass to uvicorn. ``parser`` (tests/conftest.py) runs a test
under h11 and httptools.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.policy import policy_from_mapping
from gateway.settings import Settings
from tests.conftest import AUTH, Crm, GatewayHandle
from tests.servers import ThreadedServer

EdgeGateway = Callable[..., GatewayHandle]


@pytest.fixture
def edge_gateway(crm: Crm, tmp_path: Path) -> Iterator[EdgeGateway]:
    started: list[tuple[ThreadedServer, httpx.Client]] = []

    def make(
        policy: dict[str, Any] | None = None,
        *,
        http: str = "auto",
        upstream: str | None = None,
        transport: str = "aiohttp",
    ) -> GatewayHandle:
        pol = policy_from_mapping({"audit": {"fsync": "never"}, **(policy or {})})
        log = tmp_path / f"edge{len(started)}.jsonl"
        settings = Settings.build(
            upstream=upstream or crm.url,
            audit_log=str(log),
            transport=transport,
            policy=pol,
            env={"GATEWAY_SECRET": "test-secret"},
        )
        app = create_app(settings)
        server = ThreadedServer(app, http=http, max_header_bytes=settings.max_header_bytes).start()
        client = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
        started.append((server, client))
        return GatewayHandle(server.url, app, client, log)

    yield make
    for server, client in started:
        client.close()
        server.stop()


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = False  # the gateway closed the connection right after this reply

    def json(self) -> Any:
        return orjson.loads(self.body)


def head(
    *lines: str,
    target: str = "/crm/v8/settings/modules",
    method: str = "GET",
    host: str | None = "127.0.0.1",
    eol: str = "\r\n",
) -> bytes:
    """A request head: the request line, ``Host`` (unless None), the client's token, then
    ``lines`` as written. The caller sends any body."""
    out = [f"{method} {target} HTTP/1.1"]
    out += [f"Host: {host}"] if host is not None else []
    out += [f"Authorization: {AUTH['Authorization']}", *lines]
    return (eol.join(out) + eol + eol).encode("latin-1")


class RawClient:
    """One TCP connection to a gateway, written byte by byte as the test says."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _fill(self, deadline: float) -> bool:
        """Read more; False once the peer has closed."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def reply(self, timeout: float = 10.0) -> RawReply:
        """The next reply (its body framed by Content-Length)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                raise ConnectionError(f"closed before a reply: {self.buffer[:200]!r}")
        raw_head, _, rest = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        open_ = True
        while len(rest) < length and open_:
            self.buffer = rest
            open_ = self._fill(deadline)
            rest = self.buffer
        body, self.buffer = rest[:length], rest[length:]
        return RawReply(int(status_line.split(" ")[1]), headers, body)

    def closed(self, within: float = 2.0) -> bool:
        """Whether the gateway closes the connection within ``within`` seconds, sooner than
        uvicorn's keep-alive timeout (5 s) would."""
        deadline = time.monotonic() + within
        while True:
            try:
                if not self._fill(deadline):
                    return True
            except TimeoutError:
                return False


def exchange(url: str, data: bytes, timeout: float = 10.0) -> RawReply:
    """Send ``data`` on a new connection; the reply, and whether the connection closed."""
    client = RawClient(url, timeout)
    try:
        client.send(data)
        reply = client.reply(timeout)
        reply.closed = client.closed()
        return reply
    finally:
        client.close()


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until ``check()`` is truthy (an audit entry written after the client left)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
    return found


def envelope_of(reply: RawReply, status: int, code: str) -> dict[str, Any]:
    """Assert the CRM's error envelope on a raw reply; return its details."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert set(body) == {"code", "details", "message", "status"}, body
    assert body["code"] == code and body["status"] == "error", body
    details: dict[str, Any] = body["details"]
    return details


def parser_refusal(
    gw: GatewayHandle, reply: RawReply, status: int = 400, reason: str = "malformed_http"
) -> None:
    """A request the HTTP parser refused (``gateway.http1``): the CRM envelope, the
    connection closed, and one audit entry, already written when the answer arrives."""
    code = "INVALID_DATA" if status == 400 else "GATEWAY_HEADERS_TOO_LARGE"
    envelope_of(reply, status, code)
    assert reply.closed
    (entry,) = gw.requests()
    assert entry["status"] == status and entry["reasons"] == [reason], entry
    assert entry["request_id"] == reply.headers["x-gateway-request-id"]
