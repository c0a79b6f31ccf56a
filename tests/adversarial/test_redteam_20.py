"""Twentieth red team: the settings answers after d1da8cf (every ``/settings/{name}[/{id}]``
answer's criteria withheld; of a withheld criterion only ``api_name``, ``comparator``,
``field`` (``api_name``, ``id``), ``group``, ``group_operator`` and ``type`` stay, as plain
tokens; one custom view judged by its module only when the module's list names it), and
the other answers the gateway passes as metadata (``/org``, ``/users``).

Every test drives the real gateway over HTTP against the sandbox CRM; where the CRM must
answer in a shape it never gives, its fault injection plays the CRM.

Part (A): FINDINGS, each failing against d1da8cf because the attack works (the comment
above each names the gateway file/function responsible).
Part (B): what HELD, kept as coverage (each first checks that the data it relies on is
really there, so it could fail).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.adversarial.conftest import Marked, no_mark
from tests.conftest import Crm, GatewayHandle
from tests.test_custom_views import leaf, make_view

JSON = "application/json;charset=UTF-8"


def _answer(crm: Crm, path: str, body: Any, status: int = 200, times: int = 1) -> None:
    """The CRM answers the next GET on ``path`` with ``body`` (JSON)."""
    crm.fault(path_contains=path, method="GET", status=status, body=orjson.dumps(body).decode(),
              content_type="application/json;charset=UTF-8", times=times)  # fmt: skip


def _territories(
    crm: Crm, gw: GatewayHandle, criteria: Any, member: str = "deal_rule_criteria"
) -> httpx.Response:
    """A territory whose rule (under ``member``) is ``criteria``, through the gateway."""
    territory = {"id": "4343", "name": "Key accounts", member: criteria}
    _answer(crm, "/settings/territories", {"territories": [territory]})
    crm.clear()
    r = gw.http.get("/crm/v8/settings/territories")
    assert crm.received("/settings/territories")  # the faulted answer was read
    assert r.status_code == 200, r.text
    return r


def _through_view(
    crm: Crm, gw: GatewayHandle, criteria: Any, module: str = "Leads"
) -> tuple[str, str]:
    """A view made at the CRM with ``criteria``: its definition direct and through the gateway."""
    cvid = make_view(crm, module, criteria)
    path = f"/crm/v8/settings/custom_views/{cvid}"
    direct = crm.http.get(path, params={"module": module})
    assert direct.status_code == 200, direct.text
    r = gw.http.get(path, params={"module": module})
    assert r.status_code == 200, r.text
    return direct.text, r.text


def _withheld_on_read(gw: GatewayHandle, module: str, rid: str, field: str) -> None:
    r = gw.http.get(f"/crm/v8/{module}/{rid}", params={"fields": field})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0][field] is None  # the gateway withholds it on a read


# =========================================================================================
# (A) FINDINGS
# =========================================================================================


# gateway/privacy/catalog.py criteria_nodes (jsonbody.member: the FIRST member of a name
# in any case) + privacy/view_body.py _withhold: a view's criterion carrying ``field``
# twice in two letter cases is judged by the first only.
def test_a_views_criterion_with_field_given_twice_is_judged_by_the_harmless_one(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK (hostile/odd CRM answer). ``{"Field": {"api_name": "Last_Name"}, "field":
    {"api_name": "Email"}, "value": x@y}``: ``member(node, "field")`` returns ``Field``
    (Last_Name, public) so the criterion is judged harmless and its ``value`` kept, while a
    CRM reading member names exactly compares Email. The restricted Email reaches the
    client. (Two ``api_name`` spellings at one level of a node were made to be judged
    both in red team 19; two ``field`` members were not.)"""
    email = marked.lead["Email"]
    _withheld_on_read(gw, "Leads", marked.lead["id"], "Email")
    criterion = {
        "comparator": "equal",
        "Field": {"api_name": "Last_Name", "id": "1"},
        "field": {"api_name": "Email", "id": "2"},
        "value": email,
    }
    direct, through = _through_view(crm, gw, criterion)
    assert email in direct
    assert email not in through


