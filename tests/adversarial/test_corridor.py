"""Attacks on the corridor: other spellings, unknown routes, headers checked but not sent,
side channels in the answer, values in the audit trail, and work that stalls the server.

Each class of the default-deny issue has its attacks here; the generated test at the end
sends every record-bearing route in letter-case and encoding variants.
"""

from __future__ import annotations

import io
import threading
import zipfile
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.adversarial.conftest import Marked
from tests.conftest import AUTH, Crm, GatewayHandle, MakeGateway
from tests.servers import serve


def _coql(gw: GatewayHandle, path: str, query: str) -> httpx.Response:
    return gw.http.post(path, content=orjson.dumps({"select_query": query}))


def _refused_before_the_crm(crm: Crm, r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["status"] == "error"
    assert [x for x in crm.received("/crm/") if "/settings/" not in x["path"]
            and not x["path"].endswith("/org")] == []  # fmt: skip


# -- other spellings of a route -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/crm/v8/COQL", "/crm/V8/Coql", "/crm/v8/coql/", "/crm/v8/%63oql", "/CRM/v8/coql"]
)
def test_coql_under_another_spelling_of_its_path_is_redacted(
    crm: Crm, gw: GatewayHandle, marked: Marked, path: str
) -> None:
    query = f"select Email, Mobile, City, Description from Leads where id = {marked.lead['id']}"
    direct = crm.http.post(path.rstrip("/"), content=orjson.dumps({"select_query": query}))
    assert marked.leaked(direct.text)  # the CRM would answer it in that spelling
    r = _coql(gw, path, query)
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["id"] == marked.lead["id"]
    marked.assert_clean(r)
    marked.assert_audit_clean(gw)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/crm/v8/Leads/Search", "criteria=(Email:starts_with:a)"),
        ("/crm/v8/LEADS/SEARCH", "Criteria=(Email:starts_with:a)"),
        ("/crm/v8/Leads/actions/count", "criteria=(Email:starts_with:a)"),
        ("/crm/v8/leads/Actions/COUNT", "criteria=(Mobile:equals:1)"),
        ("/crm/v8/Leads/actions/count", "email=a@example.com"),
        ("/crm/v8/Leads/actions/count", "phone=555"),
    ],
)
def test_c18_every_search_channel_refuses_restricted_criteria_in_any_spelling(
    crm: Crm, make_gateway: MakeGateway, parser: str, path: str, query: str
) -> None:
    """A count, a list or a search on a restricted value is a yes/no oracle on it. Under
    both parsers; COQL, bulk reads and sorting: tests/test_guards.py ``test_c18_*``."""
    gw = make_gateway(http=parser)
    if "count" in path.lower():
        direct = crm.http.get(f"{path}?{query}")
        assert direct.status_code == 200 and "count" in direct.json()  # the oracle is real
    crm.clear()
    r = gw.http.get(f"{path}?{query}")
    _refused_before_the_crm(crm, r, 400, "INVALID_QUERY")
    assert r.json()["details"]["reason"] == "Cannot use the restricted field."


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/crm/v8/Leads", "fields=Last_Name&criteria=(Email:starts_with:a)"),
        ("/crm/v8/Contacts/1/Leads", "fields=Last_Name&Criteria=(Email:starts_with:a)"),
        ("/crm/v8/Leads", "fields=Last_Name&email=a@example.com"),
        ("/crm/v8/Contacts/1/Leads", "fields=Last_Name&cvid=1"),
    ],
)
def test_search_keys_on_a_list_or_related_list_are_not_its_parameters(
    crm: Crm, make_gateway: MakeGateway, parser: str, path: str, query: str
) -> None:
    """A list or related list takes no search key (and a related list no custom view): a
    CRM that honoured one would be an oracle, so it is refused before the CRM as any
    parameter outside the route table is (default deny), under both parsers."""
    gw = make_gateway(http=parser)
    r = gw.http.get(f"{path}?{query}")
    _refused_before_the_crm(crm, r, 400, "INVALID_DATA")
    name = query.split("&")[1].split("=")[0].lower()
    assert r.json()["details"] == {
        "reason": "the gateway does not forward this parameter",
        "param_name": name,
    }
    entry = gw.requests()[-1]
    assert entry["outcome"] == "refused" and "unknown_parameter" in entry["reasons"]


