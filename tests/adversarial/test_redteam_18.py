"""Eighteenth red team: the fixes of 3ab57dc (red teams 16 and 17) and what lies beside
them: upsert rows read two ways, converted leads, bulk-write ``field_mappings``.

Every test drives the real gateway over HTTP against the sandbox CRM and checks what the
CRM did: the stopped record read straight from the sandbox afterwards, unchanged, or
nothing of the write received by the CRM.

Part (A): FINDINGS, each failing against 3ab57dc because the attack works. One root:

- state.py ``upsert_targets`` (``one``) takes a row's exact ``"id"`` as the only reading
  of its target once ``jsonbody.normal_id`` reads it as a numeric id, but ``normal_id`` is
  more lenient than the CRM: ``"+<id>"`` and the id in full-width digits are read as the
  free record's id, while the CRM (the sandbox's ``canon_id``) finds no record by them and
  matches the row by its duplicate-check fields instead, updating the stopped lead.

Part (B): what HELD, kept as coverage (each first checks that what it goes after is really
there, so it could fail).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import leads_by_state, send, zip_of
from tests.adversarial.test_redteam_16 import _raw, _reached, _stopped_lead_with_email
from tests.conftest import Crm, GatewayHandle


def _fullwidth(digits: str) -> str:
    return "".join(chr(0xFF10 + int(c)) for c in digits)


def _converted_stopped_lead(crm: Crm) -> dict[str, Any]:
    _, (stopped, *_) = leads_by_state(crm)
    r = crm.http.post(f"/crm/v8/Leads/{stopped['id']}/actions/convert", json={"data": [{}]})
    assert r.status_code == 200, r.text
    stored = _raw(crm, "Leads", stopped["id"])
    assert stored["$stop_processing"] is True and stored.get("$converted") is True
    listed = crm.http.get("/crm/v8/Leads", params={"ids": stopped["id"], "fields": "id"})
    assert listed.status_code == 204  # hidden from a plain list: only converted=both finds it
    return stored


# =========================================================================================
# (A) FINDINGS: these fail against 3ab57dc
# =========================================================================================


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(lambda i: "+" + i, id="plus-sign"),
        pytest.param(_fullwidth, id="fullwidth-digits"),
    ],
)
def test_a_upsert_row_whose_id_the_crm_cannot_read_updates_the_stopped_lead_its_email_matches(
    crm: Crm, gw: GatewayHandle, spelling: Any
) -> None:
    """state.py ``upsert_targets`` (``one``): ``"id"`` is spelled exactly, and
    jsonbody.py ``normal_id`` reads ``"+5725..."`` (or the id in full-width digits) as the
    free lead's id, so the row is judged as an update of that free lead only (RT16 reads both
    targets for ``ID`` in another case, never for an id read leniently). The CRM reads the
    id strictly (sandbox ``canon_id``: ASCII digits, no sign), finds no record by it, falls
    back to the duplicate check and updates the stopped lead whose Email the row holds."""
    normal, _ = leads_by_state(crm)
    email = "rt18-lenient-id@example.com"
    stopped = _stopped_lead_with_email(crm, email)
    free_id = normal[0]["id"]
    assert crm.http.get(f"/crm/v8/Leads/{spelling(free_id)}").status_code != 200  # CRM: no id
    crm.clear()
    row = {"id": spelling(free_id), "Last_Name": "Rt18Overwritten", "Email": email}
    send(gw, "POST", "/crm/v8/Leads/upsert", {"data": [row]})
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt18Overwritten"
    assert crm.one("Leads", free_id)["Last_Name"] != "Rt18Overwritten"


# =========================================================================================
# (B) HELD
# =========================================================================================


def test_held_an_upsert_row_with_id_and_Id_is_refused_as_a_repeated_key(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    raw = (
        b'{"data":[{"id":"' + normal[0]["id"].encode() + b'","Id":"'
        + stopped["id"].encode() + b'","Last_Name":"Rt18Overwritten"}]}'
    )  # fmt: skip
    r = gw.http.post("/crm/v8/Leads/upsert", content=raw)
    assert r.status_code == 400, r.text
    assert _reached(crm, "/upsert") == []
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt18Overwritten"


def test_held_an_upsert_with_duplicate_check_fields_in_two_cases_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    stopped = _stopped_lead_with_email(crm, "rt18-two-cases@example.com")
    crm.clear()
    raw = (
        b'{"data":[{"Last_Name":"Rt18Overwritten","Email":"rt18-two-cases@example.com",'
        b'"Company":"rt18-none"}],"duplicate_check_fields":["Email"],'
        b'"Duplicate_Check_Fields":["Company"]}'
    )
    r = gw.http.post("/crm/v8/Leads/upsert", content=raw)
    assert r.status_code == 400, r.text
    assert _reached(crm, "/upsert") == []
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt18Overwritten"


def test_held_an_ID_row_matching_a_stopped_lead_by_a_unique_field_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    """External_Ref is unique (a default duplicate-check field after Email)."""
    normal, (stopped, *_) = leads_by_state(crm)
    crm.edit("Leads", stopped["id"], External_Ref="rt18-ref-stopped")
    assert _raw(crm, "Leads", stopped["id"])["External_Ref"] == "rt18-ref-stopped"
    crm.clear()
    row = {"ID": normal[0]["id"], "External_Ref": "rt18-ref-stopped",
           "Last_Name": "Rt18Overwritten"}  # fmt: skip
    r = send(gw, "POST", "/crm/v8/Leads/upsert", {"data": [row]})
    assert r.status_code == 400, r.text
    assert _reached(crm, "/upsert") == []
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt18Overwritten"


def test_held_an_upsert_row_with_a_padded_id_updates_the_free_lead_it_names(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Leading zeros: the CRM reads them away too, so the id is the only target."""
    normal, _ = leads_by_state(crm)
    stopped = _stopped_lead_with_email(crm, "rt18-padded@example.com")
    free_id = normal[0]["id"]
    crm.clear()
    row = {"id": "000" + free_id, "Last_Name": "Rt18Padded", "Email": "rt18-padded@example.com"}
    r = send(gw, "POST", "/crm/v8/Leads/upsert", {"data": [row]})
    assert r.status_code == 200, r.text
    assert crm.one("Leads", free_id)["Last_Name"] == "Rt18Padded"
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt18Padded"


