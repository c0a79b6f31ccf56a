"""Thirteenth red team: the fixes of 979f19c (job statuses and upload receipts checked by
what they may hold, ``privacy/status_body.py``; unknown keys of a success's ``details``
withheld; a convert's ``Contacts``/``Accounts``/``Deals`` redacted as lookups; a refused
write's ``duplicate_record`` withheld for a restricted field; DELETE answered as a write).

Every test drives the real gateway over HTTP against the sandbox CRM; where the CRM's
answer must carry a marker, the sandbox's fault injection (``/_sandbox/faults``) answers
with it once (``_answer`` of ``test_redteam_12``).

Part (A): FINDINGS, each failing against 979f19c, fixed in the commit that added this file.
Part (B): attacks that HELD, kept as coverage (each first checks that what it goes after
is really there, so it could fail).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import Marked, no_mark, send, zip_of
from tests.adversarial.test_redteam_12 import CONSENT, INSURANCE_RESTRICTED, _answer, _entry
from tests.conftest import Crm, GatewayHandle, MakeGateway, envelope

MARK = "rt13-mark-5b7e@example.com"
#: the job-status routes and the path the sandbox's fault matches on
STATUS_ROUTES = [
    pytest.param(
        "/crm/v8/Leads/actions/mass_update?job_id=111", "/actions/mass_update", id="mass-update"
    ),
    pytest.param("/crm/bulk/v8/read/111", "/bulk/v8/read/111", id="bulk-read"),
    pytest.param("/crm/bulk/v8/write/111", "/bulk/v8/write/111", id="bulk-write"),
]


def _status(crm: Crm, gw: GatewayHandle, url: str, fault: str, body: Any, status: int = 200) -> Any:
    _answer(crm, fault, "GET", body, status)
    return gw.http.get(url)


def _upload(crm: Crm, gw: GatewayHandle, marked: Marked, body: Any) -> Any:
    _answer(crm, "/crm/v8/upload", "POST", body)
    csv = f"Last_Name,Company\nRt13,Acme {marked.lead['id'][-4:]}\n"
    return gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", zip_of("Leads.csv", csv), "application/zip")},
        headers={"feature": "bulk-write"},
    )


def _patients(crm: Crm) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Two free patients with an Insurance_Number, and one in stop processing."""
    every = crm.records("Patients")
    free = [p for p in every if p.get("Insurance_Number") and not p["$stop_processing"]]
    stopped = next(p for p in every if p["$stop_processing"])
    return free[0], free[1], stopped


# =========================================================================================
# (A) FINDINGS: these fail against 979f19c
# =========================================================================================


@pytest.mark.parametrize("how", ["error-entry", "http-400", "http-500"])
@pytest.mark.parametrize("url,fault", STATUS_ROUTES)
def test_a_a_status_answer_with_an_error_in_it_is_not_checked_at_all(
    crm: Crm, gw: GatewayHandle, marked: Marked, url: str, fault: str, how: str
) -> None:
    """LEAK. forward.py ``passthrough`` (line 164) sends an answer with any error in it
    (``_has_errors``: one ``data`` entry with ``"status": "error"``, or an HTTP status >= 400)
    to ``scrub_answer`` *instead of* ``scrub_status`` (``elif``, line 166). ``scrub_answer``
    (errors_body.py line 57) rewrites only the error envelopes themselves: every other
    ``data`` entry, ``info``, and on a 4xx/5xx with ``data`` the whole body, goes on as the
    CRM wrote it. One error entry beside a record's values is all it takes."""
    lead = marked.lead
    record = {"state": "COMPLETED", "Email": MARK, "City": lead["City"]}
    if how == "error-entry":
        failed = {"status": "error", "code": "INTERNAL_ERROR", "message": "x", "details": {}}
        body, status = {"data": [failed, record], "info": {"Description": MARK}}, 200
    else:
        body, status = {"data": [record]}, 400 if how == "http-400" else 500
    r = _status(crm, gw, url, fault, body, status)
    assert r.status_code == status, r.text
    assert "COMPLETED" in r.text  # the CRM's answer came back
    no_mark(r, MARK)
    no_mark(r, lead["City"])
    marked.assert_audit_clean(gw)


