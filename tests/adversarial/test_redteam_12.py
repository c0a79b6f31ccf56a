"""Twelfth red team: the fixes of 9279a0a (related-list links and delinks refused where a
restricted lookup could define the list, ``X-Gateway-Key`` as a query parameter refused,
a bulk CSV header cell that is no field name refused) and the answers of writes.

Every test drives the real gateway over HTTP against the sandbox CRM; where the CRM's
answer must carry a marker, the sandbox's fault injection (``/_sandbox/faults``) answers
with it once.

Part (A): FINDINGS, each failing against 9279a0a, fixed in the commit that added this file.
Part (B): attacks that HELD, kept as coverage (each first checks that what it goes after
is really there, so it could fail).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import Marked, no_mark, send, zip_of
from tests.conftest import Crm, GatewayHandle, MakeGateway

MARK = "rt12-mark-9c41@example.com"
KEY = "rt12-secret-gateway-key-70e2"
COMPOSITE = "/crm/v8/__composite_requests"
#: Referrer (a Lead's lookup into Contacts) restricted: it may define GET /Contacts/{id}/Leads
REFERRER_RESTRICTED = {"modules": {"Leads": {"private": {"Referrer": "restricted"}}}}
#: a Patient's unique Insurance_Number restricted by the policy (the CRM marks it Low)
INSURANCE_RESTRICTED = {"modules": {"Patients": {"private": {"Insurance_Number": "restricted"}}}}
CONSENT = {"Data_Processing_Basis": "Consent"}


def _answer(crm: Crm, path: str, method: str, body: Any, status: int = 200) -> None:
    """The CRM answers the next ``method`` on ``path`` with ``body`` (JSON), once."""
    crm.fault(path_contains=path, method=method, status=status, body=orjson.dumps(body).decode(),
              content_type="application/json;charset=UTF-8", times=1)  # fmt: skip


def _entry(details: dict[str, Any]) -> dict[str, Any]:
    return {"code": "SUCCESS", "details": details, "message": "record updated", "status": "success"}


def _reached(crm: Crm, part: str, method: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in crm.received(part)
        if "/settings/" not in r["path"] and (method is None or r["method"] == method)
    ]


def _patient(crm: Crm) -> dict[str, Any]:
    found = next(p for p in crm.records("Patients") if p.get("Insurance_Number"))
    assert not found["$stop_processing"]
    return found


# =========================================================================================
# (A) FINDINGS: these fail against 9279a0a
# =========================================================================================


def test_a_convert_answer_does_not_name_the_new_contact(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK (no fault needed). A convert's answer (v3 on) is ``details: {"Contacts": {"name",
    "id"}, "Accounts": ..., "Deals": ...}``: the Contact's ``name`` is its Full_Name, the
    lead's "First_Name Last_Name" (First_Name private; a Contact's Full_Name is withheld on
    every read). writes.py ``_answer_plan`` (line 333) redacts the answer with the *Leads*
    plan, and redact.py ``redact_write_answer`` (line 459) walks ``details`` at ``NESTED``
    level: ``Contacts`` is no Leads field, so its object is read as a nested Leads object,
    whose ``name`` (no Leads field either) is kept. It should be a lookup into Contacts."""
    lead = marked.lead
    name = f"{lead['First_Name']} {lead['Last_Name']}"
    assert lead["First_Name"] and lead["Full_Name"] == name  # the lead's private name
    r = send(gw, "POST", f"/crm/v8/Leads/{lead['id']}/actions/convert", {"data": [{}]})
    assert r.status_code == 200, r.text
    made = r.json()["data"][0]["details"]["Contacts"]
    contact = crm.one("Contacts", made["id"])
    assert contact["Full_Name"] == name  # the CRM did make a contact of that name
    read = gw.http.get(f"/crm/v8/Contacts/{made['id']}", params={"fields": "Full_Name"})
    assert read.json()["data"][0]["Full_Name"] is None  # withheld on a read
    no_mark(r, lead["First_Name"])


