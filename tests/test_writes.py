"""Writes against records in stop processing, end to end (contract §4, §5).

A record with ``$stop_processing: true`` may be read, deleted or exported, never processed:
the gateway looks up each target's current state right before forwarding, answers a
refused record with ``CANNOT_PROCESS`` in its input position, forwards only the rest, and
merges the CRM's entries back in input order. A target the gateway cannot look up (a
batch or upsert row keyed by an external id) is refused as ``state_unknown``, and a body the
CRM could read differently from the gateway is refused whole. Delete is never refused.
Write bodies are sent as the official SDKs send them: JSON with no Content-Type header.

The sandbox seeds Leads at list positions 3 and 10 in stop processing, 0, 1 and 2 not.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Crm, GatewayHandle, MakeGateway, envelope

STOPPED_MESSAGE = "The record is in stop processing"


def _refusal(record_id: str | None, reason: str = "stop_processing") -> dict[str, Any]:
    return {
        "code": "CANNOT_PROCESS",
        "details": {"id": record_id, "reason": reason},
        "message": STOPPED_MESSAGE
        if reason == "stop_processing"
        else "The record's processing state could not be determined",
        "status": "error",
    }


def _leads(crm: Crm) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(normal leads at positions 0-2, stopped leads at positions 3 and 10)."""
    leads = crm.records("Leads")
    normal, stopped = leads[:3], [leads[3], leads[10]]
    assert not any(r["$stop_processing"] for r in normal)
    assert all(r["$stop_processing"] for r in stopped)
    return normal, stopped


def _put(gw: GatewayHandle, url: str, body: Any, **headers: str) -> httpx.Response:
    return gw.http.put(url, content=orjson.dumps(body), headers=headers)


def _post(gw: GatewayHandle, url: str, body: Any, **headers: str) -> httpx.Response:
    return gw.http.post(url, content=orjson.dumps(body), headers=headers)


def _sent(crm: Crm, method: str, path: str) -> list[Any]:
    """Bodies of the ``method`` requests the sandbox received on exactly ``path``."""
    return [
        orjson.loads(r["body"]) if r["body"] else None
        for r in crm.received(path)
        if r["method"] == method and r["path"] == path
    ]


def _sent_under(crm: Crm, method: str, path_part: str) -> list[Any]:
    """Bodies of the ``method`` requests the sandbox received on any path containing
    ``path_part``."""
    return [
        orjson.loads(r["body"]) if r["body"] else None
        for r in crm.received(path_part)
        if r["method"] == method
    ]


def _zip(csv_text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Leads.csv", csv_text)
    return buf.getvalue()


def _upload(gw: GatewayHandle, csv_text: str) -> httpx.Response:
    return gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", _zip(csv_text), "application/zip")},
        headers={"feature": "bulk-write"},
    )


# -- batch update -------------------------------------------------------------------------


def test_a_mixed_batch_update_forwards_only_the_allowed_record_and_answers_207_in_input_order(
    crm: Crm, gw: GatewayHandle
) -> None:
    (allowed, *_), (stopped, *_) = _leads(crm)
    crm.clear()
    body = {
        "data": [
            {"id": stopped["id"], "City": "Stopped-Town"},
            {"id": allowed["id"], "City": "Allowed-Town"},
        ],
        "trigger": ["workflow"],
    }
    r = _put(gw, "/crm/v8/Leads", body)
    assert r.status_code == 207, r.text
    first, second = r.json()["data"]
    assert first == _refusal(stopped["id"])
    assert second["code"] == "SUCCESS" and second["details"]["id"] == allowed["id"]
    assert _sent(crm, "PUT", "/crm/v8/Leads") == [
        {"data": [{"id": allowed["id"], "City": "Allowed-Town"}], "trigger": ["workflow"]}
    ]
    (put,) = [x for x in crm.received("/crm/v8/Leads") if x["method"] == "PUT"]
    assert "content-type" not in put["headers"]  # sent on as it came: no type invented
    assert crm.one("Leads", allowed["id"])["City"] == "Allowed-Town"
    assert crm.one("Leads", stopped["id"])["City"] == stopped["City"]


@pytest.mark.parametrize("route", ["PUT record", "PATCH record", "POST id", "PUT 1 of 100"])
def test_c20_no_route_writes_a_stopped_lead_under_either_parser(
    crm: Crm, make_gateway: MakeGateway, parser: str, route: str
) -> None:
    """PUT or PATCH on the record, an upsert naming its id, a batch of 100 in which one is
    stopped: the stopped lead is never written. (Upserts matched by duplicate-check fields
    and deletes: the other ``test_c20_*`` tests.)"""
    gw = make_gateway(http=parser)
    leads = crm.records("Leads")
    stopped = next(r for r in leads if r["$stop_processing"])
    free = [r for r in leads if not r["$stop_processing"]]
    sid = stopped["id"]
    crm.clear()
    if route == "PUT record":
        r = _put(gw, f"/crm/v8/Leads/{sid}", {"data": [{"City": "Written"}]})
    elif route == "PATCH record":
        r = gw.http.patch(f"/crm/v8/Leads/{sid}", content=b'{"data":[{"City":"Written"}]}')
    elif route == "POST id":
        r = _post(gw, "/crm/v8/Leads/upsert", {"data": [{"id": sid, "City": "Written"}]})
    else:
        rows = [{"id": rec["id"], "Description": "batch"} for rec in free[:99]]
        rows.insert(50, {"id": sid, "City": "Written"})
        assert len(rows) == 100
        r = _put(gw, "/crm/v8/Leads", {"data": rows})
        assert r.status_code == 207, r.text
        assert r.json()["data"][50] == _refusal(sid)
    assert r.status_code in (207, 400, 405), r.text
    for sent in crm.received("/crm/"):
        if sent["method"] != "GET":
            assert sid not in sent["path"] and sid not in (sent["body"] or ""), sent["path"]
    assert crm.one("Leads", sid)["City"] == stopped["City"]


