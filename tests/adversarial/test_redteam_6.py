"""Sixth red team: the changes of fed4c4b (levels of what a nested object withholds, the
derived Full_Name and a lookup's name, the walk of a write's answer, bulk-write jobs of
every operation, related-list writes) and what lies near them.

Every test drives the real gateway over HTTP against the sandbox CRM and asserts what a
user would check: a withheld value never reaches the client, a refused request never
reaches the CRM.

Part (A): FINDINGS, each failing against fed4c4b (docstrings say where, as it was then),
fixed in the commit that added this file.
Part (B): attacks that HELD, kept as coverage.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.adversarial.conftest import (
    field_metadata,
    no_mark,
    patient_and_lead,
    send,
    set_field_metadata,
)
from tests.conftest import Crm, GatewayHandle, MakeGateway

MARK = "rt6-mark-5d0e@example.com"
COQL = "/crm/v8/coql"


# -- helpers ------------------------------------------------------------------------------












def _free_lead(crm: Crm) -> str:
    return next(r["id"] for r in crm.records("Leads") if r["$stop_processing"] is False)


# =========================================================================================
# (A) FINDINGS: these failed against fed4c4b; fixed since
# =========================================================================================


@pytest.mark.parametrize(
    ("query", "module"),
    [
        ("select Name, Referring_Lead from Patients where Referring_Lead is not null", "Leads"),
        ("select Subject, Who_Id from Tasks where Who_Id is not null", "Contacts"),
    ],
    ids=["patient-referring-lead", "task-who-id"],
)
def test_a_coql_lookup_column_withholds_the_name_when_the_targets_name_field_is_withheld(
    crm: Crm, gw: GatewayHandle, query: str, module: str
) -> None:
    """A whole lookup column of a COQL answer is redacted at level NESTED, not LOOKUP:
    redact.py ``redact_coql_rows`` -> ``redact_rows(row[key], action, counts, 3)`` (level
    defaults to NESTED), so ``MaskPlan.name_field`` is never applied. The lookup's ``name``
    is the target's Full_Name ("First Last", First_Name private and not shown): the record
    API withholds it (README "a lookup's name ... is withheld"), COQL hands it out. No
    fault needed: the sandbox answers so."""
    r = send(gw, "POST", COQL, {"select_query": query + " limit 5"})
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    assert rows
    column = query.split()[2]
    for row in rows:
        look = row[column]
        target = crm.one(module, look["id"])
        assert target["First_Name"] and target["Full_Name"]
        assert look.get("name") is None, (look, "is", target["Full_Name"])


def test_a_coql_lookup_column_withholds_keys_no_metadata_describes(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Same root cause as above: the lookup object of a COQL column is walked at level
    NESTED, so a key no metadata describes (README: withheld "in a lookup's object") goes
    out; the record API withholds the same object's key (test_redteam_5)."""
    look = {"name": "n", "id": "5725767000000502257", "Unlisted_Field": MARK}
    answer = {"data": [{"id": "1", "Name": "n", "Referring_Lead": look}],
              "info": {"count": 1, "more_records": False}}  # fmt: skip
    crm.fault(path_contains=COQL, method="POST", status=200, json=answer, times=1)
    q = "select Name, Referring_Lead from Patients where Name is not null limit 1"
    r = send(gw, "POST", COQL, {"select_query": q})
    assert r.status_code in (200, 502), r.text
    no_mark(r, MARK)


