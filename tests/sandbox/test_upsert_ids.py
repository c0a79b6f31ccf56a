"""Upsert duplicate checking as the CRM does it (research §4.6), unique fields, and record ids
compared as the CRM compares them (JSON numbers, whitespace, leading zeros)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from .conftest import envelope, leads, post_json, put_json

pytestmark = pytest.mark.usefixtures("fresh")


def records(client: httpx.Client, module: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get(f"/crm/v2/{module}").json()["data"]
    return data


def upsert(client: httpx.Client, module: str, body: dict[str, Any]) -> httpx.Response:
    return post_json(client, f"/crm/v8/{module}/upsert", body)


def test_unique_metadata(client: httpx.Client) -> None:
    r = client.get("/crm/v8/settings/fields", params={"module": "Patients"})
    by_name = {f["api_name"]: f for f in r.json()["fields"]}
    assert by_name["Insurance_Number"]["unique"] == {"casesensitive": "false"}
    assert all(f["unique"] == {} for n, f in by_name.items() if n != "Insurance_Number")


def test_vendors_match_on_vendor_name_not_email(client: httpx.Client) -> None:
    vendor = records(client, "Vendors")[0]
    by_email = upsert(
        client, "Vendors", {"data": [{"Vendor_Name": "New", "Email": vendor["Email"]}]}
    )
    assert by_email.status_code == 201 and by_email.json()["data"][0]["action"] == "insert"
    by_name = upsert(client, "Vendors", {"data": [{"Vendor_Name": vendor["Vendor_Name"].lower()}]})
    entry = by_name.json()["data"][0]
    assert (entry["action"], entry["duplicate_field"]) == ("update", "Vendor_Name")
    assert entry["details"]["id"] == vendor["id"]


def test_custom_module_name_then_unique_fields(client: httpx.Client) -> None:
    first, second = records(client, "Patients")[:2]
    r = upsert(
        client,
        "Patients",
        {
            "data": [
                {"Name": first["Name"], "Insurance_Number": "INS-0"},
                {"Name": "Someone Else", "Insurance_Number": second["Insurance_Number"]},
            ]
        },
    )
    a, b = r.json()["data"]
    assert (a["duplicate_field"], a["details"]["id"]) == ("Name", first["id"])
    assert (b["duplicate_field"], b["details"]["id"]) == ("Insurance_Number", second["id"])
    # Named explicitly, only the named fields are checked, in the given order.
    only_unique = upsert(
        client,
        "Patients",
        {
            "duplicate_check_fields": ["insurance_number"],
            "data": [{"Name": second["Name"], "Insurance_Number": "INS-NEW"}],
        },
    )
    assert only_unique.json()["data"][0]["action"] == "insert"


def test_campaigns_match_on_campaign_name(client: httpx.Client) -> None:
    campaign = records(client, "Campaigns")[1]
    r = upsert(client, "Campaigns", {"data": [{"Campaign_Name": campaign["Campaign_Name"]}]})
    assert r.json()["data"][0]["duplicate_field"] == "Campaign_Name"


def test_only_duplicate_check_and_unique_fields_may_be_named(client: httpx.Client) -> None:
    for module, name in (("Leads", "Last_Name"), ("Patients", "Email"), ("Vendors", "Email")):
        envelope(
            upsert(client, module, {"duplicate_check_fields": [name], "data": [{"x": 1}]}),
            400,
            "INVALID_DATA",
        )


def test_unique_field_refuses_duplicates_on_insert_and_update(client: httpx.Client) -> None:
    first, second = records(client, "Patients")[:2]
    r = post_json(
        client,
        "/crm/v8/Patients",
        {"data": [{"Name": "Dup", "Insurance_Number": first["Insurance_Number"].lower()}]},
    )
    assert r.status_code == 400
    entry = r.json()["data"][0]
    assert entry["code"] == "DUPLICATE_DATA" and entry["details"]["api_name"] == "Insurance_Number"
    assert entry["details"]["duplicate_record"]["id"] == first["id"]
    clash = put_json(
        client,
        f"/crm/v8/Patients/{second['id']}",
        {"data": [{"Insurance_Number": first["Insurance_Number"]}]},
    )
    assert clash.json()["data"][0]["code"] == "DUPLICATE_DATA"
    same = put_json(
        client,
        f"/crm/v8/Patients/{first['id']}",
        {"data": [{"Insurance_Number": first["Insurance_Number"]}]},
    )
    assert same.status_code == 200  # a record does not clash with itself


def test_ids_as_numbers_padded_or_zero_led(client: httpx.Client) -> None:
    data = leads(client)
    rid = data[0]["id"]
    for form in (f"%20{rid}%20", f"000{rid}"):
        got = client.get(f"/crm/v8/Leads/{form}").json()["data"][0]
        assert got["id"] == rid
    listed = client.get("/crm/v8/Leads", params={"ids": f" 0{rid} ", "fields": "Email"})
    assert listed.json()["data"][0]["id"] == rid
    upd = client.put(
        "/crm/v8/Leads",
        content=orjson.dumps({"data": [{"id": int(rid), "City": "Split"}]}),
    )
    assert upd.status_code == 200 and upd.json()["data"][0]["details"]["id"] == rid
    contact = records(client, "Contacts")[0]
    deal = post_json(
        client,
        "/crm/v8/Deals",
        {"data": [{"Deal_Name": "Numeric lookup", "Contact_Name": {"id": int(contact["id"])}}]},
    )
    assert deal.status_code == 201
    up = upsert(client, "Leads", {"data": [{"id": f" {rid}", "Last_Name": "By id"}]})
    assert up.json()["data"][0]["action"] == "update"
    mass = post_json(
        client,
        "/crm/v8/Leads/actions/mass_update",
        {"data": [{"City": "Zadar"}], "ids": [int(data[1]["id"]), f"0{data[2]['id']}"]},
    )
    assert [e["details"]["id"] for e in mass.json()["data"]] == [data[1]["id"], data[2]["id"]]
    gone = client.delete("/crm/v8/Leads", params={"ids": f"00{data[4]['id']}"})
    assert gone.json()["data"][0]["details"]["id"] == data[4]["id"]
    assert client.get(f"/crm/v8/Leads/{data[4]['id']}").status_code == 400
    conv = post_json(client, f"/crm/v8/Leads/0{data[5]['id']}/actions/convert", {"data": [{}]})
    assert conv.status_code == 200
    again = post_json(client, f"/crm/v8/Leads/{data[5]['id']}/actions/convert", {"data": [{}]})
    envelope(again, 400, "ID_ALREADY_CONVERTED")
    # Booleans and fractions are not ids.
    bad = client.put("/crm/v8/Leads", content=orjson.dumps({"data": [{"id": True, "City": "x"}]}))
    assert bad.json()["data"][0]["code"] == "INVALID_DATA"


def test_id_equality_is_exact_in_queries(client: httpx.Client) -> None:
    """19-digit ids compared as floats would merge neighbours (ids are a few apart)."""
    for rec in leads(client)[:5]:
        q = {"select_query": f"select Email from Leads where id = '{rec['id']}'"}
        rows = post_json(client, "/crm/v8/coql", q).json()["data"]
        assert [r["id"] for r in rows] == [rec["id"]]
        hits = client.get("/crm/v8/Leads/search", params={"criteria": f"(id:equals:{rec['id']})"})
        assert [r["id"] for r in hits.json()["data"]] == [rec["id"]]
