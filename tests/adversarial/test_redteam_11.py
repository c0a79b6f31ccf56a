"""Eleventh red team: the fixes of 34601b8 (bulk exports the gateway writes itself in every
mode, ``word=`` and related lists refused where a restricted lookup decides them, one
client per composite request, ``rollback_on_fail`` in any case, a criteria node that is
both group and criterion).

Every test drives the real gateway over HTTP, against the sandbox CRM or against a CRM
that is the sandbox but for one bulk-read job, whose result is set byte for byte
(``HostileCrm`` of the tenth red team).

Part (A): FINDINGS, each failing against 34601b8, fixed in the commit that added this file.
Part (B): attacks that HELD, kept as coverage (each first checks that what it goes after
is really there, so it could fail).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import Marked, field_metadata, no_mark, send, set_field_metadata
from tests.adversarial.test_redteam_10 import JOB, RESULT, HostileCrm, _csvs, _fetch, _zip
from tests.conftest import Crm, GatewayHandle, MakeGateway, envelope
from tests.servers import serve

MARK = "rt11-mark-5b2e@example.com"
COMPOSITE = "/crm/v8/__composite_requests"
KEY_NARROW = "rt11-key-narrow-41d0"
KEY_WIDE = "rt11-key-wide-8e37"


@pytest.fixture
def hostile11(crm: Crm) -> Iterator[tuple[HostileCrm, str]]:
    fake = HostileCrm(crm.url)
    with serve(fake.app()) as upstream:
        yield fake, upstream.url


def _client(name: str, key: str, show: list[str]) -> dict[str, Any]:
    return {"name": name, "key_sha256": hashlib.sha256(key.encode()).hexdigest(), "show": show}


def _crm_calls(crm: Crm, part: str) -> list[dict[str, Any]]:
    """Requests that reached the CRM at ``part``, other than the gateway's metadata."""
    return [r for r in crm.received(part) if "/settings/" not in r["path"]]


