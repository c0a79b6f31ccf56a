"""Second red team: writes, attachments and answers the first one did not try.

Each test states one attack and asserts the safe outcome, after checking that the data it
relies on is really there. Each attack that worked when it was written (a finding) was
fixed and now stands as a defence like the others.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Crm, GatewayHandle

MARK = "rtw-marker-5d1e@example.com"
TOKEN_MARK = "1966-06-16"  # a private value shaped like a code (a date of birth)


# -- helpers ------------------------------------------------------------------------------


def _leads(crm: Crm) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    leads = crm.records("Leads")
    normal = [r for r in leads if r["$stop_processing"] is False]
    stopped = [r for r in leads if r["$stop_processing"] is True]
    assert len(normal) >= 3 and len(stopped) >= 2
    return normal, stopped


def _stopped(crm: Crm, module: str) -> dict[str, Any]:
    rec = next(r for r in crm.records(module) if r["$stop_processing"] is True)
    assert crm.one(module, rec["id"])["$stop_processing"] is True
    return rec


def _send(
    gw: GatewayHandle, method: str, url: str, body: Any = None, **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else None
    return gw.http.request(method, url, content=content, headers=headers)


def _writes_reached(crm: Crm, path_part: str = "/crm/") -> list[dict[str, Any]]:
    """Requests that reached the CRM other than reads (the gateway's look-ups are GETs)."""
    return [r for r in crm.received(path_part) if r["method"] != "GET"]


def _audit_text(gw: GatewayHandle) -> str:
    return gw.audit_text()


def _zip(*members: tuple[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in members:
            z.writestr(name, text)
    return buf.getvalue()


def _upload(gw: GatewayHandle, data: bytes) -> httpx.Response:
    return gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", data, "application/zip")},
        headers={"feature": "bulk-write"},
    )


def _composite(gw: GatewayHandle, *subs: dict[str, Any]) -> list[dict[str, Any]]:
    r = _send(gw, "POST", "/crm/v8/__composite_requests", {"__composite_requests": list(subs)})
    assert r.status_code == 200, r.text
    return [e["details"]["response"] for e in r.json()["__composite_requests"]]


# == (a) writes that reach a record in stop processing ======================================


@pytest.mark.parametrize("case", ["deal-to-contact", "patient-to-lead", "lead-to-contact"])
def test_a_lookup_field_cannot_attach_a_record_to_a_stopped_one(
    crm: Crm, gw: GatewayHandle, case: str
) -> None:
    """The CRM's related lists Contacts/{id}/Deals, Leads/{id}/Patients and Contacts/{id}/Leads
    are these very lookups: writing the lookup is the related-list write the gateway refuses
    when it is spelt as one."""
    contact = _stopped(crm, "Contacts")
    lead = _stopped(crm, "Leads")
    if case == "deal-to-contact":
        deal = next(d for d in crm.records("Deals") if (d["Contact_Name"] or {}).get("id")
                    != contact["id"])  # fmt: skip
        refused = _send(gw, "PUT", f"/crm/v8/Contacts/{contact['id']}/Deals/{deal['id']}",
                        {"data": [{"id": deal["id"]}]})  # fmt: skip
        assert refused.status_code == 400, refused.text  # the related-list spelling
        method, url = "PUT", f"/crm/v8/Deals/{deal['id']}"
        body: dict[str, Any] = {"data": [{"Contact_Name": {"id": contact["id"]}}]}
    elif case == "patient-to-lead":
        method, url = "POST", "/crm/v8/Patients"
        body = {"data": [{"Name": "RT Patient", "Referring_Lead": {"id": lead["id"]},
                          "Data_Processing_Basis_Details": {"Data_Processing_Basis":
                                                            "Obtained"}}]}  # fmt: skip
    else:
        normal, _ = _leads(crm)
        method, url = "PUT", "/crm/v8/Leads"
        body = {"data": [{"id": normal[0]["id"], "Referrer": {"id": contact["id"]}}]}
    r = _send(gw, method, url, body)
    assert r.status_code < 500, r.text
    # Nothing now hangs under the stopped records.
    if case == "deal-to-contact":
        assert (crm.one("Deals", deal["id"])["Contact_Name"] or {}).get("id") != contact["id"]
    elif case == "patient-to-lead":
        assert not [p for p in crm.records("Patients") if p["Name"] == "RT Patient"
                    and (p["Referring_Lead"] or {}).get("id") == lead["id"]]  # fmt: skip
    else:
        assert (crm.one("Leads", normal[0]["id"])["Referrer"] or {}).get("id") != contact["id"]


def _bulk_job(file_id: str, operation: str = "update") -> dict[str, Any]:
    return {
        "operation": operation,
        "resource": [
            {"type": "data", "module": {"api_name": "Leads"}, "file_id": file_id, "find_by": "id"}
        ],
    }


def test_a_bulk_write_job_created_after_the_lead_was_stopped_cannot_update_it(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, _ = _leads(crm)
    lead = normal[0]
    up = _upload(gw, _zip(("Leads.csv", f"id,City\n{lead['id']},RT-Bulk-City\n")))
    assert up.status_code == 200, up.text  # free when uploaded
    file_id = up.json()["details"]["file_id"]
    crm.edit("Leads", lead["id"], **{"$stop_processing": True})
    assert crm.one("Leads", lead["id"])["$stop_processing"] is True
    crm.clear()
    _send(gw, "POST", "/crm/bulk/v8/write", _bulk_job(file_id))
    assert crm.one("Leads", lead["id"]).get("City") != "RT-Bulk-City"


def test_a_bulk_write_job_that_names_its_key_in_another_spelling_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    job = _bulk_job("1")
    job["resource"][0]["find_by"] = "Email"
    job["operation"] = "UPSERT"
    crm.clear()
    (resp,) = _composite(gw, {"method": "post", "uri": "/crm/bulk/v8/write", "body": job})
    assert resp["status_code"] == 403 or resp["status_code"] == 400, resp
    assert crm.received("/crm/bulk/") == []


@pytest.mark.parametrize(
    "members",
    [
        [("a.csv", "id,City\n{free},A\n"), ("b.csv", "id,City\n{stopped},B\n")],
        [("a.csv", "Last_Name,City\nX,A\n"), ("b.CSV", "ID,City\n{stopped},B\n")],
        [("dir/", ""), ("dir/a.csv", "Parent_Id,Note_Content\n{stopped},x\n")],
    ],
    ids=["second-csv", "second-csv-upper-ext", "in-a-folder-other-column"],
)
def test_an_upload_naming_a_stopped_lead_in_any_member_is_refused(
    crm: Crm, gw: GatewayHandle, members: list[tuple[str, str]]
) -> None:
    normal, (stopped, *_) = _leads(crm)
    files = [(n, t.format(free=normal[0]["id"], stopped=stopped["id"])) for n, t in members]
    crm.clear()
    r = _upload(gw, _zip(*files))
    assert r.status_code == 400, r.text
    assert crm.received("/upload") == []
    assert stopped["id"] not in _audit_text(gw)  # values read from a file stay out


def test_a_related_list_post_naming_a_stopped_lead_is_not_forwarded_unchecked(
    crm: Crm, gw: GatewayHandle
) -> None:
    _, (stopped, *_) = _leads(crm)
    campaign = crm.records("Campaigns")[0]
    crm.clear()
    path = f"/crm/v8/Campaigns/{campaign['id']}/Leads"
    _send(gw, "POST", path, {"data": [{"id": stopped["id"]}]})
    assert _writes_reached(crm) == []


@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [
        ("PUT", "/crm/v8/Leads", b'{"data":[{"id":{sid}e0,"City":"RT"}]}'),
        ("PUT", "/crm/v8/Leads", b'{"data":[{"id":{"id":"{sid}"},"City":"RT"}]}'),
        ("PUT", "/crm/v8/Leads", b'{"data":[{"id":["{sid}"],"City":"RT"}]}'),
        ("POST", "/crm/v8/Leads/{free}/actions/convert", b'{"data":[{"Contacts":["{cid}"]}]}'),
        ("PUT", "/crm/v8/Campaigns/{camp}/Leads", b'{"data":{"id":"{sid}"}}'),
    ],
    ids=["id-exponent", "id-nested", "id-list", "convert-contacts-list", "related-data-object"],
)
def test_a_write_whose_target_cannot_be_read_is_refused_not_forwarded(
    crm: Crm, gw: GatewayHandle, method: str, path: str, raw: bytes
) -> None:
    normal, (stopped, *_) = _leads(crm)
    contact = _stopped(crm, "Contacts")
    values = {"sid": stopped["id"], "free": normal[0]["id"], "cid": contact["id"],
              "camp": crm.records("Campaigns")[0]["id"]}  # fmt: skip
    for k, v in values.items():
        raw = raw.replace(b"{" + k.encode() + b"}", v.encode())
        path = path.replace("{" + k + "}", v)
    crm.clear()
    _send(gw, method, path, raw)
    assert _writes_reached(crm) == []


def test_a_delink_does_not_modify_a_stopped_lead(crm: Crm, gw: GatewayHandle) -> None:
    _, stopped = _leads(crm)
    contact = next(c for c in crm.records("Contacts") if not c["$stop_processing"])
    lead = stopped[0]
    crm.edit("Leads", lead["id"], Referrer={"id": contact["id"], "name": contact["Full_Name"]})
    before = crm.one("Leads", lead["id"])
    assert before["Referrer"]["id"] == contact["id"]
    _send(gw, "DELETE", f"/crm/v8/Contacts/{contact['id']}/Leads/{lead['id']}")
    after = crm.one("Leads", lead["id"])
    assert after["Referrer"] == before["Referrer"]
    assert after["Modified_Time"] == before["Modified_Time"]


_FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


@pytest.mark.parametrize("spelling", ["plus", "fullwidth"])
def test_a_parent_id_in_a_numeric_spelling_is_not_taken_as_free(
    crm: Crm, gw: GatewayHandle, spelling: str
) -> None:
    _, (stopped, *_) = _leads(crm)
    sid = stopped["id"]
    spelled = "+" + sid if spelling == "plus" else sid.translate(_FULLWIDTH)
    crm.clear()
    body = {"data": [{"Note_Content": "rt", "Parent_Id": {"id": spelled}, "$se_module": "Leads"}]}
    r = _send(gw, "POST", "/crm/v8/Notes", body)
    assert r.status_code == 400, r.text
    assert _writes_reached(crm) == []


def test_an_external_update_whose_body_names_a_stopped_id_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, (stopped, *_) = _leads(crm)
    sid = stopped["id"]
    crm.edit("Leads", normal[0]["id"], External_Ref=sid)  # a free lead keyed by that number
    crm.clear()
    body = {"data": [{"id": sid, "City": "RT"}]}
    _send(gw, "PUT", f"/crm/v8/Leads/{sid}", body, **{"X-EXTERNAL": "Leads.External_Ref"})
    assert _writes_reached(crm) == []


def test_a_photo_upload_to_a_stopped_lead_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.clear()
    r = gw.http.post(f"/crm/v8/Leads/{stopped['id']}/Photo",
                     files={"file": ("p.png", b"\x89PNG....", "image/png")})  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["data"][0]["details"]["reason"] == "stop_processing"
    assert _writes_reached(crm) == []


@pytest.mark.parametrize(
    "ids",
    [
        [" {sid} "],
        ["00{sid}"],
        [{"int": True}],
        ["{free}", "{sid}", "{sid}"],
    ],
    ids=["spaces", "leading-zeros", "json-number", "duplicates"],
)
def test_a_mass_update_naming_a_stopped_lead_in_any_id_spelling_never_writes_it(
    crm: Crm, gw: GatewayHandle, ids: list[Any]
) -> None:
    normal, (stopped, *_) = _leads(crm)
    sid = stopped["id"]
    spelled = [int(sid) if isinstance(i, dict) else i.format(sid=sid, free=normal[0]["id"])
               for i in ids]  # fmt: skip
    crm.clear()
    r = _send(gw, "POST", "/crm/v8/Leads/actions/mass_update",
              {"data": [{"City": "RT-Mass"}], "ids": spelled})  # fmt: skip
    assert r.status_code in (207, 400), r.text
    sent = [orjson.loads(x["body"]) for x in _writes_reached(crm, "mass_update")]
    assert all(sid not in str(b["ids"]) for b in sent), sent
    assert crm.one("Leads", sid).get("City") != "RT-Mass"


@pytest.mark.parametrize("module", ["Vendors", "Patients"])
@pytest.mark.parametrize("key", ["Who_Id", "WHO_ID", "what_id"])
def test_an_activity_naming_a_stopped_vendor_or_patient_is_refused(
    crm: Crm, gw: GatewayHandle, module: str, key: str
) -> None:
    target = _stopped(crm, module)
    body = {"data": [{"Subject": "rt", key: {"id": target["id"], "name": "x"},
                      "$se_module": "Accounts"}]}  # fmt: skip
    crm.clear()
    r = _send(gw, "POST", "/crm/v8/Tasks", body)
    assert r.status_code == 400, r.text
    assert r.json()["data"][0]["details"] == {"id": target["id"], "reason": "stop_processing"}
    assert _writes_reached(crm) == []


@pytest.mark.parametrize(
    "parent",
    [
        [{"id": "{sid}"}],
        {"ID": "{sid}"},
        {"id": {"id": "{sid}"}},
        {"id": "{sid}", "name": "x", "module": {"api_name": "Accounts"}},
    ],
    ids=["array", "id-key-upper", "nested-id", "extra-keys"],
)
def test_a_note_parent_in_an_odd_shape_is_refused(crm: Crm, gw: GatewayHandle, parent: Any) -> None:
    normal, (stopped, *_) = _leads(crm)
    text = orjson.dumps(parent).decode().replace("{sid}", stopped["id"])
    text = text.replace("{free}", normal[0]["id"])
    note = {"Note_Content": "rt", "Parent_Id": orjson.loads(text), "$se_module": "Leads"}
    crm.clear()
    r = _send(gw, "POST", "/crm/v8/Notes", {"data": [note]})
    assert r.status_code == 400, r.text
    assert _writes_reached(crm) == []
    assert not [n for n in crm.records("Notes")
                if n["Parent_Id"]["id"] == stopped["id"] and n["Note_Content"] == "rt"]  # fmt: skip


@pytest.mark.parametrize(
    "contacts",
    ["{cid}", {"int": True}, {"id": " 0{cid} "}, {"Id": "{cid}"}],
    ids=["bare-string", "json-number", "padded", "id-key-case"],
)
def test_converting_into_a_stopped_contact_in_any_shape_is_refused(
    crm: Crm, gw: GatewayHandle, contacts: Any
) -> None:
    normal, _ = _leads(crm)
    contact = _stopped(crm, "Contacts")
    if isinstance(contacts, dict) and contacts.get("int"):
        value: Any = int(contact["id"])
    else:
        value = orjson.loads(orjson.dumps(contacts).decode().replace("{cid}", contact["id"]))
    crm.clear()
    r = _send(gw, "POST", f"/crm/v8/Leads/{normal[0]['id']}/actions/convert",
              {"data": [{"overwrite": True, "Contacts": value}]})  # fmt: skip
    assert r.status_code == 400, r.text
    assert _writes_reached(crm) == []


def test_converting_with_the_contact_named_in_a_later_entry_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    normal, _ = _leads(crm)
    contact = _stopped(crm, "Contacts")
    crm.clear()
    r = _send(gw, "POST", f"/crm/v8/Leads/{normal[0]['id']}/actions/convert",
              {"data": [{"overwrite": True}, {"Contacts": {"id": contact["id"]}}]})  # fmt: skip
    assert r.status_code == 400, r.text
    assert _writes_reached(crm) == []


@pytest.mark.parametrize(
    "checks",
    [["Email"], ["EMAIL"], ["External_Ref", "email"]],
    ids=["restricted-field", "restricted-field-upper", "unique-then-restricted"],
)
def test_an_upsert_whose_check_names_a_restricted_field_cannot_update_a_stopped_lead(
    crm: Crm, gw: GatewayHandle, checks: list[str]
) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.edit("Leads", stopped["id"], Email=MARK)
    assert crm.one("Leads", stopped["id"])["Email"] == MARK
    crm.clear()
    body = {"data": [{"Last_Name": "RT-Overwritten", "Email": MARK.upper()}],
            "duplicate_check_fields": checks}  # fmt: skip
    r = _send(gw, "POST", "/crm/v8/Leads/upsert", body)
    assert r.status_code == 400, r.text
    assert _writes_reached(crm) == []
    assert crm.one("Leads", stopped["id"])["Last_Name"] != "RT-Overwritten"
    assert MARK.lower() not in _audit_text(gw).lower()
    assert MARK.lower() not in r.text.lower()


@pytest.mark.parametrize(("method", "path"), [("PUT", "/crm/v8/Leads"),
                                              ("POST", "/crm/v8/Leads/upsert")])  # fmt: skip
def test_an_external_keyed_batch_row_with_a_decoy_id_is_not_forwarded(
    crm: Crm, gw: GatewayHandle, method: str, path: str
) -> None:
    normal, (stopped, *_) = _leads(crm)
    crm.edit("Leads", stopped["id"], External_Ref="RT-EXT-STOP")
    crm.clear()
    body = {"data": [{"id": normal[0]["id"], "External_Ref": "RT-EXT-STOP", "City": "RT"}]}
    _send(gw, method, path, body, **{"X-EXTERNAL": "Leads.External_Ref"})
    assert _writes_reached(crm) == []


# -- composite sub-requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    "sub",
    [
        {"method": "put", "uri": "/crm/v8/leads/{sid}", "body": {"data": [{"City": "RT"}]}},
        {"method": "Put", "uri": "/crm/v8/Leads/{sid}?trigger=workflow",
         "body": {"data": [{"City": "RT"}]}},
        {"method": "POST", "uri": "/crm/v8/Leads/actions/mass_update",
         "params": {"ids": ["{sid}"]}, "body": {"data": [{"City": "RT"}], "ids": ["{sid}"]}},
        {"method": "PUT", "uri": "/crm/v8/Leads/RT-EXT-STOP",
         "headers": {"X-External": "Leads.External_Ref"}, "body": {"data": [{"City": "RT"}]}},
        {"method": "POST", "uri": "/crm/v8/Leads/{sid}/actions/convert", "body": {"data": [{}]}},
        {"method": "PUT", "uri": "/crm/v8/Campaigns/{camp}/Leads", "body": {"data": ["{sid}"]}},
    ],
    ids=["lower-method", "inline-query", "mass-update-ids-in-params", "external-header",
         "convert", "link-bare-id"],
)  # fmt: skip
def test_a_composite_sub_request_to_a_stopped_lead_never_reaches_it(
    crm: Crm, gw: GatewayHandle, sub: dict[str, Any]
) -> None:
    _, (stopped, *_) = _leads(crm)
    crm.edit("Leads", stopped["id"], External_Ref="RT-EXT-STOP")
    camp = crm.records("Campaigns")[0]["id"]
    text = orjson.dumps(sub).decode().replace("{sid}", stopped["id"]).replace("{camp}", camp)
    crm.clear()
    (resp,) = _composite(gw, orjson.loads(text))
    assert resp["status_code"] >= 400, resp
    assert _writes_reached(crm) == []
    assert crm.one("Leads", stopped["id"]).get("City") != "RT"


@pytest.mark.parametrize(
    "sub",
    [
        {"method": "POST", "uri": "/crm/v8/coql",
         "body": {"select_query": "select Last_Name from Leads where Email = 'a@b.c'"}},
        {"method": "GET", "uri": "/crm/v8/Leads/search?criteria=(Last_Name:equals:x)",
         "params": {"CRITERIA": "(Email:equals:x)"}},
        {"method": "GET", "uri": "/crm/v8/Leads/actions/count", "params": {"email": "a@b.c"}},
        {"method": "GET", "uri": "/crm/v8/Leads/RT-EXT-STOP",
         "headers": {"X-EXTERNAL": "Leads.Email"}},
    ],
    ids=["coql-where", "params-vs-inline", "count-email", "external-restricted"],
)  # fmt: skip
def test_a_composite_sub_request_probing_a_restricted_field_never_reaches_the_crm(
    crm: Crm, gw: GatewayHandle, sub: dict[str, Any]
) -> None:
    crm.clear()
    (resp,) = _composite(gw, sub)
    assert resp["status_code"] == 400, resp
    assert [x for x in crm.received("/crm/v8/") if "/settings/" not in x["path"]
            and not x["path"].endswith("/org")] == []  # fmt: skip


@pytest.mark.parametrize(
    "smuggled",
    [{"X-Note": "a\r\nX-EXTERNAL: Leads.Mobile"}, {"X-Rt\r\nX-CRM-ORG": "2"},
     {"X-Note": "a\nX-EXTERNAL: Leads.Mobile"}],
    ids=["crlf-in-value", "crlf-in-name", "lf-in-value"],
)  # fmt: skip
def test_a_composite_sub_request_header_cannot_smuggle_a_header_past_the_check(
    crm: Crm, gw: GatewayHandle, smuggled: dict[str, str]
) -> None:
    """Sub-request headers are built by the gateway, not parsed by an HTTP server: a CR/LF in
    one must never become a header the CRM reads and the gateway did not."""
    crm.clear()
    sub = {"method": "GET", "uri": "/crm/v8/Leads/123456", "headers": smuggled}
    r = _send(gw, "POST", "/crm/v8/__composite_requests", {"__composite_requests": [sub]})
    for x in crm.received("/crm/v8/Leads"):
        names = {k.lower() for k in x["headers"]}
        assert "x-external" not in names and "x-crm-org" not in names, x
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("how", ["composite", "direct"])
def test_a_read_never_forwards_a_body_it_did_not_check(
    crm: Crm, gw: GatewayHandle, how: str
) -> None:
    _, (stopped, *_) = _leads(crm)
    smuggled = {"data": [{"id": stopped["id"], "City": "RT"}],
                "select_query": "select Email from Leads"}  # fmt: skip
    crm.clear()
    if how == "composite":
        _composite(gw, {"method": "GET", "uri": "/crm/v8/Leads",
                        "params": {"fields": "Last_Name"}, "body": smuggled})  # fmt: skip
    else:
        _send(gw, "GET", "/crm/v8/Leads?fields=Last_Name", smuggled)
    # Refused (a read carries no body), so nothing with that body reached the CRM.
    assert not [x for x in crm.received("/crm/v8/Leads") if x["body"]]


# == (b) private values in answers ============================================================


def _planted(crm: Crm) -> dict[str, Any]:
    """A free lead whose restricted Date_of_Birth holds a code-shaped marker."""
    normal, _ = _leads(crm)
    other = normal[1]
    crm.edit("Leads", other["id"], Date_of_Birth=TOKEN_MARK, Email=MARK)
    stored = crm.one("Leads", other["id"])
    assert stored["Date_of_Birth"] == TOKEN_MARK and stored["Email"] == MARK
    return stored


@pytest.mark.parametrize("route", ["batch-write", "single-write", "read"])
def test_a_crm_error_echoing_another_records_private_value_is_scrubbed(
    crm: Crm, gw: GatewayHandle, route: str
) -> None:
    other = _planted(crm)
    normal, (stopped, *_) = _leads(crm)
    error = {"code": "DUPLICATE_DATA", "status": "error",
             "message": f"duplicate of a record born {TOKEN_MARK}",
             "details": {"api_name": "Last_Name",
                         "duplicate_record": {"id": other["id"],
                                              "Date_of_Birth": TOKEN_MARK}}}  # fmt: skip
    if route == "read":
        crm.fault(path_contains="/crm/v8/Leads/search", method="GET", status=400, json=error,
                  times=1)  # fmt: skip
        r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Last_Name:equals:x)"})
    else:
        crm.fault(path_contains="/crm/v8/Leads", method="PUT", status=400,
                  json={"data": [error]}, times=1)  # fmt: skip
        rows = [{"id": normal[0]["id"], "Last_Name": "Dup"}]
        if route == "batch-write":
            rows.append({"id": stopped["id"], "Last_Name": "Dup"})
        url = "/crm/v8/Leads" if route == "batch-write" else f"/crm/v8/Leads/{normal[0]['id']}"
        if route == "single-write":
            rows = [{"Last_Name": "Dup"}]
        r = _send(gw, "PUT", url, {"data": rows})
    assert "DUPLICATE_DATA" in r.text  # the CRM's answer did come back
    assert TOKEN_MARK not in r.text, r.text


