"""Seventh red team: the changes of fed4c4b and 3cd0734 (what an answer withholds beside
its records, derived names, a lookup's name and criteria on a lookup) and what lies near.

Every test drives the real gateway over HTTP against the sandbox CRM and asserts what a
user would check: a withheld value never reaches the client, a refused request never
reaches the CRM.

Part (A): FINDINGS, each failing against 3cd0734 (docstrings say where, as it was then),
fixed in the commit that added this file.
Part (B): attacks that HELD, kept as coverage.
"""

from __future__ import annotations

import io
import json
import zipfile
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

MARK = "rt7-mark-8c41@example.com"
COQL = "/crm/v8/coql"










def _call_to_a_lead(crm: Crm) -> tuple[dict[str, Any], dict[str, Any]]:
    leads = {r["id"]: r for r in crm.records("Leads")}
    call = next(c for c in crm.records("Calls") if (c.get("Who_Id") or {}).get("id") in leads)
    return call, leads[call["Who_Id"]["id"]]


#: Leads' First_Name restricted (so Full_Name, a lead's name, is too); Low shown, so a
#: Contact's Full_Name (First_Name private Low) is shown to this client
RESTRICT_LEAD_NAME = {"redaction": {"show": ["low"]},
                      "modules": {"Leads": {"private": {"First_Name": "restricted"}}}}  # fmt: skip




def _csv_of_export(gw: GatewayHandle, query: dict[str, Any]) -> str:
    job = gw.http.post("/crm/bulk/v8/read", json={"query": query})
    assert job.status_code == 201, job.text
    job_id = job.json()["data"][0]["details"]["id"]
    r = gw.http.get(f"/crm/bulk/v8/read/{job_id}/result")
    assert r.status_code == 200, r.text[:300]
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        return z.read(z.namelist()[0]).decode("utf-8-sig")


# =========================================================================================
# (A) FINDINGS: these failed against 3cd0734; fixed since
# =========================================================================================


def test_a_lookup_name_of_a_record_outside_the_lookups_metadata_module_is_withheld(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """A call's Who_Id names a Lead (the CRM's Who_Id takes Leads as well as the Contacts
    its metadata names: sandbox schema.EXTRA_LOOKUP_TARGETS, seeded calls to leads; the
    gateway itself knows a write's Who_Id may name any module, privacy/writes.parent_ids).
    redact.py ``build_plan`` judges the lookup's ``name`` with the plan of the metadata's
    target only (Contacts, whose Full_Name is private Low and shown here), so the lead's
    Full_Name, restricted by the policy and withheld when the lead itself is read, goes out
    as ``Who_Id.name`` (README: a lookup's name is withheld when its target's name field
    is; restricted fields are always withheld)."""
    call, lead = _call_to_a_lead(crm)
    gw = make_gateway(RESTRICT_LEAD_NAME)
    own = gw.http.get(f"/crm/v8/Leads/{lead['id']}")
    assert own.status_code == 200 and own.json()["data"][0]["Full_Name"] is None  # withheld
    r = gw.http.get(f"/crm/v8/Calls/{call['id']}")
    assert r.status_code == 200, r.text
    who = r.json()["data"][0]["Who_Id"]
    assert who["id"] == lead["id"]
    assert lead["First_Name"] not in json.dumps(who), (who, "is the restricted", lead["Full_Name"])


@pytest.mark.parametrize("how", ["search", "bulk-read"])
def test_a_criterion_on_a_lookup_naming_a_record_of_another_module_is_refused(
    crm: Crm, make_gateway: MakeGateway, how: str
) -> None:
    """guards.py ``_looked_up_name`` judges a criterion on Who_Id by its metadata target
    (Contacts: name not restricted), but the CRM matches it against whatever record the
    lookup names, a Lead too, whose Full_Name the policy restricts: the criterion is
    forwarded and which calls come back tells the restricted name letter by letter. The
    same criterion on Leads' own Full_Name is refused."""
    _call, lead = _call_to_a_lead(crm)
    gw = make_gateway(RESTRICT_LEAD_NAME)
    direct = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Full_Name:starts_with:A)"})
    assert direct.status_code == 400, direct.text
    crm.clear()
    if how == "search":
        crit = f"(Who_Id:starts_with:{lead['First_Name']})"
        r = gw.http.get("/crm/v8/Calls/search", params={"criteria": crit})
        sent = crm.received("/Calls/search")
    else:
        criteria = {"api_name": "Who_Id", "comparator": "starts_with", "value": lead["First_Name"]}
        query = {"module": {"api_name": "Calls"}, "criteria": criteria}
        r = gw.http.post("/crm/bulk/v8/read", json={"query": query})
        sent = crm.received("/crm/bulk/v8/read")
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert sent == []