def _composite(gw: GatewayHandle, body: Any, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return gw.http.post(COMPOSITE, content=content, headers=headers)


def _multi_lookup(crm: Crm, module: str, name: str, target: str) -> None:
    """``module`` gains a multi-select lookup ``name`` into ``target`` (metadata only)."""
    fields = field_metadata(crm, module)
    like = field_metadata(crm, "Deals")
    base = dict(next(f for f in like if f["api_name"] == "Contact_Name"))
    base.update(api_name=name, data_type="multiselectlookup", id="5725767000009998801")
    base["lookup"] = {**base["lookup"], "module": {"api_name": target, "id": "1"}}
    set_field_metadata(crm, module, [*fields, base])


# =========================================================================================
# (A) FINDINGS: these fail against 34601b8
# =========================================================================================


def test_a_bulk_results_content_disposition_is_not_the_crms_file_name_passed_on(
    hostile11: tuple[HostileCrm, str], make_gateway: MakeGateway
) -> None:
    """LEAK (every mode). 34601b8 names the new ZIP's member itself (``<job id>.csv``)
    because the CRM's name is text no check reads, yet the ZIP's own name, the result's
    ``Content-Disposition: attachment; filename=...`` the CRM sends with it (the sandbox
    sends ``<job id>.zip``), goes on as the CRM wrote it: handlers/bulk.py:132-133 copies
    every CRM header but ``STALE_AFTER_REWRITE`` and Content-Length onto the gateway's
    own file. A client saves the export under that name. A correct gateway names the
    file it wrote (``<job id>.zip``) or drops the header."""
    fake, url = hostile11
    fake.headers = {"Content-Disposition": f'attachment; filename="{MARK}.zip"'}
    fake.result = _zip((f"{JOB}.csv", "id,Last_Name\r\n1,Doe\r\n"))
    gw = make_gateway(upstream=url)
    with gw.http.stream("GET", RESULT) as r:
        body = r.read()
    assert r.status_code == 200 and _csvs(body) == {f"{JOB}.csv": "id,Last_Name\r\n1,Doe\r\n"}
    no_mark(r, MARK)


def _dated(text: str, years: list[int]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, year in enumerate(years):
            info = zipfile.ZipInfo(f"{JOB}-{n}.csv", (year, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode())
    return out.getvalue()


@pytest.mark.parametrize("mode", ["enforce", "shadow"])
def test_a_bulk_export_carries_no_member_time_the_crm_chose(
    hostile11: tuple[HostileCrm, str], make_gateway: MakeGateway, mode: str
) -> None:
    """LEAK (every mode). The new ZIP's members are dated with the CRM's members' dates:
    bulk.py:263 ``zipfile.ZipInfo(name, member.date_time)``, six values per member (32
    bits of a DOS date and time) that no check reads, the same kind of bytes as the
    member name, comment and extra field 34601b8 stopped passing on. Here each member's
    year spells one character of a private value, and the client's ZIP reads it back. A
    correct gateway dates its members itself (the time of the export)."""
    fake, url = hostile11
    fake.result = _dated("id,Last_Name\r\n1,Doe\r\n", [1980 + ord(c) for c in MARK])
    gw = make_gateway({"rules": {"redact": mode}}, upstream=url)
    status, body = _fetch(gw)
    assert status == 200, (status, body[:200])
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        infos = zf.infolist()
    assert len(infos) == len(MARK)  # every member went on
    spelled = "".join(chr(i.date_time[0] - 1980) for i in infos)
    assert spelled != MARK


@pytest.mark.parametrize(
    ("mode", "header"),
    [("enforce", MARK), ("shadow", f"Owner.{MARK}"), ("off", f"Owner.{MARK}")],
    ids=["enforce-unknown-header", "shadow-owner-path", "off-owner-path"],
)
def test_a_bulk_export_header_cell_is_not_the_crms_text_passed_on(
    hostile11: tuple[HostileCrm, str], make_gateway: MakeGateway, mode: str, header: str
) -> None:
    """LEAK. A CSV header cell is the CRM's text, written back as it came (bulk.py:307
    ``writer.writerow(header)``). In enforce a header naming no field has its column
    emptied but the header itself goes on, whatever it holds; in shadow and off a header
    the metadata cannot resolve is refused (502), except a path through an ownerlookup,
    which ``path_mask`` (redact.py:583, ``walk.stop == OWNER``) keeps whatever follows
    ``Owner.``: ``Owner.<anything>`` is accepted as "a CRM user's field" and both its
    header and its cells pass. X-Privacy-Withheld and the audit already refuse such text
    (``safe_label`` -> "unknown"); the CSV does not. A correct gateway refuses (502) a
    header that names no field it knows (or writes its own, e.g. the metadata's
    spelling)."""
    fake, url = hostile11
    fake.result = _zip((f"{JOB}.csv", f"id,Last_Name,{header}\r\n1,Doe,x\r\n"))
    gw = make_gateway({"rules": {"redact": mode}}, upstream=url)
    status, body = _fetch(gw)
    assert status in (200, 502), status
    assert MARK.encode() not in body
    if status == 200:
        assert MARK not in "".join(_csvs(body).values())
    assert MARK not in gw.audit_text()


def test_a_related_delink_is_no_oracle_on_a_restricted_lookup(
    crm: Crm, make_gateway: MakeGateway, marked: Marked
) -> None:
    """LEAK (a restricted lookup's value read back). ``GET /Contacts/{c}/Leads`` is refused
    when Leads.Referrer is restricted (34601b8, reads.py:48-51 ``check_related_link``), but
    only for ``Kind.RELATED``: ``DELETE /Contacts/{c}/Leads/{lead}`` (Kind.RELATED_WRITE,
    handlers/writes.py:47 ``_one_record``, which checks stop processing, not the link)
    goes to the CRM, which clears the lead's Referrer only when it names c, and so
    touches the lead (its public ``Modified_Time``) only then. A client shown no Referrer
    learns which contact referred the lead (and erases it). A correct gateway refuses a
    related-list write where a restricted lookup could define the list, as it refuses
    the read."""
    gw = make_gateway({"modules": {"Leads": {"private": {"Referrer": "restricted"}}}})
    lead, contact = marked.lead, marked.contact
    other = next(c for c in crm.records("Contacts") if c["id"] != contact["id"])
    assert lead["Referrer"]["id"] == contact["id"]  # setup: the lead's referrer
    url = f"/crm/v8/Leads/{lead['id']}"
    assert gw.http.get(url, params={"fields": "Referrer"}).json()["data"][0]["Referrer"] is None
    read = gw.http.get(f"/crm/v8/Contacts/{contact['id']}/Leads", params={"fields": "Last_Name"})
    envelope(read, 400, "INVALID_QUERY")  # the related list itself is refused

    def touched() -> str:
        r = gw.http.get(url, params={"fields": "Last_Name,Modified_Time"})
        assert r.status_code == 200, r.text[:300]
        stamp: str = r.json()["data"][0]["Modified_Time"]
        return stamp

    answers = []
    for c in (other, contact):  # a contact that did not refer the lead, then the one that did
        before = touched()
        time.sleep(1.1)
        crm.clear()
        r = gw.http.delete(f"/crm/v8/Contacts/{c['id']}/Leads/{lead['id']}")
        writes = [x["method"] for x in crm.received("/crm/") if x["method"] != "GET"]
        answers.append((r.status_code, writes, before != touched()))
    assert all(status == 400 and not reached for status, reached, _ in answers), answers
    assert crm.one("Leads", lead["id"])["Referrer"]["id"] == contact["id"]


def test_a_word_search_is_refused_where_a_multi_select_lookups_name_is_restricted(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """LEAK (a refused criterion reaches the CRM). A criterion on a multi-select lookup is
    refused as one on its target's name (guards.py ``_looked_up_name`` takes
    ``multiselectlookup``), and 34601b8 refuses ``word=`` because it "looks into lookups,
    matched by their targets' names" (README, "Keyed by a withheld field"); yet
    guards.py:152 ``word_lookups`` lists ``data_type == "lookup"`` only. Accounts with a
    multi-select lookup into Contacts (whose Last_Name, so Full_Name, is restricted):
    ``(Key_Contacts:equals:<name>)`` is refused, ``word=<name>`` goes to the CRM. A correct
    gateway refuses ``word=`` for every lookup kind it refuses criteria on."""
    gw = make_gateway({"modules": {"Contacts": {"private": {"Last_Name": "restricted"}}}})
    _multi_lookup(crm, "Accounts", "Key_Contacts", "Contacts")
    name = crm.records("Contacts")[0]["Last_Name"]
    on_lookup = {"criteria": f"(Key_Contacts:equals:{name})"}
    refused = gw.http.get("/crm/v8/Accounts/search", params=on_lookup)
    assert envelope(refused, 400, "INVALID_QUERY")["api_name"] == "Key_Contacts.Full_Name"
    crm.clear()
    r = gw.http.get("/crm/v8/Accounts/search", params={"word": name})
    assert r.status_code == 400 and not _crm_calls(crm, "/Accounts"), (r.status_code, r.text)
    assert name not in gw.audit_text()


# =========================================================================================
# (B) HELD: attacks that did not get through, kept as coverage
# =========================================================================================


@pytest.mark.parametrize(
    "header", ["VISITS", " visits ", "Visits.Notes", "visits.NOTES", "Visits."]
)
def test_held_a_subform_column_in_any_spelling_is_emptied(
    hostile11: tuple[HostileCrm, str], make_gateway: MakeGateway, header: str
) -> None:
    fake, url = hostile11
    fake.fields = ["Last_Name", "Visits"]
    fake.result = _zip((f"{JOB}.csv", f'id,Last_Name,"{header}"\r\n1,Doe,{MARK}\r\n'))
    assert MARK in _csvs(fake.result)[f"{JOB}.csv"]  # setup: the value is in the file
    gw = make_gateway(upstream=url)
    status, body = _fetch(gw)
    if header.endswith("."):  # no field name: the file is refused
        assert status == 502 and MARK.encode() not in body
        return
    assert status == 200, status
    text = _csvs(body)[f"{JOB}.csv"]
    assert text.startswith("id,Last_Name,") and "Doe" in text and MARK not in text


@pytest.mark.parametrize("mode", ["shadow", "off"])
@pytest.mark.parametrize("header", ["Visits", "VISITS", "Unlisted_Field", "Referrer.Nope"])
def test_held_a_column_shadow_cannot_judge_is_refused(
    hostile11: tuple[HostileCrm, str], make_gateway: MakeGateway, header: str, mode: str
) -> None:
    fake, url = hostile11
    fake.fields = ["Last_Name", "Visits", "Referrer.Email"]
    fake.result = _zip((f"{JOB}.csv", f"id,Last_Name,{header}\r\n1,Doe,{MARK}\r\n"))
    assert MARK in _csvs(fake.result)[f"{JOB}.csv"]
    gw = make_gateway({"rules": {"redact": mode}}, upstream=url)
    status, body = _fetch(gw)
    assert status == 502 and MARK.encode() not in body, status


@pytest.mark.parametrize("header", ["Key_Contacts", "KEY_CONTACTS", " key_contacts"])
def test_held_a_multi_select_lookup_column_of_withheld_names_is_emptied(
    hostile11: tuple[HostileCrm, str], make_gateway: MakeGateway, crm: Crm, header: str
) -> None:
    fake, url = hostile11
    _multi_lookup(crm, "Leads", "Key_Contacts", "Contacts")
    fake.fields = ["Last_Name", "Key_Contacts"]
    fake.result = _zip((f"{JOB}.csv", f'id,Last_Name,"{header}"\r\n1,Doe,{MARK}\r\n'))
    assert MARK in _csvs(fake.result)[f"{JOB}.csv"]
    gw = make_gateway(
        {"modules": {"Contacts": {"private": {"Last_Name": "restricted"}}}}, upstream=url
    )
    status, body = _fetch(gw)
    assert status == 200, status
    text = _csvs(body)[f"{JOB}.csv"]
    assert "Doe" in text and MARK not in text


def test_held_a_row_with_fewer_cells_keeps_its_columns_in_place(
    hostile11: tuple[HostileCrm, str], make_gateway: MakeGateway
) -> None:
    fake, url = hostile11
    fake.result = _zip((f"{JOB}.csv", f"id,Last_Name,Email\r\n1,Doe,{MARK}\r\n2\r\n3,Roe\r\n"))
    assert MARK in _csvs(fake.result)[f"{JOB}.csv"]
    gw = make_gateway(upstream=url)
    status, body = _fetch(gw)
    assert status == 200
    assert _csvs(body) == {f"{JOB}.csv": "id,Last_Name,Email\r\n1,Doe,\r\n2\r\n3,Roe\r\n"}


def test_held_a_job_id_with_leading_zeros_names_the_member_by_the_clients_text(
    hostile11: tuple[HostileCrm, str], make_gateway: MakeGateway
) -> None:
    """The member is named by the job id the client asked for: never the CRM's text."""
    fake, url = hostile11
    fake.result = _zip((f"../{MARK}/x.csv", f"id,Last_Name,Email\r\n1,Doe,{MARK}\r\n"))
    assert MARK.encode() in fake.result
    gw = make_gateway(upstream=url)
    with gw.http.stream("GET", RESULT) as r:
        body = r.read()
    assert r.status_code == 200
    assert list(_csvs(body)) == [f"{JOB}.csv"] and MARK.encode() not in body


WORD_ROUTES = ["search", "actions/count", "composite", "upper-case", "composite-count"]


@pytest.mark.parametrize("how", WORD_ROUTES)
@pytest.mark.parametrize("module", ["Tasks", "Deals"])
def test_held_word_is_refused_through_a_parent_or_lookup_on_every_route(
    crm: Crm, make_gateway: MakeGateway, module: str, how: str
) -> None:
    """Tasks.What_Id (a parent field, any module) and Deals.Contact_Name: with Contacts'
    and Leads' Last_Name restricted, ``word=`` is refused on search, count, in another
    letter case and inside a composite request, and never reaches the CRM."""
    restricted = {"private": {"Last_Name": "restricted"}}
    gw = make_gateway({"modules": {"Contacts": restricted, "Leads": restricted}})
    name = crm.records("Contacts")[0]["Last_Name"]
    crm.clear()
    if how in ("composite", "composite-count"):
        route = "search" if how == "composite" else "actions/count"
        sub = {"method": "GET", "uri": f"/crm/v8/{module}/{route}", "params": {"word": name}}
        r = _composite(gw, {"__composite_requests": [sub]})
        assert r.status_code == 200, r.text
        part = r.json()["__composite_requests"][0]["details"]["response"]
        assert part["status_code"] == 400 and part["body"]["code"] == "INVALID_QUERY", part
    else:
        route = "actions/count" if how == "actions/count" else "search"
        key = "WORD" if how == "upper-case" else "word"
        r = gw.http.get(f"/crm/v8/{module}/{route}", params={key: name})
        envelope(r, 400, "INVALID_QUERY")
    assert not _crm_calls(crm, f"/{module}")
    assert name not in gw.audit_text()


def test_held_allow_word_search_lets_word_through_by_policy(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """``search.allow_word_search`` is the policy's own exception: word= then goes on."""
    restricted = {"private": {"Last_Name": "restricted"}}
    gw = make_gateway({"modules": {"Contacts": restricted}, "search": {"allow_word_search": True}})
    name = crm.records("Contacts")[0]["Last_Name"]
    crm.clear()
    r = gw.http.get("/crm/v8/Deals/search", params={"word": name})
    assert r.status_code in (200, 204) and _crm_calls(crm, "/Deals/search"), r.text[:200]


@pytest.mark.parametrize(
    "how", ["lower-case-names", "composite", "patients-under-lead", "with-include"]
)
def test_held_a_related_list_a_restricted_lookup_defines_is_refused_every_way(
    crm: Crm, make_gateway: MakeGateway, marked: Marked, how: str
) -> None:
    gw = make_gateway(
        {
            "modules": {
                "Leads": {"private": {"Referrer": "restricted"}},
                "Patients": {"private": {"Referring_Lead": "restricted"}},
            }
        }
    )
    lead, contact = marked.lead, marked.contact
    assert lead["Referrer"]["id"] == contact["id"]  # setup
    patient = next(p for p in crm.records("Patients") if p.get("Referring_Lead"))
    crm.clear()
    if how == "composite":
        sub = {"method": "GET", "uri": f"/crm/v8/Contacts/{contact['id']}/Leads",
               "params": {"fields": "Last_Name"}}  # fmt: skip
        r = _composite(gw, {"__composite_requests": [sub]})
        part = r.json()["__composite_requests"][0]["details"]["response"]
        assert part["status_code"] == 400 and lead["id"] not in json.dumps(part), part
    elif how == "patients-under-lead":
        pid = patient["Referring_Lead"]["id"]
        r = gw.http.get(f"/crm/v8/Leads/{pid}/Patients", params={"fields": "Name"})
        assert envelope(r, 400, "INVALID_QUERY")["api_name"] == "Referring_Lead"
        assert patient["id"] not in r.text
    else:
        url = f"/crm/v8/contacts/{contact['id']}/leads"
        params = {"fields": "Last_Name"}
        if how == "with-include":
            params["include"] = "private_fields"
        r = gw.http.get(url, params=params)
        envelope(r, 400, "INVALID_QUERY")
        assert lead["id"] not in r.text
    assert not _crm_calls(crm, "/Leads") and not _crm_calls(crm, "/Patients")


@pytest.mark.parametrize(
    "headers",
    [
        {"X_Gateway_Key": KEY_WIDE},
        {"X-Gateway-Key": KEY_WIDE, "Connection": "X-Gateway-Key"},
        {"x-gateway-key": KEY_WIDE, "X-Gateway-Key-Extra": "1"},
    ],
    ids=["underscore", "connection-named", "two-spellings-of-names"],
)
def test_held_a_sub_request_cannot_reach_another_clients_rule_by_header(
    crm: Crm, make_gateway: MakeGateway, headers: dict[str, str]
) -> None:
    gw = make_gateway(
        {"clients": [_client("narrow", KEY_NARROW, []), _client("wide", KEY_WIDE, ["high"])]}
    )
    lead = next(x for r in crm.records("Leads") if (x := crm.one("Leads", r["id"]))["Phone"])
    url = f"/crm/v8/Leads/{lead['id']}"
    wide = gw.http.get(url, params={"fields": "Phone"}, headers={"X-Gateway-Key": KEY_WIDE})
    assert wide.json()["data"][0]["Phone"] == lead["Phone"]  # setup: the wide key shows it
    sub = {"method": "GET", "uri": url, "params": {"fields": "Phone"}, "headers": headers}
    r = _composite(gw, {"__composite_requests": [sub]}, **{"X-Gateway-Key": KEY_NARROW})
    assert r.status_code == 200, r.text
    no_mark(r, lead["Phone"])
    (entry,) = [e for e in gw.requests() if e["route"].endswith("__composite_requests")]
    assert entry["client_rule"] == "narrow"
    for x in crm.received("/crm/"):
        assert KEY_WIDE not in json.dumps(x)
    assert KEY_WIDE not in gw.audit_text() and KEY_NARROW not in gw.audit_text()


def test_held_a_gateway_key_as_a_sub_request_parameter_is_refused(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"clients": [_client("wide", KEY_WIDE, ["high"])]})
    lead = next(x for r in crm.records("Leads") if (x := crm.one("Leads", r["id"]))["Phone"])
    url = f"/crm/v8/Leads/{lead['id']}"
    crm.clear()
    sub = {"method": "GET", "uri": url, "params": {"fields": "Phone", "x_gateway_key": KEY_WIDE}}
    r = _composite(gw, {"__composite_requests": [sub], "X-Gateway-Key": KEY_WIDE})
    assert r.status_code in (200, 400), r.text
    no_mark(r, lead["Phone"])
    assert not _crm_calls(crm, "/crm/v8/Leads")
    assert KEY_WIDE not in gw.audit_text()


@pytest.mark.parametrize(
    "raw",
    [
        b'"rollback_on_fail":"true"',
        b'"rollback_on_fail":1',
        b'"ROLLBACK_on_FAIL":"yes"',
        b'"rollback_on_fail":false,"Rollback_On_Fail":true',
        b'"rollback_on_fail":[true]',
    ],
    ids=["string", "number", "odd-case-string", "twice-in-two-cases", "list"],
)
def test_held_rollback_on_fail_in_any_form_is_refused_whole(
    crm: Crm, gw: GatewayHandle, raw: bytes
) -> None:
    lead = next(r for r in crm.records("Leads") if r["$stop_processing"] is False)
    write = {"method": "PUT", "uri": f"/crm/v8/Leads/{lead['id']}",
             "body": {"data": [{"City": "RT11RB"}]}}  # fmt: skip
    body = b'{"__composite_requests":[' + orjson.dumps(write) + b"]," + raw + b"}"
    crm.clear()
    r = _composite(gw, body)
    assert r.status_code == 400, r.text[:300]
    assert [x for x in crm.received("/crm/") if x["method"] != "GET"] == []
    assert crm.one("Leads", lead["id"]).get("City") != "RT11RB"


CRITERIA_SHAPES: dict[str, dict[str, Any]] = {
    "group-null": {"group": None, "api_name": "Email", "comparator": "equal", "value": "{v}"},
    "group-empty": {"group": [], "api_name": "Email", "comparator": "equal", "value": "{v}"},
    "Group-and-field": {"Group": [{"api_name": "Last_Name", "comparator": "not_equal",
                                   "value": "zzz"}],
                        "FIELD": {"API_NAME": "Email"}, "comparator": "equal", "value": "{v}"},
    "nested-both": {"group_operator": "and", "group": [
        {"group": [{"api_name": "Last_Name", "comparator": "not_equal", "value": "z"}],
         "field": {"api_name": "Email"}, "value": "{v}"}]},
    "value-is-a-field": {"api_name": "Last_Name", "comparator": "equal",
                         "value": {"API_Name": "Email"}},
}  # fmt: skip


@pytest.mark.parametrize("shape", list(CRITERIA_SHAPES))
def test_held_a_bulk_criteria_node_the_crm_may_read_as_a_criterion_is_checked(
    crm: Crm, gw: GatewayHandle, marked: Marked, shape: str
) -> None:
    email = marked.lead["Email"]
    direct = crm.http.get("/crm/v8/Leads/search", params={"criteria": f"(Email:equals:{email})"})
    assert direct.json()["data"][0]["id"] == marked.lead["id"]  # setup: the value is there
    criteria = orjson.loads(orjson.dumps(CRITERIA_SHAPES[shape]).replace(b"{v}", email.encode()))
    body = {"query": {"module": {"api_name": "Leads"}, "fields": ["Last_Name"],
                      "criteria": criteria}}  # fmt: skip
    crm.clear()
    r = send(gw, "POST", "/crm/bulk/v8/read", body)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert not crm.received("/crm/bulk/")
    marked.assert_audit_clean(gw)


def test_held_a_custom_view_whose_node_is_group_and_criterion_is_never_run(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    email = marked.lead["Email"]
    node = {"group": [{"api_name": "Last_Name", "comparator": "not_equal", "value": "zzz"}],
            "api_name": "Email", "comparator": "equal", "value": email}  # fmt: skip
    made = crm.admin.post("/_sandbox/custom_views/1/Leads", json={"name": "rt11", "criteria": node})
    assert made.status_code == 200, made.text
    cvid = made.json()["id"]
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"cvid": cvid, "fields": "Last_Name"})
    assert r.status_code in (400, 503), r.text[:300]
    q = {"query": {"module": {"api_name": "Leads"}, "cvid": cvid, "fields": ["Last_Name"]}}
    b = send(gw, "POST", "/crm/bulk/v8/read", q)
    assert b.status_code in (400, 503), b.text[:300]
    assert not _crm_calls(crm, "/crm/v8/Leads") and not crm.received("/crm/bulk/")
    marked.assert_audit_clean(gw)
