"""How the gateway meets HTTP/1.1: uvicorn's options, the request-head checks that hold
whichever parser runs, and a uvicorn server in a background thread (for the demo, the
benchmark and the tests, which run the real servers exactly as ``serve`` does).

``uvicorn_options`` is the one place both ``serve`` and ``ThreadedServer`` take uvicorn's
HTTP/1.1 settings from. The two parsers do not refuse the same things: h11 unfolds obs-fold
lines, takes bare LF line ends and passes Content-Length beside Transfer-Encoding on, and
refuses two Host headers; httptools refuses the first three itself and passes two Host
headers on. ``gateway.http1`` makes h11 refuse bare LF and obs-fold too, bounds the head
under httptools too, and answers whatever a parser refuses in the CRM envelope with an
audit entry; whatever the parser passes on, ``check_head`` judges from the ASGI scope.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn
from starlette.types import Scope

from gateway.errors import BodyTooLarge, HeadersTooLarge, InvalidData, NotSupported
from gateway.http1 import REQUEST_LINE_ROOM, protocol_class

log = structlog.get_logger("gateway")

# A Host value: a name or an IPv4 address, or a bracketed IPv6 address, and an optional port.
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.\-]+)(?::[0-9]{1,5})?")

#: how long ``serve`` lets requests in flight finish after SIGTERM (Kubernetes'
#: ``terminationGracePeriodSeconds`` must be longer than the preStop pause plus this)
DRAIN_SECONDS = 10
#: uvicorn's HTTP/1.1 parsers; "auto" is httptools when it is installed, else h11
PARSERS = ("auto", "h11", "httptools")
_DEFAULT_HEADER_BYTES = 32 * 1024  # settings.py ``max_header_bytes``


# -- the request head -------------------------------------------------------------------


def default_hosts(listen: str) -> tuple[str, ...]:
    """The hosts served when the policy names none: the listen address and loopback. A
    wildcard listen address (``0.0.0.0``, ``::``: a container, a sidecar) names no host of
    its own, so any Host is served until the policy's ``allowed_hosts`` names them."""
    listen = listen.lower()
    if listen in ("0.0.0.0", "::", ""):
        return ("*",)
    return (f"[{listen}]" if ":" in listen else listen, "localhost", "127.0.0.1")


def host_allowed(value: bytes, patterns: tuple[str, ...]) -> bool:
    """Whether a ``Host`` value (any port) names a host in ``patterns``: exact names, "*",
    or "*.example.com" for its subdomains (Starlette's ``TrustedHostMiddleware`` rule)."""
    m = _HOST.fullmatch(value.decode("latin-1").lower())
    if m is None:
        return False
    name = m.group(1)
    return any(
        p == "*" or p == name or (p.startswith("*.") and name.endswith(p[1:])) for p in patterns
    )


def check_head(
    scope: Scope, max_header_bytes: int, max_request_body: int, hosts: tuple[str, ...]
) -> bool:
    """Refuse a request head before any body byte is read: pure, the ASGI scope in, an
    error out. Exactly one ``Host`` is required, HTTP/1.0 included. Returns whether the
    head declares a body (Content-Length or Transfer-Encoding)."""
    size = 0
    lengths: list[bytes] = []
    host: list[bytes] = []
    chunked = upgrade = False
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4  # "name: value\r\n"
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"upgrade":
            upgrade = True
        elif name == b"host":
            host.append(value)
    # The request line has its own room (``REQUEST_LINE_ROOM``, as in the protocol's bound
    # on a head still incomplete): a head that arrived whole in one read is held to it too.
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    if size > max_header_bytes or target > REQUEST_LINE_ROOM:
        raise HeadersTooLarge()
    # RFC 9112 §6.3: "If a message is received with both a Transfer-Encoding and a
    # Content-Length header field, ... Such a message might indicate an attempt to perform
    # request smuggling ... and ought to be handled as an error." h11 passes it on.
    if chunked and lengths:
        raise InvalidData(details={"reason": "both Content-Length and Transfer-Encoding"})
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        raise InvalidData(details={"reason": "Content-Length is not one decimal number"})
    # RFC 9110 §7.8: a server "MAY ignore a received Upgrade header field"; a proxy that
    # passed one on could end up tunnelling a protocol it cannot check.
    if upgrade:
        raise NotSupported(details={"reason": "protocol upgrades are not supported"})
    # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    # HTTP/1.1 request message that lacks a Host header field and to any request message
    # that contains more than one Host header field line or a Host header field with an
    # invalid field value." A Host outside the allowed list is refused too (DNS rebinding).
    if len(host) != 1 or not host_allowed(host[0], hosts):
        raise InvalidData(details={"reason": "the Host header names no host served here"})
    # RFC 9110 §15.5.14: a server "MAY close the connection" after a 413 rather than read
    # a body it will refuse. (More than 15 digits is over any limit, and int() of a
    # very long digit string raises.)
    if lengths and (len(lengths[0]) > 15 or int(lengths[0]) > max_request_body):
        raise BodyTooLarge()
    return chunked or bool(lengths)


# -- uvicorn ----------------------------------------------------------------------------


def uvicorn_options(
    http: str = "auto", max_header_bytes: int = _DEFAULT_HEADER_BYTES
) -> dict[str, Any]:
    """The parser (``gateway.http1``'s protocol classes) and its bounds. ``ws="none"``: a
    WebSocket upgrade is never taken over by uvicorn, so it reaches the gateway as a plain
    request and is refused there (400).

    A request head still incomplete past ``max_header_bytes`` plus room for the request
    line is refused by the protocol, under either parser, with 431 in the CRM envelope; a
    complete head just over ``max_header_bytes`` (or whose request target is over
    ``REQUEST_LINE_ROOM``: a head that came in one read) reaches ``check_head``, which
    answers the same. uvicorn's option for h11's buffer carries the bound to both protocol classes.
    """
    if http not in PARSERS:
        raise ValueError(f"http must be one of {', '.join(PARSERS)}")
    return {
        "http": protocol_class(http),
        "ws": "none",
        # The gateway never reads the client's address (the audit names a keyed token
        # fingerprint), so uvicorn's X-Forwarded-For middleware is one wrapper less.
        "proxy_headers": False,
        "h11_max_incomplete_event_size": max_header_bytes + REQUEST_LINE_ROOM,
    }


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class GatewayServer(uvicorn.Server):
    """uvicorn's server, plus the gateway's shutdown order: the moment shutdown begins (a
    signal, or ``should_exit``) the app is told to drain, so ``/ready`` answers 503 while
    in-flight requests finish; ``started`` and ``stopped`` are logged once each."""

    def __init__(self, config: uvicorn.Config, facts: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.facts = facts

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.facts is not None and self.started:
            log.info("started", **self.facts)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain = getattr(self.config.app, "drain", None)
        if callable(drain):
            drain()
        await super().shutdown(sockets)
        if self.facts is not None:
            log.info("stopped", pid=os.getpid())


class ThreadedServer:
    """Serve an ASGI app in a background thread until ``stop()``."""

    def __init__(
        self,
        app: Any,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        http: str = "auto",
        max_header_bytes: int = _DEFAULT_HEADER_BYTES,
        graceful_shutdown_s: int = 5,
    ) -> None:
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=graceful_shutdown_s,
            **uvicorn_options(http, max_header_bytes),
        )
        self.server = GatewayServer(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app, port).start()
    try:
        yield server
    finally:
        server.stop()
