"""Fifth red team: answer shapes outside the paths the redactor walked, values the
metadata does not describe below the top level, a derived field carrying a private one,
metadata that lists too little, and a bulk-write job kind that was never re-checked.

Every test drives the real gateway over HTTP against the sandbox CRM (faults injected
with ``crm.fault``, metadata replaced with ``/_sandbox/metadata``) and asserts what a user
would check: the marker never reaches the client, a refused request never reaches the
CRM, nothing is written under a record in stop processing.

Part (A): each of these failed against commit 88ad9da, the code the red team attacked
(their docstrings say where, as it was then), and holds since the fixes that followed.
Part (B): attacks tried that the gateway withstood then, kept as coverage.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import (
    Marked,
    field_metadata,
    leads_by_state,
    no_mark,
    send,
    set_field_metadata,
    zip_of,
)
from tests.conftest import AUTH, Crm, GatewayHandle

MARK = "rt5-mark-77c1@example.com"
COQL = "/crm/v8/coql"
QUERY = "select Last_Name from Leads where Last_Name is not null limit 1"


# -- helpers ------------------------------------------------------------------------------


# =========================================================================================
# (A) FINDINGS: these failed against 88ad9da; fixed since
# =========================================================================================


@pytest.mark.parametrize(
    "answer",
    [
        {"data": [{"id": "1", "Last_Name": "x"}], "extra": [{"id": "2", "Email": MARK}]},
        {"rows": [{"id": "1", "Last_Name": "x", "Email": MARK}]},
        {"data": [{"id": "1", "Last_Name": "x"}], "info": {"Email": MARK}},
    ],
    ids=["records-beside-data", "records-without-data", "value-in-info"],
)
def test_a_private_value_outside_a_coql_answers_rows_is_withheld(
    crm: Crm, gw: GatewayHandle, answer: dict[str, Any]
) -> None:
    """handlers/coql.py ``rewrite`` only redacts ``parsed["data"]``: any other member of a
    COQL answer (or a whole answer without ``data``) goes out unchecked, while a record read
    redacts every member beside ``data`` (redact.py ``redact_body``)."""
    crm.fault(path_contains=COQL, method="POST", status=200, json=answer, times=1)
    r = send(gw, "POST", COQL, {"select_query": QUERY})
    assert r.status_code in (200, 502), r.text
    no_mark(r, MARK)
    assert MARK not in gw.audit_text()


def test_a_private_value_in_a_record_answers_info_is_withheld(
    crm: Crm, gw: GatewayHandle
) -> None:
    """redact.py ``redact_body`` skips ``info`` by name: whatever the CRM puts there (here a
    field of the module with its value) is never looked at."""
    answer = {"data": [{"id": "1", "Last_Name": "x"}], "info": {"Email": MARK, "count": 1}}
    crm.fault(path_contains="/crm/v8/Leads", method="GET", status=200, json=answer, times=1)
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"})
    assert r.status_code in (200, 502), r.text
    no_mark(r, MARK)


@pytest.mark.parametrize("where", ["entry-member", "top-level-member"])
def test_a_private_value_outside_a_write_answers_details_is_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked, where: str
) -> None:
    """redact.py ``redact_write_answer`` checks ``data[].details`` only: a record in any
    other member of an entry, or of the answer, passes (json_reply sends the CRM's raw
    bytes when nothing was counted)."""
    lid = marked.lead["id"]
    entry: dict[str, Any] = {"code": "SUCCESS", "status": "success", "message": "record updated",
                             "details": {"id": lid}}  # fmt: skip
    answer: dict[str, Any] = {"data": [entry]}
    if where == "entry-member":
        entry["record"] = {"id": lid, "Email": MARK}
    else:
        answer["records"] = [{"id": lid, "Email": MARK}]
    crm.fault(path_contains=f"/crm/v8/Leads/{lid}", method="PUT", status=200, json=answer, times=1)
    r = send(gw, "PUT", f"/crm/v8/Leads/{lid}", {"data": [{"Last_Name": "Same"}]})
    assert r.status_code in (200, 502), r.text
    no_mark(r, MARK)


@pytest.mark.parametrize("where", ["subform-row", "lookup-object"])
def test_a_value_no_metadata_describes_is_withheld_in_a_subform_row_or_a_lookup(
    crm: Crm, gw: GatewayHandle, marked: Marked, where: str
) -> None:
    """A top-level key no metadata describes is withheld (a field created at the CRM since
    the metadata was fetched may be restricted). One level down it is kept: a subform row
    and a lookup object are walked with ``top=False`` (redact.py ``redact_record`` /
    ``MaskPlan.steps``: ``strange`` keys are nulled only in top-level records), so a new
    field of Lead_Visits, or one the CRM adds to a Contact lookup, goes out as it is. (A
    lookup whose target is unknown keeps only name and id: the known target is the weaker.)"""
    if where == "subform-row":
        row = marked.lead["Visits"][0]
        crm.edit("Lead_Visits", row["id"], Unlisted_Row_Field=MARK)
        r = gw.http.get(f"/crm/v8/Leads/{marked.lead['id']}")
    else:
        deal = crm.records("Deals")[0]
        value = {"name": "n", "id": marked.contact["id"], "Unlisted_Field": MARK}
        crm.edit("Deals", deal["id"], Contact_Name=value)
        r = gw.http.get(f"/crm/v8/Deals/{deal['id']}")
    assert r.status_code == 200, r.text
    no_mark(r, MARK)


def test_a_private_first_name_is_withheld_from_full_name_and_lookup_names(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """Leads.First_Name is private (Low, not shown by default) and comes back null, but the
    CRM's derived Full_Name (public in the metadata) is "First Last": the withheld value
    goes out beside its null. The same name is in every lookup's ``name`` that points to
    the lead (a subform row's Parent_Id here; Notes, Tasks, Deals elsewhere). No code knows
    that a public field is computed from a private one (privacy/redact.py ``build_plan``
    masks by each field's own ``private`` only)."""
    first = "Rt5firstmark"
    # written through the CRM's own API, which derives Full_Name (an admin edit does not)
    put = crm.http.put(f"/crm/v2/Leads/{marked.lead['id']}", json={"data": [{"First_Name": first}]})
    assert put.status_code == 200, put.text
    assert first in crm.one("Leads", marked.lead["id"])["Full_Name"]  # the CRM derives it
    r = gw.http.get(f"/crm/v8/Leads/{marked.lead['id']}")
    assert r.status_code == 200 and r.json()["data"][0]["First_Name"] is None, r.text
    no_mark(r, first)


def test_a_bulk_insert_job_cannot_attach_a_note_to_a_lead_stopped_since_upload(
    crm: Crm, gw: GatewayHandle
) -> None:
    """handlers/writes.py ``_bulk_write_job`` passes ``operation: insert`` straight through:
    the file is not checked again when the job runs (update and upsert jobs are), and a file
    the gateway never saw uploaded is not refused either. A Notes file whose Parent_Id named
    a free lead at upload inserts a note under it after it was put in stop processing,
    which the record API refuses (a note's parent is a write target)."""
    normal, _ = leads_by_state(crm)
    lead = normal[0]
    csv = f"Note_Title,Note_Content,Parent_Id\nT,rt5-bulk-note,{lead['id']}\n"
    up = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Notes.zip", zip_of("Notes.csv", csv), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert up.status_code == 200, up.text  # the lead was free when the file was uploaded
    file_id = up.json()["details"]["file_id"]
    crm.edit("Leads", lead["id"], **{"$stop_processing": True})
    assert crm.one("Leads", lead["id"])["$stop_processing"] is True
    # The record API refuses the same note now:
    note = {"Note_Content": "rt5-direct", "Parent_Id": {"id": lead["id"]}}
    direct = send(gw, "POST", "/crm/v8/Notes", {"data": [note]})
    assert direct.status_code == 400 and "stop_processing" in direct.text, direct.text
    resource = {"type": "data", "module": {"api_name": "Notes"}, "file_id": file_id}
    job = {"operation": "insert", "resource": [resource]}
    send(gw, "POST", "/crm/bulk/v8/write", job)
    notes = [n for n in crm.records("Notes") if n.get("Note_Content") == "rt5-bulk-note"]
    assert notes == [], "a note was attached to a lead in stop processing"


def test_sort_by_a_field_the_metadata_does_not_know_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    """A criterion on a field the cached metadata does not know is refused (it may be a
    restricted field created since); ``sort_by`` on the same field is forwarded:
    guards.py ``check_sort_params`` refuses only a field it finds restricted, so the order
    of the records discloses the new field's withheld values (COQL ``order by`` on it is
    refused by ``check_paths``)."""
    assert gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"}).status_code == 200
    new = {"api_name": "Secret_Score", "data_type": "text",
           "private": {"restricted": True, "type": "High", "export": True}}  # fmt: skip
    # created at the CRM after the fetch
    set_field_metadata(crm, "Leads", [*field_metadata(crm, "Leads"), new])
    crm.clear()
    refused = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Secret_Score:equals:a)"})
    assert refused.status_code == 400, refused.text  # the criteria guard fails closed
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "sort_by": "Secret_Score"})
    assert r.status_code == 400, r.text
    assert [x for x in crm.received("/crm/v8/Leads") if "sort_by" in str(x.get("query"))] == []


