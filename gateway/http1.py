"""uvicorn's two HTTP/1.1 parsers, held to one standard.

uvicorn answers a request its parser refuses with a plain-text 400 the application never
hears of, and the two parsers do not refuse the same things: h11 takes bare LF line ends
and unfolds obs-fold lines without telling anyone, and httptools buffers a request head of
any size. The two protocol classes here close those gaps where the bytes still are:

- a request head (or a chunked body's trailer section) with a bare LF or an obs-fold line
  is refused under h11 too (RFC 9112 §2.2 lets a recipient accept a bare LF and §5.2 lets
  it unfold; a proxy that does either reads a head differently from a server behind it
  that does not);
- under httptools, which parses pipelined requests while an earlier one is still in the
  application, a refused request is answered after the requests before it, as under h11;
- a request head still incomplete past the bound is refused with 431 under httptools too,
  so what uvicorn buffers for one head is bounded whichever parser runs;
- whatever either parser refuses is answered in the CRM's error envelope with
  ``Connection: close``, once the gateway has written its one audit entry for it (a 503
  when that entry cannot be written). Bytes that go bad inside a body the application is
  already reading are the exception: the refusal goes out at once and the connection is
  closed, so the body can never pass for complete; the application writes the entry when
  its read ends.

The gateway is found behind whatever middleware uvicorn wrapped it in by its
``parser_refused`` method (``RefusalSink``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol, cast

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from h11._readers import READERS, ChunkedReader
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.errors import AuditUnavailable, GatewayError, HeadersTooLarge, InvalidData, Reason

#: room for the request line on top of the header bytes (h11's own default buffer size)
REQUEST_LINE_ROOM = 16 * 1024

_BLANK_LINE = re.compile(rb"\n\r?\n")  # where h11 ends a head
_BARE_LF = re.compile(rb"(?<!\r)\n")
_OBS_FOLD = re.compile(rb"\n[ \t]")
#: the scope key under which a request whose body the parser refused carries the error
PARSER_REFUSAL = "gateway.parser_refusal"
_IDLE_READER = cast(Callable[[Any], Any], READERS[(h11.CLIENT, h11.IDLE)])


class RefusalSink(Protocol):
    def parser_refused(self, request_id: str, error: GatewayError) -> asyncio.Task[bool]: ...


def _sink_of(app: Any) -> RefusalSink | None:
    """The gateway, behind any middleware uvicorn wrapped around it (``.app`` chains)."""
    for _ in range(8):
        if app is None or hasattr(app, "parser_refused"):
            return app  # type: ignore[no-any-return]
        app = getattr(app, "app", None)
    return None


def _refusal_bytes(request_id: str | None, error: GatewayError) -> bytes:
    body = error.body()
    phrase = HTTPStatus(error.status_code).phrase
    rid = f"x-gateway-request-id: {request_id}\r\n" if request_id else ""
    head = (
        f"HTTP/1.1 {error.status_code} {phrase}\r\n"
        "content-type: application/json; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        f"{rid}connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _answer(
    transport: asyncio.Transport, request_id: str, error: GatewayError, done: asyncio.Task[bool]
) -> None:
    """A refused request's answer, once its entry is written (or could not be)."""
    if transport.is_closing():  # the client went away meanwhile
        return
    recorded = not done.cancelled() and done.exception() is None and done.result()
    transport.write(_refusal_bytes(request_id, error if recorded else AuditUnavailable()))
    transport.close()


def _head_limit(config: Config) -> int:
    return config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE


class _Refusing:
    """What both protocol classes do with a request their parser refused."""

    config: Config
    transport: asyncio.Transport
    server_state: ServerState
    _unset_keepalive_if_required: Callable[[], None]  # uvicorn's, on both protocols

    _refused = False  # a refusal is out or waiting for its entry: nothing more is refused

    def _refuse(self, error: GatewayError) -> None:
        if self._refused or self.transport.is_closing():
            return
        cycle = self._owner()
        if cycle is not None:
            # The app has this request (its body went bad half-way): the app writes the
            # entry when its read ends, under this error; an answer it began is cut off.
            cycle.scope[PARSER_REFUSAL] = error
            if not cycle.response_started:
                self.transport.write(_refusal_bytes(None, error))
            self.transport.close()
            return
        self._refused = True  # the rest of a read already taken must not refuse again
        request_id = uuid.uuid4().hex
        transport = self.transport
        sink = _sink_of(self.config.loaded_app)
        if sink is None:
            transport.write(_refusal_bytes(request_id, error))
            transport.close()
            return
        # The entry is written before the answer leaves, as for any request: nothing more
        # is read meanwhile, and an entry that cannot be written makes the answer a 503.
        # uvicorn's keep-alive timer (armed when an earlier answer completed, h11 parsing
        # this request right after) would close the connection before the answer.
        transport.pause_reading()
        self._unset_keepalive_if_required()
        task = sink.parser_refused(request_id, error)
        # uvicorn's shutdown waits for its tasks: the entry is written before exit.
        tracked = cast("asyncio.Task[None]", task)
        self.server_state.tasks.add(tracked)
        task.add_done_callback(lambda _: self.server_state.tasks.discard(tracked))
        task.add_done_callback(lambda done: _answer(transport, request_id, error, done))

    def shutdown(self) -> None:
        """A graceful shutdown leaves a connection whose refusal waits for its entry: the
        answer closes it (uvicorn waits for that, and past its deadline cancels the
        entry's task, which answers 503)."""
        if self._refused and not self.transport.is_closing():
            return
        super().shutdown()  # type: ignore[misc]

    def _owner(self) -> Any:
        """The cycle whose application has the refused bytes (its body went bad half-way),
        or None: they begin a request of their own."""
        cycle = getattr(self, "cycle", None)
        return cycle if cycle is not None and not cycle.response_complete else None

    def send_400_response(self, msg: str) -> None:
        self._refuse(self._parser_error())

    def _parser_error(self) -> GatewayError:
        return InvalidData(
            message="The request is not well-formed HTTP/1.1.",
            details={"reason": "the request could not be parsed"},
            reason=Reason.MALFORMED_HTTP,
        )


