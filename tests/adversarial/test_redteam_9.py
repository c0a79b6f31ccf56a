"""Ninth red team: writes inside composite requests, per-client rules and
``include=private_fields``, and fields that are withheld without being restricted.

Every test drives the real gateway over HTTP against the sandbox CRM.

Part (A): FINDINGS, each failing against 4bd953f, fixed in the commit that added this file
(and, under A1, what the red team found that is the CRM's own rule, not a leak).
Part (B): attacks that HELD, kept as coverage (each first checks that the data it goes
after is really there, so it could fail).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import orjson
import pytest

from tests.adversarial.conftest import Marked, leads_by_state, no_mark, send
from tests.conftest import Crm, GatewayHandle, MakeGateway, envelope

COMPOSITE = "/crm/v8/__composite_requests"
KEY_NARROW = "rt9-key-narrow-7c1e"  # a client shown nothing private
KEY_WIDE = "rt9-key-wide-9a04"  # a client shown low and high (non-restricted) fields
CITY_MARK = "RT9CITY"


def _client(name: str, key: str, show: list[str]) -> dict[str, Any]:
    return {"name": name, "key_sha256": hashlib.sha256(key.encode()).hexdigest(), "show": show}


def _composite(gw: GatewayHandle, *subs: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    r = gw.http.post(
        COMPOSITE, content=orjson.dumps({"__composite_requests": list(subs)}), headers=headers
    )
    assert r.status_code == 200, r.text
    return [e["details"]["response"] for e in r.json()["__composite_requests"]]


def _writes_reached(crm: Crm) -> list[tuple[str, str]]:
    """Requests that reached the CRM other than reads (the gateway's look-ups are GETs)."""
    return [(r["method"], r["path"]) for r in crm.received("/crm/") if r["method"] != "GET"]


def _crm_calls(crm: Crm, part: str) -> list[dict[str, Any]]:
    """Requests that reached the CRM at ``part``, other than the gateway's metadata."""
    return [r for r in crm.received(part) if "/settings/" not in r["path"]]


def _refused(r: httpx.Response, code: str = "INVALID_QUERY") -> None:
    """The CRM's error envelope, 400 ``code`` (the answer shortened in the message)."""
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.json().get("code") == code, r.text[:300]
    envelope(r, 400, code)


def _free_lead_with_phone(crm: Crm) -> dict[str, Any]:
    normal, _ = leads_by_state(crm)
    lead = next(x for r in normal if (x := crm.one("Leads", r["id"]))["Phone"])
    return lead


# =========================================================================================
# (A) FINDINGS
# =========================================================================================

# -- A1. By design, not a finding: a field that is private but not restricted stays
#        usable in criteria, as in the CRM (contract section 3 refuses criteria on
#        *restricted* fields only; an app may look a lead up by a caller's number it is
#        not shown). The attacks the red team made on such fields (a Phone read back
#        digit by digit through /actions/count, phone= on a Low Phone, an upsert keyed by
#        a Low unique field) are what the CRM allows; a policy that marks the field
#        restricted closes every route, which the next test holds.


@pytest.mark.parametrize(
    "how",
    ["search", "count", "coql-where", "coql-order-by", "sort-by", "bulk-read", "composite"],
)
def test_held_a_field_restricted_by_policy_keys_no_request_on_any_route(
    crm: Crm, make_gateway: MakeGateway, how: str
) -> None:
    """Leads.Phone (private High in the CRM) made restricted by the policy: a criterion,
    COQL condition or ordering, ``sort_by`` or bulk criterion on it is refused on every
    route, 400 INVALID_QUERY, and nothing reaches the CRM."""
    gw = make_gateway({"modules": {"Leads": {"private": {"Phone": "restricted"}}}})
    lead = _free_lead_with_phone(crm)
    phone = lead["Phone"]
    direct = crm.http.get("/crm/v8/Leads/search", params={"criteria": f"(Phone:equals:{phone})"})
    assert direct.status_code == 200 and direct.json()["data"][0]["id"] == lead["id"]  # real
    crm.clear()
    crit = f"(Phone:equals:{phone})"
    coql = f"select Last_Name from Leads where Phone = '{phone}'"
    if how == "search":
        r = gw.http.get("/crm/v8/Leads/search", params={"criteria": crit})
        part = "/search"
    elif how == "count":
        r = gw.http.get("/crm/v8/Leads/actions/count", params={"criteria": crit})
        part = "/actions/count"
    elif how == "coql-where":
        r = send(gw, "POST", "/crm/v8/coql", {"select_query": coql})
        part = "/coql"
    elif how == "coql-order-by":
        query = "select Last_Name from Leads where Last_Name is not null order by Phone limit 5"
        r = send(gw, "POST", "/crm/v8/coql", {"select_query": query})
        part = "/coql"
    elif how == "sort-by":
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "sort_by": "Phone"})
        part = "/crm/v8/Leads"
    elif how == "bulk-read":
        criteria = {"api_name": "Phone", "comparator": "equal", "value": phone}
        query = {"module": {"api_name": "Leads"}, "criteria": criteria}
        r = gw.http.post("/crm/bulk/v8/read", json={"query": query})
        part = "/crm/bulk/"
    else:
        (sub,) = _composite(
            gw, {"method": "GET", "uri": "/crm/v8/Leads/search", "params": {"criteria": crit}}
        )
        assert sub["status_code"] == 400, sub
        assert _crm_calls(crm, "/search") == []
        return
    _refused(r)
    assert _crm_calls(crm, part) == []