def test_a_lead_value_inside_a_tasks_what_id_is_withheld(crm: Crm, gw: GatewayHandle) -> None:
    other = _planted(crm)
    task = crm.records("Tasks")[0]
    task["What_Id"] = {"name": "x", "id": other["id"], "Email": MARK}
    task["$se_module"] = "Leads"
    crm.fault(path_contains="/crm/v8/Tasks", method="GET", status=200,
              json={"data": [task], "info": {"more_records": False}}, times=1)  # fmt: skip
    r = gw.http.get("/crm/v8/Tasks", params={"fields": "Subject,What_Id"})
    assert r.status_code == 200 and r.json()["data"][0]["id"] == task["id"], r.text
    assert MARK not in r.text


def test_a_contact_value_inside_a_deals_lookup_is_withheld(crm: Crm, gw: GatewayHandle) -> None:
    deal = next(d for d in crm.records("Deals") if d["Contact_Name"])
    deal["Contact_Name"] = {**deal["Contact_Name"], "Email": MARK, "Date_of_Birth": TOKEN_MARK}
    crm.fault(path_contains="/crm/v8/Deals", method="GET", status=200,
              json={"data": [deal], "info": {"more_records": False}}, times=1)  # fmt: skip
    r = gw.http.get("/crm/v8/Deals", params={"fields": "Deal_Name,Contact_Name"})
    assert r.status_code == 200 and r.json()["data"][0]["id"] == deal["id"], r.text
    assert MARK not in r.text and TOKEN_MARK not in r.text


