"""Writes: per-record entries in input order, batch statuses, upsert, delete, convert, mass
update, related-list writes. The sandbox does not refuse stop-processing records."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import envelope, leads, post_json, put_json

pytestmark = pytest.mark.usefixtures("fresh")


def codes(r: httpx.Response) -> list[str]:
    return [e["code"] for e in r.json()["data"]]


def stored(client: httpx.Client, module: str, rid: str) -> dict[str, Any]:
    r = client.get(f"/_sandbox/records/1/{module}/{rid}")
    assert r.status_code == 200
    rec: dict[str, Any] = r.json()
    return rec


def test_insert_all_ok_is_201(client: httpx.Client) -> None:
    r = post_json(
        client,
        "/crm/v2/Leads",
        {
            "data": [
                {
                    "Last_Name": "Kowalski",
                    "First_Name": "Ada",
                    "Email": "ada@example.com",
                    "$stop_processing": True,
                    "Data_Processing_Basis_Details": {
                        "Data_Processing_Basis": "Obtained",
                        "Consent_Through": "Email",
                    },
                    "Visits": [{"Visit_Date": "2024-01-02", "Notes": "first"}],
                },
            ]
        },
    )
    assert r.status_code == 201
    entry = r.json()["data"][0]
    assert entry["code"] == "SUCCESS" and entry["message"] == "record added"
    assert entry["status"] == "success"
    assert {"id", "Created_Time", "Modified_Time", "Created_By", "Modified_By"} <= set(
        entry["details"]
    )
    rid = entry["details"]["id"]
    assert rid.isdigit() and len(rid) == 19
    rec = client.get(f"/crm/v2/Leads/{rid}").json()["data"][0]
    assert rec["Full_Name"] == "Ada Kowalski"
    assert rec["$stop_processing"] is False  # read-only on input
    assert rec["Data_Processing_Basis_Details"]["id"].isdigit()
    assert rec["Visits"][0]["Parent_Id"] == {"name": "Ada Kowalski", "id": rid}
    assert rec["Visits"][0]["id"].isdigit()
    assert rec["Owner"]["email"] == "p.boyle@zylker.com"
    assert leads(client, page=4)[0]["id"] == rid  # appended in insertion order


def test_insert_mixed_is_207_in_input_order(client: httpx.Client) -> None:
    r = post_json(
        client,
        "/crm/v2/Leads",
        {
            "data": [
                {"Last_Name": "One"},
                {"First_Name": "no last name"},
                {"Last_Name": "Three", "Email": "not-an-email"},
                {"Last_Name": "Four", "Referrer": {"id": "1"}},
                "not an object",
                {"Last_Name": "Six", "Annual_Revenue": "12.5"},
            ]
        },
    )
    assert r.status_code == 207
    data = r.json()["data"]
    assert codes(r) == [
        "SUCCESS",
        "MANDATORY_NOT_FOUND",
        "INVALID_DATA",
        "INVALID_DATA",
        "INVALID_DATA",
        "SUCCESS",
    ]
    assert data[1]["details"] == {"api_name": "Last_Name"}
    assert data[1]["message"] == "required field not found"
    assert data[2]["details"]["api_name"] == "Email"
    assert data[3]["details"]["api_name"] == "Referrer"
    assert stored(client, "Leads", data[5]["details"]["id"])["Annual_Revenue"] == 12.5


@pytest.mark.parametrize(
    ("module", "field"),
    [
        ("Contacts", "Last_Name"),
        ("Deals", "Deal_Name"),
        ("Accounts", "Account_Name"),
        ("Vendors", "Vendor_Name"),
        ("Patients", "Name"),
    ],
)
def test_insert_all_failed_is_400(client: httpx.Client, module: str, field: str) -> None:
    r = post_json(client, f"/crm/v8/{module}", {"data": [{"Phone": "1"}, {field: ""}]})
    assert r.status_code == 400
    assert [e["details"] for e in r.json()["data"]] == [{"api_name": field}] * 2


def test_write_body_errors(client: httpx.Client) -> None:
    envelope(client.post("/crm/v2/Leads", content=b"{nope"), 400, "INVALID_DATA")
    envelope(post_json(client, "/crm/v2/Leads", {"records": []}), 400, "REQUIRED_PARAM_MISSING")
    many = {"data": [{"Last_Name": str(i)} for i in range(101)]}
    assert envelope(post_json(client, "/crm/v2/Leads", many), 400, "LIMIT_EXCEEDED") == {
        "limit": 100
    }


def test_update_including_stop_processing_records(client: httpx.Client) -> None:
    data = leads(client)
    stopped = data[3]
    assert stopped["$stop_processing"] is True
    r = put_json(
        client,
        "/crm/v2/Leads",
        {
            "data": [
                {"id": stopped["id"], "City": "Oslo"},
                {"id": "999", "City": "Oslo"},
                {"City": "no id"},
            ]
        },
    )
    assert r.status_code == 207
    assert codes(r) == ["SUCCESS", "INVALID_DATA", "MANDATORY_NOT_FOUND"]
    assert r.json()["data"][0]["message"] == "record updated"
    assert r.json()["data"][1]["details"] == {"id": "999"}
    assert stored(client, "Leads", stopped["id"])["City"] == "Oslo"
    one = put_json(client, f"/crm/v8/Leads/{data[0]['id']}", {"data": [{"Last_Name": "Renamed"}]})
    assert one.status_code == 200 and codes(one) == ["SUCCESS"]
    rec = stored(client, "Leads", data[0]["id"])
    assert rec["Last_Name"] == "Renamed" and rec["Full_Name"].endswith("Renamed")
    assert rec["Modified_Time"] != data[0]["Modified_Time"]
    bad = put_json(client, f"/crm/v2/Leads/{data[0]['id']}", {"data": [{"Last_Name": None}]})
    assert bad.status_code == 400 and codes(bad) == ["MANDATORY_NOT_FOUND"]


def test_upsert(client: httpx.Client) -> None:
    existing = leads(client)[1]
    r = post_json(
        client,
        "/crm/v2/Leads/upsert",
        {
            "data": [
                {"Last_Name": "Changed", "Email": existing["Email"].upper()},
                {"Last_Name": "Brand New", "Email": "brand.new@example.com"},
                {"Email": "missing.last@example.com"},
            ]
        },
    )
    assert r.status_code == 207
    first, second, third = r.json()["data"]
    assert (first["action"], first["duplicate_field"], first["message"]) == (
        "update",
        "Email",
        "record updated",
    )
    assert first["details"]["id"] == existing["id"]
    assert (second["action"], second["duplicate_field"], second["message"]) == (
        "insert",
        None,
        "record added",
    )
    assert third["code"] == "MANDATORY_NOT_FOUND"
    assert stored(client, "Leads", existing["id"])["Last_Name"] == "Changed"
    by_email = post_json(
        client,
        "/crm/v2/Leads/upsert",
        {
            "duplicate_check_fields": ["email"],
            "data": [{"Last_Name": "Brand New", "Email": "BRAND.NEW@example.com", "City": "Graz"}],
        },
    )
    assert by_email.status_code == 200
    assert by_email.json()["data"][0]["duplicate_field"] == "Email"
    assert by_email.json()["data"][0]["details"]["id"] == second["details"]["id"]
    accounts = client.get("/crm/v2/Accounts").json()["data"]
    acc = post_json(
        client,
        "/crm/v2/Accounts/upsert",
        {"data": [{"Account_Name": accounts[0]["Account_Name"], "Industry": "Retail"}]},
    )
    assert acc.json()["data"][0]["details"]["id"] == accounts[0]["id"]
    only_new = post_json(client, "/crm/v2/Deals/upsert", {"data": [{"Deal_Name": "Fresh deal"}]})
    assert only_new.status_code == 201
    envelope(
        post_json(
            client,
            "/crm/v2/Leads/upsert",
            {"duplicate_check_fields": ["Nope"], "data": [{"Last_Name": "x"}]},
        ),
        400,
        "INVALID_DATA",
    )


def test_delete_and_deleted_list(client: httpx.Client) -> None:
    data = leads(client)
    a, b = data[0]["id"], data[3]["id"]
    r = client.delete("/crm/v2/Leads", params={"ids": f"{a},123,{b}"})
    assert r.status_code == 207
    assert r.json()["data"][0] == {
        "code": "SUCCESS",
        "details": {"id": a},
        "message": "record deleted",
        "status": "success",
    }
    assert codes(r) == ["SUCCESS", "INVALID_DATA", "SUCCESS"]
    assert client.delete(f"/crm/v2/Leads/{data[5]['id']}").status_code == 200
    assert client.delete(f"/crm/v2/Leads/{data[5]['id']}").status_code == 400
    envelope(client.get(f"/crm/v2/Leads/{a}"), 400, "INVALID_DATA")
    deleted = client.get("/crm/v2/Leads/deleted").json()
    assert [x["id"] for x in deleted["data"]] == [a, b, data[5]["id"]]
    entry = deleted["data"][0]
    assert entry["type"] == "recycle" and entry["display_name"] == data[0]["Full_Name"]
    assert {"deleted_by", "deleted_time", "created_by"} <= set(entry)
    assert client.get("/crm/v2/Contacts/deleted").status_code == 204
    envelope(client.delete("/crm/v2/Leads"), 400, "REQUIRED_PARAM_MISSING")


def test_convert_v2_shape(client: httpx.Client) -> None:
    lead = leads(client)[2]
    r = post_json(
        client,
        f"/crm/v2/Leads/{lead['id']}/actions/convert",
        {
            "data": [
                {
                    "overwrite": True,
                    "Deals": {
                        "Deal_Name": "From lead",
                        "Stage": "Qualification",
                        "Closing_Date": "2025-01-31",
                    },
                }
            ]
        },
    )
    assert r.status_code == 200
    row = r.json()["data"][0]
    assert set(row) == {"Contacts", "Accounts", "Deals"}
    assert all(isinstance(v, str) and v.isdigit() for v in row.values())
    contact = client.get(f"/crm/v2/Contacts/{row['Contacts']}").json()["data"][0]
    assert contact["Last_Name"] == lead["Last_Name"] and contact["Email"] == lead["Email"]
    assert contact["Account_Name"]["id"] == row["Accounts"]
    deal = client.get(f"/crm/v2/Deals/{row['Deals']}").json()["data"][0]
    assert deal["Contact_Name"]["id"] == row["Contacts"]
    assert lead["id"] not in {x["id"] for x in leads(client)}
    converted = client.get("/crm/v2/Leads", params={"converted": "true"}).json()["data"]
    assert [x["id"] for x in converted] == [lead["id"]]
    again = post_json(client, f"/crm/v2/Leads/{lead['id']}/actions/convert", {"data": [{}]})
    envelope(again, 400, "ID_ALREADY_CONVERTED")


def test_convert_v8_shape(client: httpx.Client) -> None:
    lead = leads(client)[4]
    r = post_json(client, f"/crm/v8/Leads/{lead['id']}/actions/convert", {"data": [{}]})
    entry = r.json()["data"][0]
    assert entry["code"] == "SUCCESS" and entry["status"] == "success"
    assert entry["message"] == "The record has been converted successfully"
    assert entry["details"]["Deals"] is None
    assert entry["details"]["Contacts"]["name"] == lead["Full_Name"]
    assert entry["details"]["Accounts"]["name"] == lead["Company"]
    envelope(
        post_json(client, "/crm/v8/Leads/1/actions/convert", {"data": [{}]}), 400, "INVALID_DATA"
    )
    bad_deal = post_json(
        client,
        f"/crm/v8/Leads/{leads(client)[0]['id']}/actions/convert",
        {"data": [{"Deals": {"Stage": "Qualification"}}]},
    )
    envelope(bad_deal, 400, "MANDATORY_NOT_FOUND")


def test_mass_update(client: httpx.Client) -> None:
    data = leads(client)
    ids = [data[0]["id"], "42", data[10]["id"]]
    r = post_json(
        client,
        "/crm/v2/Leads/actions/mass_update",
        {"data": [{"Lead_Status": "Contacted"}], "ids": ids},
    )
    assert r.status_code == 207
    assert r.json()["data"][0] == {
        "code": "SUCCESS",
        "details": {"id": ids[0]},
        "message": "record updated",
        "status": "success",
    }
    assert codes(r) == ["SUCCESS", "INVALID_DATA", "SUCCESS"]
    assert stored(client, "Leads", ids[2])["Lead_Status"] == "Contacted"
    sched = post_json(
        client,
        "/crm/v2/Leads/actions/mass_update",
        {"data": [{"Lead_Status": "Contacted"}], "cvid": "5725767000000087501"},
    )
    entry = sched.json()["data"][0]
    assert entry["message"] == "mass update scheduled successfully"
    job = client.get(
        "/crm/v2/Leads/actions/mass_update", params={"job_id": entry["details"]["job_id"]}
    )
    assert job.json()["data"][0]["Status"] == "COMPLETED"
    too_many = {"data": [{"City": "x"}], "ids": [str(i) for i in range(501)]}
    envelope(
        post_json(client, "/crm/v2/Leads/actions/mass_update", too_many), 400, "LIMIT_EXCEEDED"
    )


def test_related_list_writes(client: httpx.Client) -> None:
    contact = client.get("/crm/v2/Contacts").json()["data"][0]
    deal = client.get("/crm/v2/Deals").json()["data"][0]
    url = f"/crm/v2/Contacts/{contact['id']}/Deals/{deal['id']}"
    r = client.put(url)
    assert r.status_code == 200
    assert r.json()["data"][0] == {
        "code": "SUCCESS",
        "details": {"id": deal["id"]},
        "message": "relation updated",
        "status": "success",
    }
    related = client.get(f"/crm/v2/Contacts/{contact['id']}/Deals").json()["data"]
    assert deal["id"] in {x["id"] for x in related}
    r = client.delete(url)
    assert r.json()["data"][0]["message"] == "relation removed"
    assert stored(client, "Deals", deal["id"])["Contact_Name"] is None
    bulk = put_json(
        client,
        f"/crm/v2/Contacts/{contact['id']}/Deals",
        {"data": [{"id": deal["id"]}, {"id": "7"}]},
    )
    assert bulk.status_code == 207 and codes(bulk) == ["SUCCESS", "INVALID_DATA"]


def test_list_pages_reflect_every_kind_of_write(client: httpx.Client) -> None:
    """List pages are pre-rendered; every write path must invalidate them."""
    first = leads(client)[0]
    put_json(client, "/crm/v2/Leads", {"data": [{"id": first["id"], "City": "Bergen"}]})
    assert leads(client)[0]["City"] == "Bergen"
    post_json(client, f"/_sandbox/records/1/Leads/{first['id']}", {"City": "Narvik"})
    assert leads(client)[0]["City"] == "Narvik"
    post_json(
        client,
        "/crm/v2/Leads/actions/mass_update",
        {"data": [{"City": "Bodo"}], "ids": [first["id"]]},
    )
    assert leads(client)[0]["City"] == "Bodo"
    client.delete(f"/crm/v2/Leads/{first['id']}")
    assert leads(client)[0]["id"] != first["id"]
    org2_before = client.get("/crm/v2/Leads", headers={"Authorization": "Zoho-oauthtoken org2-a"})
    assert org2_before.json()["info"]["count"] == 50  # org 2's pages are its own