def test_a_batch_update_of_only_stopped_records_is_400_and_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, stopped = _leads(crm)
    crm.clear()
    r = _put(gw, "/crm/v8/Leads", {"data": [{"id": s["id"], "City": "X"} for s in stopped]})
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(s["id"]) for s in stopped]}
    assert _sent(crm, "PUT", "/crm/v8/Leads") == []


def test_a_batch_update_without_stopped_records_gets_the_crms_own_status_and_body(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, _ = _leads(crm)
    crm.clear()
    body = {"data": [{"id": n["id"], "City": "Same-Town"} for n in normal[:2]]}
    r = _put(gw, "/crm/v8/Leads", body)
    assert r.status_code == 200, r.text
    entries = r.json()["data"]
    assert [(e["code"], e["details"]["id"]) for e in entries] == [
        ("SUCCESS", n["id"]) for n in normal[:2]
    ]
    assert _sent(crm, "PUT", "/crm/v8/Leads") == [body]
    assert all(crm.one("Leads", n["id"])["City"] == "Same-Town" for n in normal[:2])


def test_an_id_in_another_letter_case_is_checked_as_the_id(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    r = _put(gw, "/crm/v8/Leads", {"data": [{"ID": stopped["id"], "City": "X"}]})
    assert r.status_code == 400 and r.json() == {"data": [_refusal(stopped["id"])]}
    assert not _sent_under(crm, "PUT", "/crm/v8/Leads")


# -- single-record update -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["v2", "v8"])
def test_c20_a_single_record_update_of_a_stopped_lead_is_refused(
    crm: Crm, gw: GatewayHandle, version: str
) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    r = _put(gw, f"/crm/{version}/Leads/{stopped['id']}", {"data": [{"City": "X"}]})
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "PUT", f"/crm/{version}/Leads/{stopped['id']}") == []


def test_a_single_record_update_of_a_normal_lead_is_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    (normal, *_), _ = _leads(crm)
    r = _put(gw, f"/crm/v8/Leads/{normal['id']}", {"data": [{"City": "Elsewhere"}]})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["details"]["id"] == normal["id"]
    assert crm.one("Leads", normal["id"])["City"] == "Elsewhere"


def test_a_single_record_update_whose_body_names_another_record_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), (stopped, *_) = _leads(crm)
    crm.clear()
    body = {"data": [{"id": stopped["id"], "City": "X"}]}
    envelope(_put(gw, f"/crm/v8/Leads/{normal['id']}", body), 400, "INVALID_DATA")
    assert not _sent_under(crm, "PUT", f"/crm/v8/Leads/{normal['id']}")
    # naming the same record in the body, or none, is an ordinary single update
    same = {"data": [{"id": normal["id"], "City": "Y"}]}
    assert _put(gw, f"/crm/v8/Leads/{normal['id']}", same).is_success
    assert _put(gw, f"/crm/v8/Leads/{normal['id']}", {"data": [{"City": "Z"}]}).is_success
    assert crm.one("Leads", normal["id"])["City"] == "Z"
    assert crm.one("Leads", stopped["id"])["City"] != "X"


# -- writes keyed by an external id -------------------------------------------------------
def test_a_single_record_update_by_external_id_checks_the_record_it_names(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), (stopped, *_) = _leads(crm)
    crm.edit("Leads", normal["id"], External_Ref="ext-normal")
    crm.edit("Leads", stopped["id"], External_Ref="ext-stopped")
    external = {"X-EXTERNAL": "Leads.External_Ref"}
    ok = _put(gw, "/crm/v8/Leads/ext-normal", {"data": [{"City": "Ext-Town"}]}, **external)
    assert ok.status_code == 200, ok.text
    assert crm.one("Leads", normal["id"])["City"] == "Ext-Town"
    crm.clear()
    refused = _put(gw, "/crm/v8/Leads/ext-stopped", {"data": [{"City": "X"}]}, **external)
    assert refused.status_code == 400
    assert refused.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "PUT", "/crm/v8/Leads/ext-stopped") == []


def test_a_batch_update_by_external_id_is_refused_as_state_unknown(
    crm: Crm, gw: GatewayHandle
) -> None:
    crm.clear()
    r = _put(
        gw,
        "/crm/v8/Leads",
        {"data": [{"External_Ref": "ext-1", "Lead_Status": "Lost"}]},
        **{"X-EXTERNAL": "Leads.External_Ref"},
    )
    assert r.status_code == 400
    (entry,) = r.json()["data"]
    assert entry["code"] == "CANNOT_PROCESS" and entry["details"]["reason"] == "state_unknown"
    assert not [x for x in crm.received("/crm/v8/Leads") if x["method"] == "PUT"]


