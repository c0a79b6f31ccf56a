"""Writes keyed by an external id: the gateway cannot look their targets up, so it refuses
them rather than let a stop-processing record be changed through another key."""

from __future__ import annotations

import orjson

from tests.conftest import Crm, GatewayHandle


def test_batch_update_by_external_id_is_refused_as_state_unknown(
    crm: Crm, gw: GatewayHandle
) -> None:
    crm.clear()
    r = gw.http.put(
        "/crm/v8/Leads",
        content=orjson.dumps({"data": [{"External_Ref": "ext-1", "Lead_Status": "Lost"}]}),
        headers={"X-EXTERNAL": "Leads.External_Ref"},
    )
    assert r.status_code == 400
    (entry,) = r.json()["data"]
    assert entry["code"] == "CANNOT_PROCESS" and entry["details"]["reason"] == "state_unknown"
    assert not [x for x in crm.received("/crm/v8/Leads") if x["method"] == "PUT"]


def test_upsert_by_external_id_is_refused_but_rows_with_ids_are_checked(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal = next(r for r in crm.records("Leads") if not r["$stop_processing"])
    crm.clear()
    r = gw.http.post(
        "/crm/v8/Leads/upsert",
        content=orjson.dumps(
            {
                "data": [
                    {"id": normal["id"], "Lead_Status": "Contacted"},
                    {"External_Ref": "ext-2", "Last_Name": "New"},
                ]
            }
        ),
        headers={"X-EXTERNAL": "Leads.External_Ref"},
    )
    assert r.status_code == 207, r.text
    first, second = r.json()["data"]
    assert first["status"] == "success"
    assert second["details"]["reason"] == "state_unknown"
    (sent,) = [x for x in crm.received("/upsert") if x["method"] == "POST"]
    assert [rec.get("id") for rec in orjson.loads(sent["body"])["data"]] == [normal["id"]]
