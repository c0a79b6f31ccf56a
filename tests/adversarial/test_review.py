"""Attacks tried while reading the whole change once more: keys and parameters in another
letter case, and a header named in Connection, on writes."""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import Crm, GatewayHandle


def _stopped_lead(crm: Crm) -> dict[str, Any]:
    return next(r for r in crm.records("Leads") if r["$stop_processing"])


def test_an_upsert_naming_its_duplicate_fields_in_another_case_still_finds_the_stopped_lead(
    crm: Crm, gw: GatewayHandle
) -> None:
    stopped = _stopped_lead(crm)
    crm.edit("Leads", stopped["id"], External_Ref="review-ref")
    crm.clear()
    body = {
        "data": [{"Last_Name": "X", "External_Ref": "review-ref"}],
        "Duplicate_Check_Fields": ["External_Ref"],
    }
    r = gw.http.post("/crm/v8/Leads/upsert", content=orjson.dumps(body))
    assert r.status_code == 400, r.text
    assert r.json()["data"][0]["details"] == {"id": stopped["id"], "reason": "stop_processing"}
    assert not [x for x in crm.received("/upsert") if x["method"] == "POST"]


def test_a_delink_naming_its_ids_in_another_case_is_checked(crm: Crm, gw: GatewayHandle) -> None:
    stopped = _stopped_lead(crm)
    campaign = crm.http.get("/crm/v2/Campaigns").json()["data"][0]["id"]
    crm.clear()
    r = gw.http.delete(f"/crm/v8/Campaigns/{campaign}/Leads", params={"IDS": stopped["id"]})
    assert r.status_code == 400, r.text
    assert r.json()["data"][0]["details"]["reason"] == "stop_processing"
    assert not [x for x in crm.received("/Campaigns/") if x["method"] == "DELETE"]


def test_an_external_key_named_in_connection_cannot_make_a_write_reach_the_crm(
    crm: Crm, gw: GatewayHandle
) -> None:
    """X-EXTERNAL named in Connection is removed before anything reads it: the path's
    value is then no record id, and no route takes it."""
    stopped = _stopped_lead(crm)
    crm.edit("Leads", stopped["id"], External_Ref="review-conn")
    crm.clear()
    r = gw.http.put(
        "/crm/v8/Leads/review-conn",
        content=orjson.dumps({"data": [{"City": "Written"}]}),
        headers={"X-EXTERNAL": "Leads.External_Ref", "Connection": "X-EXTERNAL"},
    )
    assert r.status_code == 404, r.text
    assert not crm.received("/crm/v8/Leads")
    assert crm.one("Leads", stopped["id"]).get("City") != "Written"
