"""Writes against records in stop processing: refused per record, the rest goes through,
and a refused record never reaches the CRM. Delete is never refused."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.conftest import Crm, GatewayHandle, MakeGateway, envelope


def _leads(crm: Crm) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    leads = crm.records("Leads")
    return (
        [r for r in leads if not r["$stop_processing"]],
        [r for r in leads if r["$stop_processing"]],
    )


def _refusal(record_id: str, reason: str = "stop_processing") -> dict[str, Any]:
    message = (
        "The record is in stop processing"
        if reason == "stop_processing"
        else "The record's processing state could not be determined"
    )
    return {
        "code": "CANNOT_PROCESS",
        "details": {"id": record_id, "reason": reason},
        "message": message,
        "status": "error",
    }


def _sent(crm: Crm, method: str, path: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(r["body"]) if r["body"] else None
        for r in crm.received(path)
        if r["method"] == method
    ]


def _put(http: httpx.Client, url: str, body: Any) -> httpx.Response:
    # The official SDKs send writes with no Content-Type header.
    return http.put(url, content=orjson.dumps(body))


def _post(http: httpx.Client, url: str, body: Any) -> httpx.Response:
    return http.post(url, content=orjson.dumps(body))


def test_mixed_batch_update_forwards_the_allowed_record_and_merges_in_order(
    crm: Crm, gw: GatewayHandle
) -> None:
    (a, b, *_), (stopped, *_) = _leads(crm)
    crm.clear()
    body = {
        "data": [
            {"id": a["id"], "Lead_Status": "Lost"},
            {"id": stopped["id"], "Lead_Status": "Lost"},
            {"id": b["id"], "Lead_Status": "Lost"},
        ],
        "trigger": [],
    }
    r = _put(gw.http, "/crm/v8/Leads", body)
    assert r.status_code == 207
    entries = r.json()["data"]
    assert [e["status"] for e in entries] == ["success", "error", "success"]
    assert entries[1] == _refusal(stopped["id"])
    assert [e["details"]["id"] for e in (entries[0], entries[2])] == [a["id"], b["id"]]
    (sent,) = _sent(crm, "PUT", "/crm/v8/Leads")
    assert [rec["id"] for rec in sent["data"]] == [a["id"], b["id"]]
    assert sent["trigger"] == []
    assert crm.one("Leads", a["id"])["Lead_Status"] == "Lost"
    assert crm.one("Leads", stopped["id"])["Lead_Status"] != "Lost"


def test_a_batch_of_only_stopped_records_is_400_and_never_forwarded(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, stopped = _leads(crm)
    crm.clear()
    r = _put(
        gw.http, "/crm/v8/Leads", {"data": [{"id": s["id"], "City": "X"} for s in stopped[:2]]}
    )
    assert r.status_code == 400
    assert r.json() == {"data": [_refusal(s["id"]) for s in stopped[:2]]}
    assert not _sent(crm, "PUT", "/crm/v8/Leads")


def test_a_batch_without_stopped_records_gets_the_crms_own_answer(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, _ = _leads(crm)
    body = {"data": [{"id": normal[0]["id"], "City": "X"}]}
    r = _put(gw.http, "/crm/v8/Leads", body)
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS"


def test_single_record_update_of_a_stopped_record_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    r = _put(gw.http, f"/crm/v2/Leads/{stopped['id']}", {"data": [{"City": "X"}]})
    assert r.status_code == 400 and r.json() == {"data": [_refusal(stopped["id"])]}
    assert not _sent(crm, "PUT", "/crm/v2/Leads")


def test_a_cached_false_is_not_trusted_for_a_write(crm: Crm, gw: GatewayHandle) -> None:
    normal, _ = _leads(crm)
    target = normal[0]["id"]
    assert gw.http.get(f"/crm/v8/Leads/{target}").json()["data"][0]["$stop_processing"] is False
    crm.edit("Leads", target, **{"$stop_processing": True})
    r = _put(gw.http, f"/crm/v8/Leads/{target}", {"data": [{"City": "X"}]})
    assert r.status_code == 400 and r.json()["data"][0] == _refusal(target)


def test_upsert_by_id_and_by_duplicate_check_field_are_checked(crm: Crm, gw: GatewayHandle) -> None:
    normal, (stopped, *_) = _leads(crm)
    crm.clear()
    body = {
        "data": [
            {"id": normal[0]["id"], "City": "X"},
            {"Last_Name": "Dup", "Email": stopped["Email"].upper()},  # found by the default: Email
            {"Last_Name": "Fresh", "Email": "nobody-9z@example.org"},
        ]
    }
    r = _post(gw.http, "/crm/v8/Leads/upsert", body)
    assert r.status_code == 207, r.text
    first, second, third = r.json()["data"]
    assert first["status"] == "success" and third["status"] == "success"
    assert third["action"] == "insert"
    assert second == _refusal(stopped["id"])
    (sent,) = _sent(crm, "POST", "/upsert")
    assert [rec.get("Last_Name") for rec in sent["data"]] == [None, "Fresh"]


def test_upsert_with_explicit_duplicate_check_fields(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.edit("Leads", stopped["id"], Secondary_Email="second-7q@example.net")
    body = {
        "data": [{"Last_Name": "X", "Secondary_Email": "second-7q@example.net"}],
        "duplicate_check_fields": ["Secondary_Email"],
    }
    r = _post(gw.http, "/crm/v8/Leads/upsert", body)
    assert r.status_code == 400 and r.json()["data"][0] == _refusal(stopped["id"])


def test_convert_of_a_stopped_lead_is_refused_and_of_a_normal_one_forwarded(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, (stopped, *_) = _leads(crm)
    crm.clear()
    r = _post(gw.http, f"/crm/v8/Leads/{stopped['id']}/actions/convert", {"data": [{}]})
    assert r.status_code == 400 and r.json()["data"][0] == _refusal(stopped["id"])
    assert not _sent(crm, "POST", "/actions/convert")
    v8 = _post(gw.http, f"/crm/v8/Leads/{normal[0]['id']}/actions/convert", {"data": [{}]})
    assert v8.status_code == 200 and v8.json()["data"][0]["code"] == "SUCCESS"
    v2 = _post(gw.http, f"/crm/v2/Leads/{normal[1]['id']}/actions/convert", {"data": [{}]})
    assert v2.status_code == 200 and "Contacts" in v2.json()["data"][0]


def test_mass_update_by_ids_refuses_stopped_ids_in_place(crm: Crm, gw: GatewayHandle) -> None:
    normal, (stopped, *_) = _leads(crm)
    crm.clear()
    ids = [normal[0]["id"], stopped["id"], normal[1]["id"]]
    r = _post(
        gw.http,
        "/crm/v8/Leads/actions/mass_update",
        {"data": [{"Lead_Status": "Lost"}], "ids": ids},
    )
    assert r.status_code == 207
    entries = r.json()["data"]
    assert entries[1] == _refusal(stopped["id"])
    assert [entries[0]["details"]["id"], entries[2]["details"]["id"]] == [ids[0], ids[2]]
    (sent,) = _sent(crm, "POST", "/mass_update")
    assert sent["ids"] == [ids[0], ids[2]]


def test_mass_update_by_custom_view_is_refused_unless_policy_allows(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    body = {"data": [{"Lead_Status": "Lost"}], "cvid": "5725767000000087501"}
    strict = make_gateway()
    crm.clear()
    details = envelope(
        _post(strict.http, "/crm/v8/Leads/actions/mass_update", body), 400, "NOT_ALLOWED"
    )
    assert details == {"reason": "unknown_targets"}
    assert not _sent(crm, "POST", "/mass_update")
    lenient = make_gateway({"writes": {"allow_mass_update_by_cvid": True}})
    assert _post(lenient.http, "/crm/v8/Leads/actions/mass_update", body).status_code == 200


def test_related_list_write_under_a_stopped_record_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    patient = crm.records("Patients")[0]
    crm.clear()
    r = _put(
        gw.http,
        f"/crm/v8/Leads/{stopped['id']}/Patients/{patient['id']}",
        {"data": [{"Notes": "x"}]},
    )
    assert r.status_code == 400 and r.json()["data"][0] == _refusal(stopped["id"])
    assert not _sent(crm, "PUT", "/Patients")


def test_delete_of_a_stopped_record_is_never_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    r = gw.http.delete(f"/crm/v8/Leads/{stopped['id']}")
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS"
    assert crm.http.get(f"/crm/v8/Leads/{stopped['id']}").status_code == 400  # gone


def test_a_target_whose_state_cannot_be_read_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    normal, _ = _leads(crm)
    crm.fault(
        path_contains="/crm/v8/Leads",
        method="GET",
        status=500,
        json={"code": "INTERNAL_ERROR", "details": {}, "message": "x", "status": "error"},
    )
    crm.clear()
    r = _put(gw.http, "/crm/v8/Leads", {"data": [{"id": normal[0]["id"], "City": "X"}]})
    assert r.status_code == 400
    assert r.json()["data"][0] == _refusal(normal[0]["id"], "state_unknown")
    assert not _sent(crm, "PUT", "/crm/v8/Leads")


def test_consent_can_be_required_on_inserts_into_gdpr_modules(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"writes": {"require_consent": True}})
    crm.clear()
    consent = {"Data_Processing_Basis": "Obtained", "Contact_Through_Email": True}
    r = _post(
        gw.http,
        "/crm/v8/Leads",
        {
            "data": [
                {"Last_Name": "WithConsent", "Data_Processing_Basis_Details": consent},
                {"Last_Name": "Without"},
            ]
        },
    )
    assert r.status_code == 207
    first, second = r.json()["data"]
    assert first["code"] == "SUCCESS"
    assert second["code"] == "MANDATORY_NOT_FOUND"
    assert second["details"]["api_name"] == "Data_Processing_Basis_Details"
    (sent,) = _sent(crm, "POST", "/crm/v8/Leads")
    assert [rec["Last_Name"] for rec in sent["data"]] == ["WithConsent"]
    deal = _post(gw.http, "/crm/v8/Deals", {"data": [{"Deal_Name": "No consent needed"}]})
    assert deal.status_code == 201


def test_inserts_pass_untouched_by_default(crm: Crm, gw: GatewayHandle) -> None:
    r = _post(gw.http, "/crm/v8/Leads", {"data": [{"Last_Name": "Plain"}]})
    assert r.status_code == 201


def test_refusals_are_audited_without_the_values_sent(crm: Crm, gw: GatewayHandle) -> None:
    normal, (stopped, *_) = _leads(crm)
    value = "value-that-must-not-be-logged"
    _put(
        gw.http,
        "/crm/v8/Leads",
        {
            "data": [
                {"id": normal[0]["id"], "Description": value},
                {"id": stopped["id"], "Description": value},
            ]
        },
    )
    (entry,) = gw.requests()
    assert entry["outcome"] == "refused" and entry["status"] == 207
    assert f"stop_processing:{stopped['id']}" in entry["reasons"]
    assert set(entry["record_ids"]) == {normal[0]["id"], stopped["id"]}
    assert value not in gw.audit_log.read_text()


def test_upload_naming_a_stopped_record_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    import io
    import zipfile

    normal, (stopped, *_) = _leads(crm)

    def upload(ids: list[str]) -> httpx.Response:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("leads.csv", "id,City\n" + "".join(f"{i},X\n" for i in ids))
        return gw.http.post(
            "/crm/v8/upload",
            files={"file": ("leads.zip", buf.getvalue())},
            headers={"feature": "bulk-write"},
        )

    crm.clear()
    refused = upload([normal[0]["id"], stopped["id"]])
    assert refused.status_code == 400 and refused.json()["code"] == "CANNOT_PROCESS"
    assert refused.json()["details"]["ids"] == [stopped["id"]]
    assert not crm.received("/upload")
    ok = upload([normal[0]["id"], normal[1]["id"]])
    assert ok.status_code == 200 and ok.json()["code"] == "FILE_UPLOAD_SUCCESS"


def test_upsert_target_hidden_by_the_crm_counts_as_a_match(crm: Crm, gw: GatewayHandle) -> None:
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
    r = _post(
        gw.http, "/crm/v8/Leads/upsert", {"data": [{"Last_Name": "X", "Email": "a@b.example"}]}
    )
    assert r.status_code == 400 and r.json()["data"][0] == _refusal(stopped["id"])
    assert not _sent(crm, "POST", "/upsert")


def test_upserts_that_insert_need_consent_when_required(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    normal, _ = _leads(crm)
    gw = make_gateway({"writes": {"require_consent": True}})
    r = _post(
        gw.http,
        "/crm/v8/Leads/upsert",
        {
            "data": [
                {"id": normal[0]["id"], "City": "X"},  # an update: consent is not asked for
                {"Last_Name": "New", "Email": "new-insert-1@example.org"},
            ]
        },
    )
    assert r.status_code == 207, r.text
    first, second = r.json()["data"]
    assert first["status"] == "success"
    assert second["code"] == "MANDATORY_NOT_FOUND"


def test_a_body_the_crm_could_read_differently_is_refused_and_not_forwarded(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Two parsers may disagree on which repeated member wins; the gateway refuses to
    guess which record the CRM will update."""
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