@pytest.mark.parametrize("where", ["record-read", "coql-twin", "coql-only-Data"])
def test_records_under_data_spelled_in_another_case_are_checked_as_records(
    crm: Crm, gw: GatewayHandle, where: str
) -> None:
    """redact.py ``redact_body`` / ``redact_beside_data`` and the COQL handler look for
    ``"data"`` in that case only. ``"Data"`` beside it (or instead of it) is walked as a
    plain nested object (level NESTED): keys no metadata describes stay, and a COQL row's
    ``Lookup.Field`` key (here ``Referring_Lead.First_Name``, private) is no field of the
    module, so it stays too. Clients that bind JSON members case-insensitively (Go's
    encoding/json; a later member wins) read these rows as the answer's data."""
    if where == "record-read":
        lid = crm.records("Leads")[0]["id"]
        rows: Any = [{"id": lid, "Last_Name": "x", "Unlisted_Field": MARK}]
        answer: Any = {"data": [{"id": lid, "Last_Name": "x"}], "Data": rows, "info": {}}
        crm.fault(path_contains="/crm/v8/Leads", method="GET", status=200, json=answer, times=1)
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"})
    else:
        rows = [{"id": "1", "Name": "n", "Referring_Lead.First_Name": MARK}]
        clean = [{"id": "1", "Name": "n", "Referring_Lead.First_Name": None}]
        answer = {"data": clean} if where == "coql-twin" else {}
        answer.update({"Data": rows, "info": {"count": 1, "more_records": False}})
        crm.fault(path_contains=COQL, method="POST", status=200, json=answer, times=1)
        q = "select Name, Referring_Lead.First_Name from Patients where Name is not null limit 1"
        r = send(gw, "POST", COQL, {"select_query": q})
    assert r.status_code in (200, 502), r.text
    no_mark(r, MARK)


def test_field_metadata_naming_a_field_twice_is_judged_by_the_more_private(
    crm: Crm, gw: GatewayHandle
) -> None:
    """catalog.py ``parse_fields`` keys fields by their lower-cased api_name and the last
    one wins: metadata listing First_Name (private Low) and then FIRST_NAME (public) makes
    the gateway show a lead's First_Name, and Full_Name with it (``_with_derived`` sees a
    public part). Record keys are matched case-insensitively, so the metadata cannot tell
    which entry a key is: the gateway cannot tell, and must fail closed (rule 6), not pick
    the public reading."""
    lead = crm.records("Leads")[0]
    assert lead["First_Name"]
    fields = field_metadata(crm, "Leads")
    first = next(f for f in fields if f["api_name"] == "First_Name")
    assert first["private"] is not None
    twin = dict(first, api_name="FIRST_NAME", private=None, id="5725767000009999002")
    set_field_metadata(crm, "Leads", [*fields, twin])
    r = gw.http.get(f"/crm/v8/Leads/{lead['id']}")
    assert r.status_code in (200, 503), r.text
    if r.status_code == 200:
        rec = r.json()["data"][0]
        assert rec["First_Name"] is None, rec["First_Name"]
        assert lead["First_Name"] not in str(rec["Full_Name"]), rec["Full_Name"]


