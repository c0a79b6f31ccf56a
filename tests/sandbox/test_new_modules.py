"""Campaigns, Notes, Tasks, Events, Calls: metadata, seeds, writes, campaign related lists."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import envelope, leads, post_json, put_json

pytestmark = pytest.mark.usefixtures("fresh")

NEW = ("Campaigns", "Notes", "Tasks", "Events", "Calls")


def fields(client: httpx.Client, version: str, module: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"/crm/{version}/settings/fields", params={"module": module})
    return {f["api_name"]: f for f in r.json()["fields"]}


def records(client: httpx.Client, module: str) -> list[dict[str, Any]]:
    r = client.get(f"/crm/v2/{module}")
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def stored(client: httpx.Client, module: str, rid: str) -> dict[str, Any]:
    rec: dict[str, Any] = client.get(f"/_sandbox/records/1/{module}/{rid}").json()
    return rec


def test_field_metadata(client: httpx.Client) -> None:
    notes = fields(client, "v8", "Notes")
    assert {"Note_Title", "Note_Content", "Parent_Id"} <= set(notes)
    assert notes["Parent_Id"]["lookup"]["module"] == {"api_name": "se_module"}
    assert fields(client, "v2", "Notes")["Parent_Id"]["lookup"]["module"] == "se_module"
    for module, title in (("Tasks", "Subject"), ("Events", "Event_Title"), ("Calls", "Subject")):
        f = fields(client, "v8", module)
        assert f[title]["system_mandatory"] is True
        assert f["What_Id"]["lookup"]["module"]["api_name"] == "se_module"
        assert f["Who_Id"]["lookup"]["module"]["api_name"] == "Contacts"
    assert fields(client, "v8", "Campaigns")["Campaign_Name"]["system_mandatory"] is True
    statuses = fields(client, "v8", "Campaigns")["Status"]["pick_list_values"]
    assert "Planning" in {v["actual_value"] for v in statuses}
    for module in NEW:
        assert all(f["private"] is None for f in fields(client, "v8", module).values())


def test_seeded_records(client: httpx.Client) -> None:
    stopped = leads(client)[3]
    for module in NEW:
        recs = records(client, module)
        assert 4 <= len(recs) <= 12
        assert all(r["id"].isdigit() and len(r["id"]) == 19 for r in recs)
    for module, key in (("Notes", "Parent_Id"), ("Tasks", "What_Id")):
        for rec in records(client, module):
            parent = rec[key]
            assert set(parent) == {"name", "id"}
            # $se_module names the parent's module: the parent is found there.
            assert client.get(f"/crm/v2/{rec['$se_module']}/{parent['id']}").status_code == 200
        assert records(client, module)[0][key]["id"] == stopped["id"]
    calls = records(client, "Calls")
    assert calls[0]["Who_Id"]["id"] == stopped["id"] and calls[0]["What_Id"] is None


def test_insert_and_update_activities(client: httpx.Client) -> None:
    account = records(client, "Accounts")[0]
    lead = leads(client)[0]
    r = post_json(
        client,
        "/crm/v8/Tasks",
        {
            "data": [
                {
                    "Subject": "Call back",
                    "What_Id": {"id": account["id"]},
                    "$se_module": "Accounts",
                    "Who_Id": {"id": lead["id"]},  # a Lead is accepted in Who_Id
                },
                {"Subject": "Wrong module", "What_Id": account["id"], "$se_module": "Deals"},
                {"Subject": "No such parent", "What_Id": "1"},
                {"What_Id": account["id"]},
            ]
        },
    )
    assert r.status_code == 207
    codes = [e["code"] for e in r.json()["data"]]
    assert codes == ["SUCCESS", "INVALID_DATA", "INVALID_DATA", "MANDATORY_NOT_FOUND"]
    assert [e["details"].get("api_name") for e in r.json()["data"][1:]] == [
        "What_Id",
        "What_Id",
        "Subject",
    ]
    task = stored(client, "Tasks", r.json()["data"][0]["details"]["id"])
    assert task["What_Id"] == {"name": account["Account_Name"], "id": account["id"]}
    assert task["$se_module"] == "Accounts" and task["Who_Id"]["id"] == lead["id"]
    # Re-parenting follows the id (no $se_module needed): $se_module is derived.
    deal = records(client, "Deals")[0]
    upd = put_json(client, f"/crm/v8/Tasks/{task['id']}", {"data": [{"What_Id": deal["id"]}]})
    assert upd.status_code == 200
    assert stored(client, "Tasks", task["id"])["$se_module"] == "Deals"
    events = post_json(
        client,
        "/crm/v8/Events",
        {
            "data": [
                {
                    "Event_Title": "Demo",
                    "Start_DateTime": "2025-01-02T10:00:00+00:00",
                    "End_DateTime": "2025-01-02T11:00:00+00:00",
                },
                {"Event_Title": "No times"},
            ]
        },
    )
    assert [e["code"] for e in events.json()["data"]] == ["SUCCESS", "MANDATORY_NOT_FOUND"]
    call = post_json(
        client,
        "/crm/v8/Calls",
        {
            "data": [
                {
                    "Subject": "Intro",
                    "Call_Type": "Outbound",
                    "Call_Start_Time": "2025-01-02T10:00:00+00:00",
                }
            ]
        },
    )
    assert call.status_code == 201


def test_notes_parent_id(client: httpx.Client) -> None:
    lead = leads(client)[3]
    r = post_json(
        client,
        "/crm/v8/Notes",
        {
            "data": [
                {"Note_Content": "v2 form", "Parent_Id": lead["id"], "$se_module": "Leads"},
                {
                    "Note_Content": "v8 form",
                    "Parent_Id": {"module": {"api_name": "leads"}, "id": lead["id"]},
                },
                {
                    "Note_Content": "wrong module",
                    "Parent_Id": {"module": {"api_name": "Deals"}, "id": lead["id"]},
                },
                {"Note_Content": "orphan"},
            ]
        },
    )
    codes = [e["code"] for e in r.json()["data"]]
    assert codes == ["SUCCESS", "SUCCESS", "INVALID_DATA", "MANDATORY_NOT_FOUND"]
    note = client.get(f"/crm/v8/Notes/{r.json()['data'][1]['details']['id']}").json()["data"][0]
    assert note["Parent_Id"] == {"name": lead["Full_Name"], "id": lead["id"]}
    assert note["$se_module"] == "Leads"
    narrowed = client.get(f"/crm/v8/Notes/{note['id']}", params={"fields": "Parent_Id"}).json()[
        "data"
    ][0]
    assert "$se_module" not in narrowed  # a $-key, so only when named
    envelope(
        post_json(client, "/crm/v8/Notes/upsert", {"data": [{"Note_Content": "x"}]}),
        400,
        "INVALID_MODULE",
    )


def test_campaign_related_lists_both_directions(client: httpx.Client) -> None:
    campaign = records(client, "Campaigns")[0]
    stopped = leads(client)[3]
    members = client.get(f"/crm/v2/Campaigns/{campaign['id']}/Leads").json()["data"]
    assert stopped["id"] in {m["id"] for m in members}
    back = client.get(
        f"/crm/v8/Leads/{stopped['id']}/Campaigns", params={"fields": "Campaign_Name"}
    )
    assert {"Campaign_Name": campaign["Campaign_Name"], "id": campaign["id"]} in back.json()["data"]
    assert client.get(f"/crm/v2/Campaigns/{campaign['id']}/Contacts").status_code == 200

    lead = leads(client)[20]
    url = f"/crm/v8/Leads/{lead['id']}/Campaigns/{campaign['id']}"
    assert client.put(url).json()["data"][0]["message"] == "relation updated"
    ids = {m["id"] for m in client.get(f"/crm/v2/Campaigns/{campaign['id']}/Leads").json()["data"]}
    assert lead["id"] in ids
    assert client.delete(url).json()["data"][0]["message"] == "relation removed"
    assert client.get(f"/crm/v2/Leads/{lead['id']}/Campaigns").status_code == 204

    contact = records(client, "Contacts")[5]
    bulk = put_json(
        client,
        f"/crm/v8/Campaigns/{campaign['id']}/Contacts",
        {"data": [{"id": contact["id"]}, {"id": "42"}]},
    )
    assert bulk.status_code == 207
    assert [e["code"] for e in bulk.json()["data"]] == ["SUCCESS", "INVALID_DATA"]
    mine = client.get(f"/crm/v2/Contacts/{contact['id']}/Campaigns").json()["data"]
    assert campaign["id"] in {c["id"] for c in mine}
    # Deleting a member drops its links.
    client.delete(f"/crm/v2/Contacts/{contact['id']}")
    left = client.get(f"/crm/v2/Campaigns/{campaign['id']}/Contacts").json()["data"]
    assert contact["id"] not in {c["id"] for c in left}


def test_related_lists_metadata(client: httpx.Client) -> None:
    for module, expected in (("Campaigns", {"Leads", "Contacts"}), ("Leads", {"Campaigns"})):
        r = client.get("/crm/v8/settings/related_lists", params={"module": module})
        assert expected <= {x["api_name"] for x in r.json()["related_lists"]}
