"""Bad input at the HTTP edge (engineering-anchors §B.4, "Bad input"), under both uvicorn
parsers: what the parser refuses, the gateway's protocol class answers (``gateway.http1``);
what it passes on, the gateway refuses from the ASGI scope. Either way the client gets the
CRM envelope, the request has one audit entry, the CRM receives nothing and no header
value is echoed.
"""

from __future__ import annotations

import time

import pytest
from structlog.testing import capture_logs

from gateway.audit import AuditTrail
from gateway.audit.logfile import LogFile
from tests.conftest import AUTH, LEAD_FIELDS, Crm, GatewayHandle
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
    from the ASGI scope; httptools refuses in the parser. The client cannot tell which."""
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
        parser_refusal(gw, reply)
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
def test_c05_bare_lf_and_obs_fold_are_refused_under_both_parsers(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, request_bytes: bytes
) -> None:
    """httptools refuses both itself. h11 would take bare LF line ends and unfold an
    obs-fold line into one value (RFC 9112 §2.2 and §5.2 allow a recipient either) without
    telling the application; ``gateway.http1`` refuses them in the bytes h11 reads from."""
    gw = edge_gateway(http=parser)
    crm.clear()
    parser_refusal(gw, exchange(gw.url, request_bytes))
    assert not crm.received()


class SlowDisk(LogFile):
    """An audit disk whose fsync takes 0.3 s, counting the ones that have ended."""

    synced = 0
    failing = False

    def append(self, lines: list[bytes]) -> None:
        if SlowDisk.failing:
            raise OSError(28, "No space left on device")
        super().append(lines)

    def sync(self) -> None:
        time.sleep(0.3)
        super().sync()
        SlowDisk.synced += 1


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> type[SlowDisk]:
    monkeypatch.setattr(AuditTrail, "file_class", SlowDisk)
    monkeypatch.setattr(SlowDisk, "synced", 0)
    monkeypatch.setattr(SlowDisk, "failing", False)
    return SlowDisk


def test_c05_a_refusal_leaves_only_once_its_entry_is_on_disk(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, slow_disk: type[SlowDisk]
) -> None:
    """The entry of a request the parser refused is written (fsync "always") before the
    refusal goes out, as for any request: here the disk takes 0.3 s, and the answer waits."""
    gw = edge_gateway({"audit": {"fsync": "always"}}, http=parser)
    synced_before = slow_disk.synced
    client = RawClient(gw.url)
    try:
        client.send(head("X-Note: a", eol="\n"))
        reply = client.reply()
        synced_when_answered = slow_disk.synced
    finally:
        client.close()
    envelope_of(reply, 400, "INVALID_DATA")
    assert synced_when_answered > synced_before
    (entry,) = gw.requests()
    assert entry["request_id"] == reply.headers["x-gateway-request-id"]


def test_c05_a_refusal_whose_entry_cannot_be_written_is_a_503(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, slow_disk: type[SlowDisk]
) -> None:
    """Nothing goes out unrecorded: with the audit disk failing, a request the parser
    refused gets the audit trail's 503, not its 400."""
    gw = edge_gateway({"audit": {"fsync": "always"}}, http=parser)
    slow_disk.failing = True
    reply = exchange(gw.url, head("X-Note: a", eol="\n"))
    envelope_of(reply, 503, "GATEWAY_AUDIT_UNAVAILABLE")
    assert reply.closed
    assert not gw.requests()


