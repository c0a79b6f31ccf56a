"""Record reads: paging, info blocks, 204, fields/ids/sort, one record, X-EXTERNAL, deleted."""

from __future__ import annotations

from datetime import date, datetime

import httpx

from .conftest import envelope, leads

V2_INFO = {"per_page", "count", "page", "more_records"}
V8_INFO = V2_INFO | {
    "call",
    "next_page_token",
    "previous_page_token",
    "page_token_expiry",
    "sort_by",
    "sort_order",
    "email",
}


def test_paging_and_v2_info(client: httpx.Client) -> None:
    r = client.get("/crm/v2/Leads")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json;charset=UTF-8"
    body = r.json()
    assert set(body["info"]) == V2_INFO
    assert body["info"] == {"per_page": 200, "count": 200, "page": 1, "more_records": True}
    assert len(r.content) > 200_000  # realistic page weight for the benchmark
    last = client.get("/crm/v2/Leads", params={"page": 3}).json()
    assert last["info"]["more_records"] is False and last["info"]["count"] == 200
    ids = {x["id"] for x in body["data"]} | {x["id"] for x in last["data"]}
    assert len(ids) == 400


def test_page_past_the_end_is_204(client: httpx.Client) -> None:
    r = client.get("/crm/v2/Leads", params={"page": 4})
    assert r.status_code == 204 and r.content == b""
    r = client.get("/crm/v2/Leads", params={"ids": "123"})
    assert r.status_code == 204


def test_per_page_is_capped_and_validated(client: httpx.Client) -> None:
    info = client.get("/crm/v2/Leads", params={"per_page": 500}).json()["info"]
    assert info["per_page"] == 200 and info["count"] == 200
    envelope(client.get("/crm/v2/Leads", params={"page": "x"}), 400, "INVALID_DATA")


def test_v8_info_and_page_token(client: httpx.Client) -> None:
    r = client.get("/crm/v8/Leads", params={"per_page": 5, "fields": "Last_Name"})
    info = r.json()["info"]
    assert set(info) == V8_INFO
    assert info["call"] is False and info["email"] is False
    assert info["sort_by"] == "id" and info["sort_order"] == "asc"
    assert info["previous_page_token"] is None and info["next_page_token"]
    datetime.fromisoformat(info["page_token_expiry"])
    nxt = client.get(
        "/crm/v8/Leads", params={"page_token": info["next_page_token"], "fields": "Last_Name"}
    ).json()
    assert nxt["info"]["page"] == 2
    assert nxt["data"][0]["id"] == leads(client)[5]["id"]
    v5 = client.get("/crm/v5/Leads", params={"per_page": 5, "fields": "Last_Name"})
    assert set(v5.json()["info"]) == V2_INFO


def test_record_shape_and_stop_processing_positions(client: httpx.Client) -> None:
    data = leads(client)
    assert [x["$stop_processing"] for x in data[:4]] == [False, False, False, True]
    assert data[10]["$stop_processing"] is True
    stopped = sum(x["$stop_processing"] for x in data)
    assert 2 <= stopped <= 40
    for rec in data:
        assert rec["id"].isdigit() and len(rec["id"]) == 19
        assert set(rec["Owner"]) == {"name", "id", "email"}
        assert rec["$approved"] is True and rec["$editable"] is True
        assert rec["$currency_symbol"] == "$" and rec["$approval_state"] == "approved"
        assert rec["$in_merge"] is False
        assert "Visits" not in rec  # subform rows only come with a single record
        datetime.fromisoformat(rec["Created_Time"])
        assert rec["Created_Time"][-6:] == "+00:00"
        if rec["Date_of_Birth"]:
            date.fromisoformat(rec["Date_of_Birth"])
    referred = [x for x in data if x["Referrer"]]
    assert 40 <= len(referred) <= 120
    assert set(referred[0]["Referrer"]) == {"name", "id"}
    consents = [
        x["Data_Processing_Basis_Details"] for x in data if x["Data_Processing_Basis_Details"]
    ]
    assert consents and {
        "id",
        "Data_Processing_Basis",
        "Contact_Through_Email",
        "Consent_Date",
        "Consent_Through",
        "Owner",
    } <= set(consents[0])
    accounts = client.get("/crm/v2/Accounts").json()["data"]
    assert len(accounts) == 30 and "$stop_processing" not in accounts[0]


def test_fields_param(client: httpx.Client) -> None:
    data = client.get(
        "/crm/v2/Leads", params={"fields": "Email,last_name,Bogus,Visits", "per_page": 3}
    ).json()["data"]
    # Only the named fields plus id: no $-property unless it is named (see test_fields_param).
    assert [set(x) for x in data] == [{"Email", "Last_Name", "id"}] * 3


