"""Read enforcement, end to end: every record-bearing answer reaches the client redacted."""

from __future__ import annotations

import gzip
import io
import zipfile
from typing import Any

import httpx
import orjson

from tests.conftest import AUTH, ORG2_AUTH, Crm, GatewayHandle, MakeGateway, envelope

LEAD_MASKED = (
    "Email",
    "Mobile",
    "Date_of_Birth",
    "Phone",
    "Secondary_Email",
    "First_Name",
    "Full_Name",  # "First_Name Last_Name": as private as First_Name (catalog.py DERIVED)
    "City",
    "Description",
    "Referrer",
)


def _lead_with(crm: Crm, **wanted: Any) -> dict[str, Any]:
    for rec in crm.records("Leads"):
        if all((rec.get(k) is not None) == v for k, v in wanted.items()):
            return rec
    raise AssertionError(f"no seeded lead with {wanted}")


def test_list_nulls_every_private_field_and_keeps_every_key(crm: Crm, gw: GatewayHandle) -> None:
    direct = crm.http.get("/crm/v2/Leads", params={"per_page": 50}).json()
    through = gw.http.get("/crm/v2/Leads", params={"per_page": 50})
    assert through.status_code == 200
    body = through.json()
    assert body["info"] == direct["info"]
    for raw, red in zip(direct["data"], body["data"], strict=True):
        assert list(red) == list(raw)  # same keys, same order
        for name in LEAD_MASKED:
            assert red[name] is None
        assert red["Last_Name"] == raw["Last_Name"]
        assert red["Company"] == raw["Company"]
        assert red["$stop_processing"] == raw["$stop_processing"]


def test_c19_fields_naming_a_restricted_field_get_it_nulled(
    crm: Crm, make_gateway: MakeGateway, parser: str
) -> None:
    """The default policy answers ``fields=`` naming restricted fields with them nulled (not
    403); the other named fields come back as the CRM sent them."""
    gw = make_gateway(http=parser)
    params = {"per_page": 20, "fields": "Last_Name,Email,Mobile"}
    direct = crm.http.get("/crm/v8/Leads", params=params).json()["data"]
    assert any(rec["Email"] for rec in direct)  # there are values to withhold
    r = gw.http.get("/crm/v8/Leads", params=params)
    assert r.status_code == 200, r.text
    for raw, red in zip(direct, r.json()["data"], strict=True):
        assert red["Email"] is None and red["Mobile"] is None
        assert red["Last_Name"] == raw["Last_Name"] and red["id"] == raw["id"]