def test_an_upsert_by_external_id_resolves_each_rows_value_through_the_crm(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Under X-EXTERNAL each row names its record by the external field's value: the CRM
    resolves it. A row whose value the CRM does not know, or that carries no value (only an
    id: which of the two the CRM would use is not documented), is state_unknown."""
    (normal, *_), (stopped, *_) = _leads(crm)
    crm.edit("Leads", normal["id"], External_Ref="ext-normal")
    crm.edit("Leads", stopped["id"], External_Ref="ext-stopped")
    crm.clear()
    rows = [
        {"External_Ref": "ext-normal", "Lead_Status": "Contacted"},
        {"External_Ref": "ext-stopped", "Lead_Status": "Contacted"},
        {"External_Ref": "ext-new", "Last_Name": "New"},
        {"id": normal["id"], "Lead_Status": "Contacted"},
    ]
    r = _post(gw, "/crm/v8/Leads/upsert", {"data": rows}, **{"X-EXTERNAL": "Leads.External_Ref"})
    assert r.status_code == 207, r.text
    first, second, third, fourth = r.json()["data"]
    assert first["status"] == "success"
    assert second == _refusal(stopped["id"])
    assert third["details"]["reason"] == fourth["details"]["reason"] == "state_unknown"
    (sent,) = [x for x in crm.received("/upsert") if x["method"] == "POST"]
    assert orjson.loads(sent["body"])["data"] == [rows[0]]


# -- upsert -------------------------------------------------------------------------------


def test_c20_an_upsert_naming_a_stopped_lead_by_id_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    r = _post(gw, "/crm/v8/Leads/upsert", {"data": [{"id": stopped["id"], "City": "X"}]})
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "POST", "/crm/v8/Leads/upsert") == []


@pytest.mark.parametrize(
    ("check_fields", "key"),
    [
        (None, "Email"),  # the module's default duplicate check: Email
        (["Email"], "Email"),
        (["email"], "email"),  # field names are compared case-insensitively
        (["email"], "Email"),
    ],
)
def test_c20_an_upsert_whose_duplicate_check_finds_a_stopped_lead_is_refused(
    crm: Crm, gw: GatewayHandle, check_fields: list[str] | None, key: str
) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    body: dict[str, Any] = {"data": [{"Last_Name": "Again", key: stopped["Email"].upper()}]}
    if check_fields is not None:
        body["duplicate_check_fields"] = check_fields
    r = _post(gw, "/crm/v8/Leads/upsert", body)
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "POST", "/crm/v8/Leads/upsert") == []
    assert crm.one("Leads", stopped["id"])["Last_Name"] == stopped["Last_Name"]


def test_an_upsert_found_by_another_duplicate_check_field_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.edit("Leads", stopped["id"], Secondary_Email="second-7q@example.net")
    body = {
        "data": [{"Last_Name": "X", "Secondary_Email": "second-7q@example.net"}],
        "duplicate_check_fields": ["Secondary_Email"],
    }
    r = _post(gw, "/crm/v8/Leads/upsert", body)
    assert r.status_code == 400 and r.json() == {"data": [_refusal(stopped["id"])]}


def test_an_upsert_target_hidden_by_the_crm_counts_as_a_match(crm: Crm, gw: GatewayHandle) -> None:
    # A CRM that hides restricted values answers the duplicate search with Email null.
    _, (stopped, *_) = _leads(crm)
    hit = {"id": stopped["id"], "Email": None, "$stop_processing": True}
    crm.fault(
        path_contains="/Leads/search",
        method="GET",
        status=200,
        json={"data": [hit], "info": {"more_records": False}},
        times=1,
    )
    crm.clear()
    r = _post(gw, "/crm/v8/Leads/upsert", {"data": [{"Last_Name": "X", "Email": "a@b.example"}]})
    assert r.status_code == 400 and r.json()["data"][0] == _refusal(stopped["id"])
    assert not _sent_under(crm, "POST", "/upsert")


def test_an_upsert_matching_no_one_is_forwarded_and_inserts(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    body = {"data": [{"Last_Name": "Newcomer", "Email": "newcomer-5k@example.org"}]}
    r = _post(gw, "/crm/v8/Leads/upsert", body)
    assert r.status_code == 201, r.text
    (entry,) = r.json()["data"]
    assert entry["code"] == "SUCCESS" and entry["action"] == "insert"
    assert _sent(crm, "POST", "/crm/v8/Leads/upsert") == [body]
    assert crm.one("Leads", entry["details"]["id"])["Last_Name"] == "Newcomer"


def test_an_upsert_batch_refuses_only_the_record_aimed_at_a_stopped_lead(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), (stopped, *_) = _leads(crm)
    crm.clear()
    body = {
        "data": [
            {"id": normal["id"], "City": "Upsert-Town"},
            {"Last_Name": "Dup", "Email": stopped["Email"]},
            {"Last_Name": "Fresh", "Email": "fresh-3m@example.org"},
        ]
    }
    r = _post(gw, "/crm/v8/Leads/upsert", body)
    assert r.status_code == 207, r.text
    first, second, third = r.json()["data"]
    assert (first["action"], first["details"]["id"]) == ("update", normal["id"])
    assert second == _refusal(stopped["id"])
    assert third["action"] == "insert"
    assert _sent(crm, "POST", "/crm/v8/Leads/upsert") == [
        {"data": [body["data"][0], body["data"][2]]}
    ]


# -- convert ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v2", "v8"])
def test_converting_a_stopped_lead_is_refused(crm: Crm, gw: GatewayHandle, version: str) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    r = _post(gw, f"/crm/{version}/Leads/{stopped['id']}/actions/convert", {"data": [{}]})
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert crm.received("/actions/convert") == []


def test_converting_a_normal_lead_passes_each_versions_answer_through(
    crm: Crm, gw: GatewayHandle
) -> None:
    (first, second, _), _ = _leads(crm)
    v2 = _post(gw, f"/crm/v2/Leads/{first['id']}/actions/convert", {"data": [{}]})
    assert v2.status_code == 200, v2.text
    (row,) = v2.json()["data"]
    assert set(row) == {"Contacts", "Accounts", "Deals"} and row["Contacts"].isdigit()
    v8 = _post(gw, f"/crm/v8/Leads/{second['id']}/actions/convert", {"data": [{}]})
    assert v8.status_code == 200, v8.text
    (entry,) = v8.json()["data"]
    assert entry["code"] == "SUCCESS" and entry["status"] == "success"
    assert entry["details"]["Contacts"]["id"].isdigit()


def test_converting_into_an_existing_contact_in_stop_processing_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    (lead, other, *_), _ = _leads(crm)
    contacts = crm.records("Contacts")
    stopped = next(c for c in contacts if c["$stop_processing"])
    normal = next(c for c in contacts if not c["$stop_processing"])
    crm.clear()
    into_stopped = {"data": [{"overwrite": True, "Contacts": {"id": stopped["id"]}}]}
    r = _post(gw, f"/crm/v8/Leads/{lead['id']}/actions/convert", into_stopped)
    assert r.status_code == 400 and r.json()["data"][0] == _refusal(stopped["id"])
    assert not _sent_under(crm, "POST", "/actions/convert")
    unknown = {"data": [{"Contacts": "12345"}]}
    r = _post(gw, f"/crm/v8/Leads/{lead['id']}/actions/convert", unknown)
    assert r.status_code == 400 and r.json()["data"][0] == _refusal("12345", "state_unknown")
    into_normal = {"data": [{"overwrite": True, "Contacts": {"id": normal["id"]}}]}
    r = _post(gw, f"/crm/v8/Leads/{other['id']}/actions/convert", into_normal)
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS"
    assert r.json()["data"][0]["details"]["Contacts"]["id"] == normal["id"]


# -- mass update --------------------------------------------------------------------------


def test_a_mass_update_by_ids_forwards_only_the_allowed_ids_and_merges_in_order(
    crm: Crm, gw: GatewayHandle
) -> None:
    (a, b, _), (stopped, *_) = _leads(crm)
    crm.clear()
    ids = [a["id"], stopped["id"], b["id"]]
    r = _post(
        gw, "/crm/v8/Leads/actions/mass_update", {"data": [{"City": "Mass-Town"}], "ids": ids}
    )
    assert r.status_code == 207, r.text
    entries = r.json()["data"]
    assert entries[1] == _refusal(stopped["id"])
    assert [(e["code"], e["details"]["id"]) for e in (entries[0], entries[2])] == [
        ("SUCCESS", a["id"]),
        ("SUCCESS", b["id"]),
    ]
    assert _sent(crm, "POST", "/crm/v8/Leads/actions/mass_update") == [
        {"data": [{"City": "Mass-Town"}], "ids": [a["id"], b["id"]]}
    ]
    assert [crm.one("Leads", i)["City"] for i in ids] == ["Mass-Town", stopped["City"], "Mass-Town"]


def test_a_mass_update_by_custom_view_is_refused_with_a_clear_error(
    crm: Crm, gw: GatewayHandle
) -> None:
    crm.clear()
    r = _post(
        gw,
        "/crm/v8/Leads/actions/mass_update",
        {"data": [{"City": "X"}], "cvid": "5725767000000087501"},
    )
    assert envelope(r, 400, "NOT_ALLOWED") == {"reason": "unknown_targets"}
    assert "send the record ids" in r.json()["message"]
    assert crm.received("/mass_update") == []
    (entry,) = gw.requests()
    assert entry["outcome"] == "refused" and entry["reasons"] == ["unknown_targets"]


def test_a_mass_update_by_custom_view_is_forwarded_when_the_policy_allows_it(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"writes": {"allow_mass_update_by_cvid": True}})
    crm.clear()
    body = {"data": [{"City": "X"}], "cvid": "5725767000000087501"}
    r = _post(gw, "/crm/v8/Leads/actions/mass_update", body)
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["code"] == "SUCCESS"
    assert _sent(crm, "POST", "/crm/v8/Leads/actions/mass_update") == [body]
    (entry,) = gw.requests()
    assert entry["outcome"] == "forwarded" and "mass_update_unchecked" in entry["reasons"]


# -- related lists, delete ----------------------------------------------------------------


def test_a_related_list_write_under_a_stopped_lead_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    patient = crm.records("Patients")[0]
    crm.clear()
    path = f"/crm/v8/Leads/{stopped['id']}/Patients/{patient['id']}"
    r = _put(gw, path, {"data": [{"id": patient["id"]}]})
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "PUT", path) == []


def test_a_related_list_write_under_a_normal_lead_is_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    (normal, *_), _ = _leads(crm)
    patient = crm.records("Patients")[0]
    path = f"/crm/v8/Leads/{normal['id']}/Patients/{patient['id']}"
    r = _put(gw, path, {"data": [{"id": patient["id"]}]})
    assert r.status_code == 200, r.text
    assert crm.one("Patients", patient["id"])["Referring_Lead"]["id"] == normal["id"]


def test_c20_deleting_stopped_leads_is_forwarded_and_succeeds(crm: Crm, gw: GatewayHandle) -> None:
    """The checklist lists DELETE among the writes to refuse; the contract overrides it:
    "Delete is never blocked (erasure must stay possible)" (zoho-crm-api.md, GDPR)."""
    (normal, *_), (one, other) = _leads(crm)
    single = gw.http.delete(f"/crm/v8/Leads/{one['id']}")
    assert single.status_code == 200, single.text
    assert single.json()["data"][0] == {
        "code": "SUCCESS",
        "details": {"id": one["id"]},
        "message": "record deleted",
        "status": "success",
    }
    batch = gw.http.delete("/crm/v8/Leads", params={"ids": f"{other['id']},{normal['id']}"})
    assert batch.status_code == 200, batch.text
    assert [e["code"] for e in batch.json()["data"]] == ["SUCCESS", "SUCCESS"]
    remaining = {r["id"] for r in crm.records("Leads")}
    assert not remaining & {one["id"], other["id"], normal["id"]}
    assert [e["outcome"] for e in gw.requests()] == ["forwarded", "forwarded"]


# -- how the state is known ---------------------------------------------------------------


def test_a_target_whose_state_cannot_be_looked_up_is_refused_as_state_unknown(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), _ = _leads(crm)
    crm.fault(
        path_contains="/crm/v8/Leads",
        method="GET",
        status=500,
        json={"code": "INTERNAL_ERROR", "details": {}, "message": "down", "status": "error"},
    )
    crm.clear()
    batch = _put(gw, "/crm/v8/Leads", {"data": [{"id": normal["id"], "City": "X"}]})
    single = _put(gw, f"/crm/v8/Leads/{normal['id']}", {"data": [{"City": "X"}]})
    for r in (batch, single):
        assert r.status_code == 400, r.text
        assert r.json() == {"data": [_refusal(normal["id"], "state_unknown")]}
    assert [x["method"] for x in crm.received("/crm/v8/Leads")] == ["GET", "GET"]
    assert [e["reasons"] for e in gw.requests()] == [["state_unknown"]] * 2
    assert [e["record_ids"] for e in gw.requests()] == [[normal["id"]]] * 2


def test_a_state_answer_with_an_error_status_is_not_trusted(crm: Crm, gw: GatewayHandle) -> None:
    (normal, *_), _ = _leads(crm)
    # An error answer that happens to carry a record saying "not stopped".
    crm.fault(
        path_contains="/crm/v8/Leads",
        method="GET",
        status=503,
        json={"data": [{"id": normal["id"], "$stop_processing": False}]},
    )
    crm.clear()
    r = _put(gw, "/crm/v8/Leads", {"data": [{"id": normal["id"], "City": "X"}]})
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(normal["id"], "state_unknown")]}
    assert _sent(crm, "PUT", "/crm/v8/Leads") == []


def test_a_cached_not_stopped_is_not_trusted_for_a_write(crm: Crm, gw: GatewayHandle) -> None:
    (normal, *_), _ = _leads(crm)
    read = gw.http.get(f"/crm/v8/Leads/{normal['id']}")
    assert read.status_code == 200 and read.json()["data"][0]["$stop_processing"] is False
    crm.edit("Leads", normal["id"], **{"$stop_processing": True})
    crm.clear()
    r = _put(gw, f"/crm/v8/Leads/{normal['id']}", {"data": [{"City": "X"}]})
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(normal["id"])]}
    assert _sent(crm, "PUT", f"/crm/v8/Leads/{normal['id']}") == []


# -- modules -------------------------------------------------------------------------------


def test_stop_processing_is_enforced_in_custom_modules(crm: Crm, gw: GatewayHandle) -> None:
    patient = crm.records("Patients")[0]
    crm.edit("Patients", patient["id"], **{"$stop_processing": True})
    crm.clear()
    r = _put(gw, "/crm/v8/Patients", {"data": [{"id": patient["id"], "Name": "X"}]})
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(patient["id"])]}
    assert _sent(crm, "PUT", "/crm/v8/Patients") == []


def test_writes_to_a_module_without_stop_processing_are_forwarded(
    crm: Crm, gw: GatewayHandle
) -> None:
    # Deals is no GDPR module: its records carry no $stop_processing at all.
    deal, other, third = crm.records("Deals")[:3]
    assert "$stop_processing" not in deal
    batch = _put(gw, "/crm/v8/Deals", {"data": [{"id": deal["id"], "Stage": "Closed Won"}]})
    single = _put(gw, f"/crm/v8/Deals/{other['id']}", {"data": [{"Stage": "Closed Won"}]})
    upsert = _post(
        gw, "/crm/v8/Deals/upsert", {"data": [{"Deal_Name": third["Deal_Name"], "Amount": 5.0}]}
    )
    mass = _post(
        gw,
        "/crm/v8/Deals/actions/mass_update",
        {"data": [{"Stage": "Closed Lost"}], "ids": [deal["id"]]},
    )
    assert [r.status_code for r in (batch, single, upsert, mass)] == [200, 200, 200, 200], [
        r.text for r in (batch, single, upsert, mass)
    ]
    assert crm.one("Deals", deal["id"])["Stage"] == "Closed Lost"
    assert crm.one("Deals", other["id"])["Stage"] == "Closed Won"
    assert crm.one("Deals", third["id"])["Amount"] == 5.0


def test_an_org_with_gdpr_off_may_update_a_stopped_lead(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.privacy(False)
    crm.clear()
    r = _put(gw, "/crm/v8/Leads", {"data": [{"id": stopped["id"], "City": "Off-Town"}]})
    assert r.status_code == 200, r.text
    assert crm.one("Leads", stopped["id"])["City"] == "Off-Town"
    (entry,) = gw.requests()
    assert entry["outcome"] == "forwarded" and entry["reasons"] == ["privacy_settings_off"]


# -- bulk write ---------------------------------------------------------------------------


def test_a_bulk_write_upload_naming_a_stopped_lead_is_refused_and_not_forwarded(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), (stopped, *_) = _leads(crm)
    crm.clear()
    r = _upload(gw, f"id,City\n{normal['id']},A\n{stopped['id']},B\n")
    assert r.status_code == 400, r.text
    assert r.json() == {
        "code": "CANNOT_PROCESS",
        "details": {"ids": [stopped["id"]], "reason": "stop_processing"},
        "message": "The file names records in stop processing",
        "status": "error",
    }
    assert crm.received("/crm/v8/upload") == []
    (entry,) = gw.requests()
    assert entry["outcome"] == "refused"
    # Values read from an upload never enter the audit trail, ids included.
    assert entry["reasons"] == ["stop_processing"] and entry["record_ids"] == []


def test_a_bulk_write_upload_naming_a_stopped_custom_module_record_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    patient = crm.records("Patients")[0]
    crm.edit("Patients", patient["id"], **{"$stop_processing": True})
    crm.clear()
    r = _upload(gw, f"id,Name\n{patient['id']},X\n")
    assert r.status_code == 400 and r.json()["details"]["ids"] == [patient["id"]]
    assert crm.received("/crm/v8/upload") == []


def test_a_bulk_write_upload_of_normal_records_is_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    normal, _ = _leads(crm)
    crm.clear()
    r = _upload(gw, "id,City\n" + "".join(f"{n['id']},C\n" for n in normal))
    assert r.status_code == 200, r.text
    assert r.json()["code"] == "FILE_UPLOAD_SUCCESS"
    assert [x["method"] for x in crm.received("/crm/v8/upload")] == ["POST"]


# -- consent on insert --------------------------------------------------------------------


def test_required_consent_refuses_only_the_insert_without_it(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"writes": {"require_consent": True}})
    crm.clear()
    consent = {"Data_Processing_Basis": "Obtained", "Contact_Through_Email": True}
    with_consent = {"Last_Name": "Consenting", "Data_Processing_Basis_Details": consent}
    r = _post(gw, "/crm/v8/Leads", {"data": [with_consent, {"Last_Name": "Silent"}]})
    assert r.status_code == 207, r.text
    first, second = r.json()["data"]
    assert first["code"] == "SUCCESS"
    assert second["code"] == "MANDATORY_NOT_FOUND" and second["status"] == "error"
    assert second["details"]["api_name"] == "Data_Processing_Basis_Details"
    assert _sent(crm, "POST", "/crm/v8/Leads") == [{"data": [with_consent]}]
    assert crm.one("Leads", first["details"]["id"])["Last_Name"] == "Consenting"
    (entry,) = gw.requests()
    assert entry["outcome"] == "refused" and entry["reasons"] == ["missing_consent"]


def test_required_consent_does_not_apply_to_a_module_outside_gdpr(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"writes": {"require_consent": True}})
    crm.clear()
    body = {"data": [{"Deal_Name": "No consent needed"}]}
    r = _post(gw, "/crm/v8/Deals", body)
    assert r.status_code == 201, r.text
    assert _sent(crm, "POST", "/crm/v8/Deals") == [body]


def test_required_consent_refuses_an_upsert_row_that_inserts_without_it(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    (normal, *_), _ = _leads(crm)
    gw = make_gateway({"writes": {"require_consent": True}})
    r = _post(
        gw,
        "/crm/v8/Leads/upsert",
        {
            "data": [
                {"id": normal["id"], "City": "X"},  # an update: consent is not asked for
                {"Last_Name": "New", "Email": "new-insert-1@example.org"},
            ]
        },
    )
    assert r.status_code == 207, r.text
    first, second = r.json()["data"]
    assert first["status"] == "success"
    assert second["code"] == "MANDATORY_NOT_FOUND"


def test_an_insert_without_consent_is_forwarded_when_the_policy_does_not_require_it(
    crm: Crm, gw: GatewayHandle
) -> None:
    r = _post(gw, "/crm/v8/Leads", {"data": [{"Last_Name": "Plain"}]})
    assert r.status_code == 201


# -- bodies the CRM could read differently ------------------------------------------------


def test_c22_a_body_the_crm_could_read_differently_is_refused_and_not_forwarded(
    crm: Crm, make_gateway: MakeGateway, parser: str
) -> None:
    """Two parsers may disagree on which repeated member wins; the gateway refuses to
    guess which record the CRM will update."""
    gw = make_gateway(http=parser)
    (normal, *_), (stopped, *_) = _leads(crm)
    crm.clear()
    s, n = stopped["id"], normal["id"]
    for raw in (
        f'{{"data": [{{"id": "{s}", "City": "X", "id": "{n}"}}]}}',
        f'{{"data": [{{"id": "{s}", "ID": "{n}"}}]}}',
        f'{{"data": [], "data": [{{"id": "{s}"}}]}}',
    ):
        envelope(gw.http.put("/crm/v8/Leads", content=raw), 400, "INVALID_DATA")
    coql = b'{"select_query": "select Last_Name from Leads where Email is not null",'
    coql += b' "select_query": "select Last_Name from Leads where Last_Name is not null"}'
    envelope(gw.http.post("/crm/v8/coql", content=coql), 400, "INVALID_DATA")
    assert not crm.received("/crm/v8/Leads") and not crm.received("/coql")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"data": [{"id": "1", "City": "x"}', "the body is not valid JSON"),
        (b'{"data": [{"id": "1", "City": "\\ud800"}]}', "the body is not valid JSON"),
        (b'{"data": [{"Description": ' + b"[" * 70 + b"]" * 70 + b"}]}",
         "the body is nested too deeply"),
        (b'{"data": [{' + b",".join(b'"F%d": 1' % i for i in range(6000)) + b"}]}",
         "a JSON object in the body is too large"),
    ],
    ids=["malformed", "lone-surrogate", "too-deep", "too-many-keys"],
)  # fmt: skip
def test_c23_a_body_that_is_not_plain_bounded_json_is_400_and_not_forwarded(
    crm: Crm, make_gateway: MakeGateway, parser: str, raw: bytes, reason: str
) -> None:
    gw = make_gateway(http=parser)
    crm.clear()
    details = envelope(gw.http.put("/crm/v8/Leads", content=raw), 400, "INVALID_DATA")
    assert details == {"reason": reason}
    assert not [x for x in crm.received("/crm/") if x["method"] != "GET"]


# -- the audit trail ----------------------------------------------------------------------


def test_refused_writes_are_audited_by_id_and_never_with_the_values_sent(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), (one, other) = _leads(crm)
    value = "value-that-must-not-be-logged"
    _put(
        gw,
        "/crm/v8/Leads",
        {"data": [{"id": i, "Description": value} for i in (one["id"], normal["id"])]},
    )
    _put(gw, f"/crm/v8/Leads/{other['id']}", {"data": [{"Description": value}]})
    first, second = gw.requests()
    assert (first["outcome"], first["status"]) == ("refused", 207)
    assert first["reasons"] == ["stop_processing"]
    assert first["record_ids"] == [one["id"], normal["id"]]
    assert (second["outcome"], second["status"]) == ("refused", 400)
    assert second["reasons"] == ["stop_processing"] and second["record_ids"] == [other["id"]]
    assert value not in gw.audit_text()


# -- every record a write reaches: parents ------------------------------------------------


def _note(parent_id: str, module: str | None = "Leads", **extra: Any) -> dict[str, Any]:
    note: dict[str, Any] = {"Note_Title": "t", "Note_Content": "c", "Parent_Id": {"id": parent_id}}
    if module is not None:
        note["$se_module"] = module
    return {**note, **extra}


@pytest.mark.parametrize("version", ["v2", "v8"])
def test_a_note_attached_to_a_stopped_lead_is_refused_and_the_rest_of_the_batch_goes_through(
    crm: Crm, gw: GatewayHandle, version: str
) -> None:
    (normal, *_), (stopped, *_) = _leads(crm)
    crm.clear()
    r = _post(gw, f"/crm/{version}/Notes", {"data": [_note(stopped["id"]), _note(normal["id"])]})
    assert r.status_code == 207, r.text
    first, second = r.json()["data"]
    assert first == _refusal(stopped["id"])
    assert second["code"] == "SUCCESS"
    (sent,) = _sent(crm, "POST", f"/crm/{version}/Notes")
    assert [n["Parent_Id"]["id"] for n in sent["data"]] == [normal["id"]]


def test_a_parent_without_its_module_is_looked_up_in_every_gdpr_module(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    r = _post(gw, "/crm/v8/Notes", {"data": [_note(stopped["id"], module=None)]})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "POST", "/crm/v8/Notes") == []


@pytest.mark.parametrize("field", ["What_Id", "Who_Id"])
def test_an_activity_about_a_stopped_lead_is_refused(
    crm: Crm, gw: GatewayHandle, field: str
) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    task: dict[str, Any] = {"Subject": "call back", field: {"id": stopped["id"]}}
    if field == "What_Id":
        task["$se_module"] = "Leads"
    r = _post(gw, "/crm/v8/Tasks", {"data": [task]})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "POST", "/crm/v8/Tasks") == []


def test_an_activity_about_a_module_without_stop_processing_is_forwarded(
    crm: Crm, gw: GatewayHandle
) -> None:
    account = crm.records("Accounts")[0]
    crm.clear()
    task = {"Subject": "s", "What_Id": {"id": account["id"]}, "$se_module": "Accounts"}
    r = _post(gw, "/crm/v8/Tasks", {"data": [task]})
    assert r.status_code == 201, r.text
    assert len(_sent(crm, "POST", "/crm/v8/Tasks")) == 1


def test_moving_a_note_under_a_stopped_lead_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    (normal, *_), (stopped, *_) = _leads(crm)
    created = _post(gw, "/crm/v8/Notes", {"data": [_note(normal["id"])]})
    note_id = created.json()["data"][0]["details"]["id"]
    crm.clear()
    r = _put(gw, f"/crm/v8/Notes/{note_id}", {"data": [_note(stopped["id"])]})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "PUT", f"/crm/v8/Notes/{note_id}") == []


# -- both ends of a related-list write -----------------------------------------------------


def test_a_related_write_from_the_other_side_is_checked_against_the_stopped_lead(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), (stopped, *_) = _leads(crm)
    campaign = crm.http.get("/crm/v2/Campaigns").json()["data"][0]["id"]
    crm.clear()
    one = _put(gw, f"/crm/v8/Campaigns/{campaign}/Leads/{stopped['id']}", {})
    many = _put(gw, f"/crm/v8/Campaigns/{campaign}/Leads", {"data": [{"id": stopped["id"]}]})
    for r in (one, many):
        assert r.status_code == 400, r.text
        assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent_under(crm, "PUT", "/Campaigns/") == []
    ok = _put(gw, f"/crm/v8/Campaigns/{campaign}/Leads/{normal['id']}", {})
    assert ok.status_code == 200, ok.text
    assert len(_sent_under(crm, "PUT", "/Campaigns/")) == 1


def test_a_related_write_naming_one_record_in_its_path_checks_the_one_its_body_names(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Which of the two the CRM links is not documented: both are targets."""
    (normal, *_), (stopped, *_) = _leads(crm)
    campaign = crm.http.get("/crm/v2/Campaigns").json()["data"][0]["id"]
    crm.clear()
    url = f"/crm/v8/Campaigns/{campaign}/Leads/{normal['id']}"
    r = _put(gw, url, {"data": [{"id": stopped["id"], "Member_Status": "Sent"}]})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent_under(crm, "PUT", "/Campaigns/") == []
    ok = _put(gw, url, {"data": [{"id": normal["id"], "Member_Status": "Sent"}]})
    assert ok.status_code == 200, ok.text


def test_linking_a_free_lead_to_a_stopped_contact_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    contact = crm.records("Contacts")[0]
    crm.edit("Contacts", contact["id"], **{"$stop_processing": True})
    campaign = crm.http.get("/crm/v2/Campaigns").json()["data"][0]["id"]
    crm.clear()
    r = _put(gw, f"/crm/v8/Campaigns/{campaign}/Contacts/{contact['id']}", {})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(contact["id"])]}