# -- routes the gateway does not know ----------------------------------------------------------


def test_a_composite_request_is_never_forwarded_whole_each_part_walks_the_corridor(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """A read comes back redacted, a write to a stopped lead is refused, a search on a
    restricted field is refused: each as if sent alone. The CRM never sees the composite."""
    body = {
        "__composite_requests": [
            {"method": "GET", "uri": f"/crm/v8/Leads/{marked.lead['id']}",
             "params": {"fields": "Email,Mobile,City"}, "sub_request_id": "1"},
            {"method": "PUT", "uri": "/crm/v8/Leads", "sub_request_id": "2",
             "body": {"data": [{"id": marked.stopped["id"], "City": "Written"}]}},
            {"method": "GET", "uri": "/crm/v8/Leads/search",
             "params": {"criteria": f"(Email:equals:{marked.markers[0]})"}},
        ]
    }  # fmt: skip
    direct = crm.http.post("/crm/v8/__composite_requests", json=body)
    assert marked.leaked(direct.text)  # the CRM would answer it whole, values included
    crm.edit("Leads", marked.stopped["id"], City="Before")  # undo the direct call's write
    crm.clear()
    for path in ("/crm/v8/__composite_requests", "/crm/v8/__COMPOSITE_REQUESTS"):
        r = gw.http.post(path, content=orjson.dumps(body))
        assert r.status_code == 200, r.text
        read, write, search = (e["details"]["response"] for e in r.json()["__composite_requests"])
        assert read["status_code"] == 200 and read["body"]["data"][0]["Email"] is None
        assert write["status_code"] == 400
        assert write["body"]["data"][0]["details"]["reason"] == "stop_processing"
        assert search["status_code"] == 400 and search["body"]["code"] == "INVALID_QUERY"
        marked.assert_clean(r)
    assert crm.received("composite") == [] and crm.received("COMPOSITE") == []
    assert not [x for x in crm.received("/crm/v8/Leads") if x["method"] == "PUT"]
    assert not crm.received("/search")
    assert crm.one("Leads", marked.stopped["id"]).get("City") == "Before"
    (entry, _) = gw.requests()
    assert entry["route"] == "/crm/{v}/__composite_requests" and entry["outcome"] == "refused"
    assert {"stop_processing", "restricted_criteria"} <= set(entry["reasons"])
    marked.assert_audit_clean(gw)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"__composite_requests": [{"method": "GET", "uri": "/crm/v8/org"}],
          "rollback_on_fail": True}, "rollback_on_fail cannot be kept"),
        ({"__composite_requests": [
            {"method": "GET", "uri": "/crm/v8/Leads/1", "sub_request_id": "a"},
            {"method": "GET", "uri": "/crm/v8/Leads/@{a:$.data[0].id}"}]},
         "references between sub-requests"),
    ],
)  # fmt: skip
def test_a_composite_whose_meaning_cannot_be_kept_is_refused_whole(
    crm: Crm, gw: GatewayHandle, body: dict[str, Any], reason: str
) -> None:
    crm.clear()
    r = gw.http.post("/crm/v8/__composite_requests", content=orjson.dumps(body))
    _refused_before_the_crm(crm, r, 400, "NOT_SUPPORTED")
    assert r.json()["details"] == {"reason": reason}


