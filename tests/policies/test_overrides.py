"""Module overrides: the policy marks more fields private than the CRM's metadata does, and
every route (reads, search, COQL, bulk read) sees them. Against the sandbox over HTTP."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from gateway.policy import PolicyError, policy_from_mapping
from tests.conftest import Crm, MakeGateway, envelope

KEY = "bi-key"
# Leads.Company and Leads.Designation are public in the sandbox's metadata; Phone is High.
OVERRIDES = {
    "modules": {"Leads": {"private": {"company": "high", "Designation": "restricted"}}},
    "clients": [
        {"name": "bi", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest(), "show": ["high"]}
    ],
}


def test_an_override_withholds_a_field_the_crm_leaves_public(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(OVERRIDES)
    direct = crm.records("Leads")[:10]
    assert any(r["Company"] for r in direct) and any(r["Designation"] for r in direct)
    through = gw.http.get("/crm/v2/Leads", params={"per_page": 10}).json()["data"]
    assert all(r["Company"] is None and r["Designation"] is None for r in through)
    assert {"Company", "Designation"} <= set(gw.requests()[-1]["fields_withheld"]["names"])
    # A client shown High sees the High override, never the restricted one.
    keyed = gw.http.get(
        "/crm/v2/Leads", params={"per_page": 10}, headers={"X-Gateway-Key": KEY}
    ).json()["data"]
    assert [r["Company"] for r in keyed] == [r["Company"] for r in direct]
    assert all(r["Designation"] is None for r in keyed)


def test_a_restricted_override_is_refused_in_search_coql_and_bulk_criteria(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(OVERRIDES)
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(designation:equals:CEO)"})
    assert envelope(r, 400, "INVALID_QUERY")["api_name"] == "Designation"
    query = "select Last_Name from Leads where Designation = 'CEO' limit 5"
    r = gw.http.post("/crm/v8/coql", content=orjson.dumps({"select_query": query}))
    assert envelope(r, 400, "INVALID_QUERY")["api_name"] == "Designation"
    job = {
        "module": {"api_name": "Leads"},
        "criteria": {"field": {"api_name": "Designation"}, "comparator": "equal", "value": "x"},
    }
    r = gw.http.post("/crm/bulk/v8/read", json={"query": job})
    assert envelope(r, 400, "INVALID_QUERY")["api_name"] == "Designation"
    assert crm.received("/search") == crm.received("/coql") == crm.received("/bulk") == []


def test_coql_columns_of_an_override_are_answered_with_nulls(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(OVERRIDES)
    query = "select Last_Name, Company from Leads where Last_Name is not null limit 5"
    r = gw.http.post("/crm/v8/coql", content=orjson.dumps({"select_query": query}))
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    assert rows and all(row["Company"] is None and row["Last_Name"] for row in rows)


def test_an_override_never_makes_a_private_field_public(make_gateway: MakeGateway) -> None:
    # Email is restricted and Phone High in the CRM: "low" shows neither to a low client.
    gw = make_gateway(
        {
            "redaction": {"show": ["low"]},
            "modules": {"Leads": {"private": {"Email": "low", "Phone": "low"}}},
        }
    )
    through = gw.http.get("/crm/v2/Leads", params={"per_page": 10}).json()["data"]
    assert all(r["Email"] is None and r["Phone"] is None for r in through)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (
            {"modules": {"Leads": {"private": {"Company": "secret"}}}},
            "modules.Leads.private.Company",
        ),
        ({"modules": {"Leads": {"public": {"Company": "low"}}}}, "modules.Leads.public"),
        ({"modules": {"Leads": {"private": ["Company"]}}}, "modules.Leads.private"),
    ],
)
def test_invalid_overrides_name_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping(raw)
    assert err.value.key == key