# -- upsert: the duplicate-check fields the CRM would use ----------------------------------


def test_an_upsert_into_vendors_is_matched_by_vendor_name(crm: Crm, gw: GatewayHandle) -> None:
    vendor = crm.records("Vendors")[0]
    crm.edit("Vendors", vendor["id"], **{"$stop_processing": True})
    crm.clear()
    r = _post(gw, "/crm/v8/Vendors/upsert", {"data": [{"Vendor_Name": vendor["Vendor_Name"]}]})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(vendor["id"])]}
    assert _sent(crm, "POST", "/crm/v8/Vendors/upsert") == []
    (search,) = crm.received("/crm/v8/Vendors/search")
    assert "Vendor_Name" in search["query"]


def test_an_upsert_into_a_custom_module_is_matched_by_name_then_unique_fields(
    crm: Crm, gw: GatewayHandle
) -> None:
    by_name, by_unique = crm.records("Patients")[:2]
    for p in (by_name, by_unique):
        crm.edit("Patients", p["id"], **{"$stop_processing": True})
    rows = [
        {"Name": by_name["Name"]},
        {"Name": "Nobody Yet", "Insurance_Number": by_unique["Insurance_Number"]},
    ]
    assert by_unique["Insurance_Number"]  # the unique value is really there
    crm.clear()
    r = _post(gw, "/crm/v8/Patients/upsert", {"data": rows})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(by_name["id"]), _refusal(by_unique["id"])]}
    assert _sent(crm, "POST", "/crm/v8/Patients/upsert") == []