def test_a_composite_inside_a_composite_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    inner = {"__composite_requests": [{"method": "GET", "uri": "/crm/v8/org"}]}
    body = {"__composite_requests": [
        {"method": "POST", "uri": "/crm/v8/__composite_requests", "body": inner}]}  # fmt: skip
    crm.clear()
    r = gw.http.post("/crm/v8/__composite_requests", content=orjson.dumps(body))
    (entry,) = r.json()["__composite_requests"]
    assert entry["details"]["response"]["body"]["code"] == "NOT_SUPPORTED"
    assert crm.received("composite") == []


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/crm/v8/Leads/actions/assign_territories", 404, "INVALID_URL_PATTERN"),
        ("POST", "/crm/v8/Leads/123/actions/add_tags", 404, "INVALID_URL_PATTERN"),
        ("GET", "/crm/v8/Leads/123/Notes/abc/def", 404, "INVALID_URL_PATTERN"),
        ("GET", "/crm/v8/Lead%2573", 404, "INVALID_URL_PATTERN"),  # still decodes further
        ("GET", "/crm/v8/NotAModule", 400, "INVALID_MODULE"),
        ("POST", "/crm/v8/Leads/123", 405, "INVALID_REQUEST_METHOD"),
        ("PROPFIND", "/crm/v8/Leads", 405, "INVALID_REQUEST_METHOD"),
        ("PATCH", "/crm/v8/Leads", 405, "INVALID_REQUEST_METHOD"),
        ("GET", "/crm/v8/Leads/..%2F..%2Fsettings", 404, "INVALID_URL_PATTERN"),
    ],
)
def test_a_request_matching_no_route_is_refused_in_the_crm_envelope_and_audited(
    crm: Crm, gw: GatewayHandle, method: str, path: str, status: int, code: str
) -> None:
    crm.clear()
    r = gw.http.request(method, path, params={"fields": "Last_Name"})
    _refused_before_the_crm(crm, r, status, code)
    (entry,) = gw.requests()
    assert entry["outcome"] == "refused" and entry["status"] == status


# -- a header that steers a decision is the header that is forwarded ----------------------------


def test_a_header_named_in_connection_cannot_switch_the_org_the_gateway_checks(
    make_gateway: MakeGateway,
) -> None:
    """The fake CRM answers privacy_settings false for another org (X-CRM-ORG) and holds a
    production record. Named in Connection, X-CRM-ORG would steer the org look-up and then
    be dropped before the record request: the production record must still be redacted."""
    seen: list[dict[str, str]] = []

    async def org(request: Request) -> Response:
        off = "x-crm-org" in request.headers
        return _json({"org": [{"id": "2" if off else "1", "privacy_settings": not off}]})

    async def modules(_: Request) -> Response:
        return _json({"modules": [{"api_name": "Leads", "generated_type": "default"}]})

    async def fields(_: Request) -> Response:
        private = {"restricted": True, "type": "High", "export": True}
        return _json({"fields": [{"api_name": "Email", "data_type": "email", "private": private}]})

    async def leads(request: Request) -> Response:
        seen.append(dict(request.headers))
        return _json({"data": [{"id": "1", "Email": "production-secret@example.com"}]})

    app = Starlette(
        routes=[
            Route("/crm/v8/org", org),
            Route("/crm/v8/settings/modules", modules),
            Route("/crm/v8/settings/fields", fields),
            Route("/crm/v8/Leads", leads),
        ]
    )
    with serve(app) as upstream:
        gw = make_gateway(upstream=upstream.url)
        r = gw.http.get(
            "/crm/v8/Leads",
            params={"fields": "Email"},
            headers={"X-CRM-ORG": "2", "Connection": "keep-alive, X-CRM-ORG"},
        )
        assert r.status_code == 200, r.text
        assert "production-secret" not in r.text
        assert r.json()["data"][0]["Email"] is None
        assert seen and "x-crm-org" not in seen[-1]


@pytest.mark.parametrize(
    "headers",
    [
        [("X-EXTERNAL", "Leads.External_Ref"), ("x-external", "Leads.Email")],
        [("Authorization", "Zoho-oauthtoken a"), ("Authorization", "Zoho-oauthtoken b")],
        [("Content-Encoding", "gzip")],
    ],
)
def test_an_ambiguous_or_encoded_request_is_refused(
    crm: Crm, gw: GatewayHandle, headers: list[tuple[str, str]]
) -> None:
    crm.clear()
    base = [(k, v) for k, v in AUTH.items() if not any(n.lower() == k.lower() for n, _ in headers)]
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        r = http.get("/crm/v8/Leads/1", headers=[*base, *headers])
    _refused_before_the_crm(crm, r, 400, "INVALID_DATA")