def test_c05_a_space_before_the_colon_is_refused_under_both_parsers(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(gw.url, head("Content-Length : 5", method="POST", target=LEADS) + b"hello")
    parser_refusal(gw, reply)
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


def test_c07_a_64_kib_cookie_gets_431_under_both_parsers(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """With the default bound (32 KiB). Either parser's protocol refuses a head still
    incomplete past the bound plus room for the request line, while the client is still
    sending (the head here never ends): the client may see a reset instead of the 431,
    but the gateway buffered no more than the bound and audited the refusal either way."""
    gw = edge_gateway(http=parser)
    crm.clear()
    client = RawClient(gw.url)
    request = head(f"Cookie: {MARKER}={'a' * 65536}")[:-2]  # no blank line: never complete
    reply: RawReply | None = None
    try:
        for i in range(0, len(request), 8192):  # in pieces, as a slow network would
            client.send(request[i : i + 8192])
            time.sleep(0.01)
        reply = client.reply()
        reply.closed = client.closed()
    except ConnectionError:  # a broken pipe, a reset, or closed before a reply
        pass
    finally:
        client.close()
    if reply is not None:
        parser_refusal(gw, reply, 431, "headers_too_large")
    else:
        (entry,) = wait_for(gw.requests)
        assert entry["status"] == 431 and entry["reasons"] == ["headers_too_large"]
    assert MARKER not in gw.audit_log.read_text()
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
        parser_refusal(gw, reply)
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


# -- 2, 3, 4: request framing the parser must refuse ----------------------------------------
# Both parsers refuse these themselves today (uvicorn's plain 400); the CRM envelope and an
# audit entry for parser refusals are the integrator's (custom protocol classes). What must
# hold whichever parser runs: 400 (or 501 for an unknown coding) and nothing forwarded.


def _refused_unforwarded(
    crm: Crm, gw: GatewayHandle, reply: RawReply, allowed: tuple[int, ...]
) -> None:
    """Refused by the parser or by the gateway (the client cannot tell which): the CRM
    envelope, the connection closed, one audit entry, nothing forwarded."""
    assert reply.status in allowed, (reply.status, reply.body)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    assert reply.closed
    (entry,) = wait_for(gw.requests)
    assert entry["status"] == reply.status
    assert not crm.received()


@pytest.mark.parametrize(
    "lines",
    [
        ("Content-Length: 5", "Content-Length: 6"),
        ("Content-Length: +5",),
        ("Content-Length: \u0665".encode().decode("latin-1"),),  # ARABIC-INDIC FIVE, UTF-8
        ("Content-Length: 5, 6",),
    ],
    ids=["two-different", "plus-sign", "unicode-digit", "list"],
)
def test_c02_a_content_length_that_is_not_one_plain_number_is_400(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, lines: tuple[str, ...]
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(gw.url, head(*lines, method="POST", target=LEADS) + b"hello!")
    _refused_unforwarded(crm, gw, reply, (400,))


@pytest.mark.parametrize(
    "coding", ["xchunked", "chunked, identity", "gzip", "chunked, chunked", "identity"]
)
def test_c03_a_transfer_encoding_other_than_one_chunked_is_400_or_501(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, coding: str
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    body = b"5\r\nhello\r\n0\r\n\r\n"
    reply = exchange(
        gw.url, head(f"Transfer-Encoding: {coding}", method="POST", target=LEADS) + body
    )
    _refused_unforwarded(crm, gw, reply, (400, 501))


def test_c04_chunk_data_followed_by_garbage_instead_of_crlf_is_400(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """The CVE-2025-43859 shape: the two bytes after the chunk data are not CRLF. A parser
    that skips them would read what follows as the next chunk (or the next request)."""
    gw = edge_gateway(http=parser)
    crm.clear()
    body = b"5\r\nhelloXX0\r\n\r\n"
    reply = exchange(gw.url, head("Transfer-Encoding: chunked", method="POST", target=LEADS) + body)
    _refused_unforwarded(crm, gw, reply, (400,))


# -- 6: CR, LF or NUL inside a header value -------------------------------------------------


@pytest.mark.parametrize(
    "value", [f"{MARKER}\x00x", f"{MARKER}\rx", f"{MARKER}\nx"], ids=["nul", "cr", "lf"]
)
def test_c06_a_header_value_holding_cr_lf_or_nul_is_400_and_never_echoed(
    crm: Crm,
    edge_gateway: EdgeGateway,
    parser: str,
    value: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    caplog.set_level("DEBUG")
    with capture_logs() as logs:
        reply = exchange(gw.url, head(f"X-Note: {value}"))
    _refused_unforwarded(crm, gw, reply, (400,))
    assert MARKER.encode() not in reply.body
    out, err = capfd.readouterr()
    for text in (caplog.text, repr(logs), out, err, gw.audit_log.read_text()
                 if gw.audit_log.exists() else ""):  # fmt: skip
        assert MARKER not in text


# -- 9, 10, 12, 21: headers that never reach the CRM ----------------------------------------


def _sent_headers(crm: Crm) -> dict[str, str]:
    (sent,) = crm.received("/settings/modules")
    headers: dict[str, str] = sent["headers"]
    return headers


def test_c09_a_header_named_in_connection_reaches_the_crm_with_neither_header(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(gw.url, head("Connection: close, X-Field-Override", "X-Field-Override: 1"))
    assert reply.status == 200
    sent = _sent_headers(crm)
    assert "x-field-override" not in sent
    assert "x-field-override" not in sent.get("connection", "").lower()
    assert "close" not in sent.get("connection", "").lower()


def test_c10_hop_by_hop_request_headers_never_reach_the_crm(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """``Upgrade`` is the one hop-by-hop field the gateway refuses outright (item 11)."""
    gw = edge_gateway(http=parser)
    crm.clear()
    gw.http.get(
        "/crm/v8/settings/modules",
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
            "Keep-Alive": "timeout=5",
            "Proxy-Connection": "keep-alive",
            "Proxy-Authorization": "Basic abc",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "X-End-To-End": "kept",
        },
    )
    h = _sent_headers(crm)
    for name in ("x-hop", "keep-alive", "proxy-connection", "proxy-authorization", "te",
                 "trailer", "upgrade"):  # fmt: skip
        assert name not in h, name
    assert h["x-end-to-end"] == "kept"
    assert h["accept-encoding"] == "gzip, identity"
    assert h["authorization"] == AUTH["Authorization"]


def test_c12_headers_in_the_gateways_namespace_are_stripped_before_anything_reads_them(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """A client cannot name its actor, its rule or the audit key: the entry is the gateway's,
    and no ``X-Gateway-*`` header reaches the CRM (``X-Gateway-Key`` is read, then dropped)."""
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(
        gw.url,
        head(
            f"X-Gateway-Actor: {MARKER}",
            f"X-Gateway-Request-Id: {MARKER}",
            f"X-Gateway-Client-Rule: {MARKER}",
            "X-Gateway-Key: k",
        ),
    )
    assert reply.status == 200
    assert not [n for n in _sent_headers(crm) if n.startswith("x-gateway-")]
    (entry,) = gw.requests()
    assert reply.headers["x-gateway-request-id"] == entry["request_id"] != MARKER
    assert entry["client_rule"] is None
    assert MARKER not in gw.audit_log.read_text()


def test_c21_method_override_headers_never_reach_the_crm(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """A GET is checked as a read; nothing upstream may turn it into a write."""
    gw = edge_gateway(http=parser)
    crm.clear()
    overrides = {
        "X-HTTP-Method-Override": "PUT",
        "X-HTTP-Method": "PUT",
        "X-Method-Override": "PUT",
    }
    assert gw.http.get(
        "/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}, headers=overrides
    ).is_success
    (sent,) = crm.received("/crm/v8/Leads")
    assert sent["method"] == "GET"
    assert not {n.lower() for n in overrides} & set(sent["headers"])


# -- 13: X-Forwarded-For ---------------------------------------------------------------------


def test_c13_x_forwarded_for_does_not_change_the_actor_in_the_audit(
    crm: Crm, edge_gateway: EdgeGateway, parser: str
) -> None:
    """The audit's actor is a keyed fingerprint of the caller's token; no client address is
    recorded, so no forwarding header (from any peer) can change who the entry names."""
    gw = edge_gateway(http=parser)
    crm.clear()
    spoofed = "203.0.113.77"
    plain = exchange(gw.url, head())
    forged = exchange(
        gw.url,
        head(
            f"X-Forwarded-For: {spoofed}",
            f"Forwarded: for={spoofed}",
            f"X-Real-IP: {spoofed}",
        ),
    )
    assert plain.status == forged.status == 200
    first, second = gw.requests()
    volatile = {"request_id", "ts", "seq", "prev_hash", "hash", "duration_ms"}
    assert {k: v for k, v in first.items() if k not in volatile} == {
        k: v for k, v in second.items() if k not in volatile
    }
    assert first["client"] is not None
    assert spoofed not in gw.audit_log.read_text()
    assert "127.0.0.1" not in gw.audit_log.read_text()


# -- 24: path tricks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/crm/v8/settings/../Leads",
        "/crm/v2/Contacts/../Leads",
        "/crm/v8/org/..%2FLeads",
        "/crm/v8/settings%2Fmodules",
        "/crm/v8/settings/%2E%2E/Leads",
        "/crm/v8/upload/../Leads",
        "/crm/v8//Leads",
        "/crm/v8/Leads.",
        "/crm/v8/Leads%2E",
        "/crm/v8/settings/..;/Leads",
    ],
)
def test_c24_a_path_another_server_could_normalise_differently_is_refused(
    crm: Crm, edge_gateway: EdgeGateway, parser: str, target: str
) -> None:
    gw = edge_gateway(http=parser)
    crm.clear()
    reply = exchange(gw.url, head(target=target + "?per_page=5&fields=Email"))
    assert 400 <= reply.status < 500, (reply.status, reply.body)
    assert reply.json()["code"] in ("INVALID_URL_PATTERN", "INVALID_MODULE", "INVALID_DATA")
    assert b"@" not in reply.body
    assert not [r for r in crm.received("/") if "/settings/" not in r["path"]]