def test_a_related_list_is_not_a_reverse_lookup_of_a_restricted_field(
    crm: Crm, make_gateway: MakeGateway, marked: Marked
) -> None:
    """Contacts/{id}/Leads lists the leads whose ``Referrer`` (restricted by the policy)
    names that contact. Every record answer nulls ``Referrer``, but the related list *is*
    its value: ``GET /Contacts/{c}/Leads`` returned exactly the leads c referred, a
    criterion ``(Referrer:equals:c)`` the gateway refuses. handlers/reads.py ``read``
    (Kind.RELATED) never asked which lookup of the related module defines the list.
    Correct: a related list one of whose possible linking lookups is restricted is
    refused (400). (A private lookup that is not restricted may be matched, as criteria
    on it may: A1.)"""
    gw = make_gateway({"modules": {"Leads": {"private": {"Referrer": "restricted"}}}})
    lead, contact = marked.lead, marked.contact
    assert lead["Referrer"]["id"] == contact["id"]  # setup: the lead's referrer
    own = gw.http.get(f"/crm/v8/Leads/{lead['id']}", params={"fields": "Referrer"})
    assert own.status_code == 200 and own.json()["data"][0]["Referrer"] is None  # withheld
    r = gw.http.get(f"/crm/v8/Contacts/{contact['id']}/Leads", params={"fields": "Last_Name"})
    assert envelope(r, 400, "INVALID_QUERY")["api_name"] == "Referrer"
    assert lead["id"] not in r.text, "the related list names the leads this contact referred"
    other = gw.http.get(f"/crm/v8/Contacts/{contact['id']}/Deals", params={"fields": "Deal_Name"})
    assert other.status_code in (200, 204), other.text[:300]  # a list no restricted lookup defines


# -- A2. A sub-request served under another client rule than its request's -------------