def test_an_id_in_another_letter_case_is_checked_as_the_id(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    r = _put(gw.http, "/crm/v8/Leads", {"data": [{"ID": stopped["id"], "City": "X"}]})
    assert r.status_code == 400 and r.json() == {"data": [_refusal(stopped["id"])]}
    assert not _sent(crm, "PUT", "/crm/v8/Leads")


def test_a_single_record_update_whose_body_names_another_record_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    (normal, *_), (stopped, *_) = _leads(crm)
    crm.clear()
    body = {"data": [{"id": stopped["id"], "City": "X"}]}
    envelope(_put(gw.http, f"/crm/v8/Leads/{normal['id']}", body), 400, "INVALID_DATA")
    assert not _sent(crm, "PUT", f"/crm/v8/Leads/{normal['id']}")
    # naming the same record in the body, or none, is an ordinary single update
    same = {"data": [{"id": normal["id"], "City": "Y"}]}
    assert _put(gw.http, f"/crm/v8/Leads/{normal['id']}", same).is_success
    assert _put(gw.http, f"/crm/v8/Leads/{normal['id']}", {"data": [{"City": "Z"}]}).is_success
    assert crm.one("Leads", normal["id"])["City"] == "Z"
    assert crm.one("Leads", stopped["id"])["City"] != "X"


def test_converting_into_an_existing_contact_in_stop_processing_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    (lead, other, *_), _ = _leads(crm)
    contacts = crm.records("Contacts")
    stopped = next(c for c in contacts if c["$stop_processing"])
    normal = next(c for c in contacts if not c["$stop_processing"])
    crm.clear()
    into_stopped = {"data": [{"overwrite": True, "Contacts": {"id": stopped["id"]}}]}
    r = _post(gw.http, f"/crm/v8/Leads/{lead['id']}/actions/convert", into_stopped)
    assert r.status_code == 400 and r.json()["data"][0] == _refusal(stopped["id"])
    assert not _sent(crm, "POST", "/actions/convert")
    unknown = {"data": [{"Contacts": "12345"}]}
    r = _post(gw.http, f"/crm/v8/Leads/{lead['id']}/actions/convert", unknown)
    assert r.status_code == 400 and r.json()["data"][0] == _refusal("12345", "state_unknown")
    into_normal = {"data": [{"overwrite": True, "Contacts": {"id": normal["id"]}}]}
    r = _post(gw.http, f"/crm/v8/Leads/{other['id']}/actions/convert", into_normal)
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS"
    assert r.json()["data"][0]["details"]["Contacts"]["id"] == normal["id"]
