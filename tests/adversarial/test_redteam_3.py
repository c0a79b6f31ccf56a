"""Third red team: the HTTP edge, what the CRM answers besides a body, and side doors.

Each test states one attack, checks that the data it relies on is really there, and
asserts the safe outcome. Each attack that worked when it was written (a finding) was
fixed and now stands as a defence like the others.

Classes tried here (none repeats the first two red teams): request targets the two
uvicorn parsers read their own way (absolute form, ``*``, fragments, NUL, a body holding a
second request, pipelining, HTTP/1.0 without Host), query separators the gateway does not
split on, header names a CGI-style server folds together, a write whose Content-Type says
it is not JSON, headers and statuses the CRM answers with (a forged ``X-Privacy-Withheld``,
a redirect around the gateway, 3xx bodies, ETags and conditional requests, HEAD, charset
and media-type variants), fields the metadata does not list by default, a breaker one
client can trip for all, COQL aliases, bulk-read keys in another case, and the JSON
request log.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.policy import policy_from_mapping
from gateway.settings import Settings
from tests.conftest import AUTH, LEAD_FIELDS, Crm, GatewayHandle, MakeGateway
from tests.servers import ThreadedServer, serve

MARK = "rt3-mark-9b2e@example.com"
TOKEN = "test-token"

# -- helpers ------------------------------------------------------------------------------


def _leads(crm: Crm) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    leads = crm.records("Leads")
    normal = [r for r in leads if r["$stop_processing"] is False]
    stopped = [r for r in leads if r["$stop_processing"] is True]
    assert len(normal) >= 3 and len(stopped) >= 2
    return normal, stopped


def _marked_lead(crm: Crm) -> dict[str, Any]:
    lead = _leads(crm)[0][0]
    crm.edit("Leads", lead["id"], Email=MARK)
    assert crm.one("Leads", lead["id"])["Email"] == MARK  # the marker is really there
    return lead


def _record_calls(crm: Crm) -> list[dict[str, Any]]:
    """Requests that reached the CRM other than the gateway's metadata look-ups."""
    return [
        r
        for r in crm.received("/crm/")
        if "/settings/" not in r["path"] and not r["path"].endswith("/org")
    ]


def _writes_reached(crm: Crm) -> list[dict[str, Any]]:
    return [r for r in crm.received("/crm/") if r["method"] != "GET"]


