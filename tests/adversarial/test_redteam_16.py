"""Sixteenth red team: writes that reach a record in stop processing, read two ways.

Every test drives the real gateway over HTTP against the sandbox CRM and checks what the
CRM did: the stopped record read straight from the sandbox afterwards, unchanged, or no
note hung under it.

Part (A): FINDINGS, each failing against c89bc2f because the attack works: a write the
gateway judged by one reading of the request reaches a record in stop processing by the
reading the CRM makes. Four roots:

- an upsert's targets read otherwise than the CRM reads them (``Duplicate_Check_Fields``
  and ``ID`` in another case; ``duplicate_check_fields`` ignored under ``X-EXTERNAL``):
  handlers/writes.py ``write`` / ``_duplicate_fields``, state.py ``upsert_targets``;
- a converted lead is not listed by ``GET /Leads?ids=`` (no ``converted=both``), so
  state.py ``locate`` takes a converted, stopped parent for "in no module": free;
- crm/upload_file.py ``_looks_like_id`` measures a cell before dropping leading zeros,
  and a bulk job's ``field_mappings`` (unchecked) can make any column the key;
- handlers/writes.py ``_one_record`` reads the path of a convert or related-list write as
  an ``X-EXTERNAL`` value, which the CRM resolves only on ``/{module}/{id}``.
Part (B): what HELD, kept as coverage (each first checks that what it goes after is really
there, so it could fail).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import leads_by_state, send, zip_of
from tests.conftest import Crm, GatewayHandle


def _reached(crm: Crm, part: str, method: str = "POST") -> list[dict[str, Any]]:
    return [r for r in crm.received(part) if r["method"] == method]


def _stopped_lead_with_email(crm: Crm, email: str) -> dict[str, Any]:
    _, (stopped, *_) = leads_by_state(crm)
    crm.edit("Leads", stopped["id"], Email=email)
    stored = crm.one("Leads", stopped["id"])
    assert stored["$stop_processing"] is True and stored["Email"] == email
    return stored


def _converted_stopped_lead(crm: Crm) -> dict[str, Any]:
    """A lead in stop processing that was converted (at the CRM, by someone else): the
    CRM lists it only with ``converted=true``, yet still stores it and hangs notes on it."""
    _, (stopped, *_) = leads_by_state(crm)
    r = crm.http.post(f"/crm/v8/Leads/{stopped['id']}/actions/convert", json={"data": [{}]})
    assert r.status_code == 200, r.text
    stored = crm.one("Leads", stopped["id"])
    assert stored["$stop_processing"] is True
    listed = crm.http.get("/crm/v8/Leads", params={"ids": stopped["id"], "fields": "id"})
    assert listed.status_code == 204  # what the gateway's state look-up gets
    return stored


def _notes_under(crm: Crm, parent_id: str, content: str) -> list[dict[str, Any]]:
    return [
        n
        for n in crm.records("Notes")
        if (n.get("Parent_Id") or {}).get("id") == parent_id and n.get("Note_Content") == content
    ]


def _upload(gw: GatewayHandle, name: str, csv_text: str) -> str | None:
    """The uploaded file's id, or None when the gateway refused the file itself (a
    stopped record it names), which is as good as refusing its job."""
    up = gw.http.post(
        "/crm/v8/upload",
        files={"file": (f"{name}.zip", zip_of(f"{name}.csv", csv_text), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    if up.status_code == 400 and up.json()["details"]["reason"] == "stop_processing":
        return None
    assert up.status_code == 200, up.text
    return str(up.json()["details"]["file_id"])


def _job(gw: GatewayHandle, operation: str, module: str, file_id: str | None, **res: Any) -> Any:
    if file_id is None:
        return None
    resource = {"type": "data", "module": {"api_name": module}, "file_id": file_id, **res}
    body = {"operation": operation, "resource": [resource]}
    return gw.http.post("/crm/bulk/v8/write", content=orjson.dumps(body))


# =========================================================================================
# (A) FINDINGS: these fail against c89bc2f
# =========================================================================================


def test_a_upsert_naming_duplicate_check_fields_in_another_case_updates_a_stopped_lead(
    crm: Crm, gw: GatewayHandle
) -> None:
    """The gateway reads ``Duplicate_Check_Fields`` (writes.py ``_duplicate_fields``,
    ``member`` in any case) and matches on Company only: no record, so "an insert". The
    CRM reads only ``duplicate_check_fields``, so it matches on its defaults (Email) and
    updates the stopped lead."""
    stopped = _stopped_lead_with_email(crm, "rt16-dcf@example.com")
    crm.clear()
    row = {"Last_Name": "Rt16Overwritten", "Email": "rt16-dcf@example.com",
           "Company": "rt16-no-such-company"}  # fmt: skip
    body = {"data": [row], "Duplicate_Check_Fields": ["Company"]}
    send(gw, "POST", "/crm/v8/Leads/upsert", body)
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt16Overwritten"


def test_a_upsert_row_naming_its_id_as_ID_updates_the_stopped_lead_its_email_matches(
    crm: Crm, gw: GatewayHandle
) -> None:
    """writes.py/state.py ``upsert_targets`` take ``"ID"`` (``record_id``, any case) as
    the row's id, a free lead, and never look at its duplicate-check fields. The CRM reads
    ``id`` exactly: no id, so it matches by Email and updates the stopped lead."""
    normal, _ = leads_by_state(crm)
    stopped = _stopped_lead_with_email(crm, "rt16-idcase@example.com")
    crm.clear()
    row = {"ID": normal[0]["id"], "Last_Name": "Rt16Overwritten",
           "Email": "rt16-idcase@example.com"}  # fmt: skip
    send(gw, "POST", "/crm/v8/Leads/upsert", {"data": [row]})
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt16Overwritten"


def test_a_upsert_under_x_external_ignores_its_duplicate_check_fields(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Under ``X-EXTERNAL: Leads.Company`` writes.py ``write`` takes the
    ``_external_targets`` branch and never reads the body's ``duplicate_check_fields``: the
    external value names a free lead, so the row is judged by it alone. The CRM matches on
    the fields the request names (Email): it updates the stopped lead."""
    normal, _ = leads_by_state(crm)
    crm.edit("Leads", normal[0]["id"], Company="rt16-free-company")
    stopped = _stopped_lead_with_email(crm, "rt16-ext@example.com")
    crm.clear()
    row = {"Company": "rt16-free-company", "Last_Name": "Rt16Overwritten",
           "Email": "rt16-ext@example.com"}  # fmt: skip
    gw.http.post(
        "/crm/v8/Leads/upsert",
        content=orjson.dumps({"data": [row], "duplicate_check_fields": ["Email"]}),
        headers={"X-EXTERNAL": "Leads.Company"},
    )
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt16Overwritten"