def test_withheld_header_counts_every_private_value_present_even_empty_ones(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Whether a withheld value was empty is a fact about it too: the header must not tell."""
    direct = crm.http.get("/crm/v2/Leads", params={"per_page": 20}).json()["data"]
    assert any(r.get(n) is None for r in direct for n in LEAD_MASKED if n in r)  # empty ones
    expected = sum(1 for r in direct for n in LEAD_MASKED if n in r)
    r = gw.http.get("/crm/v2/Leads", params={"per_page": 20})
    count, _, names = r.headers["x-privacy-withheld"].partition("; fields=")
    assert int(count) == expected
    assert {"Email", "Mobile"} <= set(names.split(","))
    assert "content-encoding" not in r.headers and "etag" not in r.headers
    assert int(r.headers["content-length"]) == len(r.content)


def test_get_one_record_redacts_subform_rows_with_the_subform_metadata(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = next(
        crm.one("Leads", r["id"])
        for r in crm.records("Leads")
        if crm.one("Leads", r["id"]).get("Visits")
    )
    r = gw.http.get(f"/crm/v2/Leads/{lead['id']}")
    rec = r.json()["data"][0]
    assert rec["Email"] is None
    assert len(rec["Visits"]) == len(lead["Visits"])
    for raw, row in zip(lead["Visits"], rec["Visits"], strict=True):
        assert row["Notes"] is None  # restricted in Lead_Visits
        assert row["Visitor_IP"] is None  # private Low, not shown by default
        assert row["Visit_Date"] == raw["Visit_Date"]


def test_private_lookup_is_nulled_whole(crm: Crm, gw: GatewayHandle) -> None:
    lead = _lead_with(crm, Referrer=True)
    rec = gw.http.get(f"/crm/v2/Leads/{lead['id']}").json()["data"][0]
    assert rec["Referrer"] is None


def test_search_results_are_redacted(crm: Crm, gw: GatewayHandle) -> None:
    lead = crm.records("Leads")[0]
    r = gw.http.get(
        "/crm/v2/Leads/search", params={"criteria": f"(Last_Name:equals:{lead['Last_Name']})"}
    )
    assert r.status_code == 200
    assert all(rec["Email"] is None for rec in r.json()["data"])


def test_related_list_is_redacted_with_the_related_modules_metadata(
    crm: Crm, gw: GatewayHandle
) -> None:
    # Contacts/{id}/Leads returns Leads: Leads' metadata applies, not Contacts'.
    lead = _lead_with(crm, Referrer=True)
    contact_id = lead["Referrer"]["id"]
    direct = crm.http.get(f"/crm/v2/Contacts/{contact_id}/Leads")
    assert direct.status_code == 200 and any(r["Email"] for r in direct.json()["data"])
    r = gw.http.get(f"/crm/v2/Contacts/{contact_id}/Leads")
    assert r.status_code == 200
    assert all(rec["Email"] is None and rec["Mobile"] is None for rec in r.json()["data"])


def test_empty_answer_passes_as_204(gw: GatewayHandle) -> None:
    r = gw.http.get("/crm/v2/Leads/search", params={"criteria": "(Last_Name:equals:Zzzzqqq)"})
    assert r.status_code == 204 and r.content == b""


def test_coql_rows_null_selected_private_columns_aliases_and_lookup_paths(
    crm: Crm, gw: GatewayHandle
) -> None:
    query = (
        "select Last_Name, Email, Phone as tel, Referrer.Email, Referrer.Last_Name, Company "
        "from Leads where Referrer is not null limit 20"
    )
    direct = crm.http.post("/crm/v2/coql", content=orjson.dumps({"select_query": query}))
    assert direct.status_code == 200, direct.text
    assert any(row.get("Email") for row in direct.json()["data"])
    r = gw.http.post("/crm/v2/coql", content=orjson.dumps({"select_query": query}))
    assert r.status_code == 200, r.text
    for raw, row in zip(direct.json()["data"], r.json()["data"], strict=True):
        assert set(row) == set(raw)
        for key, value in row.items():
            if key in ("Last_Name", "Company", "id"):
                assert value == raw[key]
            elif key.lower() in ("email", "tel", "referrer.email"):
                assert value is None
        # Referrer is private as a whole: anything reached through it is withheld.
        assert all(v is None for k, v in row.items() if k.lower().startswith("referrer."))


def test_include_private_fields_lists_them_without_revealing_values(gw: GatewayHandle) -> None:
    r = gw.http.get("/crm/v2/Leads", params={"per_page": 3, "include": "private_fields"})
    for rec in r.json()["data"]:
        listed = {e["api_name"]: e for e in rec["private_fields"]}
        assert listed["Email"] == {"api_name": "Email", "type": "High", "restricted": True}
        assert listed["City"] == {"api_name": "City", "type": "Low", "restricted": False}
        assert "Last_Name" not in listed
        assert rec["Email"] is None and rec["City"] is None


def test_include_private_fields_is_not_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    gw.http.get("/crm/v2/Leads", params={"per_page": 1, "include": "private_fields"})
    sent = [r for r in crm.received("/crm/v2/Leads") if r["method"] == "GET"]
    assert sent and all("private_fields" not in r["query"] for r in sent)


def test_policy_can_show_low_sensitivity_but_never_restricted(
    make_gateway: MakeGateway, crm: Crm
) -> None:
    gw = make_gateway({"redaction": {"show": ["low"]}})
    direct = crm.records("Leads")[:20]
    through = gw.http.get("/crm/v2/Leads", params={"per_page": 20}).json()["data"]
    for raw, red in zip(direct, through, strict=True):
        assert red["City"] == raw["City"]  # Low, not restricted: shown
        assert red["First_Name"] == raw["First_Name"]
        assert red["Phone"] is None  # High: still withheld
        assert red["Email"] is None  # restricted: always withheld


def test_c56_per_client_rule_needs_the_clients_key(make_gateway: MakeGateway) -> None:
    """Field metadata is the org's (cached per org, version and module); what a caller may
    see is its rule, applied per request: a keyed caller's wider view never reaches the
    next caller without the key."""
    import hashlib

    digest = hashlib.sha256(b"analytics-key").hexdigest()
    gw = make_gateway(
        {"clients": [{"name": "analytics", "key_sha256": digest, "show": ["low", "high"]}]}
    )
    anon = gw.http.get("/crm/v2/Leads", params={"per_page": 5}).json()["data"]
    keyed = gw.http.get(
        "/crm/v2/Leads", params={"per_page": 5}, headers={"X-Gateway-Key": "analytics-key"}
    ).json()["data"]
    wrong = gw.http.get(
        "/crm/v2/Leads", params={"per_page": 5}, headers={"X-Gateway-Key": "guess"}
    ).json()["data"]
    assert all(r["Phone"] is None for r in anon + wrong)
    assert any(r["Phone"] for r in keyed)
    assert all(r["Email"] is None and r["Mobile"] is None for r in keyed)


def test_gateway_key_is_never_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    gw.http.get("/crm/v2/Leads", params={"per_page": 1}, headers={"X-Gateway-Key": "secret-key"})
    assert crm.received() and all("x-gateway-key" not in r["headers"] for r in crm.received())


def test_field_names_compare_case_insensitively(crm: Crm, gw: GatewayHandle) -> None:
    lead = crm.records("Leads")[0]
    crm.edit("Leads", lead["id"], email="shadow@example.com", MOBILE="+1-555-000")
    rec = gw.http.get(f"/crm/v2/Leads/{lead['id']}").json()["data"][0]
    assert rec["email"] is None and rec["MOBILE"] is None
    assert "shadow@example.com" not in gw.http.get(f"/crm/v2/Leads/{lead['id']}").text


def test_privacy_settings_off_passes_records_unchanged(crm: Crm, gw: GatewayHandle) -> None:
    crm.privacy(False)
    direct = crm.http.get("/crm/v2/Leads", params={"per_page": 5}).json()
    r = gw.http.get("/crm/v2/Leads", params={"per_page": 5})
    assert r.json() == direct
    assert gw.requests()[-1]["reasons"] == ["privacy_settings_off"]


def test_c56_orgs_are_cached_apart(crm: Crm, gw: GatewayHandle) -> None:
    # Org 2's Leads.Email is not private, and its Company is restricted.
    org2 = gw.http.get("/crm/v2/Leads", params={"per_page": 5}, headers=ORG2_AUTH).json()["data"]
    org1 = gw.http.get("/crm/v2/Leads", params={"per_page": 5}).json()["data"]
    assert all(r["Email"] for r in org2) and all(r["Company"] is None for r in org2)
    assert all(r["Email"] is None for r in org1) and any(r["Company"] for r in org1)


def test_c57_gzip_upstream_is_decoded_redacted_and_sent_plain(crm: Crm, gw: GatewayHandle) -> None:
    """The client's ``Accept-Encoding: br, gzip`` is not forwarded (the gateway asks for
    what it can decode); the CRM compresses anyway; the client gets a plain, redacted body."""
    crm.config(gzip=True)
    crm.clear()
    r = gw.http.get(
        "/crm/v2/Leads", params={"per_page": 50}, headers={"Accept-Encoding": "br, gzip"}
    )
    assert r.status_code == 200
    (sent,) = crm.received("/crm/v2/Leads")
    assert sent["headers"]["accept-encoding"] == "gzip, identity"
    assert "content-encoding" not in r.headers
    assert all(rec["Email"] is None for rec in r.json()["data"])
    assert int(r.headers["content-length"]) == len(r.content)


def test_c58_a_rewritten_answer_has_exact_framing_and_no_stale_headers(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Read with a strict HTTP/1.1 parser (h11, as a client): the CRM compressed the
    answer and the gateway rewrote it, so Content-Length is the rewritten body's and no
    Content-Encoding or ETag of the CRM's answer is left."""
    import socket

    import h11

    crm.config(gzip=True)
    lead = crm.records("Leads")[0]
    host, port = gw.url.removeprefix("http://").split(":")
    conn = h11.Connection(our_role=h11.CLIENT)
    events: list[Any] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = h11.Request(
            method="GET",
            target=f"/crm/v2/Leads/{lead['id']}",
            headers=[("Host", "127.0.0.1"), ("Authorization", AUTH["Authorization"]),
                     ("Accept-Encoding", "gzip, br"), ("Connection", "close")],
        )  # fmt: skip
        sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
        while not events or not isinstance(events[-1], h11.EndOfMessage):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            else:
                events.append(event)
    response, *data, _end = events
    body = b"".join(bytes(d.data) for d in data)
    headers = {k.decode().lower(): v.decode() for k, v in response.headers}
    assert response.status_code == 200
    assert int(headers["content-length"]) == len(body)
    assert "content-encoding" not in headers and "etag" not in headers
    assert "transfer-encoding" not in headers
    rec = orjson.loads(body)["data"][0]
    assert rec["id"] == lead["id"] and rec["Email"] is None