def _raw(url: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are on one connection; read until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    out = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def _statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


def _head(url: str, target: str, *lines: str, version: str = "HTTP/1.1") -> bytes:
    host = url.removeprefix("http://")
    head = [f"GET {target} {version}", f"Host: {host}", f"Authorization: Zoho-oauthtoken {TOKEN}"]
    return ("\r\n".join([*head, *lines]) + "\r\n\r\n").encode("latin-1")


def _no_mark(r: httpx.Response, mark: str = MARK) -> None:
    assert mark not in r.text, r.text[:400]
    for name, value in r.headers.multi_items():
        assert mark not in value, (name, value)


@pytest.fixture(params=["h11", "httptools"])
def parser_gw(request: pytest.FixtureRequest, crm: Crm, tmp_path: Path) -> Iterator[str]:
    """A gateway in front of the sandbox served by one named uvicorn parser."""
    settings = Settings.build(
        upstream=crm.url,
        audit_log=str(tmp_path / "audit-parser.jsonl"),
        policy=policy_from_mapping({"audit": {"fsync": "never"}}),
        env={"GATEWAY_SECRET": "test-secret"},
    )
    server = ThreadedServer(create_app(settings), http=request.param).start()
    try:
        yield server.url
    finally:
        server.stop()


# -- a fake CRM whose answers the test sets byte for byte -----------------------------------

_PRIVATE = {"restricted": True, "type": "High", "export": True}
_FIELDS: list[dict[str, Any]] = [
    {"api_name": "Last_Name", "data_type": "text", "private": None},
    {"api_name": "Email", "data_type": "email", "private": _PRIVATE},
]
#: a private field no longer on any layout: v7+ lists it only under ``type=all``
_UNUSED = {"api_name": "Old_Email", "data_type": "email", "private": _PRIVATE}

Handler = Callable[[Request], Awaitable[Response]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


@dataclass
class FakeCrm:
    handler: Handler | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    raw_headers: list[list[tuple[bytes, bytes]]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def org(_: Request) -> Response:
            return _json({"org": [{"id": "1", "privacy_settings": True}]})

        async def modules(_: Request) -> Response:
            return _json({"modules": [{"api_name": "Leads", "generated_type": "default"}]})

        async def fields(request: Request) -> Response:
            extra = [_UNUSED] if request.query_params.get("type") in ("all", "unused") else []
            return _json({"fields": [*_FIELDS, *extra]})

        async def anything(request: Request) -> Response:
            self.seen.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": request.url.query,
                    "headers": dict(request.headers),
                    "body": await request.body(),
                }
            )
            self.raw_headers.append(list(request.scope["headers"]))
            assert self.handler is not None
            return await self.handler(request)

        methods = ["GET", "HEAD", "POST", "PUT", "DELETE"]
        return Starlette(
            routes=[
                Route("/crm/{v}/org", org),
                Route("/crm/{v}/settings/modules", modules),
                Route("/crm/{v}/settings/fields", fields),
                Route("/{path:path}", anything, methods=methods),
            ]
        )


@pytest.fixture
def fake(make_gateway: MakeGateway) -> Iterator[tuple[FakeCrm, GatewayHandle]]:
    crm = FakeCrm()
    with serve(crm.app()) as upstream:
        yield crm, make_gateway(upstream=upstream.url)


def _lead_answer(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"data": [{"id": "1", "Last_Name": "Doe", "Email": MARK, **(extra or {})}]}


# == (1) the HTTP edge: targets the two parsers read their own way ==========================


def test_an_absolute_form_target_cannot_carry_a_restricted_search_past_the_guard(
    crm: Crm, parser_gw: str
) -> None:
    """``GET http://host/crm/v8/Leads/search?...``: httptools hands the app the path of the
    URL, h11 the whole URL. Either way the search on Email must never reach the CRM."""
    crm.clear()
    target = f"{parser_gw}/crm/v8/Leads/search?criteria=(Email:equals:{MARK})"
    answer = _raw(parser_gw, _head(parser_gw, target, "Connection: close"))
    assert _statuses(answer) and _statuses(answer)[0] in (400, 404), answer[:300]
    assert [r for r in crm.received("/crm/") if "search" in r["path"].lower()] == []


def test_options_asterisk_is_refused_and_reaches_nothing(crm: Crm, parser_gw: str) -> None:
    crm.clear()
    host = parser_gw.removeprefix("http://")
    raw = f"OPTIONS * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    answer = _raw(parser_gw, raw)
    assert _statuses(answer) and 400 <= _statuses(answer)[0] < 500, answer[:300]
    assert crm.received("/") == []


def test_http_1_0_without_host_is_refused_before_the_crm(crm: Crm, parser_gw: str) -> None:
    crm.clear()
    raw = (
        f"GET /crm/v8/Leads?fields={LEAD_FIELDS} HTTP/1.0\r\n"
        f"Authorization: Zoho-oauthtoken {TOKEN}\r\n\r\n"
    ).encode()
    answer = _raw(parser_gw, raw)
    assert _statuses(answer) == [400], answer[:300]
    assert crm.received("/crm/") == []


def test_a_read_whose_body_holds_a_second_request_smuggles_nothing(
    crm: Crm, parser_gw: str
) -> None:
    """A GET with a Content-Length body that is itself a request: the gateway refuses the
    read (no body on reads) and the body is never parsed as a second request."""
    _marked_lead(crm)
    crm.clear()
    inner = _head(parser_gw, f"/crm/v8/Leads/search?criteria=(Email:equals:{MARK})")
    outer = _head(parser_gw, "/crm/v8/Leads?fields=Last_Name", f"Content-Length: {len(inner)}")
    answer = _raw(parser_gw, outer + inner, timeout=3)
    assert _statuses(answer) == [400], answer[:400]
    assert [r for r in crm.received("/crm/") if "search" in r["path"].lower()] == []


def test_pipelined_requests_are_each_checked_on_their_own(crm: Crm, parser_gw: str) -> None:
    """Two requests in one write: the second (a restricted search) is not carried along
    with the first, harmless one."""
    _marked_lead(crm)
    crm.clear()
    first = _head(parser_gw, f"/crm/v8/Leads?fields={LEAD_FIELDS}&per_page=200")
    second = _head(
        parser_gw, f"/crm/v8/Leads/search?criteria=(Email:equals:{MARK})", "Connection: close"
    )
    answer = _raw(parser_gw, first + second)
    assert _statuses(answer) == [200, 400], answer[:300]
    assert MARK.encode() not in answer
    assert [r for r in crm.received("/crm/") if "search" in r["path"].lower()] == []


@pytest.mark.parametrize(
    "target",
    [
        "/crm/v8/Leads%00/search?criteria=(Email:equals:x)",
        "/crm/v8/Leads/search%00?criteria=(Email:equals:x)",
        "/crm/v8/Leads#/search?criteria=(Email:equals:x)",
        "/crm/v8/Leads/search?criteria=(Last_Name:equals:%FF%FE)",
        "/crm/v8/" + "Leads/" * 900 + "search",
        "/crm/v8/Leads/%2e%2e/Leads/search?criteria=(Email:equals:x)",
    ],
    ids=["nul-module", "nul-keyword", "fragment", "not-utf8", "over-long", "dot-dot"],
)
def test_odd_request_targets_are_refused_before_the_crm(
    crm: Crm, parser_gw: str, target: str
) -> None:
    """Whatever a parser makes of the target, no search and no criteria reaches the CRM
    (httptools drops a fragment: the plain list read left over is checked as such)."""
    crm.clear()
    answer = _raw(parser_gw, _head(parser_gw, target, "Connection: close"))
    assert _statuses(answer) and 400 <= _statuses(answer)[0] < 500, answer[:300]
    for sent in _record_calls(crm):
        assert "search" not in sent["path"].lower() and "criteria" not in sent["query"], sent


@pytest.mark.parametrize(
    "query",
    [
        "fields=Last_Name&per_page=2;criteria=(Email:equals:x)",
        "fields=Last_Name&&per_page=2&;criteria=(Email:equals:x)",
        "fields=Last_Name&per_page=2%26criteria%3D(Email:equals:x)",
    ],
    ids=["semicolon", "double-ampersand", "encoded-ampersand"],
)
def test_a_parameter_hidden_behind_another_separator_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle, query: str
) -> None:
    """A server that splits queries on ``;`` (or decodes twice) would see a criteria the
    gateway never checked. Whatever the gateway forwards must hold no ``criteria``."""
    crm.clear()
    r = httpx.get(f"{gw.url}/crm/v8/Leads?{query}", headers=AUTH)
    assert r.status_code in (200, 204, 400), r.text
    for sent in _record_calls(crm):
        raw_names = {p.partition("=")[0].lower() for p in re.split(r"[&;]", sent["query"])}
        assert "criteria" not in raw_names, sent["query"]
        names = {n.lower() for n, _ in parse_qsl(sent["query"], keep_blank_values=True)}
        assert "criteria" not in names, sent["query"]