def test_an_upsert_whose_duplicate_search_the_crm_refuses_is_state_unknown_with_the_cause(
    crm: Crm, gw: GatewayHandle
) -> None:
    """A CRM that enforces its GDPR rules refuses the gateway's search on a restricted
    field (Email): which record the upsert updates cannot be known."""
    crm.fault(
        path_contains="/crm/v8/Leads/search",
        status=400,
        json={
            "code": "INVALID_QUERY",
            "details": {"reason": "Cannot use the restricted field.", "api_name": "Email"},
            "message": "invalid query formed",
            "status": "error",
        },
    )
    crm.clear()
    r = _post(gw, "/crm/v8/Leads/upsert", {"data": [{"Last_Name": "X", "Email": "x@example.com"}]})
    assert r.status_code == 400, r.text
    expected = _refusal(None, "state_unknown")
    expected["details"]["cause"] = "duplicate_search_refused"
    assert r.json() == {"data": [expected]}
    assert _sent(crm, "POST", "/crm/v8/Leads/upsert") == []


# -- ids as the CRM reads them -------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["number", "spaces", "zeros"])
def test_an_id_in_another_spelling_is_checked_as_the_record_it_names(
    crm: Crm, gw: GatewayHandle, spelling: str
) -> None:
    _, (stopped, *_) = _leads(crm)
    rid: Any = {
        "number": int(stopped["id"]),
        "spaces": f"  {stopped['id']} ",
        "zeros": f"000{stopped['id']}",
    }[spelling]
    crm.clear()
    r = _put(gw, "/crm/v8/Leads", {"data": [{"id": rid, "City": "X"}]})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(stopped["id"])]}
    assert _sent(crm, "PUT", "/crm/v8/Leads") == []


