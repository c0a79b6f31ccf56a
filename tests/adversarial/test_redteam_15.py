"""Fifteenth red team: the hardening of 4bd953f..966462a (write answers checked by what
they may hold beside their details, ``WRITE_MESSAGES``/``WRITE_TOKENS``/``WRITE_DETAILS``;
job statuses and upload receipts by ``privacy/status_body.py``; a convert's records as
lookups; ``duplicate_record`` withheld; composite requests one client's).

Every test drives the real gateway over HTTP against the sandbox CRM; where the CRM's
answer must carry a given body, the sandbox's fault injection answers with it once
(``_answer`` of ``test_redteam_12``). Regressions build the CRM's answer from the shapes
``/work/shared/reference/zoho-crm-api-research.md`` cites (or, where it says so, the one
the gateway's own vocabulary names).

Part (A): FINDINGS, each failing against 966462a and fixed in the commit that added this
file: LEAKs (a restricted value reaches the client) and REGRESSIONs (a value the CRM sends
that is not private comes back null).
Part (B): what HELD, kept as coverage (each first checks that what it goes after is really
there, so it could fail).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.conftest import Marked, leads_by_state, no_mark, send, zip_of
from tests.adversarial.test_redteam_12 import CONSENT, _answer, _entry
from tests.conftest import Crm, GatewayHandle, MakeGateway

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
#: mass update by custom view allowed by policy: its answer is a scheduled job
BY_CVID = {"writes": {"allow_mass_update_by_cvid": True}}


def _bulk_read_job(criteria: dict[str, Any]) -> dict[str, Any]:
    """A bulk read job's status as research lines 319-322 give it."""
    return {"id": "4150868000004716016", "operation": "read", "state": "IN PROGRESS",
            "query": {"module": {"id": "5725767000000002175", "api_name": "Leads"}, "page": 1,
                      "fields": ["Last_Name", "Lead_Source"], "criteria": criteria},
            "created_by": {"id": "5725767000000411001", "name": "Patricia Boyle"},
            "created_time": "2019-05-16T12:45:30+05:30", "file_type": "csv"}  # fmt: skip


def _uploaded(gw: GatewayHandle) -> str:
    up = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", zip_of("Leads.csv", "Last_Name\nRt15\n"), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert up.status_code == 200, up.text
    return str(up.json()["details"]["file_id"])


# =========================================================================================
# (A) FINDINGS: these fail against 966462a
# =========================================================================================


@pytest.mark.parametrize(
    ("method", "message"),
    [("POST", "photo uploaded successfully"), ("DELETE", "photo deleted")],
    ids=["upload", "delete"],
)
def test_a_a_photo_answers_details_come_back_null(
    crm: Crm, gw: GatewayHandle, marked: Marked, method: str, message: str
) -> None:
    """REGRESSION. A record's photo (contract §2 route table: ``GET/POST/DELETE
    /{module}/{id}/photo``) is answered by the CRM with one envelope and no ``data``:
    ``{"code": "SUCCESS", "details": {}, "message": "photo uploaded successfully",
    "status": "success"}`` (the messages are in ``WRITE_MESSAGES``, redact.py line 446, so
    the shape was expected). redact.py ``redact_write_answer`` line 474 runs
    ``_write_texts(body, "data", ...)`` on the body itself, and ``_write_texts`` line 516
    keeps a non-text value only under a name in ``WRITE_DETAILS`` (``job_id``): the
    envelope's own ``details`` object is withheld, the answer comes back
    ``"details": null`` and counted ``unknown`` (withheld in every mode)."""
    lead = marked.lead
    answer = {"code": "SUCCESS", "details": {}, "message": message, "status": "success"}
    _answer(crm, f"/Leads/{lead['id']}/photo", method, answer)
    url = f"/crm/v8/Leads/{lead['id']}/photo"
    if method == "POST":
        r = gw.http.post(url, files={"file": ("a.png", PNG, "image/png")})
    else:
        r = gw.http.delete(url)
    assert r.status_code == 200, r.text
    assert r.json() == answer, r.text