def _fault_gw(crm: Crm, gw: GatewayHandle, **rule: Any) -> httpx.Response:
    gw.http.get("/crm/v2/Leads", params={"per_page": 1})  # warm the metadata
    crm.fault(path_contains="/crm/v2/Leads", method="GET", times=1, **rule)
    return gw.http.get("/crm/v2/Leads", params={"per_page": 5})


def test_invalid_json_from_the_crm_is_never_passed_on(crm: Crm, gw: GatewayHandle) -> None:
    r = _fault_gw(
        crm,
        gw,
        status=200,
        body='{"data":[{"Email":"leak@example.com"',
        content_type="application/json",
    )
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    assert b"leak@example.com" not in r.content


def test_non_json_content_type_is_never_passed_on(crm: Crm, gw: GatewayHandle) -> None:
    r = _fault_gw(
        crm,
        gw,
        status=200,
        body='{"data":[{"Email":"leak@example.com"}]}',
        content_type="text/plain",
    )
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    assert b"leak@example.com" not in r.content


def test_unknown_content_encoding_is_never_passed_on(crm: Crm, gw: GatewayHandle) -> None:
    r = _fault_gw(
        crm,
        gw,
        status=200,
        body='{"data":[{"Email":"leak@example.com"}]}',
        content_type="application/json",
        content_encoding="br",
    )
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    assert b"leak@example.com" not in r.content


