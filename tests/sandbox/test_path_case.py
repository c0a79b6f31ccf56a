"""Module names and path keywords are matched case-insensitively (contract §2, decision)."""

from __future__ import annotations

import httpx
import pytest

from gateway.sandbox.paths import canonical_path

from .conftest import envelope, leads, post_json

pytestmark = pytest.mark.usefixtures("fresh")


@pytest.mark.parametrize(
    ("sent", "routed"),
    [
        ("/crm/v8/LEADS/Search", "/crm/v8/LEADS/search"),
        ("/CRM/V8/COQL", "/crm/v8/coql"),
        ("/crm/v2.1/leads/DELETED", "/crm/v2.1/leads/deleted"),
        ("/crm/v8/Leads/Actions/Mass_Update", "/crm/v8/Leads/actions/mass_update"),
        ("/crm/v8/Leads/ACTIONS/COUNT", "/crm/v8/Leads/actions/count"),
        ("/crm/v8/Leads/123/Actions/Convert", "/crm/v8/Leads/123/actions/convert"),
        ("/crm/v8/SETTINGS/Related_Lists", "/crm/v8/settings/related_lists"),
        ("/crm/BULK/V8/Read/77/Result", "/crm/bulk/v8/read/77/result"),
        ("/crm/v8/__COMPOSITE_REQUESTS", "/crm/v8/__composite_requests"),
        # Module names, ids, external values and related lists keep their spelling.
        ("/crm/v8/Leads/Ada@Example.com", "/crm/v8/Leads/Ada@Example.com"),
        ("/crm/v8/Contacts/1/Deals", "/crm/v8/Contacts/1/Deals"),
        ("/_sandbox/Reset", "/_sandbox/Reset"),
    ],
)
def test_canonical_path(sent: str, routed: str) -> None:
    assert canonical_path(sent) == routed


def test_search_coql_settings_in_any_case(client: httpx.Client) -> None:
    target = leads(client)[5]
    crit = {"criteria": f"(Email:equals:{target['Email']})"}
    upper = client.get("/crm/v8/LEADS/Search", params=crit)
    assert upper.status_code == 200
    assert upper.json()["data"] == client.get("/crm/v8/Leads/search", params=crit).json()["data"]
    q = {"select_query": f"select Email from Leads where id = '{target['id']}'"}
    assert post_json(client, "/crm/v8/COQL", q).json()["data"][0]["id"] == target["id"]
    fields = client.get("/CRM/V8/Settings/FIELDS", params={"module": "leads"})
    assert fields.status_code == 200 and fields.json()["fields"]
    assert client.get("/crm/V2/leads/DELETED").status_code == 204
    assert client.get("/crm/v8/Leads/Actions/Count").json()["count"] == 600


def test_writes_in_any_case(client: httpx.Client) -> None:
    first, lead = leads(client)[0], leads(client)[2]
    up = post_json(
        client,
        "/crm/v8/leads/UPSERT",
        {"data": [{"Email": first["Email"], "Last_Name": "Upper"}]},
    )
    assert up.json()["data"][0]["action"] == "update"
    mass = post_json(
        client,
        "/crm/v8/Leads/ACTIONS/mass_update",
        {"data": [{"City": "Riga"}], "ids": [first["id"]]},
    )
    assert mass.status_code == 200
    conv = post_json(client, f"/crm/v8/LEADS/{lead['id']}/Actions/CONVERT", {"data": [{}]})
    assert conv.json()["data"][0]["code"] == "SUCCESS"


def test_log_keeps_the_path_as_sent_and_faults_match_either(client: httpx.Client) -> None:
    client.delete("/_sandbox/requests")
    client.get("/crm/v8/LEADS/Search", params={"word": "x"})
    assert client.get("/_sandbox/requests").json()["requests"][0]["path"] == "/crm/v8/LEADS/Search"
    post_json(client, "/_sandbox/faults", {"path_contains": "/search", "status": 500})
    assert client.get("/crm/v8/Leads/SEARCH", params={"word": "x"}).status_code == 500
    client.delete("/_sandbox/faults")


def test_unknown_keywords_stay_unknown(client: httpx.Client) -> None:
    envelope(client.get("/crm/v8/SETTINGS/nope"), 404, "INVALID_URL_PATTERN")
    envelope(client.get("/crm/V9/Leads"), 404, "INVALID_URL_PATTERN")
    envelope(client.get("/crm/v8/BULK"), 404, "INVALID_URL_PATTERN")
