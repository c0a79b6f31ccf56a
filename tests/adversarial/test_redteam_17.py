"""Seventeenth red team: metadata confusion (orgs, API versions, module spellings, metadata
shared between clients), per-client rules (bulk jobs read by another client,
``include=private_fields`` in other spellings), and side doors that carry no record
(settings routes, the gateway's own endpoints).

Every test drives the real gateway over HTTP, against the sandbox CRM or (where the CRM
must answer one client differently from another) a small CRM of its own on 127.0.0.1.

Part (A): FINDINGS, each failing against the code it was written against because the
attack works (the comment above each says what leaks and which gateway function is
responsible).
Part (B): what HELD, kept as coverage (each first checks that the data it relies on is
really there, so it could fail).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.adversarial.conftest import Marked, no_mark, send
from tests.adversarial.test_cvid import leaf, make_view
from tests.conftest import AUTH, ORG2_AUTH, Crm, GatewayHandle, MakeGateway
from tests.servers import serve

KEY_NARROW = "rt17-key-narrow-51d2"  # a client shown nothing private
KEY_WIDE = "rt17-key-wide-e08a"  # a client shown low and high (non-restricted) fields


def _client(name: str, key: str, show: list[str]) -> dict[str, Any]:
    return {"name": name, "key_sha256": hashlib.sha256(key.encode()).hexdigest(), "show": show}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


# =========================================================================================
# (A) FINDINGS
# =========================================================================================


@pytest.mark.parametrize("route", ["one", "list"])
def test_a_custom_views_definition_hands_out_a_restricted_value(
    crm: Crm, gw: GatewayHandle, marked: Marked, route: str
) -> None:
    """LEAK. A custom view filtering on a lead's restricted Email (an admin's "VIP" view
    names the address) is refused as a filter (``cvid`` guard, handlers/reads.py
    ``guard_custom_view``), but its definition is a ``settings`` route
    (``/crm/{v}/settings/{name}[/{id}]``, Kind.METADATA) that pipeline.py sends through
    ``Forwarder.passthrough`` unjudged: the criterion's ``value``, the restricted Email,
    reaches the client. (The same value in a bulk-read job's status is withheld by
    status_body.py, which judges criterion values.)"""
    email, mobile = marked.lead["Email"], marked.lead["Mobile"]
    crit = {"group_operator": "or", "group": [leaf("Email", email), leaf("Mobile", mobile)]}
    cvid = make_view(crm, "Leads", crit)
    direct = crm.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    assert email in direct.text and mobile in direct.text  # the CRM's definition holds them
    refused = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    assert refused.status_code == 400, refused.text  # as a filter: refused
    if route == "one":
        r = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    else:
        r = gw.http.get("/crm/v8/settings/custom_views", params={"module": "Leads"})
    assert r.status_code == 200, r.text[:300]
    no_mark(r, email)
    no_mark(r, mobile)


def _two_token_crm(refused_delay: float) -> Starlette:
    """One org behind two tokens: ``weak`` may read the org and records but not the field
    metadata (the CRM answers 401 ``OAUTH_SCOPE_MISMATCH`` naming that token's user, after
    ``refused_delay`` seconds); ``strong`` may read everything."""

    def token(request: Request) -> str:
        return request.headers.get("authorization", "").partition(" ")[2].strip()

    async def org(_: Request) -> Response:
        return _json({"org": [{"id": "1", "privacy_settings": True}]})

    async def modules(_: Request) -> Response:
        return _json({"modules": [{"api_name": "Leads", "generated_type": "default"}]})

    async def fields(request: Request) -> Response:
        if token(request) == "weak":
            await asyncio.sleep(refused_delay)
            return _json(
                {"code": "OAUTH_SCOPE_MISMATCH", "details": {"user": "weak-user@rt17.example"},
                 "message": "invalid oauth scope to access this URL", "status": "error"},
                401,
            )  # fmt: skip
        private = {"restricted": True, "type": "High", "export": True}
        return _json(
            {"fields": [{"api_name": "id", "data_type": "bigint", "private": None},
                        {"api_name": "Last_Name", "data_type": "text", "private": None},
                        {"api_name": "Email", "data_type": "email", "private": private}]}
        )  # fmt: skip

    async def leads(_: Request) -> Response:
        return _json({"data": [{"id": "1", "Last_Name": "Doe", "Email": "rt17@x.example"}]})

    return Starlette(
        routes=[
            Route("/crm/v8/org", org),
            Route("/crm/v8/settings/modules", modules),
            Route("/crm/v8/settings/fields", fields),
            Route("/crm/v8/Leads", leads),
        ]
    )


def test_a_metadata_fetch_refused_for_one_token_answers_another_client(
    make_gateway: MakeGateway,
) -> None:
    """CROSS-CLIENT. The field metadata of an org is fetched once for every client of the
    org (metadata.py ``MetadataCache._get``: single flight on (org, version, module)), with
    the credentials of whichever request came first. When the CRM refuses *that* token
    (``_fetch`` raises ``UpstreamRefused`` carrying the CRM's body), every request that
    joined the flight gets the same refusal: a client whose own token may read the
    metadata is answered 401 with the CRM's answer to another client's token (here naming
    that client's user). A refusal is the answer to one token, never to the flight."""
    with serve(_two_token_crm(refused_delay=0.6)) as upstream:
        gw = make_gateway(upstream=upstream.url)
        url = f"{gw.url}/crm/v8/Leads"
        params = {"fields": "Last_Name,Email"}
        weak: list[httpx.Response] = []

        def weak_call() -> None:
            with httpx.Client(timeout=30) as c:
                auth = {"Authorization": "Zoho-oauthtoken weak"}
                weak.append(c.get(url, params=params, headers=auth))

        t = threading.Thread(target=weak_call)
        t.start()
        time.sleep(0.2)  # the weak token's fetch is in flight
        with httpx.Client(timeout=30) as c:
            strong = c.get(url, params=params, headers={"Authorization": "Zoho-oauthtoken strong"})
        t.join()
        assert weak[0].status_code == 401  # the weak token's own answer
        assert "weak-user@rt17.example" not in strong.text, strong.text
        assert strong.status_code == 200, strong.text
        assert strong.json()["data"][0]["Email"] is None
        # alone, the strong token is served
        again = httpx.get(url, params=params, headers={"Authorization": "Zoho-oauthtoken strong"})
        assert again.status_code == 200 and again.json()["data"][0]["Email"] is None


# =========================================================================================
# (B) HELD
# =========================================================================================


def test_held_cold_requests_of_two_orgs_under_many_version_spellings_get_their_own_rules(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Two orgs behind one gateway disagree on Leads: org 1 restricts Email and shows
    Company, org 2 leaves Email public and makes Company private. Cold, all at once, under
    ``v8``, ``V8``, ``v2.1`` and ``v2``: each answer is its own org's (metadata keyed by
    (org, version, module); the org by the token's fingerprint)."""
    one = crm.http.get("/crm/v8/Leads", params={"fields": "Email,Company", "per_page": 5})
    two = crm.http.get(
        "/crm/v8/Leads", params={"fields": "Email,Company", "per_page": 5}, headers=ORG2_AUTH
    )
    assert all(r["Email"] and r["Company"] for r in one.json()["data"])  # values are there
    assert all(r["Email"] and r["Company"] for r in two.json()["data"])
    calls = [
        (auth, version) for auth in (AUTH, ORG2_AUTH) for version in ("v8", "V8", "v2.1", "v2")
    ]
    answers: dict[int, httpx.Response] = {}
    barrier = threading.Barrier(len(calls))

    def call(i: int, auth: dict[str, str], version: str) -> None:
        with httpx.Client(base_url=gw.url, headers=auth, timeout=30) as c:
            barrier.wait()
            answers[i] = c.get(
                f"/crm/{version}/LEADS", params={"fields": "Email,Company", "per_page": 5}
            )

    threads = [threading.Thread(target=call, args=(i, *c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (auth, _version) in enumerate(calls):
        r = answers[i]
        assert r.status_code == 200, r.text[:300]
        rows = r.json()["data"]
        if auth is AUTH:
            assert all(x["Email"] is None and x["Company"] for x in rows), rows
        else:
            assert all(x["Email"] and x["Company"] is None for x in rows), rows


def _bulk_rows(r: httpx.Response) -> list[dict[str, str]]:
    import csv
    import io
    import zipfile

    assert r.status_code == 200, r.text[:300]
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        (name,) = z.namelist()
        text = z.read(name).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_held_a_bulk_job_made_by_a_wide_client_is_blanked_for_a_narrow_reader(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """A job created by a client shown Low fields (City: private Low, not blank in exports),
    its status and result read by a client shown nothing: the result is rewritten with
    the reader's rules, City emptied; the creator reading the same result sees City."""
    gw = make_gateway(
        {"clients": [_client("narrow", KEY_NARROW, []), _client("wide", KEY_WIDE, ["low"])]}
    )
    cities = {r["id"]: r["City"] for r in crm.records("Leads") if r.get("City")}
    assert cities  # City values are there
    query = {"module": {"api_name": "Leads"}, "fields": ["id", "Last_Name", "City"]}
    made = gw.http.post(
        "/crm/bulk/v8/read", json={"query": query}, headers={"X-Gateway-Key": KEY_WIDE}
    )
    assert made.status_code in (200, 201), made.text
    job = made.json()["data"][0]["details"]["id"]
    url = f"/crm/bulk/v8/read/{job}/result"
    wide = _bulk_rows(gw.http.get(url, headers={"X-Gateway-Key": KEY_WIDE}))
    assert any(row["City"] == cities.get(row["id"]) for row in wide)  # shown to the creator
    status = gw.http.get(f"/crm/bulk/v8/read/{job}", headers={"X-Gateway-Key": KEY_NARROW})
    assert status.status_code == 200, status.text
    narrow_r = gw.http.get(url, headers={"X-Gateway-Key": KEY_NARROW})
    narrow = _bulk_rows(narrow_r)
    assert narrow and all(row["City"] == "" for row in narrow)
    for city in cities.values():
        assert f",{city}" not in narrow_r.text and city not in status.text


@pytest.mark.parametrize(
    "query",
    [
        "include=private_fields",
        "INCLUDE=Private_Fields",
        "include=private_fields,private_fields",
        "include=%20private_fields%20",
        "include=private_fields,foo",
        "include=foo,PRIVATE_FIELDS",
        "include=private_fields%2Cfoo",
    ],
)
def test_held_include_private_fields_in_any_spelling_lists_names_never_values(
    crm: Crm, make_gateway: MakeGateway, marked: Marked, query: str
) -> None:
    """``include=private_fields`` for a client shown nothing, spelled every way the
    canonical parser lets through: the records list names of private fields, every value
    stays null, and ``private_fields`` never reaches the CRM."""
    gw = make_gateway({"clients": [_client("narrow", KEY_NARROW, [])]})
    lead = marked.lead
    crm.clear()
    r = gw.http.get(
        f"/crm/v8/Leads/{lead['id']}?fields=Last_Name,Email,Mobile,Phone,City&{query}",
        headers={"X-Gateway-Key": KEY_NARROW},
    )
    assert r.status_code == 200, r.text[:300]
    rec = r.json()["data"][0]
    assert rec["Last_Name"] == lead["Last_Name"]
    assert all(rec[f] is None for f in ("Email", "Mobile", "Phone", "City"))
    assert {"Email", "Mobile"} <= {e["api_name"] for e in rec["private_fields"]}
    assert not marked.leaked(r.text, str(dict(r.headers)))
    sent = [x for x in crm.received(f"/Leads/{lead['id']}")]
    assert sent and all("private_fields" not in x["query"].lower() for x in sent)
    marked.assert_audit_clean(gw)


@pytest.mark.parametrize(
    "query", ["include[]=private_fields", "include=private_fields&Include=private_fields"]
)
def test_held_include_under_another_parameter_shape_is_refused(
    crm: Crm, gw: GatewayHandle, marked: Marked, query: str
) -> None:
    crm.clear()
    r = gw.http.get(f"/crm/v8/Leads/{marked.lead['id']}?fields=Email&{query}")
    assert r.status_code == 400 and r.json()["code"] == "INVALID_DATA", r.text
    assert crm.received(f"/Leads/{marked.lead['id']}") == []


def test_held_the_gateways_own_endpoints_carry_nothing_a_client_sent_or_read(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """After reads of a marked lead and a refused search naming its Email: health, ready
    and metrics hold no marker and no spelling the client chose for the module."""
    lead = marked.lead
    assert gw.http.get(f"/crm/v8/lEaDs/{lead['id']}", params={"fields": "Email"}).status_code == 200
    crit = f"(Email:equals:{lead['Email']})"
    assert gw.http.get("/crm/v8/lEaDs/search", params={"criteria": crit}).status_code == 400
    send(
        gw,
        "POST",
        "/crm/v8/coql",
        {"select_query": f"select Email from lEaDs where id = {lead['id']}"},
    )
    for path in ("/_gateway/health", "/_gateway/ready", "/_gateway/metrics"):
        r = httpx.get(gw.url + path, timeout=30)
        assert r.status_code in (200, 503), (path, r.text[:200])
        assert not marked.leaked(r.text, str(dict(r.headers))), path
        assert "lEaDs" not in r.text, path
    metrics = httpx.get(gw.url + "/_gateway/metrics", timeout=30).text
    assert 'module="Leads"' in metrics  # the CRM's spelling is what is counted