def test_a_note_is_hung_under_a_converted_lead_in_stop_processing(
    crm: Crm, gw: GatewayHandle
) -> None:
    """state.py ``locate`` asks ``GET /Leads?ids=`` without ``converted``: a converted lead
    is not listed, so the parent "is in no GDPR module" and counts as free
    (``absent=False``). The CRM attaches the note to the stopped lead."""
    lead = _converted_stopped_lead(crm)
    crm.clear()
    note = {"Note_Content": "rt16-converted", "Parent_Id": {"id": lead["id"]},
            "$se_module": "Leads"}  # fmt: skip
    send(gw, "POST", "/crm/v8/Notes", {"data": [note]})
    assert _notes_under(crm, lead["id"], "rt16-converted") == []


def test_a_bulk_insert_hangs_a_note_under_a_converted_lead_in_stop_processing(
    crm: Crm, gw: GatewayHandle
) -> None:
    """The same look-up for a bulk-write file (uploads.py ``check_ids``): an id-like cell
    outside the id column counts only when ``locate`` finds it stopped; a converted lead is
    found in no module, so the file and its insert job go through."""
    lead = _converted_stopped_lead(crm)
    crm.clear()
    file_id = _upload(gw, "Notes", f"Parent_Id,Note_Content\n{lead['id']},rt16-conv-bulk\n")
    _job(gw, "insert", "Notes", file_id)
    assert _notes_under(crm, lead["id"], "rt16-conv-bulk") == []