def _strict_head_reader(buf: Any) -> Any:
    """h11's reader for a request head, refusing bare LF line ends and obs-fold lines in a
    complete head first (h11 would accept both)."""
    raw = bytes(buf)
    end = _BLANK_LINE.search(raw)
    if end is not None:
        head = raw[: end.end()].lstrip(b"\r\n")
        if _BARE_LF.search(head) or _OBS_FOLD.search(head):
            raise h11.RemoteProtocolError("bare LF or obs-fold in the request head")
    return _IDLE_READER(buf)


class _StrictChunkedReader(ChunkedReader):
    """h11's chunked body reader, refusing bare LF line ends and obs-fold lines in the
    trailer section too: h11 would end the message at a bare ``\n\n`` there, where a
    server that does not take bare LF reads on (httptools refuses it)."""

    def __call__(self, buf: Any) -> Any:
        if self._reading_trailer:
            raw = bytes(buf)
            if raw[:1] == b"\n":
                raise h11.RemoteProtocolError("bare LF in the trailer section")
            end = _BLANK_LINE.search(raw) if raw[:2] != b"\r\n" else None
            if end is not None and (
                _BARE_LF.search(raw[: end.end()]) or _OBS_FOLD.search(raw[: end.end()])
            ):
                raise h11.RemoteProtocolError("bare LF or obs-fold in the trailer section")
        return super().__call__(buf)


class _StrictConnection(h11.Connection):
    def _get_io_object(self, role: Any, event: Any, io_dict: Any) -> Callable[..., Any] | None:
        found = super()._get_io_object(role, event, io_dict)
        if type(found) is ChunkedReader:
            return _StrictChunkedReader()  # a fresh reader: nothing was read with it yet
        return _strict_head_reader if found is _IDLE_READER else found


class StrictH11Protocol(_Refusing, H11Protocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_limit = _head_limit(config)
        self.conn = _StrictConnection(h11.SERVER, self._head_limit)

    def _parser_error(self) -> GatewayError:
        # A head still incomplete past h11's buffer is too large, not malformed.
        if len(self.conn.trailing_data[0]) > self._head_limit:
            return HeadersTooLarge()
        return super()._parser_error()


class BoundedHttpToolsProtocol(_Refusing, HttpToolsProtocol):
    """httptools with a bound on the bytes of one request head: data that leaves the head
    still incomplete is counted, and past the bound the request gets 431.

    httptools parses pipelined requests as they arrive, while an earlier one is still in
    the application (h11 parses nothing past a request until its answer is complete). A
    request refused then is a request of its own: its refusal waits until every request
    before it is answered (``_pending``), and is then answered and audited like any other;
    an earlier request is never answered with it, nor a later one's body taken for its."""

    _in_head = True  # from the end of one message until the parser completes a head
    _ends = 0  # heads and messages the parser has completed on this connection
    _head_bytes = 0
    _pending: GatewayError | None = None  # a refusal waiting for earlier answers

    def _owner(self) -> Any:
        return None if self._in_head else super()._owner()

    def _refuse(self, error: GatewayError) -> None:
        if self._pending is not None or self.transport.is_closing():
            return
        cycle = self.cycle
        queued = any(item[0] is cycle for item in self.pipeline)
        # Refused bytes in a head begin a request after ``cycle``; in a body they are
        # ``cycle``'s, and earlier requests are in flight when it is still queued.
        earlier = (cycle is not None and not cycle.response_complete) if self._in_head else queued
        if earlier:
            if not self._in_head:  # the request whose body was refused never runs
                self.pipeline = deque(item for item in self.pipeline if item[0] is not cycle)
            self._pending = error
            self.flow.pause_reading()
            return
        super()._refuse(error)

    def on_response_complete(self) -> None:
        if self._pending is not None and not self.pipeline and not self.transport.is_closing():
            self.server_state.total_requests += 1
            error, self._pending = self._pending, None
            self.cycle = None  # type: ignore[assignment]  # no request is left in the app
            super()._refuse(error)
            return
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        if self._pending is not None:
            return  # past a refused request nothing is read
        ends = self._ends
        super().data_received(data)
        if self._in_head and self._ends == ends:
            # Nothing was completed: every byte of this chunk went into the pending head.
            self._head_bytes += len(data)
            if self._head_bytes > _head_limit(self.config):
                self._refuse(HeadersTooLarge())

    def on_headers_complete(self) -> None:
        self._in_head, self._ends = False, self._ends + 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._ends = True, 0, self._ends + 1


def protocol_class(http: str) -> type[asyncio.Protocol]:
    """The protocol for ``--http``; auto is httptools, as uvicorn's own auto would be."""
    return StrictH11Protocol if http == "h11" else BoundedHttpToolsProtocol