def test_a_an_upload_receipt_with_an_error_in_it_is_not_checked_at_all(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK, the same root cause on the upload's receipt (uploads.py -> forward.py
    ``passthrough`` line 164: errors scrubbed, ``scrub_status`` skipped)."""
    failed = {"status": "error", "code": "INTERNAL_ERROR", "message": "x", "details": {}}
    r = _upload(crm, gw, marked, {"data": [failed, {"file_id": "111000", "Email": MARK}]})
    assert r.status_code == 200, r.text
    assert "111000" in r.text  # the CRM's answer came back
    no_mark(r, MARK)


@pytest.mark.parametrize("url,fault", [*STATUS_ROUTES, pytest.param("", "", id="upload")])
def test_a_a_status_answer_that_is_one_json_string_passes_unjudged(
    crm: Crm, gw: GatewayHandle, marked: Marked, url: str, fault: str
) -> None:
    """LEAK. status_body.py ``_scrub`` (line 58) looks only into objects (line 60) and lists
    (line 71): a top-level JSON scalar is never given to ``_kept`` and ``scrub_status``
    returns 0, so a JSON string answer (any text: an e-mail address, a name) reaches the
    client as it is, where the same text one level down would be withheld."""
    r = _status(crm, gw, url, fault, MARK) if url else _upload(crm, gw, marked, MARK)
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")  # not an object: it cannot be checked
    no_mark(r, MARK)


# What status_body.py cannot judge, by design (its docstring, README): a plain word under
# a name its vocabulary has (a field name in ``query.fields``, a user in ``created_by``).
# The red team's ``fields`` and ``created_by`` cases went through there; ``state`` is now
# one of the CRM's states.
@pytest.mark.parametrize("where", ["state"])
def test_a_a_private_value_shaped_like_a_token_passes_in_a_job_status(
    crm: Crm, gw: GatewayHandle, marked: Marked, where: str
) -> None:
    """LEAK. status_body.py ``_kept`` (line 92) keeps under any vocabulary key every text
    that is a plain token (``_TOKEN``, line 38), and under ``created_by.name`` any words
    (``_USER``, line 91). The lead's private City (``MarkCity...``) or Description
    (``mark-description-...``) is a token; its Full_Name ("First Last", First_Name
    private) is a user's name in shape. ``state`` has a closed vocabulary in the CRM
    (ADDED, IN PROGRESS, COMPLETED, FAILED, ...), ``fields`` names fields of the metadata,
    ``created_by`` one of the org's users (``GET /users``): none is checked against it."""
    lead = marked.lead
    read = gw.http.get(f"/crm/v8/Leads/{lead['id']}", params={"fields": "City,Full_Name"})
    assert read.json()["data"][0]["City"] is None  # withheld on a read
    assert read.json()["data"][0]["Full_Name"] is None
    secret = {"state": lead["City"], "fields": lead["Description"],
              "created_by": lead["First_Name"]}[where]  # fmt: skip
    job: dict[str, Any] = {"id": "111", "operation": "read", "state": "COMPLETED"}
    if where == "state":
        job["state"] = lead["City"]
    elif where == "fields":
        job["query"] = {"module": {"api_name": "Leads"}, "fields": ["Last_Name", secret]}
    else:
        job["created_by"] = {"id": "1", "name": lead["Full_Name"]}
    r = _status(crm, gw, "/crm/bulk/v8/read/111", "/bulk/v8/read/111", {"data": [job]})
    assert r.status_code == 200, r.text
    assert '"operation":"read"' in r.text  # the CRM's answer came back
    no_mark(r, secret)