def test_a_bulk_update_reaches_a_stopped_lead_by_a_zero_padded_id_in_a_mapped_column(
    crm: Crm, gw: GatewayHandle
) -> None:
    """upload_file.py ``_looks_like_id`` judges a cell by its length before leading zeros
    are dropped: 7 zeros and a 19-digit id (26 characters) is "no id". A job's
    ``field_mappings`` (unchecked by writes.py ``_bulk_write_job``) make that column the
    key; the CRM reads ``00000005725...`` as the id and updates the stopped lead."""
    _, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    file_id = _upload(gw, "Leads", f"Ref,Last_Name\n0000000{stopped['id']},Rt16Overwritten\n")
    mappings = [{"index": 0, "api_name": "id"}, {"index": 1, "api_name": "Last_Name"}]
    _job(gw, "update", "Leads", file_id, find_by="id", field_mappings=mappings)
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt16Overwritten"


def test_a_bulk_insert_hangs_a_note_under_a_stopped_lead_by_a_zero_padded_parent(
    crm: Crm, gw: GatewayHandle
) -> None:
    """The same padding in an insert's parent column: upload_file.py ``_looks_like_id``
    skips it, so no id of the file is looked up; the CRM reads the parent as the stopped
    lead's id and attaches the note."""
    _, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    csv_text = f"Parent_Id,Note_Content\n0000000{stopped['id']},rt16-padded\n"
    file_id = _upload(gw, "Notes", csv_text)
    _job(gw, "insert", "Notes", file_id)
    assert _notes_under(crm, stopped["id"], "rt16-padded") == []


def _raw(crm: Crm, module: str, record_id: str) -> dict[str, Any]:
    """The record as the sandbox stores it ($-keys included)."""
    r = crm.admin.get(f"/_sandbox/records/1/{module}/{record_id}")
    assert r.status_code == 200, r.text
    rec: dict[str, Any] = r.json()
    return rec


def _decoy_holding(crm: Crm, value: str) -> dict[str, Any]:
    """A free lead whose External_Ref holds ``value`` (a stopped lead's id)."""
    normal, _ = leads_by_state(crm)
    crm.edit("Leads", normal[0]["id"], External_Ref=value)
    return normal[0]


def test_a_convert_under_x_external_converts_the_stopped_lead_its_path_names_by_id(
    crm: Crm, gw: GatewayHandle
) -> None:
    """writes.py ``_one_record`` reads the path of *any* one-record write as an external
    value when ``X-EXTERNAL`` is sent (``ctx.states.by_external``), though the route table
    gives only ``/{module}/{id}`` an external placeholder: it checks the free lead whose
    External_Ref is the stopped lead's id. The CRM's convert reads its path as the id and
    converts the stopped lead."""
    _, (stopped, *_) = leads_by_state(crm)
    _decoy_holding(crm, stopped["id"])
    assert "$converted" not in _raw(crm, "Leads", stopped["id"])
    crm.clear()
    gw.http.post(
        f"/crm/v8/Leads/{stopped['id']}/actions/convert",
        content=orjson.dumps({"data": [{}]}),
        headers={"X-EXTERNAL": "Leads.External_Ref"},
    )
    assert _raw(crm, "Leads", stopped["id"]).get("$converted") is not True


def test_a_related_link_under_x_external_links_the_stopped_lead_its_path_names_by_id(
    crm: Crm, gw: GatewayHandle
) -> None:
    """The same reading on a related-list write (writes.py ``_one_record``): the gateway
    checks the decoy, the CRM links the stopped lead (``/Leads/{id}/Campaigns/{cid}``)."""
    _, (stopped, *_) = leads_by_state(crm)
    _decoy_holding(crm, stopped["id"])

    def campaigns() -> list[str]:
        r = crm.http.get(f"/crm/v8/Leads/{stopped['id']}/Campaigns", params={"fields": "id"})
        return [c["id"] for c in r.json()["data"]] if r.status_code == 200 else []

    campaign = next(c for c in crm.records("Campaigns") if c["id"] not in campaigns())

    def linked() -> bool:
        return campaign["id"] in campaigns()

    assert not linked()
    crm.clear()
    gw.http.put(
        f"/crm/v8/Leads/{stopped['id']}/Campaigns/{campaign['id']}",
        content=orjson.dumps({"data": [{"id": campaign["id"]}]}),
        headers={"X-EXTERNAL": "Leads.External_Ref"},
    )
    assert not linked()