def test_held_a_mass_update_of_a_converted_stopped_lead_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = _converted_stopped_lead(crm)
    crm.clear()
    body = {"ids": [lead["id"]], "data": [{"City": "Rt18Town"}]}
    r = send(gw, "POST", "/crm/v8/Leads/actions/mass_update", body)
    assert r.status_code == 400, r.text
    assert _reached(crm, "/mass_update") == []
    assert _raw(crm, "Leads", lead["id"]).get("City") != "Rt18Town"


def test_held_a_campaign_link_to_a_converted_stopped_lead_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = _converted_stopped_lead(crm)
    campaign = crm.records("Campaigns")[0]
    crm.clear()
    r = gw.http.put(
        f"/crm/v8/Campaigns/{campaign['id']}/Leads/{lead['id']}",
        content=orjson.dumps({"data": [{"id": lead["id"]}]}),
    )
    assert r.status_code == 400, r.text
    assert _reached(crm, "/Campaigns", "PUT") == []


def _upload(gw: GatewayHandle, name: str, csv_text: str) -> str:
    up = gw.http.post(
        "/crm/v8/upload",
        files={"file": (f"{name}.zip", zip_of(f"{name}.csv", csv_text), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert up.status_code == 200, up.text
    return str(up.json()["details"]["file_id"])


def _stopped_after_upload(crm: Crm, gw: GatewayHandle) -> tuple[str, str]:
    """A file whose non-id column ``Ref`` holds a free lead's id (so the upload passes),
    and that lead put in stop processing afterwards: a job keyed on ``Ref`` reaches it."""
    normal, _ = leads_by_state(crm)
    lead = normal[-1]["id"]
    file_id = _upload(gw, "Leads", f"Ref,Last_Name\n{lead},Rt18Overwritten\n")
    crm.edit("Leads", lead, **{"$stop_processing": True})
    assert _raw(crm, "Leads", lead)["$stop_processing"] is True
    crm.clear()
    return file_id, lead


@pytest.mark.parametrize(
    ("api_name", "index"),
    [("ID", 0), ("id", "0"), ("Id", " 0"), ("id", 0)],
    ids=["ID", "string-index", "padded-string-index", "plain"],
)
def test_held_a_field_mapping_onto_a_column_stopped_since_upload_is_refused(
    crm: Crm, gw: GatewayHandle, api_name: str, index: Any
) -> None:
    file_id, lead = _stopped_after_upload(crm, gw)
    mappings = [{"index": index, "api_name": api_name}, {"index": 1, "api_name": "Last_Name"}]
    res = {"type": "data", "module": {"api_name": "Leads"}, "file_id": file_id,
           "find_by": "id", "field_mappings": mappings}  # fmt: skip
    r = gw.http.post(
        "/crm/bulk/v8/write", content=orjson.dumps({"operation": "update", "resource": [res]})
    )
    assert r.status_code == 400, r.text
    assert _reached(crm, "/bulk/") == []
    assert _raw(crm, "Leads", lead)["Last_Name"] != "Rt18Overwritten"


@pytest.mark.parametrize("index", [True, 0.0, -2, None], ids=["bool", "float", "neg", "null"])
def test_held_a_field_mapping_to_id_with_an_index_it_cannot_read_is_refused(
    crm: Crm, gw: GatewayHandle, index: Any
) -> None:
    """The sandbox reads ``index: true`` as column 1 and ``-2`` as the first of two; the
    gateway refuses any index it cannot read as a column number."""
    file_id, lead = _stopped_after_upload(crm, gw)
    mappings = [{"index": index, "api_name": "id"}, {"index": 1, "api_name": "Last_Name"}]
    res = {"type": "data", "module": {"api_name": "Leads"}, "file_id": file_id,
           "find_by": "id", "field_mappings": mappings}  # fmt: skip
    r = gw.http.post(
        "/crm/bulk/v8/write", content=orjson.dumps({"operation": "update", "resource": [res]})
    )
    assert r.status_code == 400, r.text
    assert _reached(crm, "/bulk/") == []
    assert _raw(crm, "Leads", lead)["Last_Name"] != "Rt18Overwritten"


def test_held_a_default_value_naming_a_stopped_id_in_a_nested_list_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, (stopped, *_) = leads_by_state(crm)
    file_id = _upload(gw, "Leads", f"id,Last_Name\n{normal[0]['id']},Rt18Ok\n")
    crm.clear()
    mappings = [
        {"index": 0, "api_name": "id"},
        {"index": 1, "api_name": "Last_Name"},
        {"api_name": "Referrer", "default_value": {"value": [{"id": "00" + stopped["id"]}]}},
    ]
    res = {"type": "data", "module": {"api_name": "Leads"}, "file_id": file_id,
           "find_by": "id", "field_mappings": mappings}  # fmt: skip
    r = gw.http.post(
        "/crm/bulk/v8/write", content=orjson.dumps({"operation": "update", "resource": [res]})
    )
    assert r.status_code == 400, r.text
    assert _reached(crm, "/bulk/") == []


@pytest.mark.parametrize("api_name", ["parent_id", "PARENT_ID", "What_Id"])
def test_held_a_parent_found_by_another_field_is_refused(
    crm: Crm, gw: GatewayHandle, api_name: str
) -> None:
    file_id = _upload(gw, "Notes", "Parent,Note_Content\nrt18-company,rt18-find-by\n")
    crm.clear()
    mappings = [
        {"index": 0, "api_name": api_name, "find_by": "Company"},
        {"index": 1, "api_name": "Note_Content"},
    ]
    res = {"type": "data", "module": "Notes", "file_id": file_id, "field_mappings": mappings}
    r = gw.http.post(
        "/crm/bulk/v8/write", content=orjson.dumps({"operation": "insert", "resource": [res]})
    )
    assert r.status_code == 400, r.text
    assert _reached(crm, "/bulk/") == []