@pytest.mark.parametrize("status", ["Error", "ERROR"])
@pytest.mark.parametrize(
    "path", ["record-put", "batch-put", "insert", "delete", "mass-delete", "related-link"]
)
def test_a_an_entry_whose_status_is_error_in_another_case_keeps_unknown_values(
    crm: Crm, gw: GatewayHandle, marked: Marked, status: str, path: str
) -> None:
    """LEAK on every write path. redact.py ``redact_write_answer`` (line 468) exempts an
    entry from the unknown-key rule when its status is ``error`` *in any case*
    (``_lower``), trusting ``errors_body`` to scrub it; but forward.py ``_has_errors``
    (line 65) and errors_body.py ``scrub_answer`` (line 67) recognise only the exact
    ``"error"``. An entry with ``"status": "Error"`` is neither: a ``details`` key no field
    describes (a field created at the CRM since the metadata was fetched) goes on whole."""
    lead, contact = marked.lead, marked.contact
    entry = {"code": "INVALID_DATA", "details": {"id": lead["id"], "Brand_New": MARK},
             "message": "invalid data", "status": status}  # fmt: skip
    answer = {"data": [entry]}
    if path == "record-put":
        _answer(crm, f"/Leads/{lead['id']}", "PUT", answer)
        r = send(gw, "PUT", f"/crm/v8/Leads/{lead['id']}", {"data": [{"Company": "Rt13"}]})
    elif path == "batch-put":
        _answer(crm, "/crm/v8/Leads", "PUT", answer)
        r = send(gw, "PUT", "/crm/v8/Leads", {"data": [{"id": lead["id"], "Company": "Rt13"}]})
    elif path == "insert":
        _answer(crm, "/crm/v8/Leads", "POST", answer)
        row = {"Last_Name": "Rt13", "Company": "Rt13", "Data_Processing_Basis_Details": CONSENT}
        r = send(gw, "POST", "/crm/v8/Leads", {"data": [row]})
    elif path == "delete":
        _answer(crm, f"/Leads/{lead['id']}", "DELETE", answer)
        r = gw.http.delete(f"/crm/v8/Leads/{lead['id']}")
    elif path == "mass-delete":
        _answer(crm, "/crm/v8/Leads", "DELETE", answer)
        r = gw.http.delete("/crm/v8/Leads", params={"ids": lead["id"]})
    else:
        _answer(crm, f"/Contacts/{contact['id']}/Leads", "PUT", answer)
        r = send(gw, "PUT", f"/crm/v8/Contacts/{contact['id']}/Leads/{lead['id']}", None)
    assert r.status_code == 200, r.text
    assert "Brand_New" in r.text  # the CRM's entry came back
    no_mark(r, MARK)


@pytest.mark.parametrize("where", ["message", "beside-details", "beside-data"])
def test_a_text_beside_a_successs_details_is_kept(
    crm: Crm, gw: GatewayHandle, marked: Marked, where: str
) -> None:
    """LEAK. A success entry's ``message``, a member of the entry beside ``details`` or of
    the answer beside ``data`` that no field describes, is kept whatever it holds:
    redact.py ``_beside`` (line 492) withholds only the module's fields' values there
    (line 513), and ``scrub_answer`` rewrites only error entries. The job statuses'
    check (status_body.py ``MESSAGES``) withholds a message that is not the CRM's own; a
    write's success does not."""
    lead = marked.lead
    entry = _entry({"id": lead["id"]})
    answer: dict[str, Any] = {"data": [entry]}
    if where == "message":
        entry["message"] = f"record updated for {MARK}"
    elif where == "beside-details":
        entry["owner_note"] = MARK
    else:
        answer["owner_note"] = MARK
    _answer(crm, f"/Leads/{lead['id']}", "PUT", answer)
    r = send(gw, "PUT", f"/crm/v8/Leads/{lead['id']}", {"data": [{"Company": "Rt13"}]})
    assert r.status_code == 200, r.text
    assert '"code":"SUCCESS"' in r.text  # the CRM's entry came back
    no_mark(r, MARK)