def test_ids_and_sort(client: httpx.Client) -> None:
    all_leads = leads(client)
    wanted = [all_leads[7]["id"], all_leads[2]["id"]]
    got = client.get("/crm/v2/Leads", params={"ids": ",".join(wanted)}).json()["data"]
    assert {x["id"] for x in got} == set(wanted)
    rev = client.get(
        "/crm/v8/Leads",
        params={
            "sort_by": "Annual_Revenue",
            "sort_order": "desc",
            "per_page": 50,
            "fields": "Annual_Revenue",
        },
    )
    values = [x["Annual_Revenue"] for x in rev.json()["data"]]
    assert values == sorted(values, reverse=True)
    assert rev.json()["info"]["sort_by"] == "Annual_Revenue"
    envelope(client.get("/crm/v2/Leads", params={"sort_by": "Nope"}), 400, "INVALID_DATA")


def test_get_one_with_subform(client: httpx.Client) -> None:
    with_visits = None
    for page in (1, 2, 3):
        for rec in leads(client, page=page):
            full = client.get(f"/crm/v2/Leads/{rec['id']}").json()["data"][0]
            if full["Visits"]:
                with_visits = full
                break
        if with_visits:
            break
    assert with_visits is not None
    row = with_visits["Visits"][0]
    assert set(row) == {"id", "Visit_Date", "Notes", "Visitor_IP", "Parent_Id"}
    assert row["Parent_Id"] == {"name": with_visits["Full_Name"], "id": with_visits["id"]}
    assert row["id"].isdigit()
    only = client.get(f"/crm/v2/Leads/{with_visits['id']}", params={"fields": "Email"}).json()
    assert only["data"][0] == {"Email": with_visits["Email"], "id": with_visits["id"]}
    named = client.get(
        f"/crm/v8/Leads/{with_visits['id']}", params={"fields": "visits,$STOP_processing"}
    ).json()["data"][0]
    assert named == {
        "Visits": with_visits["Visits"],  # one record by id: subform rows come back
        "id": with_visits["id"],
        "$stop_processing": with_visits["$stop_processing"],
    }


def test_unknown_id_is_invalid_data(client: httpx.Client) -> None:
    details = envelope(client.get("/crm/v2/Leads/123456"), 400, "INVALID_DATA")
    assert details == {"id": "123456"}
    assert (
        client.get("/crm/v2/Leads/123456").json()["message"] == "the id given seems to be invalid"
    )


def test_x_external(client: httpx.Client) -> None:
    target = leads(client)[4]
    r = client.get(f"/crm/v2/Leads/{target['Email']}", headers={"X-EXTERNAL": "Leads.Email"})
    assert r.json()["data"][0]["id"] == target["id"]
    envelope(
        client.get("/crm/v2/Leads/nobody@example.com", headers={"X-EXTERNAL": "Leads.Email"}),
        400,
        "INVALID_DATA",
    )
    envelope(
        client.get("/crm/v2/Leads/x", headers={"X-EXTERNAL": "Contacts.Email"}), 400, "INVALID_DATA"
    )


def test_deleted_is_empty_before_deletes(client: httpx.Client) -> None:
    assert client.get("/crm/v2/Leads/deleted").status_code == 204


def test_related_records(client: httpx.Client) -> None:
    deals = client.get("/crm/v2/Deals").json()["data"]
    contact_id = next(d["Contact_Name"]["id"] for d in deals if d["Contact_Name"])
    expected = {
        d["id"] for d in deals if d["Contact_Name"] and d["Contact_Name"]["id"] == contact_id
    }
    r = client.get(f"/crm/v2/Contacts/{contact_id}/Deals")
    assert {d["id"] for d in r.json()["data"]} == expected
    assert set(r.json()["info"]) == V2_INFO
    referred = next(x for x in leads(client) if x["Referrer"])
    by_ref = client.get(
        f"/crm/v8/Contacts/{referred['Referrer']['id']}/Leads", params={"fields": "Email"}
    ).json()["data"]
    assert referred["id"] in {x["id"] for x in by_ref}
    accounts = client.get("/crm/v2/Accounts").json()["data"]
    lonely = [
        a for a in accounts if client.get(f"/crm/v2/Accounts/{a['id']}/Deals").status_code == 204
    ]
    assert len(lonely) < len(accounts)
    envelope(client.get(f"/crm/v2/Contacts/{contact_id}/Nope"), 404, "INVALID_URL_PATTERN")
    envelope(client.get("/crm/v2/Contacts/1/Deals"), 400, "INVALID_DATA")
