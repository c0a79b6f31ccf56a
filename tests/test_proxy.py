"""The proxy spine: forwarding, header hygiene, framing, errors, the gateway's own endpoints."""

from __future__ import annotations

import gzip
import io
import socket
import threading
import time
import zipfile
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import AUTH, LEAD_FIELDS, Crm, GatewayHandle, MakeGateway, envelope
from tests.servers import free_port, serve


def test_non_record_routes_pass_through_unchanged(crm: Crm, gw: GatewayHandle) -> None:
    # configuration is judged (a criterion's value is withheld) and sent as judged: the
    # same JSON when it holds none
    for path in ("/crm/v8/org", "/crm/v8/settings/modules"):
        direct = crm.http.get(path)
        r = gw.http.get(path)
        assert r.status_code == 200 and r.json() == direct.json()
        assert r.headers["x-privacy-withheld"] == "0"


def _fake_upstream(handler: Any) -> Starlette:
    return Starlette(routes=[Route("/{path:path}", handler, methods=["GET", "POST", "PUT"])])


def test_c10_hop_by_hop_response_headers_never_reach_the_client(
    make_gateway: MakeGateway,
) -> None:
    async def handler(request: Request) -> Response:
        return Response(
            b"{}",
            media_type="application/json",
            headers={
                "Connection": "X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Keep-Alive": "timeout=99",
                "Proxy-Authenticate": "Basic",
                "Trailer": "X-Checksum",
                "Upgrade": "h2c",
                "X-Kept": "yes",
            },
        )

    with serve(_fake_upstream(handler)) as upstream:
        gw = make_gateway(upstream=upstream.url)
        r = gw.http.get("/crm/v8/settings/modules")
    assert r.status_code == 200
    for name in ("x-secret-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert name not in r.headers, name
    assert "x-secret-hop" not in r.headers.get("connection", "").lower()
    assert r.headers["x-kept"] == "yes"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx", "h1"])
def test_c55_a_cookie_the_crm_set_for_one_client_is_never_sent_for_another(
    make_gateway: MakeGateway, transport: str
) -> None:
    """The gateway's one upstream client is shared by every caller: it keeps no jar. Client
    A gets the CRM's Set-Cookie (its own business); client B's request carries none."""
    seen: list[tuple[str | None, str | None]] = []

    async def handler(request: Request) -> Response:
        auth = request.headers.get("authorization")
        seen.append((auth, request.headers.get("cookie")))
        cookie = {"Set-Cookie": "session=client-a-session; Path=/"}
        return Response(
            b"{}",
            media_type="application/json",
            headers=cookie if auth == AUTH["Authorization"] else {},
        )

    with serve(_fake_upstream(handler)) as upstream:
        gw = make_gateway(upstream=upstream.url, transport=transport)
        a = httpx.get(gw.url + "/crm/v8/settings/modules", headers=AUTH)
        with httpx.Client(headers={"Authorization": "Zoho-oauthtoken client-b"}) as b:
            b.get(gw.url + "/crm/v8/settings/modules")
            b.get(gw.url + "/crm/v8/settings/modules")
    assert a.headers["set-cookie"].startswith("session=client-a-session")
    assert [cookie for _, cookie in seen] == [None, None, None]
    assert [auth for auth, _ in seen][1:] == ["Zoho-oauthtoken client-b"] * 2


def test_c73_a_client_request_id_is_kept_beside_the_gateways_never_as_the_key(
    crm: Crm, gw: GatewayHandle
) -> None:
    """The audit entry's key and the id the CRM receives are the gateway's own; a short,
    plain X-Request-Id from the client is answered back and kept beside it."""
    crm.clear()
    r = gw.http.get("/crm/v8/settings/modules", headers={"X-Request-ID": "abc-123"})
    ours = r.headers["x-gateway-request-id"]
    assert r.headers["x-request-id"] == "abc-123" and len(ours) == 32
    assert crm.received()[-1]["headers"]["x-request-id"] == ours
    (entry,) = gw.requests()
    assert (entry["request_id"], entry["client_request_id"]) == (ours, "abc-123")
    for odd in ("bad id; drop", "john.doe@example.com", "x" * 65):
        r = gw.http.get("/crm/v8/settings/modules", headers={"X-Request-ID": odd})
        assert r.headers["x-request-id"] == r.headers["x-gateway-request-id"]
        assert gw.requests()[-1]["client_request_id"] is None


def test_body_over_the_bound_is_refused_with_413(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway({"limits": {"max_request_body_bytes": 1000}})
    crm.clear()
    r = gw.http.post("/crm/v8/Leads", content=b"x" * 5000)
    envelope(r, 413, "GATEWAY_BODY_TOO_LARGE")
    assert not crm.received("/crm/v8/Leads")


def test_c25_an_unreachable_upstream_is_502_generic_audited_and_never_retried(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """Refused connections: a generic 502 and the audit's reason. Then an upload host that
    accepts and drops each connection: the POST is tried once, never again."""
    port = free_port()
    gw = make_gateway(upstream=f"http://127.0.0.1:{port}")
    r = gw.http.get("/crm/v8/settings/modules")
    details = envelope(r, 502, "GATEWAY_UPSTREAM_UNREACHABLE")
    assert str(port) not in r.text and "Traceback" not in r.text, details
    (entry,) = gw.requests()
    assert entry["outcome"] == "error" and entry["reasons"] == ["upstream_unreachable"]

    accepted: list[int] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        stop = threading.Event()

        def drop_each() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                accepted.append(1)
                conn.recv(65536)
                conn.close()

        dropper = threading.Thread(target=drop_each, daemon=True)
        dropper.start()
        dropping = make_gateway(upload_upstream=f"http://127.0.0.1:{listener.getsockname()[1]}")
        r = dropping.http.post(
            "/crm/v8/upload",
            files={"file": ("rows.zip", _zip_of("Last_Name\nNew\n"))},
            headers={"feature": "bulk-write"},
        )
        stop.set()
        dropper.join(5)
    envelope(r, 502, "GATEWAY_UPSTREAM_UNREACHABLE")
    assert len(accepted) == 1


def _zip_of(csv: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("rows.csv", csv)
    return buf.getvalue()


def test_c26_an_upstream_that_never_answers_is_504_within_the_read_timeout(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"limits": {"read_timeout_seconds": 0.3}})
    crm.fault(path_contains="/settings/modules", delay=5, times=1)
    started = time.monotonic()
    envelope(gw.http.get("/crm/v8/settings/modules"), 504, "GATEWAY_UPSTREAM_TIMEOUT")
    assert time.monotonic() - started < 2


def test_a_gzip_json_answer_is_decoded_checked_and_sent_plain(crm: Crm, gw: GatewayHandle) -> None:
    """A JSON answer the gateway passes on is still read whole and parsed (checklist 29-31):
    it reaches the client decoded, whatever the client accepts."""
    crm.config(gzip=True)
    direct = crm.http.get("/crm/v8/settings/modules", headers={"Accept-Encoding": "identity"})
    for accept in ("identity", "gzip"):
        r = httpx.get(
            gw.url + "/crm/v8/settings/modules", headers={**AUTH, "Accept-Encoding": accept}
        )
        assert "content-encoding" not in r.headers
        assert int(r.headers["content-length"]) == len(r.content)
        assert orjson.loads(r.content) == direct.json()


def test_unknown_paths_are_not_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    envelope(gw.http.get("/somewhere/else"), 404, "INVALID_URL_PATTERN")
    envelope(gw.http.get("/crm/v8/Leads/../../admin"), 404, "INVALID_URL_PATTERN")
    assert not crm.received("/")


def test_gateway_endpoints_are_never_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    assert gw.http.get("/_gateway/health").json() == {"status": "ok"}
    assert gw.http.get("/_gateway/nothing").status_code == 404
    assert not crm.received("/")


def test_ready_once_the_upstream_answers(crm: Crm, make_gateway: MakeGateway) -> None:
    down = make_gateway(upstream=f"http://127.0.0.1:{free_port()}")
    r = down.http.get("/_gateway/ready")
    assert r.status_code == 503 and r.json()["checks"]["upstream"].startswith(
        "the CRM is not reachable"
    )
    assert down.http.get("/_gateway/health").status_code == 200
    up = make_gateway()
    ready = up.http.get("/_gateway/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx", "h1"])
def test_both_transports_redact_and_forward(
    crm: Crm, make_gateway: MakeGateway, transport: str
) -> None:
    gw = make_gateway(transport=transport)
    r = gw.http.get("/crm/v8/Leads", params={"per_page": 10, "fields": LEAD_FIELDS})
    assert r.status_code == 200 and all(rec["Email"] is None for rec in r.json()["data"])
    crm.config(gzip=True)
    assert gw.http.get("/crm/v8/settings/modules").status_code == 200
    envelope(
        gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Email:equals:a)"}),
        400,
        "INVALID_QUERY",
    )


def test_gzip_request_body_from_client_is_forwarded_as_sent(crm: Crm, gw: GatewayHandle) -> None:
    # A write body compressed by the client cannot be checked: refused as invalid JSON.
    body = gzip.compress(orjson.dumps({"data": [{"id": "1", "Last_Name": "x"}]}))
    crm.clear()
    r = gw.http.put("/crm/v8/Leads", content=body, headers={"Content-Encoding": "gzip"})
    envelope(r, 400, "INVALID_DATA")
    assert not [x for x in crm.received("/crm/v8/Leads") if x["method"] == "PUT"]


def test_uploads_go_to_the_upload_host(crm: Crm, make_gateway: MakeGateway) -> None:
    from gateway.sandbox import create_app as create_sandbox

    with serve(create_sandbox()) as upload_host:
        gw = make_gateway(upload_upstream=upload_host.url)
        crm.clear()
        r = gw.http.post(
            "/crm/v8/upload",
            files={"file": ("rows.zip", _zip_of("Last_Name\nNew\n"))},
            headers={"feature": "bulk-write"},
        )
        received = httpx.get(upload_host.url + "/_sandbox/requests").json()["requests"]
    assert r.status_code == 200 and r.json()["code"] == "FILE_UPLOAD_SUCCESS"
    assert [x["path"] for x in received if x["path"].endswith("/upload")] == ["/crm/v8/upload"]
    assert not crm.received("/upload")