@pytest.mark.parametrize("metadata", ["204", "empty-list", "email-fields-missing"])
def test_an_email_search_fails_closed_when_the_field_metadata_lists_too_little(
    crm: Crm, gw: GatewayHandle, marked: Marked, metadata: str
) -> None:
    """``email=`` is refused when the module has a restricted email field, judged from the
    metadata alone (guards.py ``check_search_params`` over ``catalog.restricted()``). A
    field list that is empty (204, which catalog.py ``parse_fields`` takes as "a module
    without fields", or ``[]``) or lacks the email fields makes the search go through: the
    answer is nulled, but its ids tell which lead holds the email. A field list the
    gateway cannot trust should fail closed (503), as an unreadable one does."""
    if metadata == "204":
        crm.fault(path_contains="/settings/fields", method="GET", status=204, body="")
    elif metadata == "empty-list":
        crm.fault(path_contains="/settings/fields", method="GET", status=200, json={"fields": []})
    else:
        kept = [f for f in field_metadata(crm, "Leads") if f.get("data_type") != "email"]
        set_field_metadata(crm, "Leads", kept)
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search", params={"email": marked.lead["Email"]})
    assert r.status_code in (400, 503), r.text
    assert crm.received("/search") == []
    assert marked.lead["id"] not in r.text