@pytest.mark.parametrize("shape", ["list", "string"])
def test_a_a_converts_contacts_not_shaped_as_one_object_keeps_its_name(
    crm: Crm, gw: GatewayHandle, marked: Marked, shape: str
) -> None:
    """LEAK. writes.py ``_redact_converted`` (line 392) redacts ``details.Contacts`` as a
    Contacts lookup only when it is an object; ``CONVERT_DETAILS`` (line 378) then exempts
    the key ``contacts`` from the unknown-key rule whatever its value. Given as a list of
    ``{"name", "id"}`` (read as nested Leads objects, whose unknown ``name`` is kept) or as a
    string (v2's bare id shape, here the Contact's Full_Name), the name goes on; a
    Contact's Full_Name is withheld on every read."""
    lead = marked.lead
    assert lead["First_Name"] and lead["Full_Name"].startswith(lead["First_Name"])
    contact: Any = {"name": lead["Full_Name"], "id": marked.contact["id"]}
    details = {"Contacts": [contact] if shape == "list" else lead["Full_Name"]}
    _answer(crm, f"/Leads/{lead['id']}/actions/convert", "POST", {"data": [_entry(details)]})
    r = send(gw, "POST", f"/crm/v8/Leads/{lead['id']}/actions/convert", {"data": [{}]})
    assert r.status_code == 200, r.text
    assert "Contacts" in r.json()["data"][0]["details"]  # the CRM's answer came back
    no_mark(r, lead["First_Name"])


