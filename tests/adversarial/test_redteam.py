"""Red-team tests: each states one attack and asserts the safe outcome.

Each attack that worked when it was written (a finding) was fixed and now stands as a
defence like the others. Every test first checks that the data it relies on is
really there (the sandbox, asked directly, holds the marker / the stopped record).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import httpx
import orjson
import pytest

from tests.adversarial.conftest import leads_by_state, zip_of
from tests.conftest import Crm, GatewayHandle

MARK = "marker-7f3a9c@example.com"
MARK_TEXT = "marker7f3a9c"


# -- helpers ------------------------------------------------------------------------------


def _stop(crm: Crm, module: str, rid: str) -> None:
    crm.edit(module, rid, **{"$stop_processing": True})
    assert crm.one(module, rid)["$stop_processing"] is True


def _send(
    gw: GatewayHandle, method: str, url: str, body: Any = None, **headers: str
) -> httpx.Response:
    content = orjson.dumps(body) if body is not None else None
    return gw.http.request(method, url, content=content, headers=headers)


def _reached(crm: Crm, method: str, path_part: str) -> list[dict[str, Any]]:
    return [r for r in crm.received(path_part) if r["method"] == method]


def _no_marker(r: httpx.Response, marker: str = MARK_TEXT) -> None:
    assert marker not in r.text, r.text
    for name, value in r.headers.items():
        assert marker not in value, (name, value)


def _audit_clean(gw: GatewayHandle, *markers: str) -> None:
    text = gw.audit_text()
    for m in markers:
        assert m not in text


def _marked_lead(crm: Crm, **extra: Any) -> dict[str, Any]:
    normal, _ = leads_by_state(crm)
    lead = normal[0]
    crm.edit("Leads", lead["id"], Email=MARK, **extra)
    assert crm.one("Leads", lead["id"])["Email"] == MARK
    return lead


# == (c) writes against stop-processing records ==========================================


def _activity_body(module: str, lead_id: str) -> dict[str, Any]:
    ref = {"id": lead_id}
    if module == "Notes":
        rec = {"Note_Content": "hello", "Parent_Id": ref, "$se_module": "Leads"}
    elif module == "Tasks":
        rec = {"Subject": "call back", "What_Id": ref, "$se_module": "Leads"}
    else:  # Calls, via Who_Id (the CRM lets Who_Id name a Lead)
        rec = {
            "Subject": "call",
            "Call_Type": "Outbound",
            "Call_Start_Time": "2024-01-01T10:00:00+00:00",
            "Who_Id": ref,
        }
    return {"data": [rec]}


@pytest.mark.parametrize("module", ["Notes", "Tasks", "Calls"])
def test_inserting_an_activity_under_a_stopped_lead_is_refused(
    crm: Crm, gw: GatewayHandle, module: str
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    r = _send(gw, "POST", f"/crm/v8/{module}", _activity_body(module, stopped["id"]))
    assert _reached(crm, "POST", f"/crm/v8/{module}") == [], r.text


def test_moving_a_note_onto_a_stopped_lead_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    note = next(n for n in crm.records("Notes") if n["Parent_Id"]["id"] != stopped["id"])
    crm.clear()
    body = {"data": [{"Parent_Id": {"id": stopped["id"]}, "$se_module": "Leads"}]}
    _send(gw, "PUT", f"/crm/v8/Notes/{note['id']}", body)
    assert _reached(crm, "PUT", "/crm/v8/Notes") == []
    assert crm.one("Notes", note["id"])["Parent_Id"]["id"] != stopped["id"]


@pytest.mark.parametrize("form", ["path", "body"])
def test_linking_a_stopped_lead_from_a_campaign_is_refused(
    crm: Crm, gw: GatewayHandle, form: str
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    campaign = crm.records("Campaigns")[0]
    crm.clear()
    if form == "path":
        path = f"/crm/v8/Campaigns/{campaign['id']}/Leads/{stopped['id']}"
        _send(gw, "PUT", path, {"data": [{"id": stopped["id"]}]})
    else:
        path = f"/crm/v8/Campaigns/{campaign['id']}/Leads"
        _send(gw, "PUT", path, {"data": [{"id": stopped["id"]}]})
    assert _reached(crm, "PUT", "/Leads") == []


def test_relating_a_stopped_lead_under_a_normal_contact_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    contact = next(c for c in crm.records("Contacts") if not c["$stop_processing"])
    before = crm.one("Leads", stopped["id"]).get("Referrer")
    crm.clear()
    path = f"/crm/v8/Contacts/{contact['id']}/Leads/{stopped['id']}"
    _send(gw, "PUT", path, {"data": [{"id": stopped["id"]}]})
    assert _reached(crm, "PUT", path) == []
    assert crm.one("Leads", stopped["id"]).get("Referrer") == before


@pytest.mark.parametrize(
    "extra",
    [
        {"$SE_MODULE": "Accounts"},
        {"$se_module": "Accounts", "module": {"api_name": "Leads"}},
    ],
    ids=["se_module-key-case", "lookup-module-wins"],
)
def test_a_note_whose_se_module_lies_cannot_attach_to_a_stopped_lead(
    crm: Crm, gw: GatewayHandle, extra: dict[str, Any]
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    ref: dict[str, Any] = {"id": stopped["id"]}
    rec: dict[str, Any] = {"Note_Content": "hello", "Parent_Id": ref}
    if "module" in extra:
        ref["module"] = extra["module"]
        rec["$se_module"] = extra["$se_module"]
    else:
        rec.update(extra)
    # The sandbox, asked directly, does attach such a note to the lead.
    direct = crm.http.post("/crm/v8/Notes", content=orjson.dumps({"data": [dict(rec)]}))
    assert direct.status_code == 201, direct.text
    crm.clear()
    _send(gw, "POST", "/crm/v8/Notes", {"data": [rec]})
    assert _reached(crm, "POST", "/crm/v8/Notes") == []


def test_a_mass_update_reparenting_notes_onto_a_stopped_lead_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    note = next(n for n in crm.records("Notes") if n["Parent_Id"]["id"] != stopped["id"])
    crm.clear()
    body = {
        "data": [{"Parent_Id": {"id": stopped["id"]}, "$se_module": "Leads"}],
        "ids": [note["id"]],
    }
    _send(gw, "POST", "/crm/v8/Notes/actions/mass_update", body)
    assert crm.one("Notes", note["id"])["Parent_Id"]["id"] != stopped["id"]
    assert _reached(crm, "POST", "mass_update") == []


def test_linking_a_stopped_lead_by_a_bare_id_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    campaign = crm.records("Campaigns")[0]
    crm.clear()
    _send(gw, "PUT", f"/crm/v8/Campaigns/{campaign['id']}/Leads", {"data": [stopped["id"]]})
    assert _reached(crm, "PUT", "/Leads") == []


def test_editing_a_note_under_a_stopped_lead_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, stopped = leads_by_state(crm)
    ids = {s["id"] for s in stopped}
    note = next(n for n in crm.records("Notes") if n["Parent_Id"]["id"] in ids)
    crm.clear()
    _send(gw, "PUT", f"/crm/v8/Notes/{note['id']}", {"data": [{"Note_Content": "edited"}]})
    assert _reached(crm, "PUT", "/Notes") == []


def test_relating_under_a_stopped_lead_is_refused_in_every_spelling(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    campaign = crm.records("Campaigns")[0]
    crm.clear()
    for module, rel in (("leads", "campaigns"), ("LEADS", "Campaigns"), ("Leads", "CAMPAIGNS")):
        path = f"/crm/V8/{module}/{stopped['id']}/{rel}/{campaign['id']}"
        r = _send(gw, "PUT", path, {"data": [{"id": campaign["id"]}]})
        assert r.status_code == 400, r.text
    assert _reached(crm, "PUT", "/Campaigns") == [] and _reached(crm, "PUT", "/campaigns") == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/crm/v8/leads/{id}", {"data": [{"City": "x"}]}),
        ("PUT", "/crm/v8/LEADS", {"data": [{"id": "{id}", "City": "x"}]}),
        ("PUT", "/crm/v8/Leads/{id}/", {"data": [{"City": "x"}]}),
        ("POST", "/crm/v8/Leads/Upsert", {"data": [{"id": "{id}", "City": "x"}]}),
        ("POST", "/crm/v8/Leads/ACTIONS/Mass_Update", {"data": [{"City": "x"}], "ids": ["{id}"]}),
        ("POST", "/crm/v8/Leads/{id}/Actions/Convert", {"data": [{}]}),
        ("PUT", "/crm/v8/Leads/{id}", {"data": [{"City": "x"}], "data ": [{"id": "1"}]}),
    ],
)
def test_writes_to_a_stopped_lead_in_other_spellings_are_refused(
    crm: Crm, gw: GatewayHandle, method: str, path: str, body: dict[str, Any]
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    sid = stopped["id"]
    raw = orjson.dumps(body).decode().replace("{id}", sid)
    crm.clear()
    r = gw.http.request(method, path.replace("{id}", sid), content=raw)
    assert r.status_code in (400, 404, 405), r.text
    assert [x for x in crm.received("/crm/v8/") if x["method"] != "GET"] == []
    assert crm.one("Leads", sid).get("City") == stopped.get("City")


def test_a_mass_update_by_view_in_any_key_spelling_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    for key in ("CVID", "Territory"):
        body = {"data": [{"City": "x"}], "ids": [], key: "12345"}
        r = _send(gw, "POST", "/crm/v8/Leads/actions/mass_update", body)
        assert r.status_code >= 400, r.text
    assert _reached(crm, "POST", "mass_update") == []


def test_an_upsert_matched_by_a_unique_field_cannot_update_a_stopped_lead(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    crm.edit("Leads", stopped["id"], External_Ref="EXT-RT-1")
    crm.clear()
    body = {"data": [{"Last_Name": "Overwritten", "External_Ref": "EXT-RT-1"}]}
    _send(gw, "POST", "/crm/v8/Leads/upsert", body)
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Overwritten"


def test_an_upsert_matched_by_vendor_name_cannot_update_a_stopped_vendor(
    crm: Crm, gw: GatewayHandle
) -> None:
    vendor = crm.records("Vendors")[0]
    _stop(crm, "Vendors", vendor["id"])
    crm.clear()
    body = {"data": [{"Vendor_Name": vendor["Vendor_Name"], "Website": "http://rt.example"}]}
    _send(gw, "POST", "/crm/v8/Vendors/upsert", body)
    assert crm.one("Vendors", vendor["id"]).get("Website") != "http://rt.example"


def test_an_upsert_matched_by_a_custom_modules_name_cannot_update_a_stopped_record(
    crm: Crm, gw: GatewayHandle
) -> None:
    patient = crm.records("Patients")[0]
    _stop(crm, "Patients", patient["id"])
    crm.clear()
    body = {"data": [{"Name": patient["Name"], "Diagnosis": "rt-overwritten"}]}
    _send(gw, "POST", "/crm/v8/Patients/upsert", body)
    assert crm.one("Patients", patient["id"]).get("Diagnosis") != "rt-overwritten"


def test_an_upsert_matched_by_email_in_another_case_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    crm.edit("Leads", stopped["id"], Email="Stopped.RT@Example.com")
    crm.clear()
    body = {"data": [{"Last_Name": "Overwritten", "EMAIL": "stopped.rt@example.COM"}]}
    _send(gw, "POST", "/crm/v8/Leads/upsert", body)
    assert _reached(crm, "POST", "/upsert") == []
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "Overwritten"


def test_converting_into_a_stopped_contact_in_another_key_spelling_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, _ = leads_by_state(crm)
    contact = next(c for c in crm.records("Contacts") if c["$stop_processing"])
    crm.clear()
    body = {"data": [{"overwrite": True, "CONTACTS": {"id": contact["id"]}}]}
    r = _send(gw, "POST", f"/crm/v8/Leads/{normal[0]['id']}/actions/convert", body)
    assert r.status_code == 400, r.text
    assert _reached(crm, "POST", "/actions/convert") == []


@pytest.mark.parametrize(
    "header",
    ["Id", "\ufeffid", '"id"', " id", "ID"],
)
def test_an_upload_naming_a_stopped_lead_under_an_odd_id_header_is_refused(
    crm: Crm, gw: GatewayHandle, header: str
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    csv_text = f"{header},City\n{stopped['id']},X\n"
    r = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", zip_of("Leads.csv", csv_text), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert r.status_code >= 400, r.text
    assert crm.received("/upload") == []


def test_a_composite_request_wrapping_a_stopped_update_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    body = {
        "__composite_requests": [
            {
                "method": "PUT",
                "uri": f"/crm/v8/Leads/{stopped['id']}",
                "body": {"data": [{"City": "x"}]},
            }
        ]
    }
    for path in ("/crm/v8/__composite_requests", "/crm/v8/__COMPOSITE_REQUESTS"):
        r = _send(gw, "POST", path, body)
        (entry,) = r.json()["__composite_requests"]
        assert entry["details"]["response"]["status_code"] == 400
        assert entry["details"]["response"]["body"]["data"][0]["code"] == "CANNOT_PROCESS"
    assert crm.received("composite") == [] and crm.received("COMPOSITE") == []
    assert _reached(crm, "PUT", f"/crm/v8/Leads/{stopped['id']}") == []


# == (b) guards: restricted fields never reach the CRM in a condition ======================


@pytest.mark.parametrize(
    "url",
    [
        "/crm/v8/Leads/search?criteria=(email:equals:x)",
        "/crm/v8/LEADS/SEARCH?CRITERIA=(EMAIL:equals:x)",
        "/crm/v8/Leads/search?%63riteria=%28Email%3Aequals%3Ax%29",
        "/crm/v8/Leads/search?criteria=((Last_Name:equals:a)or((Email:starts_with:m)))",
        "/crm/v8/Leads/search?criteria=Email:equals:x",
        "/crm/v8/Leads/search?criteria=(+Email+:equals:x)",
        "/crm/v8/Leads/search?criteria=(Referrer.Email:equals:x)",
        "/crm/v8/Leads/search?criteria=(Last_Name:equals:a\\)or(Email:equals:x)",
        "/crm/v8/Leads/actions/count?criteria=(Email:equals:x)",
        "/crm/v8/Leads?fields=Last_Name&criteria=(Email:equals:x)",
        "/crm/v8/Leads?fields=Last_Name&email=x@example.com",
        "/crm/v2/Leads/search?phone=5551234",
        "/crm/v2/Leads/search?word=marker",
        "/crm/v8/Leads?fields=Last_Name&sort_by=EMAIL",
        "/crm/v8/Leads?fields=Last_Name&sort_by=Last_Name,Email",
        "/crm/v8/Leads?fields=Last_Name&sort_by=+Email",
        "/crm/v8/Leads/deleted?criteria=(Email:equals:x)",
        "/crm/v8/Leads/search?criteria=(Last_Name:equals:a)&criteria=(Email:equals:x)",
        "/crm/v8/Leads/search?criteria=(Last_Name:equals:a)&Criteria=(Email:equals:x)",
        "/crm/v8/Leads/search?criteria=(Last_Name:equals:a);criteria=(Email:equals:x)",
        "/crm/v8/Leads/search?=(Email:equals:x)",
        "/crm/v8/Leads/search?criteria%5B%5D=(Email:equals:x)",
        "/crm/v8/Leads/search?criteria=(Mobile:equals:555)",
    ],
)
def test_search_on_a_restricted_field_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle, url: str
) -> None:
    crm.clear()
    r = gw.http.get(url)
    assert r.status_code == 400, r.text
    assert crm.received("/Leads") == [] and crm.received("/LEADS") == []


def test_search_guards_apply_to_the_related_lists_module(crm: Crm, gw: GatewayHandle) -> None:
    campaign = crm.records("Campaigns")[0]
    crm.clear()
    base = f"/crm/v8/campaigns/{campaign['id']}/LEADS?fields=Last_Name"
    for extra in ("&criteria=(Email:equals:x)", "&sort_by=Email", "&email=a@b.c"):
        r = gw.http.get(base + extra)
        assert r.status_code == 400, (extra, r.text)
    assert crm.received("/Leads") == [] and crm.received("/LEADS") == []


@pytest.mark.parametrize(
    "query",
    [
        "select Last_Name from Leads where Email = 'x'",
        "select Last_Name from leads where EMAIL like 'm%'",
        "select Last_Name from Leads where Last_Name = Email",
        "select Last_Name from Leads order by Email",
        "select Last_Name, Email as e from Leads order by e",
        "select Last_Name from Leads group by Email",
        "select max(Email) from Leads",
        "select count(Mobile) from Leads",
        "select Last_Name from Leads where Referrer.Email is not null",
        "select Name from Patients where Referring_Lead.Email = 'x'",
        "select Name from Patients where Referring_Lead.Referrer.Email = 'x'",
        "select Last_Name from Leads where (Last_Name = 'a' or (Email = 'x'))",
        "select Last_Name from Leads where Last_Name = 'a\\' or Email = 'x'",
        "select Subject from Tasks where What_Id.Email = 'x'",
        "select Last_Name from Leads where 'Email' = 'x'",
        "select Last_Name from Leads where `Email` = 'x'",
        "select Last_Name from Leads where Email/**/= 'x'",
    ],
)
def test_coql_conditions_on_restricted_fields_never_reach_the_crm(
    crm: Crm, gw: GatewayHandle, query: str
) -> None:
    crm.clear()
    r = gw.http.post("/crm/v8/coql", content=orjson.dumps({"select_query": query}))
    # A refusal, or at least nothing sent: the query must not reach the CRM.
    assert crm.received("/coql") == [], r.text
    assert r.status_code >= 400


def test_coql_body_with_two_select_queries_is_not_read_two_ways(
    crm: Crm, gw: GatewayHandle
) -> None:
    crm.clear()
    raw = (
        b'{"select_query": "select Last_Name from Leads where Last_Name = \'a\'",'
        b' "select_query": "select Last_Name from Leads where Email = \'x\'"}'
    )
    r = gw.http.post("/crm/v8/coql", content=raw)
    sent = [orjson.loads(x["body"]) for x in crm.received("/coql")]
    assert all("Email" not in q["select_query"] for q in sent), r.text


@pytest.mark.parametrize(
    "criteria",
    [
        {"api_name": "Email", "comparator": "equal", "value": "x"},
        {"field": {"api_name": "email"}, "comparator": "equal", "value": "x"},
        {"api_name": "Last_Name", "field": {"api_name": "Email"}, "comparator": "equal"},
        {
            "group_operator": "or",
            "group": [
                {"api_name": "Last_Name", "comparator": "equal", "value": "a"},
                {"group_operator": "and", "group": [{"api_name": "MOBILE", "comparator": "equal"}]},
            ],
        },
        {"api_name": "Referrer.Email", "comparator": "equal", "value": "x"},
    ],
)
def test_bulk_read_criteria_on_restricted_fields_never_reach_the_crm(
    crm: Crm, gw: GatewayHandle, criteria: dict[str, Any]
) -> None:
    crm.clear()
    body = {
        "query": {"module": {"api_name": "leads"}, "fields": ["Last_Name"], "criteria": criteria}
    }
    r = gw.http.post(
        "/crm/bulk/v8/read",
        content=orjson.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert crm.received("/crm/bulk/") == []


# == headers ================================================================================


def test_a_delete_keyed_by_a_restricted_external_field_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle
) -> None:
    _marked_lead(crm)
    crm.clear()
    gw.http.delete(f"/crm/v8/Leads/{MARK}", headers={"X-EXTERNAL": "Leads.Email"})
    assert crm.received("/Leads") == []


@pytest.mark.parametrize(
    "external",
    ["Leads.Email", "leads.EMAIL", "Email", "Leads.Mobile", "Leads.Phone"],
)
def test_a_read_keyed_by_a_withheld_external_field_is_refused(
    crm: Crm, gw: GatewayHandle, external: str
) -> None:
    _marked_lead(crm)
    crm.clear()
    r = gw.http.get(f"/crm/v8/Leads/{MARK}", headers={"X-EXTERNAL": external})
    assert r.status_code == 400, r.text
    assert crm.received("/Leads") == []
    _no_marker(r)


def test_a_duplicated_or_hidden_external_header_cannot_steer_the_check(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = _marked_lead(crm)
    crm.clear()
    dup = gw.http.get(
        f"/crm/v8/Leads/{MARK}",
        headers=[("X-EXTERNAL", "Leads.External_Ref"), ("x-external", "Leads.Email")],
    )
    assert dup.status_code == 400
    # A Connection-named X-EXTERNAL is dropped, so the CRM never receives it.
    gw.http.get(
        f"/crm/v8/Leads/{lead['id']}",
        headers={"Connection": "x-external", "X-EXTERNAL": "Leads.Email"},
    )
    for x in crm.received():
        assert "x-external" not in {k.lower() for k in x.get("headers", {})}
    for x in crm.received("/Leads"):
        assert MARK not in x["path"]


def test_method_override_and_hop_by_hop_tricks_do_not_turn_a_read_into_a_write(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = leads_by_state(crm)
    crm.clear()
    gw.http.post(
        f"/crm/v8/Leads/{stopped['id']}",
        content=orjson.dumps({"data": [{"City": "x"}]}),
        headers={"X-HTTP-Method-Override": "PUT", "Connection": "close, X-Gateway-Key"},
    )
    gw.http.request(
        "PATCH", f"/crm/v8/Leads/{stopped['id']}", content=orjson.dumps({"data": [{"City": "x"}]})
    )
    assert [x for x in crm.received("/Leads") if x["method"] != "GET"] == []


# == (a) redaction ============================================================================


@pytest.mark.parametrize(
    "url",
    [
        "/crm/v2/Leads?per_page=200",
        "/crm/v2/leads?per_page=200",
        "/crm/V2/LEADS?per_page=200",
        "/crm/v8/Leads?fields=Email,EMAIL,email,Last_Name&per_page=200",
        "/crm/v8/Leads?fields=Email&include=private_fields&per_page=200",
        "/crm/v8/Leads?fields=Email&include=PRIVATE_FIELDS,approval&per_page=200",
        "/crm/v8/Leads?fields=Email&converted=both&approved=both&per_page=200",
        "/crm/v8/Leads/{id}",
        "/crm/v8/leads/{id}?fields=email",
        "/crm/v8/Leads/{id}/",
        "/crm/v8/Leads/search?criteria=(Last_Name:starts_with:{ln})&fields=Email",
        "/crm/v8/Leads?ids={id}&fields=Email,$stop_processing",
    ],
)
def test_a_planted_email_never_reaches_the_client(crm: Crm, gw: GatewayHandle, url: str) -> None:
    lead = _marked_lead(crm)
    url = url.replace("{id}", lead["id"]).replace("{ln}", lead["Last_Name"][:3])
    direct = crm.http.get(url.replace("/V2/LEADS", "/v2/Leads").rstrip("/"))
    assert MARK in direct.text or direct.status_code >= 400
    r = gw.http.get(url)
    assert r.status_code in (200, 204), r.text
    _no_marker(r)
    _audit_clean(gw, MARK_TEXT)


def test_a_planted_value_in_a_related_list_is_withheld_from_both_sides(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = _marked_lead(crm)
    campaign = crm.records("Campaigns")[0]
    # Link them straight in the sandbox (PUT from the lead side, a normal lead).
    crm.http.put(
        f"/crm/v8/Campaigns/{campaign['id']}/Leads/{lead['id']}",
        content=orjson.dumps({"data": [{"id": lead["id"]}]}),
    )
    url = f"/crm/v8/Campaigns/{campaign['id']}/Leads?fields=Email,Last_Name"
    assert MARK in crm.http.get(url).text
    for u in (url, url.replace("/Leads?", "/LEADS?").replace("/Campaigns/", "/campaigns/")):
        r = gw.http.get(u)
        assert r.status_code == 200, r.text
        _no_marker(r)


def test_a_planted_value_in_a_related_custom_module_is_withheld(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, _ = leads_by_state(crm)
    patient = crm.records("Patients")[0]
    crm.edit("Patients", patient["id"], Diagnosis=MARK_TEXT, Referring_Lead={"id": normal[0]["id"]})
    url = f"/crm/v8/Leads/{normal[0]['id']}/Patients?fields=Diagnosis,Name"
    assert MARK_TEXT in crm.http.get(url).text
    r = gw.http.get(url.replace("Patients?", "patients?"))
    assert r.status_code == 200, r.text
    _no_marker(r)


@pytest.mark.parametrize(
    "query",
    [
        "select Last_Name, Email from Leads where id = '{id}'",
        "select Last_Name, email as Mail from Leads where id = '{id}'",
        "select Email as last_name, Last_Name as ln from Leads where id = '{id}'",
        "select Last_Name, Referrer from Leads where id = '{id}'",
        "select Name, Referring_Lead.Email from Patients where Referring_Lead = '{id}'",
        "select Name, Referring_Lead.email as x from Patients where Referring_Lead = '{id}'",
        "select Name, Referring_Lead from Patients where Referring_Lead = '{id}'",
        "select Name, Referring_Lead.Referrer.Email from Patients where Referring_Lead = '{id}'",
        "select Last_Name, Owner.email from Leads where id = '{id}'",
    ],
)
def test_coql_columns_never_return_a_planted_value(crm: Crm, gw: GatewayHandle, query: str) -> None:
    lead = _marked_lead(crm)
    contact = next(c for c in crm.records("Contacts") if not c["$stop_processing"])
    crm.edit("Contacts", contact["id"], Email=MARK)
    crm.edit("Leads", lead["id"], Referrer={"id": contact["id"], "name": "x"})
    patient = crm.records("Patients")[0]
    crm.edit("Patients", patient["id"], Referring_Lead={"id": lead["id"], "name": "x"})
    q = {"select_query": query.replace("{id}", lead["id"])}
    direct = crm.http.post("/crm/v8/coql", content=orjson.dumps(q))
    r = gw.http.post("/crm/v8/coql", content=orjson.dumps(q))
    if "Owner" in query or ("Referring_Lead from" in query) or ("Referrer from" in query):
        assert direct.status_code in (200, 204), direct.text
    else:
        assert MARK in direct.text, direct.text
    _no_marker(r)
    _audit_clean(gw, MARK_TEXT)


def test_subform_rows_of_a_single_record_are_redacted(crm: Crm, gw: GatewayHandle) -> None:
    lead = _marked_lead(crm)
    one = crm.one("Leads", lead["id"])
    rows = one.get("Visits") or [{"Visit_Date": "2024-01-01"}]
    rows = [dict(r, Notes=MARK_TEXT, Visitor_IP=MARK_TEXT) for r in rows]
    crm.edit("Leads", lead["id"], Visits=rows)
    assert MARK_TEXT in crm.http.get(f"/crm/v8/Leads/{lead['id']}").text
    for url in (f"/crm/v8/Leads/{lead['id']}", f"/crm/v2/leads/{lead['id']}?fields=visits"):
        r = gw.http.get(url)
        assert r.status_code == 200, r.text
        _no_marker(r)


def test_include_private_fields_reveals_no_value(crm: Crm, gw: GatewayHandle) -> None:
    lead = _marked_lead(crm, Phone="5550000111", City=MARK_TEXT)
    r = gw.http.get(f"/crm/v8/Leads/{lead['id']}?fields=Email,Phone,City&include=private_fields")
    assert r.status_code == 200, r.text
    _no_marker(r)
    assert "5550000111" not in r.text
    rec = r.json()["data"][0]
    assert rec["Email"] is None and rec["Phone"] is None and rec["City"] is None


def test_withheld_header_does_not_tell_an_empty_value_from_a_set_one(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, _ = leads_by_state(crm)
    a, b = normal[0]["id"], normal[1]["id"]
    crm.edit("Leads", a, Email=MARK, Mobile="555")
    crm.edit("Leads", b, Email=None, Mobile=None)
    url = "/crm/v8/Leads/{}?fields=Email,Mobile"
    ha = gw.http.get(url.format(a)).headers["x-privacy-withheld"]
    hb = gw.http.get(url.format(b)).headers["x-privacy-withheld"]
    assert ha == hb


def test_a_bulk_read_result_is_blanked_whatever_the_column_spelling(
    crm: Crm, gw: GatewayHandle
) -> None:
    _marked_lead(crm)
    body = {
        "query": {
            "module": {"api_name": "Leads"},
            "fields": ["Last_Name", "email", "Mobile"],
        }
    }
    job = crm.http.post(
        "/crm/bulk/v8/read",
        content=orjson.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert job.status_code in (200, 201), job.text
    job_id = job.json()["data"][0]["details"]["id"]
    direct = crm.http.get(f"/crm/bulk/v8/read/{job_id}/result")
    assert direct.status_code == 200
    with zipfile.ZipFile(io.BytesIO(direct.content)) as z:
        assert MARK in z.read(z.namelist()[0]).decode()
    r = gw.http.get(f"/crm/bulk/V8/READ/{job_id}/RESULT")
    assert r.status_code == 200, r.text[:200]
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        for name in z.namelist():
            assert MARK_TEXT not in z.read(name).decode(errors="replace")


def test_org_privacy_cannot_be_switched_off_by_choosing_another_org_header(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = _marked_lead(crm)
    tricks = ({"X-CRM-ORG": "5725768000000000001"}, {"Connection": "x-crm-org", "X-CRM-ORG": "2"})
    for headers in tricks:
        r = gw.http.get(f"/crm/v8/Leads/{lead['id']}?fields=Email", headers=headers)
        _no_marker(r)


# == (d) audit ==================================================================================


def test_refused_and_redacted_requests_leave_no_marker_or_token_in_the_audit(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = _marked_lead(crm)
    _, (stopped, *_) = leads_by_state(crm)
    gw.http.get(f"/crm/v8/Leads/search?criteria=(Email:equals:{MARK})")
    gw.http.get(f"/crm/v8/Leads/{MARK}", headers={"X-EXTERNAL": "Leads.Email"})
    gw.http.put(f"/crm/v8/Leads/{stopped['id']}", content=orjson.dumps({"data": [{"Email": MARK}]}))
    gw.http.post(
        "/crm/v8/coql",
        content=orjson.dumps({"select_query": f"select Email from Leads where Email = '{MARK}'"}),
    )
    gw.http.get(f"/crm/v8/Leads?fields=Email,{MARK_TEXT}&sort_by={MARK_TEXT}")
    gw.http.get(f"/crm/v8/Leads/{lead['id']}?fields=Email")
    gw.http.post(
        "/crm/v8/Leads/upsert",
        content=orjson.dumps({"data": [{"Last_Name": "x", "Email": MARK}]}),
    )
    assert gw.audit(), "audit log is empty"
    _audit_clean(gw, MARK_TEXT, "test-token")


def test_a_path_value_in_the_module_position_never_reaches_the_audit(
    crm: Crm, gw: GatewayHandle
) -> None:
    crm.clear()
    r = gw.http.get(f"/crm/v8/{MARK_TEXT}JohnDoe?fields=Last_Name")
    assert r.status_code >= 400
    assert crm.received(MARK_TEXT) == []
    assert gw.audit(), "audit log is empty"
    _audit_clean(gw, MARK_TEXT)