def test_a_sub_request_cannot_name_another_client_than_its_request(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """A sub-request named its own ``X-Gateway-Key``: the caller's key is a client shown
    nothing, the second sub-request's a client shown high, and that part got Phone in
    clear. The request's one audit entry said ``client_rule: "narrow"`` only
    (handlers/composite.py ``_merge`` kept the first rule), so the use of the wide
    exception was not in the trail. Correct: one request, one client: a sub-request
    naming another key is refused (400, nothing of it reaches the CRM), the others are
    served under the request's rule, and the entry names that rule."""
    gw = make_gateway(
        {"clients": [_client("narrow", KEY_NARROW, []), _client("wide", KEY_WIDE, ["low", "high"])]}
    )
    phones = {r["Phone"] for r in crm.records("Leads") if r["Phone"]}
    assert phones
    params = {"fields": "Phone", "per_page": 10}
    crm.clear()
    narrow, wide = _composite(
        gw,
        {"method": "GET", "uri": "/crm/v8/Leads", "params": params},
        {"method": "GET", "uri": "/crm/v8/Leads", "params": params,
         "headers": {"X-Gateway-Key": KEY_WIDE}},
        **{"X-Gateway-Key": KEY_NARROW},
    )  # fmt: skip
    assert narrow["body"]["data"] and all(x["Phone"] is None for x in narrow["body"]["data"])
    assert wide["status_code"] == 400 and wide["body"]["code"] == "INVALID_DATA", wide
    assert not phones & set(json.dumps(wide).split('"'))
    assert len(_crm_calls(crm, "/crm/v8/Leads")) == 1  # the narrow part only
    (entry,) = gw.requests()
    assert entry["client_rule"] == "narrow"


# -- A3. rollback_on_fail in another spelling -------------------------------------------


@pytest.mark.parametrize("key", ["ROLLBACK_ON_FAIL", "Rollback_On_Fail"])
def test_rollback_on_fail_in_any_letter_case_is_refused_whole(
    crm: Crm, gw: GatewayHandle, key: str
) -> None:
    """handlers/composite.py line 49 refuses ``rollback_on_fail: true`` (the CRM would undo
    earlier sub-requests when a later one fails; run one by one, nothing is undone) but
    reads the key in one letter case only, while the gateway's own rule is that the CRM
    compares member names in any case (jsonbody.py ``member``). ``ROLLBACK_ON_FAIL: true``
    runs the writes one by one and the first stays written although the client asked
    for all-or-nothing. Correct: refused whole, as the lower-case key is."""
    normal, _ = leads_by_state(crm)
    lid = normal[0]["id"]
    write = {"method": "PUT", "uri": f"/crm/v8/Leads/{lid}", "body": {"data": [{"City": "RT9RB"}]}}
    plain = send(gw, "POST", COMPOSITE, {"__composite_requests": [write], "rollback_on_fail": True})
    _refused(plain, "NOT_SUPPORTED")  # the documented spelling is refused whole
    crm.clear()
    r = send(gw, "POST", COMPOSITE, {"__composite_requests": [write], key: True})
    assert r.status_code == 400, r.text[:300]
    assert _writes_reached(crm) == []
    assert crm.one("Leads", lid).get("City") != "RT9RB"


# =========================================================================================
# (B) HELD
# =========================================================================================


def _stopped_children(crm: Crm, stopped_ids: set[str]) -> dict[str, Any]:
    """A note and a task that hang under a lead in stop processing, and a stopped contact."""
    note = next(n for n in crm.records("Notes") if (n.get("Parent_Id") or {}).get("id") in
                stopped_ids)  # fmt: skip
    task = next(t for t in crm.records("Tasks") if (t.get("What_Id") or {}).get("id") in
                stopped_ids)  # fmt: skip
    contact = next(c for c in crm.records("Contacts") if c["$stop_processing"] is True)
    return {"note": note, "task": task, "contact": contact}


SUBS: dict[str, dict[str, Any]] = {
    "id-as-number": {"method": "PUT", "uri": "/crm/v8/Leads",
                     "body": {"data": [{"id": "#SID", "City": "RT9W"}]}},
    "id-upper-zeros-space": {"method": "PUT", "uri": "/crm/v8/Leads",
                             "body": {"data": [{"ID": " 00{sid} ", "City": "RT9W"}]}},
    "data-in-upper-case": {"method": "PUT", "uri": "/crm/v8/Leads",
                           "body": {"DATA": [{"id": "{sid}", "City": "RT9W"}]}},
    "body-as-a-string": {"method": "PUT", "uri": "/crm/v8/Leads/{sid}",
                         "body": '{"data":[{"City":"RT9W"}]}'},
    "no-body": {"method": "PUT", "uri": "/crm/v8/Leads/{sid}"},
    "v2.1": {"method": "PUT", "uri": "/crm/v2.1/Leads/{sid}",
             "body": {"data": [{"City": "RT9W"}]}},
    "upper-path-convert": {"method": "post", "uri": "/CRM/V8/LEADS/{sid}/Actions/Convert",
                           "body": {"data": [{}]}},
    "mass-update-number-ids": {"method": "POST", "uri": "/crm/v8/Leads/actions/mass_update",
                               "body": {"data": [{"City": "RT9W"}], "ids": ["#SID"]}},
    "note-parent-bare-id": {"method": "POST", "uri": "/crm/v8/Notes",
                            "body": {"data": [{"Note_Content": "RT9W", "parent_id": "{sid}",
                                               "$se_module": "Leads"}]}},
    "task-who-id": {"method": "POST", "uri": "/crm/v8/Tasks",
                    "body": {"data": [{"Subject": "RT9W", "Who_Id": "{sid}"}]}},
    "task-under-stopped": {"method": "PUT", "uri": "/crm/v8/Tasks/{task}",
                           "body": {"data": [{"Subject": "RT9W"}]}},
    "task-detach": {"method": "PUT", "uri": "/crm/v8/Tasks",
                    "body": {"data": [{"id": "{task}", "What_Id": None}]}},
    "note-under-stopped": {"method": "PUT", "uri": "/crm/v8/Notes/{note}",
                           "body": {"data": [{"Note_Content": "RT9W"}]}},
    "deal-to-stopped-contact": {"method": "POST", "uri": "/crm/v8/Deals",
                                "body": {"data": [{"Deal_Name": "RT9W",
                                                   "Contact_Name": {"id": "{contact}"}}]}},
    "convert-into-stopped-contact": {"method": "POST",
                                     "uri": "/crm/v8/Leads/{free}/actions/convert",
                                     "body": {"data": [{"Contacts": {"id": "{contact}"}}]}},
    "upsert-by-unique-field-any-case": {"method": "POST", "uri": "/crm/v8/Leads/upsert",
                                        "body": {"data": [{"Last_Name": "RT9W",
                                                           "external_ref": "rt9-ext"}]}},
}  # fmt: skip


@pytest.mark.parametrize("name", list(SUBS))
def test_held_a_composite_write_in_an_odd_form_never_reaches_a_stopped_record(
    crm: Crm, gw: GatewayHandle, name: str
) -> None:
    normal, stopped = leads_by_state(crm)
    sid = stopped[0]["id"]
    kids = _stopped_children(crm, {s["id"] for s in stopped})
    crm.edit("Leads", sid, External_Ref="RT9-EXT")
    text = (
        orjson.dumps(SUBS[name]).decode()
        .replace('"#SID"', sid)  # a JSON number
        .replace("{sid}", sid).replace("{free}", normal[0]["id"])
        .replace("{task}", kids["task"]["id"]).replace("{note}", kids["note"]["id"])
        .replace("{contact}", kids["contact"]["id"])
    )  # fmt: skip
    assert crm.one("Leads", sid)["$stop_processing"] is True
    crm.clear()
    (resp,) = _composite(gw, orjson.loads(text))
    assert 400 <= resp["status_code"] < 500, resp
    assert _writes_reached(crm) == [], resp
    assert crm.one("Leads", sid).get("City") != "RT9W"


def test_held_an_escaped_reference_is_never_resolved(crm: Crm, gw: GatewayHandle) -> None:
    """``\\u0040{`` passes the byte check for references (composite.py line 51), but the
    sub-requests go to the CRM one by one, so the reference stays text: its target is
    unknown and the write is refused, never sent to the record the reference names."""
    _, stopped = leads_by_state(crm)
    sid = stopped[0]["id"]
    raw = (
        '{"__composite_requests":['
        '{"sub_request_id":"a","method":"GET","uri":"/crm/v8/Leads/SID",'
        '"params":{"fields":"Last_Name"}},'
        '{"method":"PUT","uri":"/crm/v8/Leads",'
        '"body":{"data":[{"id":"\\u0040{a:$.data[0].id}","City":"RT9REF"}]}}]}'
    ).replace("SID", sid)
    crm.clear()
    r = send(gw, "POST", COMPOSITE, raw.encode())
    assert r.status_code == 200, r.text
    read, write = (e["details"]["response"] for e in r.json()["__composite_requests"])
    assert read["status_code"] == 200 and read["body"]["data"][0]["id"] == sid
    assert write["status_code"] == 400, write
    assert _writes_reached(crm) == []
    assert crm.one("Leads", sid).get("City") != "RT9REF"


def test_held_a_gateway_key_in_a_sub_request_stays_home(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """A sub-request naming a key (the request's own in another header case, another
    client's, or an empty one): the request's own is served under it; the others are
    refused. No key reaches the CRM or the audit trail."""
    gw = make_gateway(
        {"clients": [_client("narrow", KEY_NARROW, []), _client("wide", KEY_WIDE, ["low"])]}
    )
    lead = _free_lead_with_phone(crm)
    crm.edit("Leads", lead["id"], City=CITY_MARK)
    url = f"/crm/v8/Leads/{lead['id']}"
    params = {"fields": "City,Phone,Email"}
    crm.clear()
    same, other, empty = _composite(
        gw,
        {"method": "GET", "uri": url, "params": params, "headers": {"x-GATEWAY-key": KEY_NARROW}},
        {"method": "GET", "uri": url, "params": params, "headers": {"x-GATEWAY-key": KEY_WIDE}},
        {"method": "GET", "uri": url, "params": params, "headers": {"X-Gateway-Key": ""}},
        **{"X-Gateway-Key": KEY_NARROW},
    )
    assert same["status_code"] == 200 and same["body"]["data"][0]["City"] is None, same
    for part in (other, empty):
        assert part["status_code"] == 400 and CITY_MARK not in json.dumps(part), part
    reached = crm.received("/crm/")
    assert reached
    for x in reached:
        assert "x-gateway-key" not in {k.lower() for k in x["headers"]}
        assert KEY_WIDE not in json.dumps(x) and KEY_NARROW not in json.dumps(x)
    text = gw.audit_text()
    assert text and KEY_WIDE not in text and KEY_NARROW not in text and CITY_MARK not in text


@pytest.mark.parametrize("where", ["read", "search", "related", "composite", "deleted"])
def test_held_include_private_fields_lists_names_never_values_for_a_low_client(
    crm: Crm, make_gateway: MakeGateway, marked: Marked, where: str
) -> None:
    gw = make_gateway({"clients": [_client("wide", KEY_WIDE, ["low"])]})
    lead, key = marked.lead, {"X-Gateway-Key": KEY_WIDE}
    hidden = [m for m in marked.markers if m != lead["City"]]  # City (Low) is shown
    assert len(hidden) == len(marked.markers) - 1
    fields = "Last_Name,Email,Phone,City,Description,Referrer,First_Name"
    params = {"fields": fields, "include": "private_fields"}
    if where == "read":
        r = gw.http.get(f"/crm/v8/Leads/{lead['id']}", params=params, headers=key)
    elif where == "search":
        crit = f"(Last_Name:equals:{lead['Last_Name']})"
        r = gw.http.get("/crm/v8/Leads/search", params={**params, "criteria": crit}, headers=key)
    elif where == "related":
        url = f"/crm/v8/Contacts/{marked.contact['id']}/Leads"
        r = gw.http.get(url, params=params, headers=key)
    elif where == "deleted":
        r = gw.http.get("/crm/v8/Leads/deleted", params={"include": "private_fields"}, headers=key)
        assert r.status_code in (200, 204), r.text[:300]
        assert not [m for m in hidden if m in r.text]
        return
    else:
        sub = {"method": "GET", "uri": f"/crm/v8/Leads/{lead['id']}",
               "params": {"fields": fields.split(","), "include": ["private_fields"]}}  # fmt: skip
        (part,) = _composite(gw, sub, **key)
        r = gw.http.get(f"/crm/v8/Leads/{lead['id']}", params=params, headers=key)
        assert part["body"] == r.json()
    assert r.status_code == 200, r.text[:300]
    assert not [m for m in hidden if m in r.text], r.text[:300]  # no withheld marker
    rec = next(x for x in r.json()["data"] if x["id"] == lead["id"])
    assert rec["City"] == lead["City"]  # Low: shown to this client
    assert rec["Email"] is None and rec["Phone"] is None and rec["Description"] is None
    listed = {e["api_name"]: e for e in rec["private_fields"]}
    assert {"Email", "Phone", "City", "Description", "Referrer"} <= set(listed)
    for entry in listed.values():
        assert set(entry) == {"api_name", "type", "restricted"}, entry
    audit = gw.audit_text()
    assert audit and not [m for m in marked.markers if m in audit]


@pytest.mark.parametrize(
    "how", ["query-param", "query-param-write", "two-headers", "connection-named"]
)
def test_held_a_gateway_key_given_another_way_shows_nothing_more(
    crm: Crm, make_gateway: MakeGateway, how: str
) -> None:
    gw = make_gateway({"clients": [_client("wide", KEY_WIDE, ["low", "high"])]})
    lead = _free_lead_with_phone(crm)
    url = f"/crm/v8/Leads/{lead['id']}"
    wide = gw.http.get(url, params={"fields": "Phone"}, headers={"X-Gateway-Key": KEY_WIDE})
    assert wide.json()["data"][0]["Phone"] == lead["Phone"]  # the key does show Phone
    crm.clear()
    if how == "query-param":
        r = gw.http.get(url, params={"fields": "Phone", "x_gateway_key": KEY_WIDE})
        _refused(r, "INVALID_DATA")
        assert _crm_calls(crm, "/crm/v8/Leads") == []
    elif how == "query-param-write":
        # refused: forwarded with the other parameters, the key would reach the CRM
        r = send(gw, "PUT", f"{url}?X-Gateway-KEY={KEY_WIDE}", {"data": [{"Last_Name": "Same"}]})
        _refused(r, "INVALID_DATA")
        assert _writes_reached(crm) == [] and KEY_WIDE not in json.dumps(crm.received("/crm/"))
    elif how == "two-headers":
        r = gw.http.get(
            url, params={"fields": "Phone"},
            headers=[("X-Gateway-Key", KEY_WIDE), ("x-gateway-key", KEY_WIDE)],
        )  # fmt: skip
        _refused(r, "INVALID_DATA")
    else:
        named = {"X-Gateway-Key": KEY_WIDE, "Connection": "x-gateway-key"}
        r = gw.http.get(url, params={"fields": "Phone"}, headers=named)
        assert r.status_code == 200 and r.json()["data"][0]["Phone"] is None
    no_mark(r, lead["Phone"])
    assert KEY_WIDE not in gw.audit_text()
