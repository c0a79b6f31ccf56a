"""The metadata cache: one fetch for many cold requests, TTL, the staleness bound, fail closed."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.conftest import AUTH, LEAD_FIELDS, ORG2_AUTH, Crm, GatewayHandle, MakeGateway, envelope


def _field_fetches(crm: Crm, module: str = "Leads") -> int:
    return len([r for r in crm.received("/settings/fields") if f"module={module}" in r["query"]])


def test_c44_a_thousand_concurrent_cold_requests_fetch_once_per_module_and_org(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"limits": {"max_concurrent_requests": 2000}})
    crm.clear()
    # Slow the metadata answers so that the requests arrive while they are in flight.
    crm.fault(path_contains="/settings/fields", delay=1.0, times=4)
    combos = [(m, a) for m in ("Leads", "Contacts") for a in (AUTH, ORG2_AUTH)]

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits) as c:
            rs = await asyncio.gather(
                *(
                    c.get(
                        f"/crm/v8/{module}",
                        params={"per_page": 2, "fields": "Last_Name,Email"},
                        headers=auth,
                    )
                    for i in range(1000)
                    for module, auth in [combos[i % 4]]
                )
            )
        return [r.status_code for r in rs]

    assert asyncio.run(burst()) == [200] * 1000
    fetches = [
        (r["headers"]["authorization"], r["query"]) for r in crm.received("/settings/fields")
    ]
    # each org's token, each module (those the lookups point at included): one fetch
    assert len(fetches) == len(set(fetches))
    assert {(a["Authorization"], f"type=all&module={m}") for m, a in combos} <= set(fetches)
    assert len(crm.received("/crm/v8/org")) == 2  # once per client token


def test_c45_metadata_is_refetched_after_the_ttl(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway({"metadata": {"ttl_seconds": 0.3, "max_stale_seconds": 5}})
    crm.clear()
    gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS})
    gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS})
    assert _field_fetches(crm) == 1
    time.sleep(0.4)
    gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS})
    assert _field_fetches(crm) == 2


def test_c45_an_expired_entry_under_load_is_refreshed_once(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """Fifty requests arrive while the refresh is slow: they wait for that one fetch (or
    use the old entry), and the CRM sees one refresh, not fifty."""
    gw = make_gateway({"metadata": {"ttl_seconds": 0.3, "max_stale_seconds": 30}})
    params = {"per_page": 1, "fields": LEAD_FIELDS}
    assert gw.http.get("/crm/v8/Leads", params=params).status_code == 200
    time.sleep(0.4)
    crm.clear()
    crm.fault(path_contains="/settings/fields", delay=0.8, times=1)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as c:
            rs = await asyncio.gather(*(c.get("/crm/v8/Leads", params=params) for _ in range(50)))
        return [r.status_code for r in rs]

    assert asyncio.run(burst()) == [200] * 50
    assert _field_fetches(crm) == 1


def test_metadata_change_takes_effect_after_the_ttl(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway({"metadata": {"ttl_seconds": 0.3, "max_stale_seconds": 5}})
    assert gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}).json()[
        "data"
    ][0]["Company"]
    fields = crm.http.get("/crm/v8/settings/fields", params={"module": "Leads"}).json()["fields"]
    for f in fields:
        if f["api_name"] == "Company":
            f["private"] = {"restricted": True, "type": "High", "export": True}
    crm.admin.post("/_sandbox/metadata/1/Leads", json={"fields": fields})
    time.sleep(0.4)
    assert (
        gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}).json()["data"][
            0
        ]["Company"]
        is None
    )


def test_stale_entry_serves_within_the_bound_while_the_crm_fails(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"metadata": {"ttl_seconds": 0.2, "max_stale_seconds": 1.5}})
    assert (
        gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}).status_code
        == 200
    )
    crm.fault(path_contains="/settings/fields", status=500, json={"code": "INTERNAL_ERROR"})
    crm.fault(path_contains="/crm/v8/org", status=500, json={"code": "INTERNAL_ERROR"})
    time.sleep(0.3)  # past the TTL, within the staleness bound
    r = gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS})
    assert r.status_code == 200 and r.json()["data"][0]["Email"] is None
    assert r.headers["x-privacy-withheld"] != "0"
    time.sleep(1.4)  # past the bound: fail closed
    envelope(
        gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}),
        503,
        "GATEWAY_METADATA_UNAVAILABLE",
    )


def test_metadata_timeout_fails_closed(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway({"limits": {"read_timeout_seconds": 0.3}})
    crm.fault(path_contains="/settings/fields", delay=1.0, times=1)
    envelope(
        gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}),
        503,
        "GATEWAY_METADATA_UNAVAILABLE",
    )


def test_unreadable_metadata_fails_closed(crm: Crm, gw: GatewayHandle) -> None:
    crm.fault(
        path_contains="/settings/fields",
        status=200,
        body="{not json",
        content_type="application/json",
    )
    envelope(
        gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}),
        503,
        "GATEWAY_METADATA_UNAVAILABLE",
    )


def test_metadata_without_a_fields_list_fails_closed(crm: Crm, gw: GatewayHandle) -> None:
    crm.fault(path_contains="/settings/fields", status=200, json={"unexpected": []})
    envelope(
        gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}),
        503,
        "GATEWAY_METADATA_UNAVAILABLE",
    )


def test_invalid_token_on_the_metadata_call_is_returned_as_the_crm_sent_it(
    gw: GatewayHandle,
) -> None:
    r = gw.http.get("/crm/v8/Leads", headers={"Authorization": "Zoho-oauthtoken invalid"})
    envelope(r, 401, "INVALID_TOKEN")


def test_the_org_is_resolved_once_per_client_token(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    for _ in range(3):
        gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS})
    gw.http.get(
        "/crm/v8/Leads",
        params={"per_page": 1},
        headers={"Authorization": "Zoho-oauthtoken another-token"},
    )
    assert len(crm.received("/crm/v8/org")) == 2
    # Same org: the field metadata was fetched once for both tokens.
    assert _field_fetches(crm) == 1


def test_the_org_is_resolved_per_x_crm_org_choice(crm: Crm, gw: GatewayHandle) -> None:
    """One token may reach several orgs; the org answer for one choice never serves another."""
    crm.clear()
    for org in ("", "111", "222", "111"):
        headers = {"X-CRM-ORG": org} if org else {}
        gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}, headers=headers)
    orgs = crm.received("/crm/v8/org")
    assert len(orgs) == 3
    assert sorted(r["headers"].get("x-crm-org", "") for r in orgs) == ["", "111", "222"]


def test_metadata_is_cached_per_api_version(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    gw.http.get("/crm/v2/Leads", params={"per_page": 1})
    gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS})
    versions = {r["path"].split("/")[2] for r in crm.received("/settings/fields")}
    assert versions == {"v2", "v8"}