# =========================================================================================
# (B) HELD: attacks tried that the gateway withstood
# =========================================================================================


def test_held_a_write_error_naming_a_private_field_with_its_value_is_scrubbed(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    lid = marked.lead["id"]
    err = {"code": "DUPLICATE_DATA", "status": "error", "message": "duplicate data",
           "details": {"api_name": "Email", "Email": MARK}}  # fmt: skip
    crm.fault(path_contains=f"/crm/v8/Leads/{lid}", method="PUT", status=400, json=err, times=1)
    r = send(gw, "PUT", f"/crm/v8/Leads/{lid}", {"data": [{"Last_Name": "Same"}]})
    no_mark(r, MARK)


@pytest.mark.parametrize(
    "raw",
    [
        # a JSON escape spelling a restricted field in a condition
        b'{"select_query": "select Last_Name from Leads where \\u0045mail = \'a@b.c\'"}',
        # two select_query members, one spelt with an escape: one key twice
        b'{"select_query": "' + QUERY.encode() + b'", "select_\\u0071uery": '
        b"\"select Last_Name from Leads where Email = 'a@b.c'\"}",
        # a restricted field through a lookup, and by alias in order by / group by
        b'{"select_query": "select Last_Name from Leads where Referrer.Email = \'a\'"}',
        b'{"select_query": "select Email as e, Last_Name from Leads where Last_Name = \'a\''
        b' order by e"}',
        b'{"select_query": "select COUNT(id) from Leads where Last_Name = \'a\' group by Mobile"}',
        # a keyword inside a string, then a comment
        b'{"select_query": "select Last_Name from Leads where Last_Name = \'x or Email\''
        b' -- and Email = 1"}',
        # a byte order mark before the body
        b"\xef\xbb\xbf"
        + orjson.dumps({"select_query": QUERY.replace("Last_Name is not null", "Email = 'a'")}),
    ],
    ids=[
        "escaped-name",
        "escaped-duplicate-key",
        "lookup-path",
        "alias-order-by",
        "group-by",
        "keyword-in-string-and-comment",
        "bom",
    ],
)
def test_held_coql_spellings_cannot_use_a_restricted_field(
    crm: Crm, gw: GatewayHandle, raw: bytes
) -> None:
    crm.clear()
    r = gw.http.post(COQL, content=raw)
    assert r.status_code == 400, r.text
    assert crm.received("/coql") == []


@pytest.mark.parametrize(
    "criteria",
    [
        "((Last_Name:equals:a)or((Mobile:starts_with:1)))",
        "(Referrer.Email:equals:a)",
        "(Last_Name:equals:a\\)or\\(Email:equals:b)",
        "(Em%61il:equals:a)",
        "(EMAIL:in:a,b)",
    ],
    ids=["nested", "lookup-path", "escaped-parens", "still-encoded-name", "upper-case"],
)
def test_held_criteria_spellings_cannot_use_a_restricted_field(
    crm: Crm, gw: GatewayHandle, criteria: str
) -> None:
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": criteria})
    assert r.status_code == 400, r.text
    assert crm.received("/search") == []


def test_held_bulk_read_criteria_with_an_escaped_field_name_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    raw = (
        b'{"query": {"module": {"api_name": "Leads"}, "criteria": {"field": '
        b'{"api_name": "\\u0045mail"}, "comparator": "equal", "value": "a"}}}'
    )
    crm.clear()
    r = gw.http.post("/crm/bulk/v8/read", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert crm.received("/crm/bulk/") == []


def test_held_a_field_list_without_a_restricted_field_still_nulls_it_at_top_level(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """The top-level counterpart of the subform finding: Email missing from the metadata
    is withheld as a key no metadata describes."""
    fields = field_metadata(crm, "Leads")
    set_field_metadata(crm, "Leads", [f for f in fields if f["api_name"] != "Email"])
    r = gw.http.get(f"/crm/v8/Leads/{marked.lead['id']}")
    assert r.status_code == 200, r.text
    assert marked.lead["Email"] not in r.text


def test_held_a_coql_error_echoing_another_records_value_is_scrubbed(
    crm: Crm, gw: GatewayHandle
) -> None:
    """A COQL error answer (400, no ``data``) echoing a value under a field key: scrubbed
    like any CRM error, although the COQL rewrite itself does not look at it."""
    err = {"code": "INVALID_QUERY", "status": "error", "message": "invalid query formed",
           "details": {"api_name": "Last_Name", "Email": MARK}}  # fmt: skip
    crm.fault(path_contains=COQL, method="POST", status=400, json=err, times=1)
    r = send(gw, "POST", COQL, {"select_query": QUERY})
    assert r.status_code in (400, 502), r.text
    no_mark(r, MARK)


def test_held_the_audit_of_refused_searches_holds_no_value(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    gw.http.get("/crm/v8/Leads/search", params={"email": marked.lead["Email"]})
    gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Email:equals:{MARK})"})
    send(gw, "POST", COQL, {"select_query": f"select Last_Name from Leads where Email = '{MARK}'"})
    gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "sort_by": MARK})
    assert gw.requests()
    text = gw.audit_text()
    assert MARK not in text and marked.lead["Email"] not in text
    assert AUTH["Authorization"].split()[-1] not in text


@pytest.mark.parametrize(
    ("sort_by", "status"),
    [("LAST_NAME", 200), ("ID", 200), ("id", 200), ("EMAIL", 400), ("Nope_Field", 400),
     ("Last_Name,", 400)],
)  # fmt: skip
def test_held_sort_by_is_judged_by_the_field_whatever_its_letter_case(
    crm: Crm, gw: GatewayHandle, sort_by: str, status: int
) -> None:
    """The review's attack on the sort_by fix: a known field in another case (and ``id``)
    is sorted by; a restricted one in another case, a name no field has, or an empty name
    after a comma is refused before the CRM."""
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "sort_by": sort_by})
    assert r.status_code == status, r.text
    sent = [x for x in crm.received("/crm/v8/Leads") if "sort_by" in str(x.get("query"))]
    assert len(sent) == (1 if status == 200 else 0)