def test_decompression_bomb_is_refused_not_expanded(
    crm_server: Any, make_gateway: MakeGateway
) -> None:
    # A tiny upstream that answers a gzip body expanding far past the cap.
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    bomb = gzip.compress(b'{"data":[{"Email":"' + b"a" * (8 * 1024 * 1024) + b'"}]}')

    async def fields(_: Any) -> Response:
        return Response(
            orjson.dumps(
                {
                    "fields": [
                        {
                            "api_name": "Email",
                            "data_type": "email",
                            "private": {"restricted": True, "type": "High", "export": True},
                        }
                    ]
                }
            ),
            media_type="application/json",
        )

    async def org(_: Any) -> Response:
        return Response(
            orjson.dumps({"org": [{"id": "1", "privacy_settings": True}]}),
            media_type="application/json",
        )

    async def modules(_: Any) -> Response:
        body = {"modules": [{"api_name": "Leads", "generated_type": "default"}]}
        return Response(orjson.dumps(body), media_type="application/json")

    async def leads(_: Any) -> Response:
        return Response(bomb, media_type="application/json", headers={"content-encoding": "gzip"})

    app = Starlette(
        routes=[
            Route("/crm/v8/org", org),
            Route("/crm/v8/settings/fields", fields),
            Route("/crm/v8/settings/modules", modules),
            Route("/crm/v8/Leads", leads),
        ]
    )
    from tests.servers import serve

    with serve(app) as upstream:
        gw = make_gateway(
            {"limits": {"max_response_body_bytes": 1024 * 1024}}, upstream=upstream.url
        )
        r = gw.http.get("/crm/v8/Leads")
    envelope(r, 413, "GATEWAY_BODY_TOO_LARGE")