def test_a_a_scheduled_mass_updates_job_id_is_withheld(crm: Crm, make_gateway: MakeGateway) -> None:
    """REGRESSION. A mass update by custom view (allowed by the policy) is scheduled; the
    CRM answers ``{"code": "SUCCESS", "details": {"job_id": "…"}, "message": "mass update
    scheduled successfully", "status": "success"}`` (research line 229, §4.8), which the
    client needs to poll the job. As above, ``_write_texts`` (redact.py line 474 -> 516)
    withholds the envelope's ``details`` object: the job id never reaches the client."""
    gw = make_gateway(BY_CVID)
    answer = {"code": "SUCCESS", "details": {"job_id": "5725767000000600001"},
              "message": "mass update scheduled successfully", "status": "success"}  # fmt: skip
    _answer(crm, "/Leads/actions/mass_update", "POST", answer)
    body = {"data": [{"Company": "Rt15"}], "cvid": "5725767000000087501"}
    r = send(gw, "POST", "/crm/v8/Leads/actions/mass_update", body)
    assert r.status_code == 200, r.text
    assert r.json() == answer, r.text


@pytest.mark.parametrize("where", ["entry", "body", "details-text", "details-object"])
def test_a_a_restricted_value_under_job_id_passes_in_a_write_answer(
    crm: Crm, gw: GatewayHandle, marked: Marked, where: str
) -> None:
    """LEAK. ``job_id`` is the one name kept unjudged in a write's answer
    (``WRITE_DETAILS``, redact.py line 440): beside ``details``/``data``, ``_write_texts``
    line 516 keeps an *object* under it whatever it holds (``_beside`` walks only the
    module's fields), and in a success's ``details`` line 489 leaves it out of the
    ``strange`` keys to withhold, text or object. A lead's restricted Email, withheld on
    every read, comes back under ``job_id`` from an update of that lead."""
    lead = marked.lead
    email = lead["Email"]
    read = gw.http.get(f"/crm/v8/Leads/{lead['id']}", params={"fields": "Email"})
    assert read.json()["data"][0]["Email"] is None  # withheld on a read
    entry = _entry({"id": lead["id"]})
    answer: dict[str, Any] = {"data": [entry]}
    if where == "entry":
        entry["job_id"] = {"note": email}
    elif where == "body":
        answer["job_id"] = {"note": email}
    elif where == "details-text":
        entry["details"]["job_id"] = email
    else:
        entry["details"]["job_id"] = {"note": email}
    _answer(crm, f"/Leads/{lead['id']}", "PUT", answer)
    r = send(gw, "PUT", f"/crm/v8/Leads/{lead['id']}", {"data": [{"Company": "Rt15"}]})
    assert r.status_code == 200 and '"code":"SUCCESS"' in r.text, r.text
    no_mark(r, email)
    marked.assert_audit_clean(gw)


@pytest.mark.parametrize("job", ["bulk-read", "bulk-write"])
def test_a_a_bulk_jobs_create_answer_is_not_checked_at_all(
    crm: Crm, gw: GatewayHandle, marked: Marked, job: str
) -> None:
    """LEAK. A bulk job's create answer is a job status like the ones status_body.py now
    checks (research line 321: ``details`` with ``id``, ``operation``, ``state``,
    ``created_by``; line 327: ``details`` with ``id``, ``created_by``), but forward.py
    line 54 lists only ``JOB_STATUS`` and ``UPLOAD`` in ``_STATUS``: handlers/bulk.py
    ``read_create`` (line 69) and writes.py ``_bulk_write_job`` (line 563) forward with
    ``passthrough`` and its answer goes on unread. A member the vocabulary lacks, holding
    a lead's restricted Email, reaches the client."""
    email = marked.lead["Email"]
    if job == "bulk-read":
        details = {"id": "1", "operation": "read", "state": "ADDED", "note": email,
                   "created_by": {"id": "2", "name": "Patricia Boyle"},
                   "created_time": "2019-05-16T12:45:30+05:30"}  # fmt: skip
        answer: dict[str, Any] = {"data": [{"status": "success", "code": "ADDED_SUCCESSFULLY",
                                            "message": "Added successfully.",
                                            "details": details}], "info": {}}  # fmt: skip
        _answer(crm, "/bulk/v8/read", "POST", answer, 201)
        body: dict[str, Any] = {"query": {"module": {"api_name": "Leads"}, "fields": ["Last_Name"]}}
        r = send(gw, "POST", "/crm/bulk/v8/read", body)
    else:
        fid = _uploaded(gw)
        answer = {"status": "success", "code": "SUCCESS", "message": "success",
                  "details": {"id": "111", "created_by": {"id": "2", "name": "Patricia Boyle"},
                              "note": email}}  # fmt: skip
        _answer(crm, "/bulk/v8/write", "POST", answer, 201)
        body = {"operation": "insert", "resource": [
            {"type": "data", "module": {"api_name": "Leads"}, "file_id": fid,
             "field_mappings": [{"api_name": "Last_Name", "index": 0}]}]}  # fmt: skip
        r = send(gw, "POST", "/crm/bulk/v8/write", body)
    assert r.status_code == 201 and "success" in r.text, r.text  # the CRM's answer came back
    no_mark(r, email)


