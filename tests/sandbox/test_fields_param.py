"""``fields`` as the CRM reads it, on every record read (contract §2)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import envelope, leads

NEW_VERSIONS = ["v3", "v4", "v5", "v6", "v7", "v8"]
MISSING_FIELDS = {
    "code": "REQUIRED_PARAM_MISSING",
    "details": {"param": "fields"},
    "message": "One of the expected parameter is missing",
    "status": "error",
}


def data(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["data"]
    return out


@pytest.mark.parametrize("version", ["v2", "v2.1", "v8"])
def test_named_fields_plus_id_in_api_name_spelling(client: httpx.Client, version: str) -> None:
    got = data(client.get(f"/crm/{version}/Leads", params={"fields": "EMAIL, last_name"}))
    assert [list(x) for x in got[:3]] == [["Email", "Last_Name", "id"]] * 3


def test_dollar_keys_only_when_named(client: httpx.Client) -> None:
    stopped = leads(client)[3]
    assert stopped["$stop_processing"] is True
    got = data(client.get("/crm/v8/Leads", params={"fields": "id,$stop_processing"}))
    assert all(set(x) == {"id", "$stop_processing"} for x in got)
    assert got[3] == {"id": stopped["id"], "$stop_processing": True}
    # Matched case-insensitively, answered in the record's spelling; unnamed ones stay out.
    mixed = data(client.get("/crm/v8/Leads", params={"fields": "City,$APPROVED,$Editable"}))
    assert set(mixed[0]) == {"City", "id", "$approved", "$editable"}
    # A $-key the record does not carry is simply absent.
    accounts = data(client.get("/crm/v8/Accounts", params={"fields": "$stop_processing"}))
    assert set(accounts[0]) == {"id"}


def test_without_fields_v2_lists_whole_records(client: httpx.Client) -> None:
    for version in ("v2", "v2.1"):
        rec = data(client.get(f"/crm/{version}/Leads", params={"per_page": 1}))[0]
        assert {"Email", "Owner", "Data_Processing_Basis_Details"} <= set(rec)
        assert {"$stop_processing", "$approved", "$editable"} <= set(rec)


@pytest.mark.parametrize("version", NEW_VERSIONS)
def test_fields_required_for_lists_from_v3(client: httpx.Client, version: str) -> None:
    lead = leads(client)[0]
    contact_id = next(x["Referrer"]["id"] for x in leads(client) if x["Referrer"])
    for path, params in (
        (f"/crm/{version}/Leads", {}),
        (f"/crm/{version}/Leads", {"fields": " , "}),
        (f"/crm/{version}/Leads", {"ids": lead["id"]}),
        (f"/crm/{version}/Contacts/{contact_id}/Leads", {}),
    ):
        r = client.get(path, params=params)
        assert r.status_code == 400 and r.json() == MISSING_FIELDS, (path, params)
    # The ids= form with fields answers as the list does.
    one = data(client.get(f"/crm/{version}/Leads", params={"ids": lead["id"], "fields": "Email"}))
    assert one == [{"Email": lead["Email"], "id": lead["id"]}]


def test_module_is_checked_before_fields(client: httpx.Client) -> None:
    envelope(client.get("/crm/v8/Nonsense"), 400, "INVALID_MODULE")


def test_one_record_and_search_do_not_require_fields(client: httpx.Client) -> None:
    lead = leads(client)[3]
    whole = data(client.get(f"/crm/v8/Leads/{lead['id']}"))[0]
    assert whole["$stop_processing"] is True and "Visits" in whole
    narrowed = data(client.get(f"/crm/v8/Leads/{lead['id']}", params={"fields": "email"}))
    assert narrowed == [{"Email": lead["Email"], "id": lead["id"]}]
    crit = f"(Email:equals:{lead['Email']})"
    found = data(client.get("/crm/v8/Leads/search", params={"criteria": crit}))
    assert found[0]["$stop_processing"] is True and found[0]["Email"] == lead["Email"]
    projected = data(
        client.get(
            "/crm/v8/Leads/search", params={"criteria": crit, "fields": "Email,$stop_processing"}
        )
    )
    assert projected == [{"Email": lead["Email"], "id": lead["id"], "$stop_processing": True}]


def test_related_list_projection(client: httpx.Client) -> None:
    deals = data(client.get("/crm/v2/Deals"))
    contact_id = next(d["Contact_Name"]["id"] for d in deals if d["Contact_Name"])
    got = data(
        client.get(f"/crm/v8/Contacts/{contact_id}/Deals", params={"fields": "deal_name,Stage"})
    )
    assert got and all(list(x) == ["Deal_Name", "Stage", "id"] for x in got)
    whole = data(client.get(f"/crm/v2/Contacts/{contact_id}/Deals"))
    assert "$approved" in whole[0]


def test_deleted_entries_are_not_records(fresh: httpx.Client) -> None:
    """The recycle-bin list answers summaries; ``fields`` does not apply to it."""
    lead = leads(fresh)[0]
    fresh.delete(f"/crm/v8/Leads/{lead['id']}")
    entry = data(fresh.get("/crm/v8/Leads/deleted", params={"fields": "Email"}))[0]
    assert entry["id"] == lead["id"] and entry["display_name"] == lead["Full_Name"]
