"""Bad input at the HTTP edge (engineering-anchors §B.4, "Bad input"), under both uvicorn
parsers: what the parser refuses gets uvicorn's plain 400 before the gateway sees it; what
it passes on, the gateway refuses in the CRM envelope with one audit entry. Either way the
CRM receives nothing and no header value is echoed.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import Crm, GatewayHandle
from tests.edge.conftest import (
    EdgeGateway,
    RawClient,
    RawReply,
    envelope_of,
    exchange,
    head,
    parser_refusal,
    wait_for,
)

LEADS = "/crm/v8/Leads"
#: a write that would create a lead if it reached the CRM
LEAD = b'{"data":[{"Last_Name":"Edge","Company":"Edge Ltd"}]}'
MARKER = "zz-marker-4815"


def _audited_once(gw: GatewayHandle, status: int, reason: str) -> None:
    (entry,) = gw.requests()
    assert entry["status"] == status and reason in entry["reasons"], entry
    assert MARKER not in gw.audit_text()


def _refused_by_gateway(
    gw: GatewayHandle, reply: RawReply, status: int, code: str, reason: str
) -> None:
    envelope_of(reply, status, code)
    assert MARKER.encode() not in reply.body
    _audited_once(gw, status, reason)


# -- 1: Content-Length with Transfer-Encoding ----------------------------------------------


@pytest.mark.parametrize("first", ["Content-Length: 5", "Transfer-Encoding: chunked"])
def test_c01_content_length_beside_transfer_encoding_is_400_closed_and_not_forwarded(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, first: str
) -> None:
    """h11 passes both headers on (framing the body by the chunks), so the gateway refuses
    from the ASGI scope; httptools refuses in the parser."""
    gw = edge_gateway(http=parser)
    crm.clear()
    other = "Transfer-Encoding: chunked" if first.startswith("Content") else "Content-Length: 5"
    reply = exchange(
        gw.url,
        head(first, other, method="POST", target=LEADS) + b"5\r\nhello\r\n0\r\n\r\n",
    )
    assert reply.closed
    if parser == "h11":
        _refused_by_gateway(gw, reply, 400, "INVALID_DATA", "invalid_data")
    else:
        parser_refusal(reply)
        assert gw.requests() == []
    assert not crm.received()


# -- 5: bare LF, obs-fold, a space before the colon -----------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        head("X-Note: a", eol="\n"),  # every line ends in a bare LF
        head("X-Note: a\r\n continued"),  # obs-fold
    ],
    ids=["bare-lf", "obs-fold"],
)
def test_c05_bare_lf_and_obs_fold_are_refused_by_httptools(
    crm: Crm, edge_gateway: EdgeGateway, request_bytes: bytes
) -> None:
    """Under httptools the parser refuses both (400) and the request never reaches the CRM.

    Under h11 this does not hold: h11 accepts bare LF line ends and unfolds an obs-fold
    line into one value (RFC 9112 §5.2 lets a server replace obs-fold with a space) without
    telling the application, so the ASGI scope looks like a clean request and the gateway
    cannot refuse it. What still holds under h11 is that the CRM gets the value the gateway
    read (the gateway writes a new, canonical head), see the next test."""
    gw = edge_gateway(http="httptools")
    crm.clear()
    parser_refusal(exchange(gw.url, request_bytes))
    assert not crm.received() and gw.requests() == []


def test_c05_under_h11_a_folded_header_reaches_the_crm_as_the_gateway_read_it(
    crm: Crm, edge_gateway: EdgeGateway
) -> None:
    gw = edge_gateway(http="h11")
    crm.clear()
    client = RawClient(gw.url)
    try:
        client.send(head("X-Note: a\r\n continued", "Connection: close"))
        assert client.reply().status == 200
    finally:
        client.close()
    (sent,) = crm.received("/settings/modules")
    assert sent["headers"]["x-note"] == "a continued"


def test_c05_a_space_before_the_colon_is_refused_under_both_parsers(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(gw.url, head("Content-Length : 5", method="POST", target=LEADS) + b"hello")
    parser_refusal(reply)
    assert not crm.received()


# -- 7: headers over max_header_bytes ------------------------------------------------------


def test_c07_headers_over_the_bound_get_431_in_the_envelope(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    gw = edge_gateway({"limits": {"max_header_bytes": 8192}}, http=parser)
    crm.clear()
    reply = exchange(gw.url, head(f"Cookie: {MARKER}={'a' * 10_000}"))
    _refused_by_gateway(gw, reply, 431, "GATEWAY_HEADERS_TOO_LARGE", "headers_too_large")
    assert reply.closed
    assert not crm.received()


def test_c07_a_64_kib_cookie_gets_431_or_400_under_both_parsers(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """With the default bound (32 KiB). h11 refuses a head still incomplete past its
    buffer (bound + 16 KiB) with uvicorn's plain 400 and closes at once, so the client may
    see a reset instead of the 400 while it is still sending; a head that arrives whole
    gets the gateway's 431. httptools has no bound of its own: the gateway's 431 it is."""
    gw = edge_gateway(http=parser)
    crm.clear()
    client = RawClient(gw.url)
    request = head(f"Cookie: {MARKER}={'a' * 65536}")
    reply: RawReply | None = None
    try:
        for i in range(0, len(request), 8192):  # in pieces, as a slow network would
            client.send(request[i : i + 8192])
            time.sleep(0.01)
        reply = client.reply()
    except ConnectionError:  # a broken pipe, a reset, or closed before a reply
        assert parser == "h11"  # refused by h11 before the head was complete
    finally:
        client.close()
    if reply is not None and reply.status == 431:
        _refused_by_gateway(gw, reply, 431, "GATEWAY_HEADERS_TOO_LARGE", "headers_too_large")
    elif reply is not None:
        assert parser == "h11"
        parser_refusal(reply)
    assert not crm.received()


# -- 8: bodies over max_request_body_bytes, and bodies cut short ---------------------------


def test_c08_a_declared_length_over_the_cap_is_413_before_any_body_byte(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    gw = edge_gateway({"limits": {"max_request_body_bytes": 1000}}, http=parser)
    crm.clear()
    # No body byte is ever sent: the answer comes from the head alone.
    reply = exchange(gw.url, head("Content-Length: 5000", method="POST", target=LEADS))
    _refused_by_gateway(gw, reply, 413, "GATEWAY_BODY_TOO_LARGE", "body_too_large")
    assert reply.closed
    assert not crm.received()


def test_c08_a_chunked_body_growing_past_the_cap_is_413_at_the_crossing(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    gw = edge_gateway({"limits": {"max_request_body_bytes": 1000}}, http=parser)
    crm.clear()
    client = RawClient(gw.url)
    try:
        client.send(head("Transfer-Encoding: chunked", method="POST", target=LEADS))
        for _ in range(3):  # 1,200 bytes, and no last chunk: the body never ends
            client.send(b"190\r\n" + b"x" * 400 + b"\r\n")
            time.sleep(0.05)
        reply = client.reply()
        reply.closed = client.closed()
    finally:
        client.close()
    _refused_by_gateway(gw, reply, 413, "GATEWAY_BODY_TOO_LARGE", "body_too_large")
    assert reply.closed
    assert not crm.received()


def test_c08_a_body_cut_short_by_a_client_disconnect_is_never_forwarded(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """DESIGN: "A request body that ends early is never forwarded as if complete" (the
    checklist has no line of its own for it; it belongs with item 8). The bytes that did
    arrive are a complete, valid write: forwarded, they would create a lead."""
    gw = edge_gateway(http=parser)
    crm.clear()
    client = RawClient(gw.url)
    client.send(
        head(
            f"Content-Length: {len(LEAD) + 50}",
            "Content-Type: application/json",
            method="POST",
            target=LEADS,
        )
        + LEAD
    )
    time.sleep(0.5)  # the gateway has read what came; the rest never will
    client.close()
    (entry,) = wait_for(gw.requests)
    assert not crm.received(LEADS)
    assert entry["reasons"] == ["client_disconnected"] and entry["outcome"] == "refused"


# -- 11: Upgrade -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        (
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ),
        ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQ"),
        ("Upgrade: h2c",),  # not named in Connection: still refused
    ],
    ids=["websocket", "h2c", "bare-upgrade"],
)
def test_c11_an_upgrade_request_is_refused_and_never_tunnelled(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, lines: tuple[str, ...]
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(gw.url, head(*lines))
    _refused_by_gateway(gw, reply, 400, "NOT_SUPPORTED", "not_supported")
    assert reply.closed
    assert not crm.received()


# -- 14: Host ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [f"{MARKER}.example", f"127.0.0.1.{MARKER}.example", f"localhost.{MARKER}:80", "[::1]"],
)
def test_c14_a_host_outside_the_default_list_is_400(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, host: str
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(gw.url, head(host=host))
    _refused_by_gateway(gw, reply, 400, "INVALID_DATA", "invalid_data")
    assert not crm.received()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:1", "localhost:8080", "LOCALHOST"])
def test_c14_the_default_list_is_the_listen_address_and_loopback_on_any_port(
    crm: Crm, edge_gateway: EdgeGateway, host: str
) -> None:
    gw = edge_gateway()
    crm.clear()
    assert exchange(gw.url, head("Connection: close", host=host)).status == 200
    assert len(crm.received("/settings/modules")) == 1


def test_c14_two_host_headers_are_400(crm: Crm, edge_gateway: EdgeGateway, parser: str) -> None:
    """h11 refuses two Host lines in the parser; httptools passes both on to the gateway."""
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(gw.url, head(f"Host: {MARKER}.example"))
    assert reply.status == 400 and MARKER.encode() not in reply.body
    if parser == "httptools":
        _refused_by_gateway(gw, reply, 400, "INVALID_DATA", "invalid_data")
    else:
        parser_refusal(reply)
    assert not crm.received()


def test_c14_a_request_without_host_is_400(crm: Crm, edge_gateway: EdgeGateway) -> None:
    """httptools passes an HTTP/1.1 request without Host on (h11 refuses it itself)."""
    gw = edge_gateway(http="httptools")
    crm.clear()
    _refused_by_gateway(gw, exchange(gw.url, head(host=None)), 400, "INVALID_DATA", "invalid_data")
    assert not crm.received()


def test_c14_the_policy_list_replaces_the_default(crm: Crm, edge_gateway: EdgeGateway) -> None:
    gw = edge_gateway({"server": {"allowed_hosts": ["crm-gw.internal", "*.corp.example"]}})
    crm.clear()
    for host, status in [
        ("crm-gw.internal:8443", 200),
        ("eu.corp.example", 200),
        ("corp.example", 400),
        ("127.0.0.1", 400),
        ("crm-gw.internal.evil.example", 400),
    ]:
        assert exchange(gw.url, head("Connection: close", host=host)).status == status, host
    assert len(crm.received("/settings/modules")) == 2