def test_a_convert_into_an_existing_contact_does_not_name_it(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK (no fault needed), an oracle on any Contact: converting a free lead into Contact
    X answers with X's Full_Name (``details.Contacts.name``), withheld on every read. Same
    root cause: writes.py ``_answer_plan`` (line 333) redacts with the Leads plan and
    redact.py ``redact_write_answer`` (line 459) keeps what no Leads field describes."""
    contact = marked.contact
    assert contact["First_Name"] and contact["First_Name"] in contact["Full_Name"]
    read = gw.http.get(f"/crm/v8/Contacts/{contact['id']}", params={"fields": "Full_Name"})
    assert read.json()["data"][0]["Full_Name"] is None  # withheld on a read
    body = {"data": [{"Contacts": {"id": contact["id"]}}]}
    r = send(gw, "POST", f"/crm/v8/Leads/{marked.lead['id']}/actions/convert", body)
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["details"]["Contacts"]["id"] == contact["id"]
    no_mark(r, contact["First_Name"])


def test_a_related_write_answer_is_redacted_as_the_related_module(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK. ``PUT /Contacts/{cid}/Leads/{lid}`` answers with an entry for the *Lead*; the
    gateway redacts it with the plan of the path's module, Contacts (writes.py
    ``_answer_plan``, line 333: ``req.module``), so a Lead's restricted Mobile or private
    Secondary_Email, no Contacts fields, are kept (redact.py ``redact_write_answer``, line
    459, walks ``details`` at ``NESTED`` level, which withholds no unknown key)."""
    lead, contact = marked.lead, marked.contact
    direct = gw.http.get(f"/crm/v8/Leads/{lead['id']}", params={"fields": "Mobile"})
    assert direct.json()["data"][0]["Mobile"] is None  # withheld on a read
    details = {"id": lead["id"], "Mobile": MARK, "Secondary_Email": MARK}
    _answer(crm, f"/Contacts/{contact['id']}/Leads", "PUT", {"data": [_entry(details)]})
    r = send(gw, "PUT", f"/crm/v8/Contacts/{contact['id']}/Leads/{lead['id']}", None)
    assert r.status_code == 200, r.text
    assert "Mobile" in r.json()["data"][0]["details"]  # the CRM's entry came back
    no_mark(r, MARK)


def test_a_key_no_field_describes_in_a_write_answers_details_is_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK. README "keys no metadata describes" (a field created at the CRM since the
    metadata was fetched may be private) are withheld from a record of a read's ``data``;
    a write's ``details`` is a record of the module too, yet redact.py
    ``redact_write_answer`` (line 459) calls ``redact_record`` at the default ``NESTED``
    level, which keeps every unknown scalar key."""
    lead = marked.lead
    details = {"id": lead["id"], "Modified_Time": "2026-12-01T00:00:00+00:00", "Brand_New": MARK}
    _answer(crm, f"/Leads/{lead['id']}", "PUT", {"data": [_entry(details)]})
    r = send(gw, "PUT", f"/crm/v8/Leads/{lead['id']}", {"data": [{"Company": "Rt12"}]})
    assert r.status_code == 200, r.text
    assert "Brand_New" in r.json()["data"][0]["details"]
    no_mark(r, MARK)


@pytest.mark.parametrize(
    "method,url,fault_path",
    [
        pytest.param(
            "GET", "/crm/v8/Leads/actions/mass_update?job_id=111", "/actions/mass_update",
            id="mass-update-status",
        ),
        pytest.param(
            "GET", "/crm/bulk/v8/read/111", "/bulk/v8/read/111", id="bulk-read-status"
        ),
        pytest.param(
            "GET", "/crm/bulk/v8/write/111", "/bulk/v8/write/111", id="bulk-write-status",
        ),
        pytest.param("DELETE", "/crm/v8/Leads/{lid}", "/crm/v8/Leads/{lid}", id="delete"),
    ],
)
def test_a_answers_the_gateway_assumes_hold_no_values_are_still_checked(
    crm: Crm, gw: GatewayHandle, marked: Marked, method: str, url: str, fault_path: str
) -> None:
    """LEAK ("Check what you forward", "Nothing unverified passes, in either direction").
    Job statuses (pipeline.py line 42 ``_NO_VIEW``, line 99: ``passthrough``) and deletes
    (line 45 ``_PASS_WITH_VIEW``, line 112) are passed on with only their errors scrubbed
    (forward.py ``passthrough``, line 149): a record's private value in such an answer (a
    status entry, a delete's ``details``) reaches the client, where every other JSON
    answer is redacted with the module's fields or withheld when it cannot be checked."""
    lid = marked.lead["id"]
    url, fault_path = url.format(lid=lid), fault_path.format(lid=lid)
    entry = {"id": lid, "Status": "COMPLETED", "Email": MARK, "Last_Name": "X"}
    _answer(crm, fault_path, method, {"data": [{**entry, "details": dict(entry)}]})
    r = gw.http.request(method, url)
    assert r.status_code in (200, 502), r.text
    if r.status_code == 200:
        assert "Email" in r.text  # the CRM's answer came back
    no_mark(r, MARK)


def test_a_upload_answer_is_checked(crm: Crm, gw: GatewayHandle, marked: Marked) -> None:
    """LEAK. uploads.py line 38 passes the CRM's answer to a bulk-write upload on with
    ``passthrough`` (forward.py line 149): nothing but its errors is checked, so a value in
    its ``details`` reaches the client."""
    answer = {"status": "success", "code": "FILE_UPLOAD_SUCCESS", "message": "file uploaded.",
              "details": {"file_id": "111000", "Email": MARK}}  # fmt: skip
    _answer(crm, "/crm/v8/upload", "POST", answer)
    csv = f"Last_Name,Company\nRt12,Acme {marked.lead['id'][-4:]}\n"
    r = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", zip_of("Leads.csv", csv), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert r.status_code in (200, 502), r.text
    if r.status_code == 200:
        assert "file_id" in r.text  # the CRM's answer came back
    no_mark(r, MARK)


# By design, not a finding: an upsert matched on a restricted field (a Lead by its Email,
# the CRM's default duplicate check) is forwarded and its answer names the record it
# updated, as in the CRM: that is what an upsert is for, and refusing it broke the
# official SDK's upsert. What the gateway withholds is the holder a refused insert's
# DUPLICATE_DATA names (next test). README, "Keyed by a withheld field".


def test_a_insert_of_a_restricted_unique_value_does_not_name_its_holder(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """ORACLE ON A RESTRICTED FIELD. The CRM checks a unique field on insert, a criterion on
    it: with Insurance_Number restricted, ``POST /Patients`` with another patient's number
    answers DUPLICATE_DATA with ``duplicate_record.id``, the patient who holds it, which the
    refused ``criteria`` would have told. errors_body.py ``_VOCABULARY`` (line 87) keeps
    every ``id`` in an error's details, and writes.py ``write`` (line 42) forwards an insert
    whatever restricted unique field it sets."""
    gw = make_gateway(INSURANCE_RESTRICTED)
    patient = _patient(crm)
    row = {"Name": "Rt12 Probe", "Insurance_Number": patient["Insurance_Number"],
           "Data_Processing_Basis_Details": CONSENT}  # fmt: skip
    direct = crm.http.post("/crm/v8/Patients", content=orjson.dumps({"data": [row]}))
    assert patient["id"] in direct.text and "DUPLICATE_DATA" in direct.text  # the oracle
    r = send(gw, "POST", "/crm/v8/Patients", {"data": [row]})
    assert patient["id"] not in r.text, r.text


def test_a_photo_upload_still_reaches_the_crm(crm: Crm, gw: GatewayHandle, marked: Marked) -> None:
    """REGRESSION of 9279a0a (no privacy leak). ``POST /{module}/{id}/photo`` is a
    ``RELATED_WRITE`` (routes.py line 199) without a related list, and writes.py line 49 now
    calls ``guard_related_link`` for it: reads.py line 74 fetches the field metadata of
    module ``req.related_module or ""``, the CRM answers REQUIRED_PARAM_MISSING for
    ``module=``, and no photo of a free record is ever uploaded."""
    lead = marked.lead
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    r = gw.http.post(
        f"/crm/v8/Leads/{lead['id']}/photo", files={"file": ("a.png", png, "image/png")}
    )
    assert _reached(crm, "/photo", "POST"), r.text


# =========================================================================================
# (B) HELD: attacks that did not get through, kept as coverage
# =========================================================================================


@pytest.mark.parametrize(
    "query",
    ["X_Gateway_Key={k}", "x%5Fgateway%5Fkey={k}", "x%2Dgateway%2Dkey={k}", "X-Gateway-Key[]={k}",
     "X%5FGATEWAY%5FKEY={k}&fields=Last_Name"],
    ids=["underscores", "encoded-underscores", "encoded-dashes", "brackets", "upper-encoded"],
)  # fmt: skip
def test_held_a_gateway_key_in_the_query_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle, query: str
) -> None:
    ok = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"})
    assert ok.status_code == 200  # the route itself is served
    crm.clear()
    r = gw.http.get(f"/crm/v8/Leads?{query.format(k=KEY)}")
    assert r.status_code == 400, r.text
    assert not [x for x in crm.received("/crm/") if KEY in str(x)]
    assert KEY not in gw.audit_text()


def test_held_a_gateway_key_in_a_composite_sub_requests_params_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle
) -> None:
    plain = {"method": "GET", "uri": "/crm/v8/Leads", "params": {"fields": "Last_Name"}}
    crm.clear()
    ok = send(gw, "POST", COMPOSITE, {"__composite_requests": [plain]})
    assert ok.status_code == 200 and _reached(crm, "/crm/v8/Leads")  # served without it
    keyed = {**plain, "params": {"fields": "Last_Name", "X_GATEWAY_KEY": KEY}}
    crm.clear()
    r = send(gw, "POST", COMPOSITE, {"__composite_requests": [keyed]})
    assert "INVALID_DATA" in r.text, r.text
    assert not [x for x in crm.received("/crm/") if KEY in str(x)]
    assert KEY not in gw.audit_text()