def test_a_multiselectlookup_value_withholds_names_and_unknown_keys(
    crm: Crm, gw: GatewayHandle
) -> None:
    """A lookup value that is a list (a ``multiselectlookup``, which redact.py ``LOOKUPS``
    lists) goes through ``_redact_inside``'s ``else: _redact_nested(value, ...)``: each
    object is redacted at level NESTED, never LOOKUP, so neither the target's withheld
    name (``name_field``) nor keys no metadata describes are withheld. The same lead under
    the single Referring_Lead of the same record has its name withheld."""
    patient, lead = patient_and_lead(crm)
    fields = field_metadata(crm, "Patients")
    multi = dict(next(f for f in fields if f["api_name"] == "Referring_Lead"))
    multi.update(api_name="Other_Leads", data_type="multiselectlookup", id="5725767000009999001")
    set_field_metadata(crm, "Patients", [*fields, multi])
    value = [{"name": lead["Full_Name"], "id": lead["id"], "Unlisted_Field": MARK}]
    crm.edit("Patients", patient["id"], Other_Leads=value)
    r = gw.http.get(f"/crm/v8/Patients/{patient['id']}")
    assert r.status_code == 200, r.text
    rec = r.json()["data"][0]
    assert rec["Referring_Lead"]["name"] is None  # the single lookup: withheld
    no_mark(r, MARK)
    assert lead["First_Name"] not in json.dumps(rec["Other_Leads"]), rec["Other_Leads"]


@pytest.mark.parametrize("missing", ["First_Name", "Full_Name"])
def test_a_derived_name_is_withheld_when_the_metadata_lacks_one_of_its_fields(
    crm: Crm, gw: GatewayHandle, missing: str
) -> None:
    """catalog.py ``_with_derived`` judges Full_Name only from parts the metadata lists
    (``if info is None or not marks: continue``), and redact.py ``build_plan`` finds the
    name field only among listed fields (``catalog.fields.get(n)``). The gateway does
    withhold the unlisted field itself (a key no metadata describes), but not its value
    inside the derived one:
    - First_Name unlisted: a lead's First_Name is null, its Full_Name "First Last" is shown;
    - Full_Name unlisted (First_Name private): a lead's Full_Name is withheld, but a
      lookup's ``name`` into Leads (that same value) is kept, as ``name_field`` is ""."""
    first = "Rt6firstmark"
    patient, lead = patient_and_lead(crm)
    if missing == "First_Name":
        put = crm.http.put(f"/crm/v2/Leads/{lead['id']}", json={"data": [{"First_Name": first}]})
        assert put.status_code == 200 and first in crm.one("Leads", lead["id"])["Full_Name"]
    else:
        first = lead["First_Name"]  # the name the patient's lookup holds
    fields = field_metadata(crm, "Leads")
    set_field_metadata(crm, "Leads", [f for f in fields if f["api_name"] != missing])
    if missing == "First_Name":
        r = gw.http.get(f"/crm/v8/Leads/{lead['id']}")
        assert r.status_code == 200, r.text
        rec = r.json()["data"][0]
        assert rec["First_Name"] is None  # withheld as undescribed...
        assert first not in str(rec["Full_Name"]), rec["Full_Name"]  # ...and shown here
    else:
        r = gw.http.get(f"/crm/v8/Leads/{lead['id']}")
        assert r.json()["data"][0]["Full_Name"] is None  # withheld as undescribed...
        r = gw.http.get(f"/crm/v8/Patients/{patient['id']}")
        assert r.status_code == 200, r.text
        look = r.json()["data"][0]["Referring_Lead"]
        assert first not in json.dumps(look), look  # ...and shown as the lookup's name


def test_a_write_answer_that_is_not_an_object_is_not_passed_unchecked(
    crm: Crm, gw: GatewayHandle
) -> None:
    """redact.py ``redact_write_answer`` starts with ``if not isinstance(body, dict):
    return``: an answer of another shape (here a list of records) is not checked, nothing
    is counted, and forward.py ``_rewritten`` sends the CRM's raw bytes. A read's answer of
    that shape is refused (``redact_body`` raises UnreadableUpstream); rule 5 (default
    deny) says the same for a write's."""
    lid = _free_lead(crm)
    answer = [{"id": lid, "Email": MARK}]
    crm.fault(path_contains=f"/crm/v8/Leads/{lid}", method="PUT", status=200, json=answer, times=1)
    r = send(gw, "PUT", f"/crm/v8/Leads/{lid}", {"data": [{"Last_Name": "Same"}]})
    assert r.status_code in (200, 502), r.text
    no_mark(r, MARK)


