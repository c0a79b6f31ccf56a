"""The proxy spine: forwarding, header hygiene, framing, errors, the gateway's own endpoints."""

from __future__ import annotations

import gzip
import socket
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
    direct = crm.http.get("/crm/v8/settings/modules")
    r = gw.http.get("/crm/v8/settings/modules")
    assert r.status_code == 200 and r.content == direct.content
    assert "x-privacy-withheld" not in r.headers


def test_hop_by_hop_request_headers_are_dropped(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    gw.http.get(
        "/crm/v8/settings/modules",
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic abc",
            "TE": "trailers",
            "X-End-To-End": "kept",
        },
    )
    (sent,) = crm.received("/settings/modules")
    h = sent["headers"]
    for name in ("x-hop", "keep-alive", "proxy-authorization", "te"):
        assert name not in h
    assert h["x-end-to-end"] == "kept"
    assert h["accept-encoding"] == "gzip, identity"
    assert h["authorization"] == AUTH["Authorization"]


def test_method_override_headers_never_reach_the_crm(crm: Crm, gw: GatewayHandle) -> None:
    """A GET is checked as a read; nothing upstream may turn it into a write."""
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


def _fake_upstream(handler: Any) -> Starlette:
    return Starlette(routes=[Route("/{path:path}", handler, methods=["GET", "POST", "PUT"])])


def test_hop_by_hop_response_headers_are_dropped_and_no_cookie_jar_is_kept(
    make_gateway: MakeGateway,
) -> None:
    seen_cookies: list[str | None] = []

    async def handler(request: Request) -> Response:
        seen_cookies.append(request.headers.get("cookie"))
        return Response(
            b"{}",
            media_type="application/json",
            headers={
                "Connection": "X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Proxy-Authenticate": "Basic",
                "Set-Cookie": "session=abc; Path=/",
                "X-Kept": "yes",
            },
        )

    with serve(_fake_upstream(handler)) as upstream:
        gw = make_gateway(upstream=upstream.url)
        r1 = gw.http.get("/crm/v8/settings/modules")
        gw.http.cookies.clear()
        gw.http.get("/crm/v8/settings/modules")
    assert "x-secret-hop" not in r1.headers and "proxy-authenticate" not in r1.headers
    assert r1.headers["x-kept"] == "yes"
    assert r1.headers["set-cookie"].startswith("session=abc")  # the client's business
    assert seen_cookies == [None, None]  # the gateway kept no jar between callers


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


def test_unreachable_upstream_is_502(make_gateway: MakeGateway) -> None:
    gw = make_gateway(upstream=f"http://127.0.0.1:{free_port()}")
    envelope(gw.http.get("/crm/v8/settings/modules"), 502, "GATEWAY_UPSTREAM_UNREACHABLE")


def test_upstream_timeout_is_504(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway({"limits": {"read_timeout_seconds": 0.3}})
    crm.fault(path_contains="/settings/modules", delay=1.5, times=1)
    envelope(gw.http.get("/crm/v8/settings/modules"), 504, "GATEWAY_UPSTREAM_TIMEOUT")


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


def _raw_get(url: str, target: str) -> tuple[int, bytes]:
    """A request line sent as written (httpx would normalise dot segments itself)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {AUTH['Authorization']}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize(
    "target",
    [
        "/crm/v8/settings/../Leads",
        "/crm/v8/org/..%2FLeads",
        "/crm/v8/settings/%2E%2E/Leads",
        "/crm/v8/upload/../Leads",
        "/crm/v8//Leads",
        "/crm/v8/settings/..;/Leads",
    ],
)
def test_paths_that_could_be_normalised_into_a_record_route_are_refused(
    crm: Crm, gw: GatewayHandle, target: str
) -> None:
    crm.clear()
    status, body = _raw_get(gw.url, target + "?per_page=5")
    assert status == 404
    assert orjson.loads(body)["code"] == "INVALID_URL_PATTERN"
    assert b"@example.com" not in body
    assert not crm.received("/")  # refused before the CRM could normalise it


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


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
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
    import io
    import zipfile

    from gateway.sandbox import create_app as create_sandbox

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("rows.csv", "Last_Name\nNew\n")
    with serve(create_sandbox()) as upload_host:
        gw = make_gateway(upload_upstream=upload_host.url)
        crm.clear()
        r = gw.http.post(
            "/crm/v8/upload",
            files={"file": ("rows.zip", buf.getvalue())},
            headers={"feature": "bulk-write"},
        )
        received = httpx.get(upload_host.url + "/_sandbox/requests").json()["requests"]
    assert r.status_code == 200 and r.json()["code"] == "FILE_UPLOAD_SUCCESS"
    assert [x["path"] for x in received if x["path"].endswith("/upload")] == ["/crm/v8/upload"]
    assert not crm.received("/upload")