def test_a_a_bulk_read_status_loses_the_values_of_an_in_criterion(
    crm: Crm, gw: GatewayHandle
) -> None:
    """REGRESSION. A bulk read's criteria take ``in``/``not_in``/``between`` with a list
    value (research line 320), echoed in the job's status (lines 319-322). Red team 14
    made a criterion's ``value`` judged as words (status_body.py ``_WORDS``, line 66), but
    only a text directly under ``value``: the items of a list are judged by ``_scrub``
    line 100 as ``_kept("", ...)``, plain tokens only. "Cold Call" (a Lead_Source picklist
    value, not private) comes back null and the status is counted as redacted."""
    criteria = {"api_name": "Lead_Source", "comparator": "in", "value": ["Cold Call", "Trade Show"]}
    job = _bulk_read_job(criteria)
    _answer(crm, "/bulk/v8/read/4150868000004716016", "GET", {"data": [job], "info": {}})
    r = gw.http.get("/crm/bulk/v8/read/4150868000004716016")
    assert r.status_code == 200, r.text
    assert r.json() == {"data": [job], "info": {}}, r.text


def test_a_a_bulk_write_status_loses_a_date_format(crm: Crm, gw: GatewayHandle) -> None:
    """REGRESSION. A bulk write job's ``field_mappings`` (research line 327) name, for a
    date or date-time column, the ``format`` its cells are written in (``MM/dd/yyyy``;
    Zoho's Create Bulk Write Job page; ``format`` is in status_body.py's ``VOCABULARY``,
    line 36). Its text is judged by ``_kept`` line 123 as a token, a time or a path: a
    format with ``/`` is none, so the job's status comes back with ``"format": null``."""
    mappings = [{"api_name": "Deal_Name", "index": 0},
                {"api_name": "Closing_Date", "index": 1, "format": "MM/dd/yyyy"}]  # fmt: skip
    job = {"status": "COMPLETED", "character_encoding": "UTF-8", "id": "111111000000541958",
           "resource": [{"status": "COMPLETED", "type": "data",
                         "module": {"id": "1", "api_name": "Deals"}, "field_mappings": mappings,
                         "file": {"status": "COMPLETED", "name": "Deals.csv", "added_count": 10,
                                  "skipped_count": 0, "updated_count": 0, "total_count": 10}}],
           "operation": "insert", "created_time": "2019-12-13T16:47:38+05:30"}  # fmt: skip
    _answer(crm, "/bulk/v8/write/111", "GET", job)
    r = gw.http.get("/crm/bulk/v8/write/111")
    assert r.status_code == 200, r.text
    assert r.json() == job, r.text


# =========================================================================================
# (B) HELD: flows and attacks that did not break, kept as coverage
# =========================================================================================


