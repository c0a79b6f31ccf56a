"""Auth, orgs, URL errors and the metadata APIs, per version."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import envelope

VERSIONS = ["v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8"]


def test_missing_authorization_is_authentication_failure(client: httpx.Client) -> None:
    r = client.get("/crm/v2/Leads", headers={"Authorization": ""})
    assert envelope(r, 401, "AUTHENTICATION_FAILURE") == {}
    assert r.json()["message"] == "Authentication failed"


@pytest.mark.parametrize(
    "header",
    ["Zoho-oauthtoken invalid", "Zoho-oauthtoken org2-invalid", "Bearer abc", "Zoho-oauthtoken"],
)
def test_invalid_tokens(client: httpx.Client, header: str) -> None:
    r = client.get("/crm/v8/org", headers={"Authorization": header})
    envelope(r, 401, "INVALID_TOKEN")
    assert r.json()["message"] == "invalid oauth token"


def test_org2_token_sees_org2(client: httpx.Client, org2: httpx.Client) -> None:
    one = client.get("/crm/v2/org").json()["org"][0]
    two = org2.get("/crm/v2/org").json()["org"][0]
    assert (one["id"], one["zgid"], one["company_name"]) == (
        "20061000000000001",
        "20061000001",
        "Zylker Demo",
    )
    assert (two["id"], two["zgid"], two["company_name"]) == (
        "20062000000000001",
        "20062000001",
        "Second Org",
    )
    assert one["privacy_settings"] is True and two["privacy_settings"] is True
    r1 = client.get("/crm/v2/Leads", params={"per_page": 200, "page": 3})
    r2 = org2.get("/crm/v2/Leads", params={"per_page": 200})
    assert r1.json()["info"]["count"] == 200  # 600 leads in org 1
    assert r2.json()["info"]["count"] == 50 and r2.json()["info"]["more_records"] is False
    assert not {x["id"] for x in r2.json()["data"]} & {x["id"] for x in r1.json()["data"]}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_serves_the_same_routes(client: httpx.Client, version: str) -> None:
    assert client.get(f"/crm/{version}/org").status_code == 200
    listed = client.get(f"/crm/{version}/Leads", params={"per_page": 1, "fields": "Last_Name"})
    assert listed.status_code == 200
    assert (
        client.get(f"/crm/{version}/settings/fields", params={"module": "Leads"}).status_code == 200
    )


@pytest.mark.parametrize(
    "path",
    [
        "/crm/v9/Leads",
        "/crm/v2",
        "/crm/v2/settings/layouts",
        "/crm/v2/Leads/1/2/3/4/5",
        "/nothing",
        "/crm/bulk/v1/read",
    ],
)
def test_unknown_paths_are_invalid_url_pattern(client: httpx.Client, path: str) -> None:
    envelope(client.get(path), 404, "INVALID_URL_PATTERN")


def test_unknown_module_and_wrong_method(client: httpx.Client) -> None:
    details = envelope(client.get("/crm/v2/Nonsense"), 400, "INVALID_MODULE")
    assert details == {"resource_path_index": 0}
    envelope(client.get("/crm/v2/Lead_Visits"), 400, "INVALID_MODULE")  # subform: no record API
    envelope(client.patch("/crm/v2/Leads"), 400, "INVALID_REQUEST_METHOD")


def test_users_current_user(client: httpx.Client, org2: httpx.Client) -> None:
    users = client.get("/crm/v8/users", params={"type": "CurrentUser"}).json()["users"]
    assert len(users) == 1
    me = users[0]
    assert me["id"].isdigit() and me["email"] == "p.boyle@zylker.com"
    assert {"full_name", "role", "profile"} <= set(me)
    everyone = client.get("/crm/v8/users").json()["users"]
    assert len(everyone) == 3
    assert (
        org2.get("/crm/v8/users", params={"type": "CurrentUser"}).json()["users"][0]["email"]
        == "admin@second.example.com"
    )


def test_modules(client: httpx.Client) -> None:
    mods = {m["api_name"]: m for m in client.get("/crm/v2/settings/modules").json()["modules"]}
    assert set(mods) == {
        "Leads",
        "Contacts",
        "Accounts",
        "Deals",
        "Vendors",
        "Patients",
        "Lead_Visits",
        "Campaigns",
        "Notes",
        "Tasks",
        "Events",
        "Calls",
    }
    assert mods["Leads"]["generated_type"] == "default"
    for name in ("Campaigns", "Notes", "Tasks", "Events", "Calls"):
        assert mods[name]["generated_type"] == "default"
        assert mods[name]["module_name"] == name
    assert mods["Patients"]["generated_type"] == "custom"
    assert mods["Lead_Visits"]["generated_type"] == "subform"
    for m in mods.values():
        assert m["api_supported"] is True and m["id"].isdigit()
        assert {
            "module_name",
            "singular_label",
            "plural_label",
            "creatable",
            "editable",
            "deletable",
            "viewable",
        } <= set(m)


def _fields(client: httpx.Client, version: str, module: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"/crm/{version}/settings/fields", params={"module": module})
    assert r.status_code == 200
    return {f["api_name"]: f for f in r.json()["fields"]}


def test_leads_field_privacy_org1(client: httpx.Client) -> None:
    f = _fields(client, "v8", "Leads")
    assert f["Email"]["private"] == {"restricted": True, "type": "High", "export": True}
    assert f["First_Name"]["private"] == {"restricted": False, "type": "Low", "export": False}
    assert f["Phone"]["private"] == {"restricted": False, "type": "High", "export": True}
    assert f["City"]["private"] == {"restricted": False, "type": "Low", "export": False}
    assert f["Company"]["private"] is None and f["Last_Name"]["private"] is None
    assert f["Last_Name"]["system_mandatory"] is True
    assert f["Data_Processing_Basis_Details"]["data_type"] == "consent_lookup"
    assert f["Data_Processing_Basis_Details"]["json_type"] == "jsonobject"
    assert f["Owner"]["data_type"] == "ownerlookup" and f["Owner"]["lookup"] == {}
    assert f["id"]["data_type"] == "bigint"
    for field in f.values():
        assert field["visible"] is True and field["id"].isdigit()
        assert {
            "field_label",
            "display_label",
            "json_type",
            "custom_field",
            "read_only",
            "length",
        } <= set(field)


def test_leads_field_privacy_org2_differs(org2: httpx.Client) -> None:
    f = _fields(org2, "v8", "Leads")
    assert f["Email"]["private"] is None and f["Mobile"]["private"] is None
    assert f["Company"]["private"] == {"restricted": True, "type": "High", "export": True}


def test_other_modules_privacy(client: httpx.Client) -> None:
    visits = _fields(client, "v2", "Lead_Visits")
    assert visits["Notes"]["private"]["restricted"] is True
    assert visits["Visitor_IP"]["private"] == {"restricted": False, "type": "Low", "export": True}
    patients = _fields(client, "v2", "Patients")
    assert patients["Diagnosis"]["private"]["type"] == "High"
    assert patients["Insurance_Number"]["custom_field"] is True
    assert all(x["private"] is None for x in _fields(client, "v2", "Accounts").values())
    assert _fields(client, "v2", "Vendors")["Phone"]["private"]["type"] == "Low"


def test_lookup_and_subform_shapes_per_version(client: httpx.Client) -> None:
    for version in ("v2", "v2.1"):
        f = _fields(client, version, "Leads")
        assert f["Referrer"]["lookup"]["module"] == "Contacts"
    modules = client.get("/crm/v8/settings/modules").json()["modules"]
    contacts_id = next(m["id"] for m in modules if m["api_name"] == "Contacts")
    for version in ("v3", "v7", "v8"):
        f = _fields(client, version, "Leads")
        assert f["Referrer"]["lookup"]["module"] == {"api_name": "Contacts", "id": contacts_id}
        assert f["Referrer"]["private"] == {"restricted": False, "type": "High", "export": True}
    for version in ("v2", "v8"):
        visits = _fields(client, version, "Leads")["Visits"]
        assert visits["data_type"] == "subform"
        assert visits["associated_module"]["module"] == "Lead_Visits"
        assert visits["subform"]["module"] == "Lead_Visits"
        assert visits["subform"]["id"].isdigit()


def test_fields_errors(client: httpx.Client) -> None:
    assert envelope(client.get("/crm/v2/settings/fields"), 400, "REQUIRED_PARAM_MISSING") == {
        "param": "module"
    }
    envelope(
        client.get("/crm/v2/settings/fields", params={"module": "Nope"}), 400, "INVALID_MODULE"
    )


def test_related_lists_shapes(client: httpx.Client) -> None:
    old = client.get("/crm/v2/settings/related_lists", params={"module": "Contacts"}).json()
    new = client.get("/crm/v8/settings/related_lists", params={"module": "Contacts"}).json()
    by_name_old = {x["api_name"]: x for x in old["related_lists"]}
    by_name_new = {x["api_name"]: x for x in new["related_lists"]}
    assert set(by_name_old) == {"Deals", "Leads", "Campaigns"}
    assert by_name_old["Deals"]["module"] == "Deals"
    assert by_name_new["Deals"]["module"]["api_name"] == "Deals"
    assert by_name_new["Deals"]["module"]["id"].isdigit()
    for rl in by_name_new.values():
        assert rl["type"] == "default" and rl["href"] and rl["id"].isdigit()
    envelope(client.get("/crm/v2/settings/related_lists"), 400, "REQUIRED_PARAM_MISSING")