def test_a_write_answer_carrying_a_private_value_is_redacted(crm: Crm, gw: GatewayHandle) -> None:
    normal, _ = _leads(crm)
    lead = normal[0]
    answer = {"data": [{"code": "SUCCESS", "status": "success", "message": "record updated",
                        "details": {"id": lead["id"], "Email": MARK,
                                    "Referrer": {"id": "1", "Email": MARK}}}]}  # fmt: skip
    crm.fault(path_contains="/crm/v8/Leads", method="PUT", status=200, json=answer, times=1)
    r = _send(gw, "PUT", f"/crm/v8/Leads/{lead['id']}", {"data": [{"Last_Name": "Same"}]})
    assert r.status_code == 200 and "SUCCESS" in r.text, r.text
    assert MARK not in r.text


def test_a_composite_answer_redacts_reads_and_scrubs_errors_of_each_part(
    crm: Crm, gw: GatewayHandle
) -> None:
    other = _planted(crm)
    crm.clear()
    read, search, coql = _composite(
        gw,
        {"method": "GET", "uri": f"/crm/v8/Leads/{other['id']}",
         "params": {"fields": ["Email", "Date_of_Birth", "$stop_processing"]}},
        {"method": "GET", "uri": "/crm/v8/Leads/search",
         "params": {"criteria": f"(Last_Name:equals:{TOKEN_MARK})"}},
        {"method": "POST", "uri": "/crm/v8/COQL",
         "body": {"select_query": f"select Email, Date_of_Birth from Leads "
                                  f"where id = '{other['id']}'"}},
    )  # fmt: skip
    assert read["status_code"] == 200 and read["body"]["data"][0]["Email"] is None, read
    assert read["body"]["data"][0]["$stop_processing"] is False
    assert coql["status_code"] == 200 and coql["body"]["data"][0]["Date_of_Birth"] is None
    text = orjson.dumps([read, search, coql]).decode()
    assert MARK not in text and TOKEN_MARK not in text
    assert MARK not in _audit_text(gw) and TOKEN_MARK not in _audit_text(gw)


def test_refused_writes_leave_no_sent_value_in_the_audit(crm: Crm, gw: GatewayHandle) -> None:
    _, (stopped, *_) = _leads(crm)
    secret = "rtw-secret-city-42"
    _send(gw, "PUT", "/crm/v8/Leads", {"data": [{"id": stopped["id"], "City": secret}]})
    _send(gw, "POST", "/crm/v8/Notes",
          {"data": [{"Note_Content": secret, "Parent_Id": {"id": stopped["id"]}}]})  # fmt: skip
    _composite(gw, {"method": "PUT", "uri": f"/crm/v8/Leads/{stopped['id']}",
                    "body": {"data": [{"City": secret}]}})  # fmt: skip
    entries = gw.requests()
    assert len(entries) == 3 and all(e["outcome"] == "refused" for e in entries), entries
    assert secret not in _audit_text(gw)