def test_a_bulk_export_withholds_a_multiselect_lookups_names(crm: Crm, gw: GatewayHandle) -> None:
    """A bulk-read CSV writes a multi-select lookup's cell as its objects' names (sandbox
    bulk_read.csv_cell). handlers/bulk.py ``_blanker`` empties a column only for a private
    field on its path, so ``Other_Leads`` (public, into Leads) keeps the leads' Full_Name,
    private since First_Name is (Low, not shown). The record API withholds the same names
    (README: "This holds for every object of a multi-select lookup")."""
    patient, lead = patient_and_lead(crm)
    fields = field_metadata(crm, "Patients")
    multi = dict(next(f for f in fields if f["api_name"] == "Referring_Lead"))
    multi.update(api_name="Other_Leads", data_type="multiselectlookup", id="5725767000009999001")
    set_field_metadata(crm, "Patients", [*fields, multi])
    crm.edit("Patients", patient["id"], Other_Leads=[{"name": lead["Full_Name"], "id": lead["id"]}])
    r = gw.http.get(f"/crm/v8/Patients/{patient['id']}")
    assert r.status_code == 200, r.text
    assert lead["First_Name"] not in json.dumps(r.json()["data"][0]["Other_Leads"])  # withheld
    text = _csv_of_export(gw, {"module": {"api_name": "Patients"},
                               "fields": ["Name", "Other_Leads"]})  # fmt: skip
    assert text.startswith("id,Name,Other_Leads"), text[:200]
    assert lead["First_Name"] not in text, text[:300]


# =========================================================================================
# (B) HELD: attacks the gateway withstood
# =========================================================================================


@pytest.mark.parametrize(
    "query",
    [
        "select Name, Referring_Lead as rl from Patients where Referring_Lead is not null limit 5",
        "select Referring_Lead, COUNT(id) from Patients where Referring_Lead is not null"
        " group by Referring_Lead limit 5",
    ],
    ids=["alias", "group-by"],
)
def test_held_a_coql_lookup_column_under_an_alias_or_grouped_withholds_the_name(
    crm: Crm, gw: GatewayHandle, query: str
) -> None:
    r = send(gw, "POST", COQL, {"select_query": query})
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    assert rows
    for row in rows:
        look = row.get("rl") or row.get("Referring_Lead")
        assert look["id"] and look["name"] is None, row


def test_held_an_aggregate_over_a_whole_lookup_fails_closed(crm: Crm, gw: GatewayHandle) -> None:
    r = send(
        gw, "POST", COQL, {"select_query": "select MAX(Referring_Lead) from Patients limit 2"}
    )
    assert r.status_code in (400, 502), r.text


@pytest.mark.parametrize(
    "how",
    [
        ("coql", "select Name from Patients where Referring_Lead like 'S%' limit 2"),
        ("coql", "select Name from Patients where Referring_Lead.Referrer = 'x' limit 2"),
        ("criteria", "(Referring_Lead:in:Sharon Flores,David Thompson)"),
    ],
    ids=["coql-like", "coql-lookup-through-lookup", "criteria-in"],
)
def test_held_criteria_on_lookups_into_restricted_names_are_refused(
    crm: Crm, make_gateway: MakeGateway, how: tuple[str, str]
) -> None:
    first = {"private": {"First_Name": "restricted"}}
    gw = make_gateway({"modules": {"Leads": first, "Contacts": first}})
    crm.clear()
    kind, text = how
    if kind == "coql":
        r = send(gw, "POST", COQL, {"select_query": text})
    else:
        r = gw.http.get("/crm/v8/Patients/search", params={"criteria": text})
    assert r.status_code == 400 and "Full_Name" in r.text, r.text
    assert crm.received("/coql") == [] and crm.received("/search") == []


def test_held_data_that_is_not_a_list_fails_closed(crm: Crm, gw: GatewayHandle) -> None:
    lid = crm.records("Leads")[0]["id"]
    for data in ({"id": lid, "Email": MARK}, MARK):
        answer = {"data": data, "info": {}}
        crm.fault(path_contains="/crm/v8/Leads", method="GET", status=200, json=answer, times=1)
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"})
        assert r.status_code == 502, r.text
        no_mark(r, MARK)