@pytest.mark.parametrize("where", ["read-beside-data", "write-entry-member", "write-beside-data"])
def test_a_private_fields_value_beside_the_records_is_withheld(
    crm: Crm, gw: GatewayHandle, where: str
) -> None:
    """README: "everything else in an answer is looked into with the module's fields: ...
    a member beside data". Only *objects* beside the records are: redact.py
    ``redact_beside_data`` / ``_redact_object`` -> ``_redact_nested``, which leaves
    scalars as they are. A private field's value as a scalar member (``"Email": ...``)
    beside ``data``, or of a write's entry beside ``details``, goes out, while the same
    member in an answer without ``data`` (checked as one record) is withheld."""
    lid = _free_lead(crm)
    if where == "read-beside-data":
        answer: Any = {"data": [{"id": lid, "Last_Name": "x"}], "Email": MARK, "info": {}}
        crm.fault(path_contains="/crm/v8/Leads", method="GET", status=200, json=answer, times=1)
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"})
    else:
        entry = {"code": "SUCCESS", "status": "success", "message": "record updated",
                 "details": {"id": lid}}  # fmt: skip
        answer = {"data": [entry]}
        if where == "write-entry-member":
            entry["Email"] = MARK
        else:
            answer["Email"] = MARK
        crm.fault(
            path_contains=f"/crm/v8/Leads/{lid}", method="PUT", status=200, json=answer, times=1
        )
        r = send(gw, "PUT", f"/crm/v8/Leads/{lid}", {"data": [{"Last_Name": "Same"}]})
    assert r.status_code in (200, 502), r.text
    no_mark(r, MARK)


def test_a_search_on_a_lookup_by_its_targets_restricted_name_is_refused(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """With the policy making Leads.First_Name restricted, Full_Name is restricted too
    (catalog.DERIVED) and ``(Full_Name:starts_with:..)`` is refused. But a criterion on a
    lookup into Leads is matched by the CRM against the lookup's name, that is the lead's
    Full_Name (the sandbox: "A lookup matches by id, or by (part of) its display name"),
    and guards.py ``check_paths`` only looks at the lookup field itself (public): the
    search is forwarded and which patients it returns tells the restricted name, letter by
    letter. A criterion on the lookup is one on its name, as README says of the value."""
    _patient, lead = patient_and_lead(crm)
    gw = make_gateway({"modules": {"Leads": {"private": {"First_Name": "restricted"}}}})
    direct = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Full_Name:starts_with:S)"})
    assert direct.status_code == 400, direct.text  # the name itself is guarded
    crm.clear()
    crit = f"(Referring_Lead:starts_with:{lead['First_Name']})"
    r = gw.http.get("/crm/v8/Patients/search", params={"criteria": crit})
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert crm.received("/search") == []


# =========================================================================================
# (B) HELD: attacks the gateway withstood
# =========================================================================================


def test_held_a_record_reads_lookup_name_is_withheld_in_any_spelling(
    crm: Crm, gw: GatewayHandle
) -> None:
    patient, lead = patient_and_lead(crm)
    for key in ("name", "NAME", "Name"):
        look = {key: lead["Full_Name"], "id": lead["id"], "Unlisted": MARK}
        crm.edit("Patients", patient["id"], Referring_Lead=look)
        r = gw.http.get(f"/crm/v8/Patients/{patient['id']}")
        assert r.status_code == 200, r.text
        no_mark(r, MARK)
        assert lead["Full_Name"] not in json.dumps(r.json()["data"][0]["Referring_Lead"])