# =========================================================================================
# (B) HELD
# =========================================================================================


@pytest.mark.parametrize("zeros", [1, 6])
def test_held_a_padded_parent_within_25_characters_is_still_looked_up(
    crm: Crm, gw: GatewayHandle, zeros: int
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    csv_text = f"Parent_Id,Note_Content\n{'0' * zeros}{stopped['id']},rt16-pad\n"
    r = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Notes.zip", zip_of("Notes.csv", csv_text), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert r.status_code == 400, r.text
    assert _reached(crm, "/upload") == []


def test_held_an_upsert_under_x_external_naming_no_record_is_refused_as_unknown(
    crm: Crm, gw: GatewayHandle
) -> None:
    stopped = _stopped_lead_with_email(crm, "rt16-ext-none@example.com")
    crm.clear()
    row = {"External_Ref": "rt16-no-such-ref", "Last_Name": "Rt16Overwritten",
           "Email": "rt16-ext-none@example.com"}  # fmt: skip
    r = gw.http.post(
        "/crm/v8/Leads/upsert",
        content=orjson.dumps({"data": [row]}),
        headers={"X-EXTERNAL": "Leads.External_Ref"},
    )
    # refused as unknown (the value names no record) or, since the CRM may match the row
    # by its Email, as the stopped lead's
    reason = r.json()["data"][0]["details"]["reason"]
    assert r.status_code == 400 and reason in ("state_unknown", "stop_processing")
    assert _reached(crm, "/upsert") == []
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt16Overwritten"


def test_held_a_json_parent_padded_past_25_characters_is_still_found(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    note = {"Note_Content": "rt16-json-pad", "Parent_Id": {"id": "0" * 10 + stopped["id"]}}
    r = send(gw, "POST", "/crm/v8/Notes", {"data": [note]})
    assert r.status_code == 400, r.text
    assert _reached(crm, "/crm/v8/Notes") == []
    assert _notes_under(crm, stopped["id"], "rt16-json-pad") == []


def test_held_an_update_of_a_converted_stopped_lead_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    lead = _converted_stopped_lead(crm)
    crm.clear()
    r = send(gw, "PUT", "/crm/v8/Leads", {"data": [{"id": lead["id"], "City": "Rt16Town"}]})
    assert r.status_code == 400, r.text
    assert _reached(crm, "/crm/v8/Leads", "PUT") == []
    assert _raw(crm, "Leads", lead["id"]).get("City") != "Rt16Town"


def test_held_a_field_mapping_keyed_on_a_plain_stopped_id_is_refused_at_upload(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    csv_text = f"id,Ref,Last_Name\n{normal[0]['id']},{stopped['id']},Rt16Overwritten\n"
    r = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", zip_of("Leads.csv", csv_text), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert r.status_code == 400, r.text
    assert _reached(crm, "/upload") == []
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Rt16Overwritten"


def test_held_an_x_external_update_of_the_record_route_is_judged_as_the_crm_resolves_it(
    crm: Crm, gw: GatewayHandle
) -> None:
    """On ``/{module}/{id}`` the CRM does resolve X-EXTERNAL: the decoy is what it updates,
    and the stopped lead whose id is the value stays as it was."""
    _, (stopped, *_) = leads_by_state(crm)
    decoy = _decoy_holding(crm, stopped["id"])
    crm.clear()
    r = gw.http.put(
        f"/crm/v8/Leads/{stopped['id']}",
        content=orjson.dumps({"data": [{"City": "Rt16Town"}]}),
        headers={"X-EXTERNAL": "Leads.External_Ref"},
    )
    assert r.status_code == 200, r.text
    assert _raw(crm, "Leads", decoy["id"])["City"] == "Rt16Town"
    assert _raw(crm, "Leads", stopped["id"]).get("City") != "Rt16Town"
