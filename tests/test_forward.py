"""Answers the gateway does not rewrite are still checked (checklist 27, 29-31, 52, 60).

A JSON answer passed on (metadata, job status, a write's answer) is read whole, decoded
and parsed before a byte goes out; bytes (a photo, an attachment) stream with a known
encoding, a bounded decoded size and a complete gzip stream. The CRM's error bodies are
scrubbed of values the request carried.
"""

from __future__ import annotations

import gzip
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import AUTH, Crm, GatewayHandle, MakeGateway, envelope
from tests.servers import serve

_ORG = {"org": [{"id": "1", "privacy_settings": True}]}
_MODULES = {"modules": [{"api_name": "Leads", "generated_type": "default"}]}
_FIELDS = {
    "fields": [
        {"api_name": "Last_Name", "data_type": "text", "private": None},
        {"api_name": "Email", "data_type": "email",
         "private": {"restricted": True, "type": "High", "export": True}},
    ]
}  # fmt: skip


class FakeCrm:
    """A CRM whose answers on /settings/layouts and a lead's photo the test sets, byte for
    byte (the sandbox speaks only well-formed HTTP bodies)."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes, dict[str, str]] = (200, b"{}", {})
        self.calls = 0  # requests answered with ``answer``

    def app(self) -> Starlette:
        async def fixed(body: Any) -> Response:
            return Response(orjson.dumps(body), media_type="application/json")

        async def org(_: Request) -> Response:
            return await fixed(_ORG)

        async def modules(_: Request) -> Response:
            return await fixed(_MODULES)

        async def fields(_: Request) -> Response:
            return await fixed(_FIELDS)

        async def set_answer(_: Request) -> Response:
            self.calls += 1
            status, body, headers = self.answer
            return Response(body, status_code=status, headers=headers)

        return Starlette(
            routes=[
                Route("/crm/v8/org", org),
                Route("/crm/v8/settings/modules", modules),
                Route("/crm/v8/settings/fields", fields),
                Route("/crm/v8/settings/layouts", set_answer),
                Route("/crm/v8/Leads/{id}/photo", set_answer),
                Route("/crm/v8/Leads/search", set_answer),
            ]
        )


@pytest.fixture
def fake(make_gateway: MakeGateway) -> Iterator[tuple[FakeCrm, GatewayHandle]]:
    crm = FakeCrm()
    with serve(crm.app()) as upstream:
        yield crm, make_gateway(upstream=upstream.url)


_JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("coding", ["br", "compress", "x-unknown", "gzip, gzip"])
def test_c29_an_unknown_encoding_on_a_passed_on_answer_is_refused(
    fake: tuple[FakeCrm, GatewayHandle], coding: str
) -> None:
    crm, gw = fake
    crm.answer = (200, b'{"layouts": []}', {**_JSON, "content-encoding": coding})
    envelope(gw.http.get("/crm/v8/settings/layouts"), 502, "GATEWAY_UNREADABLE_UPSTREAM")


def test_c30_a_gzip_bomb_on_a_passed_on_answer_is_refused_not_expanded(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    fake = FakeCrm()
    bomb = gzip.compress(b'{"layouts": "' + b"a" * (8 * 1024 * 1024) + b'"}')
    fake.answer = (200, bomb, {**_JSON, "content-encoding": "gzip"})
    with serve(fake.app()) as upstream:
        gw = make_gateway(
            {"limits": {"max_response_body_bytes": 1024 * 1024}}, upstream=upstream.url
        )
        envelope(gw.http.get("/crm/v8/settings/layouts"), 413, "GATEWAY_BODY_TOO_LARGE")


def test_c31_a_truncated_gzip_answer_is_refused(fake: tuple[FakeCrm, GatewayHandle]) -> None:
    crm, gw = fake
    whole = gzip.compress(b'{"layouts": [{"id": "1"}]}' * 50)
    crm.answer = (200, whole[: len(whole) // 2], {**_JSON, "content-encoding": "gzip"})
    envelope(gw.http.get("/crm/v8/settings/layouts"), 502, "GATEWAY_UNREADABLE_UPSTREAM")


def test_c31_a_truncated_gzip_photo_never_arrives_complete_looking(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """Bytes stream: a gzip stream that ends early cuts the connection, so the client
    never holds a body that looks whole."""
    crm, gw = fake
    whole = gzip.compress(bytes(range(256)) * 4000)
    crm.answer = (200, whole[: len(whole) // 2], {"content-type": "image/png",
                                                  "content-encoding": "gzip"})  # fmt: skip
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"GET /crm/v8/Leads/5725767000000000001/photo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"
            b"Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
        )
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"chunked" in head.lower()
    assert not body.endswith(b"0\r\n\r\n")  # the final chunk never came


def test_c31_a_complete_gzip_photo_streams_to_a_client_that_accepts_gzip(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    image = bytes(range(256)) * 4000
    crm.answer = (200, gzip.compress(image), {"content-type": "image/png",
                                              "content-encoding": "gzip"})  # fmt: skip
    r = gw.http.get("/crm/v8/Leads/5725767000000000001/photo", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.content == image


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/csv", b"Email\nsomeone@example.com\n"), ("application/octet-stream", b"\x00\x01")],
)
def test_c60_a_non_json_answer_on_a_json_route_is_refused(
    fake: tuple[FakeCrm, GatewayHandle], content_type: str, body: bytes
) -> None:
    crm, gw = fake
    crm.answer = (200, body, {"content-type": content_type})
    r = gw.http.get("/crm/v8/settings/layouts")
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    assert b"someone@example.com" not in r.content


def test_c28_malformed_json_on_a_passed_on_route_is_refused(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    crm.answer = (200, b'{"layouts": [{"Email": "leak@example.com"', _JSON)
    r = gw.http.get("/crm/v8/settings/layouts")
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    assert b"leak@example.com" not in r.content


def test_c52_a_crm_error_echoing_values_reaches_the_client_scrubbed(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """Codes, field names and JSON paths stay; echoed criteria values, e-mail addresses
    and record values go."""
    crm, gw = fake
    error = {
        "code": "INVALID_DATA",
        "details": {
            "api_name": "Last_Name",
            "json_path": "$.criteria",
            "value": "Smithers",
            "contact": "someone@example.com",
            "duplicate_record": {"id": "5725767000000000001", "Owner": {"name": "Pat Boyle"}},
        },
        "message": "no lead named Smithers",
        "status": "error",
    }
    crm.answer = (400, orjson.dumps(error), _JSON)
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Last_Name:equals:Smithers)"})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "INVALID_DATA" and body["status"] == "error"
    assert body["details"]["api_name"] == "Last_Name"
    assert body["details"]["json_path"] == "$.criteria"
    assert body["details"]["duplicate_record"]["id"] == "5725767000000000001"
    assert b"Smithers" not in r.content and b"someone@example.com" not in r.content
    assert b"Pat Boyle" not in r.content


def test_c52_a_write_answers_crm_errors_are_scrubbed_per_record(
    crm: Crm, gw: GatewayHandle
) -> None:
    """A per-record error of a write (the CRM's DUPLICATE_DATA echoing the value) is
    scrubbed; the gateway's own refusals and the CRM's successes are untouched."""
    value = "unique-value-7731"
    crm.fault(
        path_contains="/crm/v8/Leads",
        method="POST",
        status=202,
        json={"data": [{"code": "DUPLICATE_DATA", "status": "error",
                        "message": f"duplicate value {value}",
                        "details": {"api_name": "External_Ref", "value": value}}]},
    )  # fmt: skip
    r = gw.http.post(
        "/crm/v8/Leads",
        content=orjson.dumps({"data": [{"Last_Name": "X", "External_Ref": value}]}),
    )
    (entry,) = r.json()["data"]
    assert entry["code"] == "DUPLICATE_DATA" and entry["details"]["api_name"] == "External_Ref"
    assert value.encode() not in r.content


@pytest.mark.parametrize(
    ("status", "code", "headers"),
    [
        (401, "INVALID_TOKEN", {}),
        (403, "NO_PERMISSION", {}),
        (429, "TOO_MANY_REQUESTS", {"retry-after": "30"}),
    ],
)
def test_c34_crm_auth_refusals_and_429_are_passed_on_once_and_do_not_trip_the_breaker(
    make_gateway: MakeGateway, status: int, code: str, headers: dict[str, str]
) -> None:
    """One call to the CRM per request (no refresh loop, no retry), the CRM's status and
    code reach the client, a 429 keeps its Retry-After; five in a row against a breaker
    that opens after three leave the circuit closed."""
    crm = FakeCrm()
    error = {"code": code, "details": {}, "message": "no", "status": "error"}
    crm.answer = (status, orjson.dumps(error), {**_JSON, **headers})
    with serve(crm.app()) as upstream:
        gw = make_gateway(
            {"limits": {"breaker_failures": 3, "breaker_cooldown_seconds": 30}},
            upstream=upstream.url,
        )
        answers = [gw.http.get("/crm/v8/settings/layouts") for _ in range(5)]
        assert crm.calls == 5
        crm.answer = (200, b'{"layouts": []}', _JSON)
        after = gw.http.get("/crm/v8/settings/layouts")
    for r in answers:
        assert r.status_code == status and r.json()["code"] == code, r.text
        assert r.headers.get("retry-after") == headers.get("retry-after")
    assert after.status_code == 200 and crm.calls == 6


# -- 27, 32: an upstream that misbehaves on the wire -----------------------------------------


class WireCrm:
    """A CRM on a raw socket: metadata answered properly, the route under test answered
    with the bytes (and pauses) the test gives, as no HTTP server library would send them."""

    def __init__(self, answer: list[bytes | float]) -> None:
        self.answer = answer  # bytes to send, or seconds to stall
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> WireCrm:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            buffer = b""
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    path = head.split(b" ")[1].decode()
                    meta = _meta_answer(path)
                    if meta is None:
                        for part in self.answer:
                            if isinstance(part, float):
                                time.sleep(part)
                            else:
                                conn.sendall(part)
                        return
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(meta) + meta
                    )
            except OSError:
                return


def _meta_answer(path: str) -> bytes | None:
    for suffix, body in (("/org", _ORG), ("/settings/modules", _MODULES),
                         ("/settings/fields", _FIELDS)):  # fmt: skip
        if path.split("?")[0].endswith(suffix):
            return orjson.dumps(body)
    return None


_LEAD = b'{"data": [{"id": "1", "Last_Name": "Doe", "Email": "wire-leak@example.com"}]}'


def test_c27_an_upstream_stalling_mid_body_is_504_and_no_partial_body(
    make_gateway: MakeGateway,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    with WireCrm([head, _LEAD[:60], 5.0]) as upstream:
        gw = make_gateway({"limits": {"read_timeout_seconds": 0.5}}, upstream=upstream.url)
        started = time.monotonic()
        r = gw.http.get("/crm/v8/Leads/1")
        assert time.monotonic() - started < 4
    envelope(r, 504, "GATEWAY_UPSTREAM_TIMEOUT")
    assert b"wire-leak" not in r.content and b"Doe" not in r.content


def test_c27_a_streamed_photo_stalling_mid_body_is_cut_off_never_complete(
    make_gateway: MakeGateway,
) -> None:
    """Bytes stream as they come: when the CRM stalls, the gateway aborts the connection,
    so the client never holds a body that looks whole."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    with WireCrm([head, b"\x89PNG" + b"\x00" * 20000, 5.0]) as upstream:
        gw = make_gateway({"limits": {"read_timeout_seconds": 0.5}}, upstream=upstream.url)
        host, port = gw.url.removeprefix("http://").split(":")
        raw = b""
        with socket.create_connection((host, int(port)), timeout=4) as s:
            s.sendall(
                b"GET /crm/v8/Leads/1/photo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                + AUTH["Authorization"].encode()
                + b"\r\nConnection: close\r\n\r\n"
            )
            try:
                while chunk := s.recv(65536):
                    raw += chunk
            except (ConnectionResetError, TimeoutError):
                pass
    head_out, _, body = raw.partition(b"\r\n\r\n")
    if b" 200 " in head_out.split(b"\r\n")[0]:
        assert b"chunked" in head_out.lower() or b"content-length: 100000" in head_out.lower()
        assert not body.endswith(b"0\r\n\r\n") and len(body) < 100000
    else:
        assert b" 504 " in head_out.split(b"\r\n")[0], head_out


@pytest.mark.parametrize("transport", ["aiohttp", "httpx", "h1"])
@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(_LEAD),
        b"Content-Length: %d\r\nContent-Length: 5\r\n" % len(_LEAD),
    ],
    ids=["cl-and-te", "two-lengths"],
)
def test_c32_an_upstream_answer_with_ambiguous_framing_is_502(
    make_gateway: MakeGateway, transport: str, framing: bytes
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + b"\r\n" + _LEAD
    with WireCrm([answer]) as upstream:
        gw = make_gateway(upstream=upstream.url, transport=transport)
        r = gw.http.get("/crm/v8/Leads/1")
    assert r.status_code == 502, r.text
    assert r.json()["code"] in ("GATEWAY_UPSTREAM_UNREACHABLE", "GATEWAY_UNREADABLE_UPSTREAM")
    assert b"wire-leak" not in r.content


# -- 38, 59, 62: exceptions inside the gateway ----------------------------------------------


def _generic_500(r: Any, *never: str) -> None:
    """The gateway's own 500: the envelope, and nothing of where or why it broke."""
    assert envelope(r, 500, "GATEWAY_INTERNAL_ERROR") == {}
    for text in ("Traceback", 'File "', ".py", "gateway/", *never):
        assert text not in r.text, text
        for name, value in r.headers.items():
            assert text not in value, (name, value)


def test_c38_an_exception_inside_policy_code_is_a_generic_500_and_nothing_is_sent(
    crm: Crm, gw: GatewayHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.privacy import guards

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError(f"guard broke at {crm.url}/crm/v8/Leads/search in {__file__}")

    monkeypatch.setattr(guards, "check_search_params", broken)
    gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": "Last_Name"})  # warm
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Last_Name:equals:Lee)"})
    _generic_500(r, crm.url, "guard broke")
    assert not [x for x in crm.received("/crm/") if "search" in x["path"]]
    assert gw.requests()[-1]["outcome"] == "error"


def test_c59_an_exception_half_way_through_redaction_sends_no_record_byte(
    crm: Crm, gw: GatewayHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer is redacted whole before a byte goes out: a redactor that nulls the first
    record and then fails leaves the client a generic 500, no record of the answer."""
    from gateway.handlers import reads

    real = reads.redact_body

    def half(body: Any, plan: Any, counts: Any, **kw: Any) -> None:
        real({"data": body["data"][:1]}, plan, counts, **kw)
        raise RuntimeError(f"redaction broke at {crm.url}")

    monkeypatch.setattr(reads, "redact_body", half)
    leads = crm.records("Leads")[:5]
    r = gw.http.get("/crm/v8/Leads", params={"per_page": 5, "fields": "Last_Name,Email"})
    _generic_500(r, crm.url, "redaction broke")
    for lead in leads:
        assert lead["Last_Name"] not in r.text and lead["id"] not in r.text
        assert not lead["Email"] or lead["Email"] not in r.text


def test_c62_a_500_in_production_settings_carries_no_traceback_path_or_upstream_url(
    crm: Crm, gw: GatewayHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default settings are the production ones (there is no debug switch); the log
    line names the error's type and the request id, nothing of its message or stack."""
    from gateway import pipeline

    def broken(*_: Any, **__: Any) -> Any:
        raise ValueError(f"broke reading {crm.url}/crm/v8/Leads?token=test-token")

    monkeypatch.setattr(pipeline.Pipeline, "dispatch", broken)
    capsys.readouterr()
    r = gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": "Last_Name"})
    _generic_500(r, crm.url, "broke reading", "test-token", "ValueError")
    out, err = capsys.readouterr()
    assert "internal_error" in out + err
    for text in ("Traceback", crm.url, "broke reading", "test-token"):
        assert text not in out + err, text


# -- 39: an upstream whose TLS certificate does not verify ----------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("transport", ["aiohttp", "httpx", "h1"])
def test_c39_an_upstream_with_an_untrusted_certificate_is_502_and_gets_no_request(
    make_gateway: MakeGateway, tmp_path: Path, transport: str
) -> None:
    """A self-signed certificate for the right address: the handshake fails, so no request
    (and no token) is ever written to that server."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    requests: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve_tls() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    requests.append(tls.recv(65536))
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve_tls, daemon=True)
    thread.start()
    try:
        gw = make_gateway(
            upstream=f"https://127.0.0.1:{listener.getsockname()[1]}", transport=transport
        )
        r = gw.http.get("/crm/v8/settings/modules")
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    envelope(r, 502, "GATEWAY_UPSTREAM_UNREACHABLE")
    assert requests == []


def test_c39_no_code_path_turns_certificate_verification_off() -> None:
    import gateway

    root = Path(gateway.__file__).parent
    switches = re.compile(r"verify\s*=\s*False|ssl\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False"
                          r"|_create_unverified_context|verify_ssl\s*=\s*False")  # fmt: skip
    found = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if switches.search(line)
    ]
    assert found == []