@pytest.mark.parametrize(
    "query",
    [
        "select Referring_Lead.Full_Name, Referring_Lead.First_Name from Patients limit 3",
        "select Who_Id.Full_Name from Tasks limit 3",
        "select Full_Name from Leads limit 3",
    ],
)
def test_held_coql_full_name_columns_are_withheld(crm: Crm, gw: GatewayHandle, query: str) -> None:
    r = send(gw, "POST", COQL, {"select_query": query})
    assert r.status_code == 200, r.text
    for row in r.json()["data"]:
        assert all(v is None for k, v in row.items() if k != "id"), row


@pytest.mark.parametrize(
    "how",
    [
        ("criteria", "(full_name:starts_with:S)"),
        ("coql", "select Last_Name from Leads where Full_Name like 'S%' limit 1"),
        ("coql", "select Last_Name from Leads where Last_Name is not null order by FULL_NAME"),
        ("sort_by", "Full_Name"),
    ],
    ids=["criteria", "coql-where", "coql-order-by", "sort-by"],
)
def test_held_a_full_name_made_restricted_by_a_policy_override_is_guarded(
    crm: Crm, make_gateway: MakeGateway, how: tuple[str, str]
) -> None:
    gw = make_gateway({"modules": {"Leads": {"private": {"Last_Name": "high"}}}})  # Low + High
    crm.clear()
    kind, text = how
    if kind == "criteria":
        r = gw.http.get("/crm/v8/Leads/search", params={"criteria": text})
    elif kind == "coql":
        r = send(gw, "POST", COQL, {"select_query": text})
    else:
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "sort_by": text})
    assert r.status_code == 400, r.text
    assert [x for x in crm.received("/crm/v8/") if "Leads" in x["path"] or "coql" in x["path"]
            if "settings" not in x["path"]] == []  # fmt: skip


def test_held_a_write_answers_odd_shapes_are_502_not_a_crash(crm: Crm, gw: GatewayHandle) -> None:
    lid = _free_lead(crm)
    deep: Any = {"Email": MARK}
    for _ in range(100):  # past MAX_DEPTH (64), within orjson's limit
        deep = [deep]
    for answer in ({"data": deep}, {"data": {"details": {"id": lid, "Email": MARK}}},
                   {"data": [{"details": [[{"Email": MARK}]]}]}):  # fmt: skip
        crm.fault(
            path_contains=f"/crm/v8/Leads/{lid}", method="PUT", status=200, json=answer, times=1
        )
        r = send(gw, "PUT", f"/crm/v8/Leads/{lid}", {"data": [{"Last_Name": "Same"}]})
        assert r.status_code in (200, 502), r.text
        no_mark(r, MARK)


@pytest.mark.parametrize(
    "job",
    [
        {"Operation": "INSERT", "resource": [{"type": "data", "module": "Notes",
                                              "file_id": "5725767000000999999"}]},
        {"operation": "update", "resource": [{"type": "data", "module": "Leads",
                                              "file_id": "5725767000000999999",
                                              "FIND_BY": "Email"}]},
    ],
    ids=["insert-unknown-file", "find-by-upper-case"],
)  # fmt: skip
def test_held_bulk_write_job_spellings_are_refused(
    crm: Crm, gw: GatewayHandle, job: dict[str, Any]
) -> None:
    crm.clear()
    r = send(gw, "POST", "/crm/bulk/v8/write", job)
    assert r.status_code in (400, 403), r.text
    assert crm.received("/crm/bulk/") == []


def test_held_a_related_delink_naming_a_stopped_lead_in_ids_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    leads = crm.records("Leads")
    free = next(r["id"] for r in leads if r["$stop_processing"] is False)
    stopped = next(r["id"] for r in leads if r["$stop_processing"] is True)
    campaign = crm.http.get("/crm/v2/Campaigns").json()["data"][0]["id"]
    crm.clear()
    r = gw.http.delete(f"/crm/v8/Campaigns/{campaign}/Leads/{free}", params={"ids": stopped})
    assert r.status_code == 400 and "stop_processing" in r.text, r.text
    assert [x for x in crm.received("/Campaigns/") if x["method"] == "DELETE"] == []