def test_a_mass_update_naming_a_custom_view_is_refused_whatever_ids_holds(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), _ = _leads(crm)
    crm.clear()
    for ids in ([], [normal["id"]]):
        body = {"cvid": "5725767000000087501", "ids": ids, "data": [{"City": "X"}]}
        r = _post(gw, "/crm/v8/Leads/actions/mass_update", body)
        assert envelope(r, 400, "NOT_ALLOWED") == {"reason": "unknown_targets"}
    assert crm.received("/actions/mass_update") == []


def test_a_state_answer_without_the_flag_is_unknown(crm: Crm, gw: GatewayHandle) -> None:
    """The CRM returns a $-key only when it is named; an answer without it proves nothing."""
    (normal, *_), _ = _leads(crm)
    crm.fault(
        path_contains="/crm/v8/Leads",
        method="GET",
        status=200,
        json={"data": [{"id": normal["id"]}], "info": {"more_records": False}},
    )
    crm.clear()
    r = _put(gw, "/crm/v8/Leads", {"data": [{"id": normal["id"], "City": "X"}]})
    assert r.status_code == 400, r.text
    assert r.json() == {"data": [_refusal(normal["id"], "state_unknown")]}
    (lookup,) = [x for x in crm.received("/crm/v8/Leads") if x["method"] == "GET"]
    assert "%24stop_processing" in lookup["query"] or "$stop_processing" in lookup["query"]