# gateway/privacy/view_body.py _withhold: ``field = next(...)`` walks only the first member
# named field; _values keeps every member named ``field`` that holds an object.
def test_a_withheld_criterions_second_field_object_passes_unwalked(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK (hostile CRM). Of a withheld criterion every ``field``-named member holding an
    object is kept (``_values``: name in _STRUCTURE, a dict), yet only the first is walked
    down to ``api_name`` and ``id``: a ``Field`` object beside ``field`` keeps whatever it
    holds (a ``display_value``, a ``value``)."""
    email = marked.lead["Email"]
    criteria = {
        "comparator": "equal",
        "field": {"api_name": "Email", "id": "1"},
        "Field": {"api_name": "Email", "display_value": email, "value": email},
        "value": email,
    }
    r = _territories(crm, gw, criteria)
    judged = r.json()["territories"][0]["deal_rule_criteria"]
    assert judged is None or judged["value"] is None  # withheld whole, or its value
    no_mark(r, email)


# gateway/privacy/view_body.py _values (keeps every ``group``-named list) vs
# privacy/catalog.py criteria_nodes (walks only the first, jsonbody.member).
@pytest.mark.parametrize("route", ["settings", "custom_view"])
def test_a_second_group_list_in_another_case_passes_unjudged(
    crm: Crm, gw: GatewayHandle, marked: Marked, route: str
) -> None:
    """LEAK (hostile CRM). A group node ``{"group": [harmless], "GROUP": [Email = x@y]}``:
    criteria_nodes follows ``member(node, "group")`` (the first), and ``_values`` keeps
    every group-named list as structure, so the second list's criteria are never judged
    (in a territory's rule, judged by no field, and in a custom view judged by Leads)."""
    email = marked.lead["Email"]
    criteria = {
        "group_operator": "or",
        "group": [leaf("Last_Name", "Smith")],
        "GROUP": [leaf("Email", email)],
    }
    if route == "settings":
        r = _territories(crm, gw, criteria)
        judged = r.json()["territories"][0]["deal_rule_criteria"]
        assert judged is None or judged["group"][0]["value"] is None
        no_mark(r, email)
    else:
        direct, through = _through_view(crm, gw, criteria)
        assert email in direct
        assert email not in through


# gateway/privacy/view_body.py _values / _TOKEN (letters, digits, "_", ".", "$") and the
# digits-only ``field.id``: a private value of a token's shape stays in a withheld criterion.
@pytest.mark.parametrize("member", ["comparator", "type", "api_name", "field.api_name", "field.id"])
def test_a_token_shaped_private_value_in_a_kept_member_passes(
    crm: Crm, gw: GatewayHandle, marked: Marked, member: str
) -> None:
    """LEAK (hostile CRM only: the real CRM writes names there). The members kept of a
    withheld criterion hold any text of a token's shape: the lead's private City (a single
    word, ``MarkCity123456``), a First_Name, a Lead_Status, a website ``www.x.com`` (the
    dot is allowed), and ``field.id`` any digits (a phone number written as digits)."""
    lead = marked.lead
    city = lead["City"]
    digits = "5550" + lead["id"][-6:]
    crm.edit("Leads", lead["id"], Mobile=digits)
    assert crm.one("Leads", lead["id"])["Mobile"] == digits
    _withheld_on_read(gw, "Leads", lead["id"], "City")
    _withheld_on_read(gw, "Leads", lead["id"], "Mobile")
    node: dict[str, Any] = {"comparator": "equal", "field": {"api_name": "City", "id": "1"},
                            "type": "value", "value": city}  # fmt: skip
    secret = city
    if member == "field.id":
        node["field"]["id"], secret = digits, digits
    elif member == "field.api_name":
        node["field"]["api_name"] = city
    else:
        node[member] = city
    r = _territories(crm, gw, node)
    assert r.json()["territories"][0]["deal_rule_criteria"]["value"] is None  # was judged
    no_mark(r, secret)


# gateway/privacy/view_body.py withhold_criteria_values: only members named ``criteria`` or
# ``*_criteria`` are judged in a settings answer; every other member passes (default allow).
@pytest.mark.parametrize(
    "member",
    [
        "filters",
        "filter",
        "conditions",
        "lookup_filter",
        "rules",
        "criteria_details",
        "criteria_pattern",
        "Criteria ",
        "cr\u0131teria",  # a dotless i
        "criteria_",
    ],
)
def test_a_criteria_under_another_member_name_pass_unjudged(
    crm: Crm, gw: GatewayHandle, marked: Marked, member: str
) -> None:
    """LEAK (hostile CRM / unverified real shape). A settings answer holding the very
    criteria shape (``{"comparator", "field", "value"}``) under a member that is not named
    criteria (Zoho's own word for a GET's criteria is ``filters``; workflow-like rules hold
    ``conditions``; a look-up filter; a name with a trailing space or a dotless i) goes out
    as the CRM sent it: settings answers are judged by an allow-list of member names, and
    every other member passes."""
    email = marked.lead["Email"]
    r = _territories(crm, gw, leaf("Email", email), member)
    assert member in r.json()["territories"][0]
    no_mark(r, email)


# gateway/forward.py passthrough: /org and /users are Kind.METADATA, only their CRM errors
# are scrubbed; criteria in them (or any record value) pass as the CRM sent them.
@pytest.mark.parametrize(
    "path", ["/crm/v8/users", "/crm/v8/users/5725767000000411001", "/crm/v8/org"]
)
def test_a_users_and_org_answers_pass_criteria_unjudged(
    crm: Crm, gw: GatewayHandle, marked: Marked, path: str
) -> None:
    """LEAK (hostile CRM only). ``/users[/{id}]`` and ``/org`` are not settings: their
    answers are not judged at all, so criteria of the custom views' shape in them (a
    user's territory rule, say) hand out the lead's restricted Email."""
    email = marked.lead["Email"]
    key = "org" if path.endswith("/org") else "users"
    rule = {"id": "4343", "name": "Key accounts", "deal_rule_criteria": leaf("Email", email)}
    body = {key: [{"id": "5725767000000411001", "territories": [rule]}]}
    _answer(crm, path.removeprefix("/crm/v8"), body)
    crm.clear()
    r = gw.http.get(path)
    assert crm.received(path.removeprefix("/crm/v8"))
    assert r.status_code == 200, r.text
    no_mark(r, email)


# gateway/privacy/errors_body.py _scrub_value/_plain_sentence: an error's ``details``
# keeps any token-shaped value under a vocabulary key (api_name, id, field, module...), and
# a message may repeat what details name; then view_body judges only criteria.
def test_a_settings_errors_token_shaped_detail_hands_out_a_private_value(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK (hostile CRM only). A 400 from ``/settings/territories`` whose details name the
    lead's City (a token, ``MarkCity123456``) as an ``api_name``: not a value the request
    carried, so the error scrub keeps it, and the message naming it is kept too."""
    city = marked.lead["City"]
    body = {"code": "INVALID_DATA", "status": "error",
            "details": {"api_name": city, "field": city},
            "message": f"invalid value {city}"}  # fmt: skip
    _answer(crm, "/settings/territories", body, status=400)
    crm.clear()
    r = gw.http.get("/crm/v8/settings/territories")
    assert crm.received("/settings/territories")
    assert r.status_code == 400, r.text
    no_mark(r, city)


# =========================================================================================
# (B) HELD
# =========================================================================================


@pytest.mark.parametrize(
    "shape",
    [
        "json_string",  # criteria as a JSON text holding the object
        "upper",  # CRITERIA
        "suffix_upper",  # Deal_Rule_CRITERIA
        "in_list",  # rules: [{"criteria": ...}] (a list inside a non-criteria member)
        "deep",  # a: {b: [{c: {"lock_criteria": ...}}]}
        "two_cases",  # criteria and Criteria side by side
        "list_of_criteria",  # criteria: [leaf, "and", leaf]
        "value_object",  # value: {"value": x@y, "display_value": x@y}
    ],
)
def test_held_settings_criteria_in_other_shapes_are_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked, shape: str
) -> None:
    email = marked.lead["Email"]
    one = leaf("Email", email)
    territory: dict[str, Any] = {"id": "4343"}
    if shape == "json_string":
        territory["criteria"] = orjson.dumps(one).decode()
    elif shape == "upper":
        territory["CRITERIA"] = one
    elif shape == "suffix_upper":
        territory["Deal_Rule_CRITERIA"] = one
    elif shape == "in_list":
        territory["rules"] = [{"name": "r", "criteria": one}]
    elif shape == "deep":
        territory["a"] = {"b": [{"c": {"lock_criteria": one}}]}
    elif shape == "two_cases":
        territory["criteria"] = leaf("Last_Name", "x")
        territory["Criteria"] = one
    elif shape == "list_of_criteria":
        territory["criteria"] = [one, "and", leaf("Last_Name", "x")]
    else:
        territory["criteria"] = leaf("Email", {"value": email, "display_value": email})
    raw = orjson.dumps({"territories": [territory]}).decode()
    assert email in raw  # the CRM's answer holds it
    _answer(crm, "/settings/territories", {"territories": [territory]})
    crm.clear()
    r = gw.http.get("/crm/v8/settings/territories")
    assert crm.received("/settings/territories")
    assert r.status_code == 200, r.text
    no_mark(r, email)
    assert int(r.headers["x-privacy-withheld"].split(";")[0]) >= 1


def test_held_a_settings_error_with_criteria_in_details_is_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    email = marked.lead["Email"]
    body = {"code": "INVALID_DATA", "status": "error", "message": "invalid data",
            "details": {"criteria": leaf("Email", email), "value": email,
                        "reason": "the criteria value is invalid"}}  # fmt: skip
    assert email in orjson.dumps(body).decode()
    _answer(crm, "/settings/record_locking_configurations", body, status=400)
    crm.clear()
    r = gw.http.get("/crm/v8/settings/record_locking_configurations", params={"module": "Leads"})
    assert crm.received("/settings/record_locking_configurations")
    assert r.status_code == 400, r.text
    no_mark(r, email)


@pytest.mark.parametrize("route", ["settings", "custom_view"])
def test_held_composite_sub_requests_to_settings_are_judged(
    crm: Crm, gw: GatewayHandle, marked: Marked, route: str
) -> None:
    email = marked.lead["Email"]
    if route == "settings":
        body = {"territories": [{"id": "4343", "deal_rule_criteria": leaf("Email", email)}]}
        _answer(crm, "/settings/territories", body)
        crm.clear()
        sub = {"method": "GET", "uri": "/crm/v8/settings/territories"}
    else:
        cvid = make_view(crm, "Leads", leaf("Email", email))
        direct = crm.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
        assert email in direct.text
        sub = {"method": "GET", "uri": f"/crm/v8/settings/custom_views/{cvid}",
               "params": {"module": "Leads"}}  # fmt: skip
    r = gw.http.post("/crm/v8/__composite_requests",
                     content=orjson.dumps({"__composite_requests": [sub]}))  # fmt: skip
    assert r.status_code == 200, r.text
    inner = r.json()["__composite_requests"][0]["details"]["response"]
    assert inner["status_code"] == 200, inner
    if route == "settings":
        assert crm.received("/settings/territories")  # the faulted answer was read
        assert inner["body"]["territories"][0]["deal_rule_criteria"]["value"] is None
    no_mark(r, email)


@pytest.mark.parametrize(
    "listed",
    [
        "number",  # the module's list gives the id as a JSON number
        "zeros",  # the list gives it with leading zeros
        "more_records",  # the list says more_records and names the view
    ],
)
def test_held_a_view_listed_oddly_for_the_module_is_still_judged(
    crm: Crm, gw: GatewayHandle, marked: Marked, listed: str
) -> None:
    """A view the module's list names in another spelling is judged by the module (or by
    none): its restricted value never passes."""
    email = marked.lead["Email"]
    cvid = make_view(crm, "Leads", leaf("Email", email))
    direct = crm.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    assert email in direct.text
    vid: Any = int(cvid) if listed == "number" else ("00" + cvid if listed == "zeros" else cvid)
    info = {"more_records": listed == "more_records", "page": 1, "per_page": 1}
    lst = {"custom_views": [{"id": vid, "name": "Admin view"}], "info": info}
    # the gateway's first custom-views call is its look at the module's list
    _answer(crm, "/settings/custom_views", lst)
    crm.clear()
    r = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    assert crm.received(f"/settings/custom_views/{cvid}")  # the view itself was asked
    assert r.status_code == 200, r.text
    assert r.json()["custom_views"][0]["criteria"]["value"] is None
    no_mark(r, email)


def test_held_a_public_fields_view_in_a_listed_module_keeps_its_value(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Control: a view on a public field is judged by the module and keeps its value (the
    module's list check names it), so the withholding above is by field, not by blanket."""
    direct, through = _through_view(crm, gw, leaf("Lead_Source", "Trade Show"))
    assert "Trade Show" in direct
    assert "Trade Show" in through


@pytest.mark.parametrize("header", ["if-none-match", "if-modified-since"])
def test_held_validators_on_a_views_definition_give_no_304_oracle(
    crm: Crm, gw: GatewayHandle, marked: Marked, header: str
) -> None:
    """The sandbox has no validators; a guessed one gets the definition, judged."""
    email = marked.lead["Email"]
    cvid = make_view(crm, "Leads", leaf("Email", email))
    path = f"/crm/v8/settings/custom_views/{cvid}"
    assert email in crm.http.get(path, params={"module": "Leads"}).text
    value = '"abc"' if header == "if-none-match" else "Mon, 01 Jan 2024 00:00:00 GMT"
    r = gw.http.get(path, params={"module": "Leads"}, headers={header: value})
    assert r.status_code == 200, r.text
    no_mark(r, email)


@pytest.mark.parametrize("route", ["custom_view", "settings"])
def test_held_a_head_does_not_tell_the_length_of_the_unjudged_definition(
    crm: Crm, gw: GatewayHandle, marked: Marked, route: str
) -> None:
    """``HEAD`` on a view's definition (or a settings answer) is routed as its GET; the
    CRM's Content-Length (that of the answer with the restricted value in it) would tell
    the exact length of the withheld Email. It does not reach the client."""
    email = marked.lead["Email"]
    if route == "custom_view":
        cvid = make_view(crm, "Leads", leaf("Email", email))
        path, params = f"/crm/v8/settings/custom_views/{cvid}", {"module": "Leads"}
        direct = crm.http.get(path, params=params).content
    else:
        body = {"territories": [{"id": "4343", "deal_rule_criteria": leaf("Email", email)}]}
        path, params = "/crm/v8/settings/territories", {}
        direct = orjson.dumps(body)
        _answer(crm, "/settings/territories", body)
    assert email.encode() in direct
    through = gw.http.get(path, params=params)
    assert through.status_code == 200 and email not in through.text  # the GET is judged
    # The sandbox routes no HEAD: its fault injection answers as a CRM does, the GET's
    # headers (Content-Length: the whole answer's) and no body.
    crm.fault(path_contains=path.removeprefix("/crm/v8"), method="HEAD", status=200,
              body=direct.decode(), content_type=JSON, times=1)  # fmt: skip
    crm.clear()
    head = gw.http.head(path, params=params)
    assert crm.received(path.removeprefix("/crm/v8"))
    assert head.status_code == 200, head.headers
    length = head.headers.get("content-length")
    # the unjudged answer's length is not the client's to learn
    assert length != str(len(direct)), (length, len(direct), len(through.content))