def test_held_a_composite_of_every_write_comes_back_as_the_crm_answers_it(
    crm: Crm, gw: GatewayHandle
) -> None:
    """An upsert, an update, an insert, a convert and a delete in one composite request:
    each sub-request's answer is the CRM's write answer (research §4.5, §4.7), with the
    upsert's ``action``/``duplicate_field``, the messages and the Account's name kept, and
    the new Contact's name (First_Name is private) withheld."""
    normal, _ = leads_by_state(crm)
    lead = crm.one("Leads", normal[2]["id"])
    new = {"Last_Name": "Rt15", "Email": "rt15-new-3f1a@example.com", "Company": "Rt15",
           "Data_Processing_Basis_Details": CONSENT}  # fmt: skip
    subs = [
        {"method": "POST", "uri": "/crm/v8/Leads/upsert", "body": {"data": [new]}},
        {"method": "PUT", "uri": f"/crm/v8/Leads/{normal[1]['id']}",
         "body": {"data": [{"Company": "Rt15"}]}},
        {"method": "POST", "uri": "/crm/v8/Leads", "body": {"data": [dict(new, Email=None)]}},
        {"method": "POST", "uri": f"/crm/v8/Leads/{lead['id']}/actions/convert",
         "body": {"data": [{}]}},
        {"method": "DELETE", "uri": "/crm/v8/Leads", "params": {"ids": normal[3]["id"]}},
    ]  # fmt: skip
    r = send(gw, "POST", "/crm/v8/__composite_requests", {"__composite_requests": subs})
    assert r.status_code == 200, r.text
    bodies = [s["details"]["response"]["body"]["data"][0] for s in r.json()["__composite_requests"]]
    assert [b["message"] for b in bodies] == [
        "record added", "record updated", "record added",
        "The record has been converted successfully", "record deleted"]  # fmt: skip
    assert bodies[0]["action"] == "insert" and "duplicate_field" in bodies[0]
    assert all(b["details"]["id"] for i, b in enumerate(bodies) if i != 3)
    made = bodies[3]["details"]
    assert made["Accounts"]["name"] and made["Contacts"]["id"]
    contact = crm.one("Contacts", made["Contacts"]["id"])
    assert contact["Full_Name"]
    no_mark(r, contact["Full_Name"])


def test_held_a_value_beside_a_composite_sub_requests_details_is_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """The checks of a write's answer hold inside a composite: a restricted Email beside
    the update's ``details`` (``note``) and under a field (``Email``) is withheld."""
    lead = marked.lead
    entry = _entry({"id": lead["id"]})
    entry["note"] = lead["Email"]
    _answer(crm, f"/Leads/{lead['id']}", "PUT", {"data": [entry], "Email": lead["Email"]})
    subs = [{"method": "PUT", "uri": f"/crm/v8/Leads/{lead['id']}",
             "body": {"data": [{"Company": "Rt15"}]}}]  # fmt: skip
    r = send(gw, "POST", "/crm/v8/__composite_requests", {"__composite_requests": subs})
    assert r.status_code == 200 and '"code":"SUCCESS"' in r.text, r.text
    assert "record updated" in r.text  # the CRM's answer came back
    no_mark(r, lead["Email"])
    marked.assert_audit_clean(gw)


def test_held_a_mass_update_by_view_in_the_sandboxs_shape_keeps_its_job_id(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """The scheduled answer inside ``data`` (the sandbox's shape) keeps its job id, and
    the job's status is served whole through the gateway."""
    gw = make_gateway(BY_CVID)
    body = {"data": [{"Company": "Rt15"}], "cvid": "5725767000000087501"}
    r = send(gw, "POST", "/crm/v8/Leads/actions/mass_update", body)
    assert r.status_code == 200, r.text
    entry = r.json()["data"][0]
    assert entry["message"] == "mass update scheduled successfully", r.text
    job_id = entry["details"]["job_id"]
    assert job_id, r.text
    status = gw.http.get("/crm/v8/Leads/actions/mass_update", params={"job_id": job_id})
    assert status.status_code == 200, status.text
    assert status.json()["data"][0]["Status"] == "COMPLETED", status.text


def test_held_a_bulk_read_status_with_dates_and_times_in_its_criteria_passes_whole(
    crm: Crm, gw: GatewayHandle
) -> None:
    """``between`` with two times, a date and a number: every one is a token or a time."""
    criteria = {"group_operator": "and", "group": [
        {"api_name": "Created_Time", "comparator": "between",
         "value": ["2019-01-01T00:00:00+05:30", "2019-12-31T23:59:59+05:30"]},
        {"api_name": "Annual_Revenue", "comparator": "greater_than", "value": 1000},
        {"api_name": "Lead_Source", "comparator": "equal", "value": "Cold Call"}]}  # fmt: skip
    job = _bulk_read_job(criteria)
    _answer(crm, "/bulk/v8/read/4150868000004716016", "GET", {"data": [job], "info": {}})
    r = gw.http.get("/crm/bulk/v8/read/4150868000004716016")
    assert r.status_code == 200, r.text
    assert r.json() == {"data": [job], "info": {}}, r.text