@pytest.mark.parametrize("how", ["delink-ids", "link-body", "composite-delink", "link-ids-param"])
def test_held_links_in_a_list_a_restricted_lookup_defines_are_refused_in_any_shape(
    crm: Crm, make_gateway: MakeGateway, marked: Marked, how: str
) -> None:
    gw = make_gateway(REFERRER_RESTRICTED)
    lead, contact = marked.lead, marked.contact
    assert lead["Referrer"]["id"] == contact["id"]  # the lead's lookup names the contact
    base = f"/crm/v8/Contacts/{contact['id']}/Leads"
    crm.clear()
    if how == "delink-ids":
        r = gw.http.delete(base, params={"ids": lead["id"]})
    elif how == "link-body":
        r = send(gw, "PUT", base, {"data": [{"id": lead["id"]}]})
    elif how == "link-ids-param":
        r = send(gw, "PUT", f"{base}?ids={lead['id']}", {"data": []})
    else:
        sub = {"method": "DELETE", "uri": base, "params": {"ids": lead["id"]}}
        r = send(gw, "POST", COMPOSITE, {"__composite_requests": [sub]})
    assert r.status_code in (200, 400), r.text
    assert "Referrer" in r.text  # refused naming the restricted lookup
    assert _reached(crm, "/Leads") == []
    assert crm.one("Leads", lead["id"])["Referrer"]["id"] == contact["id"]