# == (2) headers: names another server folds together, bytes re-encoded on the way =========


@pytest.mark.parametrize("name", ["X_CRM_ORG", "X_EXTERNAL", "x_http_method_override"])
def test_an_underscore_spelling_of_a_decision_header_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle, name: str
) -> None:
    """CGI-style servers (and the WSGI/PHP stacks behind many front proxies) read
    ``X_CRM_ORG`` as ``X-CRM-ORG``. The gateway decides on X-CRM-ORG / X-EXTERNAL and
    drops method overrides; their underscore spellings must not slip past unseen."""
    lead = _leads(crm)[0][0]
    crm.clear()
    r = gw.http.get(
        f"/crm/v8/Leads/{lead['id']}",
        params={"fields": LEAD_FIELDS},
        headers={name: "Leads.Email" if "EXTERNAL" in name else "2"},
    )
    assert r.status_code in (200, 400), r.text
    for sent in crm.received("/crm/"):
        folded = {n.replace("_", "-").lower(): n for n in sent["headers"]}
        for decided in ("x-crm-org", "x-external", "x-http-method-override"):
            assert folded.get(decided, decided) == decided, sent["headers"]


def test_an_obs_text_org_header_is_refused_or_forwarded_byte_for_byte(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """``X-CRM-ORG: <0xE9>`` (obs-text): the org the gateway looked up must be the one
    the CRM is asked for, byte for byte, or the request is refused."""
    crm, gw = fake
    crm.handler = lambda _r: _async(_json(_lead_answer()))
    raw = _head(gw.url, "/crm/v8/Leads?fields=Last_Name,Email", "Connection: close")
    raw = raw.replace(b"\r\n\r\n", b"\r\nX-CRM-ORG: org\xe9\r\n\r\n")
    answer = _raw(gw.url, raw)
    assert MARK.encode() not in answer
    if _statuses(answer)[0] < 400:
        (sent,) = crm.raw_headers
        assert (b"x-crm-org", b"org\xe9") in sent, sent


async def _async(response: Response) -> Response:
    return response


# == (3) writes whose Content-Type says they are not JSON ====================================


def test_a_convert_labelled_multipart_cannot_merge_into_a_stopped_contact(
    crm: Crm, gw: GatewayHandle
) -> None:
    """The CRM parses write bodies as JSON whatever their Content-Type (the SDKs send
    none). A convert body labelled ``multipart/form-data`` is still JSON to the CRM."""
    normal, _ = _leads(crm)
    contact = next(c for c in crm.records("Contacts") if c["$stop_processing"])
    assert crm.one("Contacts", contact["id"])["$stop_processing"] is True
    body = orjson.dumps({"data": [{"overwrite": True, "Contacts": {"id": contact["id"]}}]})
    crm.clear()
    gw.http.post(
        f"/crm/v8/Leads/{normal[0]['id']}/actions/convert",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert _writes_reached(crm) == []


def test_a_related_link_labelled_multipart_cannot_reach_a_stopped_lead(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = _leads(crm)
    campaign = crm.records("Campaigns")[0]
    crm.clear()
    gw.http.put(
        f"/crm/v8/Campaigns/{campaign['id']}/Leads",
        content=orjson.dumps({"data": [{"id": stopped["id"]}]}),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert _writes_reached(crm) == []


def test_a_note_update_labelled_multipart_cannot_move_it_onto_a_stopped_lead(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Only the path's record (and its current parent) is checked when the body is "not
    JSON"; the CRM reads the JSON body anyway and moves the note under a stopped lead."""
    _, (stopped, *_) = _leads(crm)
    note = next(n for n in crm.records("Notes") if n["Parent_Id"]["id"] != stopped["id"])
    crm.clear()
    body = {"data": [{"Parent_Id": {"id": stopped["id"]}, "$se_module": "Leads"}]}
    gw.http.put(
        f"/crm/v8/Notes/{note['id']}",
        content=orjson.dumps(body),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert crm.one("Notes", note["id"])["Parent_Id"]["id"] != stopped["id"]
    assert _writes_reached(crm) == []


# == (4) what the CRM answers besides a body ================================================


def test_a_withheld_header_forged_by_the_crm_is_not_passed_on(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    crm.handler = lambda _r: _async(
        _json(_lead_answer(), headers={"X-Privacy-Withheld": "0", "X-Request-Id": "forged"})
    )
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
    assert r.status_code == 200 and r.json()["data"][0]["Email"] is None
    withheld = r.headers.get_list("x-privacy-withheld")
    assert withheld == ["1; fields=Email"], withheld
    assert r.headers.get_list("x-request-id") != ["forged"]
    assert "forged" not in r.headers.get_list("x-request-id")


@pytest.mark.parametrize("transport", ["aiohttp", "httpx", "h1"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_c33_a_redirect_to_another_host_is_not_followed_and_gets_no_token(
    make_gateway: MakeGateway, transport: str, status: int
) -> None:
    """The other host never hears from the gateway: no request, so no ``Authorization``;
    the client gets the gateway's 502, not the redirect."""
    elsewhere: list[dict[str, str]] = []

    async def record(request: Request) -> Response:
        elsewhere.append(dict(request.headers))
        return _json(_lead_answer())

    crm = FakeCrm()
    other = Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST", "PUT"])])
    with serve(other) as other_host, serve(crm.app()) as upstream:

        async def away(request: Request) -> Response:
            location = f"{other_host.url}{request.url.path}"
            return Response(b"", status_code=status, headers={"Location": location})

        crm.handler = away
        gw = make_gateway(upstream=upstream.url, transport=transport)
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
        w = gw.http.post("/crm/v8/Leads", json={"data": [{"Last_Name": "Moved"}]})
    assert crm.seen and crm.seen[0]["headers"]["authorization"] == AUTH["Authorization"]
    assert elsewhere == []
    for answer in (r, w):
        assert answer.status_code == 502, answer.text
        assert other_host.url not in answer.headers.get("location", "")
        _no_mark(answer)


def test_c33_a_crm_redirect_does_not_send_the_client_around_the_gateway(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """A 3xx from the CRM (a data-centre move) with a Location on the CRM's own host: a
    client that follows it reads records with no gateway in between."""
    crm, gw = fake

    async def moved(request: Request) -> Response:
        where = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
        body = {"code": "MOVED", "details": {}, "message": "moved", "status": "error"}
        return _json(body, 301, {"Location": where})

    crm.handler = moved
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
    upstream_origin = crm.seen[0]["headers"]["host"]
    assert upstream_origin not in r.headers.get("location", ""), (r.status_code, r.headers)


def test_a_record_in_a_3xx_body_is_withheld(fake: tuple[FakeCrm, GatewayHandle]) -> None:
    crm, gw = fake
    crm.handler = lambda _r: _async(
        _json({"choices": [{"id": "1", "Last_Name": "Doe", "Email": MARK}]}, 300)
    )
    r = gw.http.get("/crm/v8/Leads/1", params={"fields": "Last_Name,Email"})
    assert crm.seen, "the CRM was asked"
    _no_mark(r)


def test_a_record_in_an_unexpected_2xx_shape_is_withheld(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    crm.handler = lambda _r: _async(
        _json({"choices": [{"id": "1", "Last_Name": "Doe", "Email": MARK}]}, 200)
    )
    r = gw.http.get("/crm/v8/Leads/1", params={"fields": "Last_Name,Email"})
    assert r.status_code in (200, 502), r.text
    _no_mark(r)


def test_a_record_beside_data_in_the_answer_is_withheld(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    answer = _lead_answer()
    answer["related"] = [{"id": "2", "Email": MARK}]
    crm.handler = lambda _r: _async(_json(answer))
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
    assert r.status_code == 200 and r.json()["data"][0]["Email"] is None
    _no_mark(r)


@pytest.mark.parametrize(
    ("content_type", "encoding", "status"),
    [
        ("application/json; charset=latin-1", "latin-1", 200),
        ("application/json; charset=utf-16", "utf-16", 200),
        ("text/json", "utf-8", 200),
        ("application/problem+json", "utf-8", 200),
        ("application/problem+json", "utf-8", 400),
        ("text/plain", "utf-8", 200),
        ("application/json-seq", "utf-8", 200),
        ("application/x-ndjson", "utf-8", 200),
    ],
)
def test_no_media_type_or_charset_carries_a_private_value_through(
    fake: tuple[FakeCrm, GatewayHandle], content_type: str, encoding: str, status: int
) -> None:
    """The same record in other media types and charsets: either it is read and redacted,
    or the answer is refused; the marker (with an accent, so charsets differ) never
    passes."""
    crm, gw = fake
    mark = "rt3-mark-\u00e9@example.com"
    body = {"data": [{"id": "1", "Last_Name": "Doe", "Email": mark}]}
    if status >= 400:
        body = {
            "code": "INVALID_DATA",
            "details": {"api_name": "Email", "value": mark},
            "message": f"invalid {mark}",
            "status": "error",
        }
    text = orjson.dumps(body).decode().replace("\\u00e9", "\u00e9")
    crm.handler = lambda _r: _async(
        Response(text.encode(encoding), status_code=status, headers={"content-type": content_type})
    )
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
    for probe in (mark, mark.encode(encoding).decode("latin-1"), "rt3-mark-"):
        assert probe not in r.content.decode("latin-1"), (r.status_code, r.text[:300])


def test_c61_head_of_a_record_read_tells_nothing_of_the_unredacted_answer(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """HEAD answers carry the CRM's headers of the full answer: its length and its
    validator would tell the length and a hash of the withheld value."""
    crm, gw = fake
    full = orjson.dumps(_lead_answer())
    tag = '"' + hashlib.md5(full).hexdigest() + '"'

    async def answer(request: Request) -> Response:
        headers = {"ETag": tag, "X-Content-Length": str(len(full))}
        return Response(full, media_type="application/json", headers=headers)

    crm.handler = answer
    r = gw.http.head("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
    assert crm.seen and crm.seen[0]["method"] == "HEAD"
    assert r.headers.get("content-length") in (None, "0")
    assert "etag" not in r.headers
    assert r.content == b""


def test_c61_an_etag_of_the_unredacted_answer_is_not_passed_on(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    full = orjson.dumps(_lead_answer())
    tag = '"' + hashlib.md5(full).hexdigest() + '"'
    crm.handler = lambda _r: _async(
        Response(full, media_type="application/json", headers={"ETag": tag})
    )
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
    assert r.status_code == 200 and r.json()["data"][0]["Email"] is None
    assert "etag" not in r.headers


def test_c61_a_conditional_read_cannot_confirm_a_guessed_private_value(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """The attacker takes the redacted answer, puts a guess where the null is, hashes it
    the way the CRM builds its ETag and asks with If-None-Match: a 304 means "right"."""
    crm, gw = fake

    def body_with(email: str) -> bytes:
        return orjson.dumps({"data": [{"id": "1", "Last_Name": "Doe", "Email": email}]})

    def etag(raw: bytes) -> str:
        return '"' + hashlib.md5(raw).hexdigest() + '"'

    async def answer(request: Request) -> Response:
        full = body_with(MARK)
        if request.headers.get("if-none-match") == etag(full):
            return Response(status_code=304, headers={"ETag": etag(full)})
        return Response(full, media_type="application/json", headers={"ETag": etag(full)})

    crm.handler = answer
    params = {"fields": "Last_Name,Email"}
    wrong = gw.http.get(
        "/crm/v8/Leads",
        params=params,
        headers={"If-None-Match": etag(body_with("guess@example.com"))},
    )
    right = gw.http.get(
        "/crm/v8/Leads", params=params, headers={"If-None-Match": etag(body_with(MARK))}
    )
    assert wrong.status_code == 200
    assert right.status_code == wrong.status_code, "a 304 confirmed the guessed private value"


def test_a_private_field_the_default_field_list_omits_is_withheld(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """From v7 ``/settings/fields`` lists used fields unless asked ``type=all``. A private
    field taken off every layout still holds values, and ``fields=`` can name it."""
    crm, gw = fake
    crm.handler = lambda _r: _async(_json(_lead_answer({"Old_Email": "old-" + MARK})))
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email,Old_Email"})
    assert r.status_code == 200 and r.json()["data"][0]["Email"] is None
    _no_mark(r, "old-" + MARK)


def test_a_composite_answer_carries_no_header_of_its_parts(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    headers = {"X-Privacy-Withheld": "0", "ETag": '"x"', "X-Leak": MARK, "Set-Cookie": "s=1"}
    crm.handler = lambda _r: _async(_json(_lead_answer(), headers=headers))
    sub = {"method": "GET", "uri": "/crm/v8/Leads", "params": {"fields": "Last_Name,Email"}}
    r = gw.http.post(
        "/crm/v8/__composite_requests", content=orjson.dumps({"__composite_requests": [sub]})
    )
    assert r.status_code == 200, r.text
    assert crm.seen, "the sub-request reached the CRM"
    _no_mark(r)
    assert "set-cookie" not in r.headers and "etag" not in r.headers
    answer = r.json()["__composite_requests"][0]["details"]["response"]
    assert answer["body"]["data"][0]["Email"] is None


# == (5) availability: one client trips the breaker for all =================================


def test_one_client_cannot_open_the_circuit_for_every_other_client(
    make_gateway: MakeGateway,
) -> None:
    """The CRM answers 500 to one client's pathological COQL and is otherwise healthy;
    after a few of them another client's plain read must still be served."""

    async def handler(request: Request) -> Response:
        if request.url.path.endswith("/coql"):
            body = {"code": "INTERNAL_ERROR", "details": {}, "message": "error", "status": "error"}
            return _json(body, 500)
        return _json(_lead_answer())

    crm = FakeCrm(handler)
    with serve(crm.app()) as upstream:
        gw = make_gateway(upstream=upstream.url)
        query = orjson.dumps({"select_query": "select Last_Name from Leads where id = 1"})
        with httpx.Client(
            base_url=gw.url, timeout=10, headers={"Authorization": "Zoho-oauthtoken attacker"}
        ) as attacker:
            for _ in range(8):
                assert attacker.post("/crm/v8/coql", content=query).status_code in (500, 503)
        victim = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
        assert victim.status_code == 200, victim.text


# == (6) COQL and bulk read: readings the CRM may not share ================================


def test_swapped_coql_aliases_leak_nothing_when_the_crm_keys_rows_by_field(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """``select Last_Name as Email, Email as Last_Name``: the gateway expects the CRM to
    key rows by alias. A CRM (or COQL version) that keys them by field name puts the
    e-mail address under ``Email``, which the gateway keeps as Last_Name's alias."""
    crm, gw = fake
    crm.handler = lambda _r: _async(_json(_lead_answer()))
    query = "select Last_Name as Email, Email as Last_Name from Leads where id is not null"
    r = gw.http.post("/crm/v8/coql", content=orjson.dumps({"select_query": query}))
    # Refused: an alias that names a field would let a value pass under another rule.
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY", r.text
    assert not crm.seen
    _no_mark(r)


@pytest.mark.parametrize(
    "query",
    [
        "select Last_Name, MIN(Email) as m from Leads group by Last_Name",
        "select Last_Name from Leads where Last_Name = 'x' group by Email",
        "select Last_Name as n from Leads where n is not null order by Email desc",
        "select Last_Name, Email as Last_Name_2 from Leads where Last_Name_2 = 'x'",
        "select Last_Name from Leads where (Last_Name = 'a' and (Email is null))",
        "select Last_Name from Leads where Last_Name in ('a', Email)",
        "select Last_Name from Leads where Last_Name not between 'a' and Email",
    ],
    ids=[
        "aggregate-alias",
        "group-by",
        "order-by-desc",
        "where-on-alias",
        "nested",
        "in-list-field",
        "between-field",
    ],
)
def test_coql_forms_not_yet_tried_cannot_use_a_restricted_field(
    crm: Crm, gw: GatewayHandle, query: str
) -> None:
    crm.clear()
    r = gw.http.post("/crm/v8/coql", content=orjson.dumps({"select_query": query}))
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY", r.text
    assert [x for x in crm.received("/coql")] == []


@pytest.mark.parametrize("key", ["Criteria", "CRITERIA"])
def test_bulk_read_criteria_under_another_key_case_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle, key: str
) -> None:
    """The gateway holds that the CRM may read keys in any case (it refuses repeats in
    any case); a criteria key in another case must then be checked or refused."""
    crm.clear()
    body = {
        "query": {
            "module": {"api_name": "Leads"},
            "fields": ["Last_Name"],
            key: {"api_name": "Email", "comparator": "equal", "value": MARK},
        }
    }
    gw.http.post(
        "/crm/bulk/v8/read",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert [x for x in crm.received("/crm/bulk/") if x["method"] == "POST"] == []


@pytest.mark.parametrize(
    "criteria",
    [
        {
            "group_operator": "and",
            "group": [
                {"api_name": "Last_Name", "comparator": "equal", "value": "x"},
                {
                    "group_operator": "or",
                    "group": [
                        {"field": {"api_name": "Email"}, "comparator": "equal", "value": MARK}
                    ],
                },
            ],
        },
        {
            "field": {"api_name": "Last_Name", "id": "1"},
            "api_name": "Email",
            "comparator": "equal",
            "value": MARK,
        },
        {"field": {"API_NAME": "Email"}, "comparator": "equal", "value": MARK},
        {"group": {"api_name": "Email", "comparator": "equal", "value": MARK}},
    ],
    ids=["v8-nested-group", "v2-and-v8-disagree", "inner-key-case", "group-not-a-list"],
)
def test_bulk_read_criteria_in_mixed_v2_and_v8_shapes_never_reach_the_crm(
    crm: Crm, gw: GatewayHandle, criteria: dict[str, Any]
) -> None:
    crm.clear()
    body = {
        "query": {"module": {"api_name": "Leads"}, "fields": ["Last_Name"], "criteria": criteria}
    }
    r = gw.http.post(
        "/crm/bulk/v8/read",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert [x for x in crm.received("/crm/bulk/") if x["method"] == "POST"] == []


# == (7) include=private_fields and the request log =========================================


@pytest.mark.parametrize(
    "include",
    ["private_fields", "PRIVATE_FIELDS,private_fields", "private%5Ffields", " private_fields"],
)
def test_include_private_fields_in_any_spelling_reveals_no_value_and_stays_home(
    crm: Crm, gw: GatewayHandle, include: str
) -> None:
    lead = _marked_lead(crm)
    crm.clear()
    r = httpx.get(
        f"{gw.url}/crm/v8/Leads/{lead['id']}?fields=Last_Name,Email&include={include}", headers=AUTH
    )
    assert r.status_code in (200, 400), r.text
    _no_mark(r)
    for sent in _record_calls(crm):
        assert "private" not in sent["query"].lower(), sent["query"]


def test_c53_the_json_request_log_holds_no_value_token_or_query(
    crm: Crm, gw: GatewayHandle, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every ``request`` log line the gateway writes (structlog, stderr/stdout) after a
    redacted read, a refused search and a refused write: no marker, no token, no query."""
    lead = _marked_lead(crm)
    _, (stopped, *_) = _leads(crm)
    capfd.readouterr()
    gw.http.get(f"/crm/v8/Leads/{lead['id']}", params={"fields": LEAD_FIELDS})
    gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Email:equals:{MARK})"})
    gw.http.get("/crm/v8/Leads/search", params={"email": MARK})
    gw.http.put(f"/crm/v8/Leads/{stopped['id']}", content=orjson.dumps({"data": [{"City": MARK}]}))
    gw.http.get(f"/crm/v8/{MARK}")
    out = capfd.readouterr()
    text = out.out + out.err
    assert "request" in text, "the request log was not captured"
    # the query never appears; reason codes such as restricted_criteria may
    for secret in (MARK, TOKEN, "criteria=", "(Email", "Zoho-oauthtoken"):
        assert secret not in text, secret