def test_a_duplicate_record_in_another_case_names_the_holder_of_a_restricted_value(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """ORACLE ON A RESTRICTED FIELD. writes.py ``hide_duplicate_holders`` (line 366) looks
    for ``details.duplicate_record`` in that exact case; errors_body.py ``_VOCABULARY``
    keeps every ``id`` at any depth of an error's details. ``Duplicate_Record`` (a client
    matching names in any case reads it as the holder, the README's reason to refuse a
    ``Data`` member) keeps the id of the patient holding a restricted Insurance_Number."""
    gw = make_gateway(INSURANCE_RESTRICTED)
    holder, _, _ = _patients(crm)
    refused = {"code": "DUPLICATE_DATA", "status": "error", "message": "duplicate data",
               "details": {"api_name": "Insurance_Number",
                           "Duplicate_Record": {"id": holder["id"]}}}  # fmt: skip
    _answer(crm, "/crm/v8/Patients", "POST", {"data": [refused]})
    row = {"Name": "Rt13 Probe", "Insurance_Number": holder["Insurance_Number"],
           "Data_Processing_Basis_Details": CONSENT}  # fmt: skip
    r = send(gw, "POST", "/crm/v8/Patients", {"data": [row]})
    assert "DUPLICATE_DATA" in r.text, r.text  # the CRM's answer came back
    assert holder["id"] not in r.text, r.text


def test_a_a_delete_is_refused_when_field_metadata_is_unavailable(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """REGRESSION of 979f19c ("Delete is never blocked: erasure must stay possible").
    pipeline.py line 150 now sends DELETE to writes.py ``forward_write``, which builds the
    module's mask plan and catalog (lines 333-334) *before* forwarding: with the CRM's
    ``/settings/fields`` failing, the delete is answered 503 and never reaches the CRM,
    where it was forwarded before (``_PASS_WITH_VIEW`` needed no field metadata). The
    answer could be checked, or withheld, after the delete instead."""
    lead = marked.lead
    crm.fault(path_contains="/settings/fields", method="GET", status=500, times=20,
              body='{"code":"INTERNAL_ERROR","details":{},"message":"x","status":"error"}',
              content_type="application/json")  # fmt: skip
    crm.clear()
    r = gw.http.delete(f"/crm/v8/Leads/{lead['id']}")
    crm.admin.delete("/_sandbox/faults")
    reached = [x for x in crm.received("/crm/v8/Leads") if x["method"] == "DELETE"]
    assert reached, r.text  # the erasure reached the CRM
    assert r.status_code == 200, r.text


# =========================================================================================
# (B) HELD: attacks that did not get through, kept as coverage
# =========================================================================================


@pytest.mark.parametrize("url,fault", STATUS_ROUTES)
def test_held_values_in_a_status_outside_its_vocabulary_are_withheld(
    crm: Crm, gw: GatewayHandle, url: str, fault: str
) -> None:
    job = {"id": "111", "state": "COMPLETED", "Email": MARK, "STATE": MARK,
           "query": {"criteria": {"api_name": "Email", "comparator": "equal", "value": MARK},
                     "data": [{"value": MARK}]},
           "message": f"done for {MARK}", "created_by": {"name": MARK, "id": "1"},
           "result": {"count": 1, "download_url": MARK}, "Data": [{"Email": MARK}]}  # fmt: skip
    r = _status(crm, gw, url, fault, {"data": [job], "info": {"per_page": MARK}})
    assert r.status_code == 200, r.text
    got = r.json()["data"][0]
    assert got["state"] == "COMPLETED" and got["result"]["count"] == 1  # came back, judged
    no_mark(r, MARK)
    assert MARK not in gw.audit_text()


@pytest.mark.parametrize("order", ["mark-first", "mark-last"])
def test_held_a_status_member_given_twice_goes_on_as_judged(
    crm: Crm, gw: GatewayHandle, order: str
) -> None:
    pair = [f'"state":"{MARK}"', '"state":"COMPLETED"']
    if order == "mark-last":
        pair.reverse()
    raw = '{"data":[{"id":"111",' + ",".join(pair) + "}]}"
    crm.fault(path_contains="/bulk/v8/read/111", method="GET", status=200, body=raw,
              content_type="application/json", times=1)  # fmt: skip
    r = gw.http.get("/crm/bulk/v8/read/111")
    assert r.status_code == 200, r.text
    assert '"id":"111"' in r.text  # the CRM's answer came back
    assert r.text.count('"state"') == 1
    no_mark(r, MARK)


def test_held_a_non_json_status_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    r = _status(crm, gw, "/crm/bulk/v8/read/111", "/bulk/v8/read/111", {"state": "COMPLETED"})
    assert r.status_code == 200 and "COMPLETED" in r.text, r.text  # the route is served
    crm.fault(path_contains="/bulk/v8/read/111", method="GET", status=200, body=f"state={MARK}",
              content_type="text/plain", times=1)  # fmt: skip
    r = gw.http.get("/crm/bulk/v8/read/111")
    assert r.status_code == 502, r.text
    no_mark(r, MARK)


@pytest.mark.parametrize("url,fault", STATUS_ROUTES)
def test_held_a_status_that_is_an_error_envelope_is_scrubbed(
    crm: Crm, gw: GatewayHandle, url: str, fault: str
) -> None:
    body = {"status": "error", "code": "INVALID_DATA", "message": f"no job for {MARK}",
            "details": {"api_name": "job_id", "value": MARK}, "info": {"Email": MARK}}  # fmt: skip
    r = _status(crm, gw, url, fault, body)
    assert "INVALID_DATA" in r.text, r.text  # the CRM's answer came back
    no_mark(r, MARK)


@pytest.mark.parametrize("status", ["error", "error ", "success", None])
@pytest.mark.parametrize("path", ["record-put", "batch-put", "mass-delete", "related-link"])
def test_held_an_entrys_unknown_details_are_withheld_with_a_status_the_gateway_reads(
    crm: Crm, gw: GatewayHandle, marked: Marked, status: str | None, path: str
) -> None:
    """The exact ``error`` is scrubbed as an error, anything but an error in any case as a
    success (unknown keys withheld), on single-record, batch, delete and related paths."""
    lead, contact = marked.lead, marked.contact
    entry = {"code": "X", "details": {"id": lead["id"], "Brand_New": MARK}, "message": "m",
             "status": status}  # fmt: skip
    if path == "record-put":
        _answer(crm, f"/Leads/{lead['id']}", "PUT", {"data": [entry]})
        r = send(gw, "PUT", f"/crm/v8/Leads/{lead['id']}", {"data": [{"Company": "Rt13"}]})
    elif path == "batch-put":
        _answer(crm, "/crm/v8/Leads", "PUT", {"data": [entry]})
        r = send(gw, "PUT", "/crm/v8/Leads", {"data": [{"id": lead["id"], "Company": "Rt13"}]})
    elif path == "mass-delete":
        _answer(crm, "/crm/v8/Leads", "DELETE", {"data": [entry]})
        r = gw.http.delete("/crm/v8/Leads", params={"ids": lead["id"]})
    else:
        _answer(crm, f"/Contacts/{contact['id']}/Leads", "PUT", {"data": [entry]})
        r = send(gw, "PUT", f"/crm/v8/Contacts/{contact['id']}/Leads/{lead['id']}", None)
    assert r.status_code == 200, r.text
    assert "Brand_New" in r.text  # the CRM's entry came back
    no_mark(r, MARK)


def test_held_an_error_entry_in_a_split_batch_is_scrubbed(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """One input refused (stop processing), the other forwarded: writes.py ``batch``'s
    own path scrubs the CRM's error entry before merging."""
    lead, stopped = marked.lead, marked.stopped
    entry = {"code": "INVALID_DATA", "details": {"id": lead["id"], "Brand_New": MARK,
             "api_name": MARK}, "message": f"bad {MARK}", "status": "error"}  # fmt: skip
    _answer(crm, "/crm/v8/Leads", "PUT", {"data": [entry]})
    body = {"data": [{"id": lead["id"], "Company": "Rt13"}, {"id": stopped["id"], "Company": "X"}]}
    r = send(gw, "PUT", "/crm/v8/Leads", body)
    assert r.status_code == 207, r.text
    assert "Brand_New" in r.text and "stop_processing" in r.text
    no_mark(r, MARK)


@pytest.mark.parametrize("shape", ["upper-key", "name-elsewhere", "accounts-and-deals"])
def test_held_a_converts_answer_in_other_shapes_names_no_one(
    crm: Crm, gw: GatewayHandle, marked: Marked, shape: str
) -> None:
    """A Deal's ``name`` is its Deal_Name (not private): kept, as on a read; a Contact's
    is withheld in any key case, a value beside them under a key no field describes too."""
    lead = marked.lead
    cid = marked.contact["id"]
    if shape == "upper-key":
        details: dict[str, Any] = {"CONTACTS": {"name": lead["Full_Name"], "id": cid}}
    elif shape == "name-elsewhere":
        details = {"Contacts": {"id": cid}, "Contact_Name": lead["Full_Name"]}
    else:
        details = {"Contacts": {"id": cid, "name": lead["Full_Name"], "Email": MARK},
                   "Deals": {"id": "1", "name": "Rt13 Deal", "Email": MARK}}  # fmt: skip
    _answer(crm, f"/Leads/{lead['id']}/actions/convert", "POST", {"data": [_entry(details)]})
    r = send(gw, "POST", f"/crm/v8/Leads/{lead['id']}/actions/convert", {"data": [{}]})
    assert r.status_code == 200, r.text
    assert set(r.json()["data"][0]["details"]) == set(details)  # the CRM's answer came back
    no_mark(r, lead["First_Name"])
    no_mark(r, MARK)


@pytest.mark.parametrize("path", ["record-put", "batch-put", "split-batch", "mass-update"])
def test_held_duplicate_data_on_an_update_names_no_holder_of_a_restricted_value(
    crm: Crm, make_gateway: MakeGateway, path: str
) -> None:
    gw = make_gateway(INSURANCE_RESTRICTED)
    holder, other, stopped = _patients(crm)
    number = holder["Insurance_Number"]
    direct = crm.http.put(
        f"/crm/v8/Patients/{other['id']}",
        content=orjson.dumps({"data": [{"Insurance_Number": number}]}),
    )
    assert holder["id"] in direct.text and "DUPLICATE_DATA" in direct.text  # the oracle
    if path == "record-put":
        r = send(gw, "PUT", f"/crm/v8/Patients/{other['id']}",
                 {"data": [{"Insurance_Number": number}]})  # fmt: skip
    elif path == "mass-update":
        r = send(gw, "POST", "/crm/v8/Patients/actions/mass_update",
                 {"data": [{"Insurance_Number": number}], "ids": [other["id"]]})  # fmt: skip
    else:
        rows = [{"id": other["id"], "Insurance_Number": number}]
        if path == "split-batch":
            rows.append({"id": stopped["id"], "Name": "Rt13"})
        r = send(gw, "PUT", "/crm/v8/Patients", {"data": rows})
    assert "DUPLICATE_DATA" in r.text, r.text
    assert holder["id"] not in r.text, r.text


@pytest.mark.parametrize("api_name", ["INSURANCE_NUMBER", "insurance_number", "No_Such_Field"])
def test_held_duplicate_record_with_api_name_in_another_case_is_withheld(
    crm: Crm, make_gateway: MakeGateway, api_name: str
) -> None:
    gw = make_gateway(INSURANCE_RESTRICTED)
    holder, _, _ = _patients(crm)
    details = {"api_name": api_name, "duplicate_record": {"id": holder["id"]}}
    refused = {"code": "DUPLICATE_DATA", "status": "error", "message": "m", "details": details}
    _answer(crm, "/crm/v8/Patients", "POST", {"data": [refused]})
    row = {"Name": "Rt13 Probe", "Insurance_Number": "X", "Data_Processing_Basis_Details": CONSENT}
    r = send(gw, "POST", "/crm/v8/Patients", {"data": [row]})
    assert "DUPLICATE_DATA" in r.text and "duplicate_record" in r.text, r.text
    assert holder["id"] not in r.text, r.text


def test_held_deletes_of_every_shape_still_work(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """DELETE through ``forward_write``: a delink, a mass delete of a record in stop
    processing (never refused), a 204 answer; and a non-JSON answer is withheld (502)."""
    lead, stopped, contact = marked.lead, marked.stopped, marked.contact
    r = gw.http.delete(f"/crm/v8/Contacts/{contact['id']}/Leads", params={"ids": lead["id"]})
    assert r.status_code == 200 and "relation removed" in r.text, r.text
    assert crm.one("Leads", lead["id"])["Referrer"] is None
    r = gw.http.delete("/crm/v8/Leads", params={"ids": stopped["id"]})
    assert r.status_code == 200 and "record deleted" in r.text, r.text
    assert stopped["id"] not in {x["id"] for x in crm.records("Leads")}
    crm.fault(path_contains=f"/Leads/{lead['id']}", method="DELETE", status=204, body="", times=1)
    r = gw.http.delete(f"/crm/v8/Leads/{lead['id']}")
    assert r.status_code == 204, r.text
    crm.fault(path_contains=f"/Leads/{lead['id']}", method="DELETE", status=200,
              body=f"deleted {MARK}", content_type="text/plain", times=1)  # fmt: skip
    r = gw.http.delete(f"/crm/v8/Leads/{lead['id']}")
    assert r.status_code == 502, r.text
    no_mark(r, MARK)
    marked.assert_audit_clean(gw)