def test_held_values_nested_anywhere_in_a_write_answer_are_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    lead = marked.lead
    details = {
        "id": lead["id"],
        "$x": [[{"Email": MARK}], [{"Mobile": MARK}]],
        "$approval": {"$deeper": {"Phone": MARK}},
        "Visits": [{"id": "1", "Notes": MARK}],
        "Referrer": {"name": "x", "id": marked.contact["id"], "Email": MARK},
        "EMAIL": MARK,
    }
    body = {"data": [{**_entry(details), "extra": {"City": MARK}}], "info": {"Description": MARK}}
    _answer(crm, f"/Leads/{lead['id']}", "PUT", body)
    r = send(gw, "PUT", f"/crm/v8/Leads/{lead['id']}", {"data": [{"Company": "Rt12"}]})
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got["data"][0]["details"]) == set(details)  # the CRM's answer came back whole
    assert "info" in got
    no_mark(r, MARK)


def test_held_a_related_list_link_is_served_when_no_restricted_lookup_defines_it(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """The 9279a0a guard is no blanket refusal: with Referrer private but not restricted
    (the default), a link goes on to the CRM."""
    lead, contact = marked.lead, marked.contact
    crm.clear()
    r = send(gw, "PUT", f"/crm/v8/Contacts/{contact['id']}/Leads/{lead['id']}", None)
    assert r.status_code == 200, r.text
    assert _reached(crm, "/Leads", "PUT")
    no_mark(r, lead["Email"])
    marked.assert_audit_clean(gw)