# -- side channels in the answer ------------------------------------------------------------


def test_the_withheld_header_does_not_tell_an_empty_restricted_value_from_a_full_one(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    other = next(r for r in crm.records("Leads") if r["id"] != marked.lead["id"])
    crm.edit("Leads", other["id"], Email=None, Mobile=None)
    answers = [
        gw.http.get(f"/crm/v8/Leads/{rid}", params={"fields": "Email,Mobile"})
        for rid in (marked.lead["id"], other["id"])
    ]
    assert all(a.status_code == 200 for a in answers)
    full, empty = (a.headers["x-privacy-withheld"] for a in answers)
    assert full == empty == "2; fields=Email,Mobile"


def test_a_coql_column_that_is_a_whole_lookup_gets_its_modules_mask(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """A lookup value may carry fields of its target: they are redacted by that module."""
    crm.edit(
        "Leads",
        marked.lead["id"],
        Referrer={"name": "x", "id": marked.contact["id"], "Email": marked.markers[0]},
    )
    query = f"select Last_Name, Referrer from Leads where id = {marked.lead['id']}"
    assert marked.leaked(crm.http.post("/crm/v8/coql", json={"select_query": query}).text)
    r = _coql(gw, "/crm/v8/coql", query)
    assert r.status_code == 200, r.text
    marked.assert_clean(r)


def test_an_external_id_read_keyed_by_a_restricted_field_is_refused(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """Reading /Leads/{value} with X-EXTERNAL: Leads.Email says whether that e-mail exists."""
    crm.clear()
    r = gw.http.get(
        f"/crm/v8/Leads/{marked.markers[0]}",
        params={"fields": "Last_Name"},
        headers={"X-EXTERNAL": "Leads.Email"},
    )
    _refused_before_the_crm(crm, r, 400, "INVALID_QUERY")
    assert r.json()["details"]["api_name"] == "Email"
    marked.assert_clean(r)
    marked.assert_audit_clean(gw)


# -- the audit holds vocabulary only --------------------------------------------------------


def test_values_from_paths_uploads_and_queries_never_reach_the_audit(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    email, mobile, *_ = marked.markers
    crm.edit("Leads", marked.lead["id"], External_Ref=mobile.replace("+", ""))
    # an X-EXTERNAL path value (the value of an external id field)
    gw.http.get(
        f"/crm/v8/Leads/{mobile.replace('+', '')}",
        params={"fields": "Last_Name"},
        headers={"X-EXTERNAL": "Leads.External_Ref"},
    )
    gw.http.put(
        f"/crm/v8/Leads/{mobile.replace('+', '')}",
        content=orjson.dumps({"data": [{"Last_Name": "Z"}]}),
        headers={"X-EXTERNAL": "Leads.External_Ref"},
    )
    # an upload whose id column holds a value, and a cell that looks like an id
    gw.http.post(
        "/crm/v8/upload",
        files={"file": ("x.zip", _zip(f"id,Email\n{email},{email}\n"), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    # criteria, a refused search and a bad COQL carrying the value
    gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Last_Name:equals:{email})"})
    gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Email:equals:{email})"})
    _coql(gw, "/crm/v8/coql", f"select Last_Name from Leads where Last_Name = '{email}' ord")
    assert len(gw.requests()) == 6
    marked.assert_audit_clean(gw)
    assert all(set(e["record_ids"]) <= {marked.lead["id"]} for e in gw.requests())


# -- bounded work off the event loop ----------------------------------------------------------


def _zip(csv_text: str, name: str = "Leads.csv") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, csv_text)
    return buf.getvalue()


def test_a_zip_bomb_upload_is_refused_and_never_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Leads.csv", b"id\n" + b"0\n" * (32 * 1024 * 1024))
    assert len(bomb.getvalue()) < 200_000
    crm.clear()
    r = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", bomb.getvalue(), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["details"]["reason"] in (
        "compression_ratio",
        "decompressed_too_large",
        "too_many_rows",
    )
    assert crm.received("/upload") == []


def test_health_keeps_answering_while_a_large_upload_is_parsed(crm: Crm, gw: GatewayHandle) -> None:
    """The upload is parsed in a worker thread: the event loop answers health meanwhile."""
    rows = "".join(f"{5725767000000000000 + i},Town\n" for i in range(300_000))
    big = _zip("id,City\n" + rows)
    done = threading.Event()
    health: list[int] = []

    def probe() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as http:
            while not done.is_set():
                health.append(http.get("/_gateway/health").status_code)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        r = gw.http.post(
            "/crm/v8/upload",
            files={"file": ("Leads.zip", big, "application/zip")},
            headers={"feature": "bulk-write"},
            timeout=120,
        )
    finally:
        done.set()
        prober.join()
    assert r.status_code in (200, 400), r.text  # its ids are unknown to the CRM: refused
    # While the upload was parsed and looked up, health answered, and more than once.
    assert len(health) > 3 and set(health) == {200}


def test_an_update_of_more_than_a_hundred_records_is_refused_before_any_look_up(
    crm: Crm, gw: GatewayHandle
) -> None:
    crm.clear()
    body = {"data": [{"id": str(5725767000000000000 + i), "City": "X"} for i in range(101)]}
    r = gw.http.put("/crm/v8/Leads", content=orjson.dumps(body))
    _refused_before_the_crm(crm, r, 400, "LIMIT_EXCEEDED")


# -- every record-bearing route, in letter-case and encoding variants -------------------------


def _variants(word: str) -> list[str]:
    return sorted(
        {word, word.upper(), word.lower(), word.swapcase(), "%" + f"{ord(word[0]):02X}" + word[1:]}
    )


def _record_routes(m: Marked) -> list[tuple[str, str, dict[str, Any] | None]]:
    lid, cid = m.lead["id"], m.contact["id"]
    fields = "Last_Name,Email,Mobile,Phone,City,Description,Visits,$stop_processing"
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    for v in ("v2", "v8"):
        for module in _variants("Leads"):
            out += [
                ("GET", f"/crm/{v}/{module}?fields={fields}&ids={lid}", None),
                ("GET", f"/crm/{v}/{module}/{lid}?fields={fields}", None),
            ]
            for search in _variants("search"):
                out.append(
                    (
                        "GET",
                        f"/crm/{v}/{module}/{search}?criteria=(Last_Name:equals:"
                        f"{m.lead['Last_Name']})&fields={fields}",
                        None,
                    )
                )
        for related in _variants("Leads"):
            out.append(("GET", f"/crm/{v}/Contacts/{cid}/{related}?fields={fields}", None))
        for coql in _variants("coql"):
            query = f"select Email, Mobile, Phone, City, Referrer from Leads where id = {lid}"
            out.append(("POST", f"/crm/{v}/{coql}", {"select_query": query}))
    return out


def test_no_spelling_of_a_record_route_returns_an_unredacted_marker(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    routes = _record_routes(marked)
    answered = 0
    for method, path, body in routes:
        content = orjson.dumps(body) if body is not None else None
        direct = crm.http.request(method, path, content=content)
        r = gw.http.request(method, path, content=content)
        marked.assert_clean(r)
        if r.status_code == 200:
            answered += 1
            assert marked.leaked(direct.text), path  # the same request leaks without us
    assert answered >= len(routes) // 2  # most spellings are answered, redacted
    marked.assert_audit_clean(gw)


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@pytest.mark.parametrize(
    "query", ["fields=Last_Name,Referrer.Email", "sort_by=Referrer.Email", "fields=Owner.email"]
)
def test_a_field_list_naming_a_lookup_path_is_refused_on_record_reads(
    crm: Crm, gw: GatewayHandle, query: str
) -> None:
    """The record APIs take plain field names; an answer keyed ``Referrer.Email`` would
    hold a value under a key the redactor does not know."""
    crm.clear()
    r = gw.http.get(f"/crm/v8/Leads?{query}")
    _refused_before_the_crm(crm, r, 400, "INVALID_DATA")