def test_upstream_error_envelope_passes_through(crm: Crm, gw: GatewayHandle) -> None:
    r = gw.http.get("/crm/v2/Leads/12345")
    direct = crm.http.get("/crm/v2/Leads/12345")
    assert r.status_code == direct.status_code and r.json() == direct.json()


def test_deleted_records_route_is_redacted_and_passes(crm: Crm, gw: GatewayHandle) -> None:
    lead = crm.records("Leads")[5]
    assert crm.http.delete(f"/crm/v2/Leads/{lead['id']}").status_code == 200
    r = gw.http.get("/crm/v2/Leads/deleted")
    assert r.status_code == 200
    assert any(e["id"] == lead["id"] for e in r.json()["data"])


def test_bulk_read_result_empties_private_columns_and_keeps_headers(
    crm: Crm, gw: GatewayHandle
) -> None:
    job = gw.http.post("/crm/bulk/v2.1/read", json={"query": {"module": {"api_name": "Leads"}}})
    assert job.status_code in (200, 201), job.text
    job_id = job.json()["data"][0]["details"]["id"]
    direct = crm.http.get(f"/crm/bulk/v2.1/read/{job_id}/result")
    r = gw.http.get(f"/crm/bulk/v2.1/read/{job_id}/result")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"

    def table(content: bytes) -> list[list[str]]:
        import csv

        with zipfile.ZipFile(io.BytesIO(content)) as z:
            (name,) = z.namelist()
            return list(csv.reader(io.TextIOWrapper(z.open(name), encoding="utf-8-sig")))

    raw, red = table(direct.content), table(r.content)
    assert raw[0] == red[0] and len(raw) == len(red)
    header = red[0]
    for col in ("Email", "Mobile", "Phone", "Description"):
        i = header.index(col)
        assert any(row[i] for row in raw[1:])
        assert all(row[i] == "" for row in red[1:])
    i = header.index("Last_Name")
    assert [row[i] for row in raw[1:]] == [row[i] for row in red[1:]]
    # The header leaves before any row is read: it names the fields; the audit entry counts.
    named = r.headers["x-privacy-withheld"].removeprefix("fields=").split(",")
    assert {"Email", "Mobile", "Phone", "Description"} <= set(named)
    (entry,) = [e for e in gw.requests() if e["route"].endswith("/result")]
    assert entry["outcome"] == "redacted"
    assert entry["fields_withheld"]["count"] >= 4 * (len(red) - 1)


def test_c35_metadata_unavailable_fails_closed(crm: Crm, gw: GatewayHandle) -> None:
    crm.fault(path_contains="/settings/fields", status=500, json={"code": "INTERNAL_ERROR"})
    crm.clear()
    r = gw.http.get("/crm/v2/Leads", params={"per_page": 5})
    envelope(r, 503, "GATEWAY_METADATA_UNAVAILABLE")
    assert not [x for x in crm.received("/crm/v2/Leads") if x["method"] == "GET"]


def test_notes_and_activities_are_read_through_their_multi_module_lookups(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Parent_Id and What_Id point at ``se_module`` (whichever module ``$se_module`` names):
    such a lookup is redacted with the record's own plan, and the read is not refused."""
    for module in ("Notes", "Tasks", "Calls"):
        r = gw.http.get(f"/crm/v2/{module}", params={"per_page": 5})
        assert r.status_code == 200, r.text
        assert r.json()["data"]
