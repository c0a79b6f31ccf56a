"""Nineteenth red team: custom views' definitions (227b5f7) and the other ``/settings/*``
answers the gateway passes through as metadata, which may carry a record's value.

227b5f7 made ``GET /settings/custom_views[/{id}]?module=`` its own row, withholding each
criterion's ``value`` whose field is withheld from the client. Every other
``/crm/{v}/settings/{name}[/{id}]`` is still ``Kind.METADATA``: pipeline.py sends it through
``Forwarder.passthrough`` unjudged. Several of the CRM's settings answers hold criteria of
exactly the custom views' shape (an admin's "Email equals x@y"): record-locking rules,
territories' assignment rules.

Every test drives the real gateway over HTTP against the sandbox CRM; where the CRM must
answer a settings route the sandbox does not implement (or answer in a shape it never
gives), its fault injection plays the CRM.

Part (A): FINDINGS, each failing against 227b5f7 because the attack works (the comment
above each names the gateway file/function responsible).
Part (B): what HELD, kept as coverage (each first checks that the data it relies on is
really there, so it could fail).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import Marked, no_mark
from tests.conftest import Crm, GatewayHandle, MakeGateway
from tests.test_custom_views import leaf, make_view


def _answer(crm: Crm, path: str, body: Any, times: int = 1) -> None:
    """The CRM answers the next GET on ``path`` with ``body`` (JSON)."""
    crm.fault(path_contains=path, method="GET", status=200, body=orjson.dumps(body).decode(),
              content_type="application/json;charset=UTF-8", times=times)  # fmt: skip


def _withheld_on_read(gw: GatewayHandle, module: str, rid: str, field: str) -> None:
    r = gw.http.get(f"/crm/v8/{module}/{rid}", params={"fields": field})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0][field] is None  # the gateway withholds it on a read


def _contact_with_name(crm: Crm) -> dict[str, Any]:
    contact = next(c for c in crm.records("Contacts") if c.get("First_Name"))
    assert contact["Full_Name"] and contact["First_Name"] in contact["Full_Name"]
    return contact


def _view(cvid: str, criteria: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": cvid,
        "name": "Admin view",
        "display_value": "Admin view",
        "criteria": criteria,
        "cross_filters": None,
        "fields": [],
        **extra,
    }


# =========================================================================================
# (A) FINDINGS
# =========================================================================================


@pytest.mark.parametrize(
    "path",
    ["/settings/record_locking_configurations", "/settings/record_locking_configurations/4242"],
)
def test_a_record_locking_rule_hands_out_a_leads_restricted_email(
    crm: Crm, gw: GatewayHandle, marked: Marked, path: str
) -> None:
    """LEAK. ``GET /crm/{v}/settings/record_locking_configurations?module=Leads`` (Zoho v7+,
    documented) lists the module's automatic locking rules: "lock a lead when Email equals
    x@y" holds the same criteria object as a custom view. The route fits
    ``/crm/{v}/settings/{name}[/{id}]`` (crm/routes.py, Kind.METADATA) and pipeline.py
    ``Pipeline.handle`` sends it through ``Forwarder.passthrough`` unjudged, so the lead's
    restricted Email (withheld on every read, and from a custom view's criteria) reaches
    the client as it is."""
    lead = marked.lead
    email = lead["Email"]
    _withheld_on_read(gw, "Leads", lead["id"], "Email")
    rule = {
        "id": "4242",
        "feature_type": "record_locking",
        "lock_type": "automatic",
        "locked_for": "all_profiles",
        "criteria": {
            "group_operator": "or",
            "group": [leaf("Email", email), leaf("Mobile", lead["Mobile"])],
        },
    }
    body = {"record_locking_configurations": [rule]}
    _answer(crm, "/settings/record_locking_configurations", body)
    crm.clear()
    r = gw.http.get(f"/crm/v8{path}", params={"module": "Leads"})
    assert crm.received("/settings/record_locking_configurations")  # the CRM answered it
    assert r.status_code == 200, r.text
    no_mark(r, email)
    no_mark(r, lead["Mobile"])


@pytest.mark.parametrize("path", ["/settings/territories", "/settings/territories/4343"])
def test_a_territorys_assignment_rule_hands_out_a_contacts_name(
    crm: Crm, gw: GatewayHandle, path: str
) -> None:
    """LEAK. ``GET /crm/{v}/settings/territories[/{id}]`` answers each territory with its
    ``account_rule_criteria`` and ``deal_rule_criteria`` (the custom views' criteria shape).
    A Deals rule "Contact_Name is {id, name}" names a Contact by its Full_Name, withheld on
    every read (and on a view's criterion on Contact_Name: guards.path_withheld judges a
    lookup by its target's name). README already refuses reads by ``territory_id`` since
    "a territory's rules select records by field values the gateway cannot see", yet the
    rules themselves pass: crm/routes.py routes ``settings/territories`` as Kind.METADATA
    and pipeline.py ``Pipeline.handle`` forwards it unjudged."""
    contact = _contact_with_name(crm)
    _withheld_on_read(gw, "Contacts", contact["id"], "Full_Name")
    name = contact["Full_Name"]
    territory = {
        "id": "4343",
        "name": "Key accounts",
        "permission_type": "read_write_delete",
        "account_rule_criteria": None,
        "deal_rule_criteria": {
            "comparator": "equal",
            "field": {"api_name": "Contact_Name", "id": "1"},
            "value": {"id": contact["id"], "name": name},
        },
    }
    _answer(crm, "/settings/territories", {"territories": [territory]})
    crm.clear()
    r = gw.http.get(f"/crm/v8{path}")
    assert crm.received("/settings/territories")
    assert r.status_code == 200, r.text
    no_mark(r, name)


def test_a_view_the_crm_answers_for_another_module_is_judged_by_the_requested_one(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK (the CRM answers the id, whatever ``module`` says: view ids are org-wide).
    ``GET /settings/custom_views/{id}?module=Accounts`` for a *Leads* view "Phone equals
    +1-555-...": handlers/custom_views.py ``custom_views`` judges every criterion of the
    answer by the requested module's metadata, never by the view's own. Accounts' Phone is
    not private, so the lead's private Phone (High; withheld on every Leads read, and in
    the same view asked for with module=Leads) passes."""
    lead = marked.lead
    phone = lead["Phone"]
    _withheld_on_read(gw, "Leads", lead["id"], "Phone")
    cvid = make_view(crm, "Leads", leaf("Phone", phone))
    direct = crm.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    body = direct.json()
    assert body["custom_views"][0]["criteria"]["value"] == phone  # the CRM's definition
    as_leads = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    assert as_leads.json()["custom_views"][0]["criteria"]["value"] is None  # withheld
    _answer(crm, f"/settings/custom_views/{cvid}", body)
    r = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Accounts"})
    assert r.status_code == 200, r.text
    assert r.json()["custom_views"][0]["id"] == cvid
    no_mark(r, phone)


@pytest.mark.parametrize("member", ["values", "display_value", "value2", "$value"])
def test_a_criterions_value_under_another_member_name_passes(
    crm: Crm, gw: GatewayHandle, marked: Marked, member: str
) -> None:
    """LEAK (default allow inside a criterion). privacy/view_body.py ``_withhold`` nulls
    only members named ``value`` (any case); every other member of a criterion on a
    restricted field goes on as the CRM stored it. A CRM (or a later API version) that
    carries the compared value, or its display form, under another member (``values`` for
    an ``in``, a ``display_value``, ``value2`` for a ``between``) hands the lead's
    restricted Email out."""
    email = marked.lead["Email"]
    criterion = {"comparator": "in", "field": {"api_name": "Email", "id": "1"}, "value": [email]}
    criterion[member] = [email] if member == "values" else email
    cvid = make_view(crm, "Leads", criterion)
    direct = crm.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    assert direct.json()["custom_views"][0]["criteria"][member]  # the CRM serves it
    r = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    assert r.status_code == 200, r.text
    assert r.json()["custom_views"][0]["criteria"]["value"] is None  # `value` is withheld
    no_mark(r, email)


# =========================================================================================
# (B) HELD
# =========================================================================================


def _one(crm: Crm, gw: GatewayHandle, cvid: str, module: str = "Leads") -> tuple[str, str]:
    """The view's definition straight from the CRM and through the gateway (texts)."""
    path = f"/crm/v8/settings/custom_views/{cvid}"
    direct = crm.http.get(path, params={"module": module})
    assert direct.status_code == 200, direct.text
    r = gw.http.get(path, params={"module": module})
    assert r.status_code == 200, r.text
    return direct.text, r.text


def _spellings(email: str) -> list[Any]:
    return [
        # member names in other letter cases
        {"COMPARATOR": "equal", "FIELD": {"API_NAME": "EMAIL"}, "VALUE": email},
        {"comparator": "equal", "api_name": "Email", "Value": email},
        {"comparator": "equal", "Field": {"Api_Name": "email"}, "value": email},
        # two names: one harmless, one restricted
        {"comparator": "equal", "api_name": "Last_Name", "field": {"api_name": "Email"},
         "value": email},
        # a field given as a string, as v2 did: no readable name, withheld
        {"comparator": "equal", "field": "Email", "value": email},
        # values of other types
        leaf("Email", [email, email], "in"),
        leaf("Email", {"name": email, "id": "1"}),
        # through a lookup (Referrer is High, Contacts' Email restricted)
        leaf("Referrer.Email", email),
        leaf("referrer.EMAIL", email),
        # a field the metadata does not know, a path through a non-lookup
        leaf("No_Such_Field", email),
        leaf("Company.Email", email),
        # nested deep, and criteria in unreadable shapes
        {"group_operator": "and", "group": [{"group_operator": "or", "group": [
            {"group_operator": "and", "group": [leaf("Email", email)]}]}]},
        {"group_operator": "and", "group": [leaf("Last_Name", "a"), ["Email", email]]},
        {"group_operator": "and", "group": {"0": leaf("Email", email)}},
        [leaf("Email", email), "and", leaf("Last_Name", "a")],
        f"((Email:equals:{email}))",
        # a node that is both a group and a criterion
        {"group_operator": "and", "group": [], "field": {"api_name": "Email"}, "value": email},
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(17))
def test_held_a_views_restricted_value_in_any_spelling_and_shape_is_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked, index: int
) -> None:
    email = marked.lead["Email"]
    criteria = _spellings(email)[index]
    cvid = make_view(crm, "Leads", criteria)
    direct, through = _one(crm, gw, cvid)
    assert email in direct  # the CRM hands it out
    assert email not in through


def test_held_a_deals_view_on_a_contacts_name_is_withheld(crm: Crm, gw: GatewayHandle) -> None:
    contact = _contact_with_name(crm)
    name = contact["Full_Name"]
    cvid = make_view(crm, "Deals", {"group_operator": "or", "group": [
        leaf("Contact_Name", {"id": contact["id"], "name": name}),
        leaf("Contact_Name", name),
        leaf("Contact_Name.Full_Name", name),
        leaf("Contact_Name.First_Name", contact["First_Name"]),
    ]})  # fmt: skip
    direct, through = _one(crm, gw, cvid, "Deals")
    assert name in direct
    assert name not in through and contact["First_Name"] not in through


def test_held_a_tasks_view_on_a_parent_fields_name_is_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    lead = marked.lead
    name = lead["Full_Name"]
    assert lead["First_Name"] and lead["First_Name"] in name
    cvid = make_view(crm, "Tasks", {"group_operator": "or", "group": [
        leaf("What_Id", {"id": lead["id"], "name": name}),
        leaf("Who_Id", name),
    ]})  # fmt: skip
    direct, through = _one(crm, gw, cvid, "Tasks")
    assert name in direct
    assert name not in through


@pytest.mark.parametrize(
    "extra",
    [
        {"cross_filters": [{"module": {"api_name": "Contacts"},
                            "criteria": leaf("Last_Name", "MARK")}]},
        {"shared_to": [{"type": "users", "criteria": leaf("Last_Name", "MARK")}]},
        {"sort_by": {"api_name": "Email", "criteria": leaf("Lead_Source", "MARK")}},
        {"fields": [{"api_name": "Email", "criteria": leaf("Last_Name", "MARK")}]},
    ],
)  # fmt: skip
def test_held_criteria_outside_a_views_own_are_withheld_whatever_their_field(
    crm: Crm, gw: GatewayHandle, marked: Marked, extra: dict[str, Any]
) -> None:
    email = marked.lead["Email"]
    text = orjson.dumps(extra).decode().replace("MARK", email)
    cvid = make_view(crm, "Leads", None, **orjson.loads(text))
    direct, through = _one(crm, gw, cvid)
    assert email in direct
    assert email not in through


@pytest.mark.parametrize("member", ["info", "data", "Custom_Views", "views"])
def test_held_views_listed_under_another_member_have_every_value_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked, member: str
) -> None:
    email = marked.lead["Email"]
    body = {member: [_view("777", leaf("Email", email))]}
    _answer(crm, "/settings/custom_views", body)
    crm.clear()
    r = gw.http.get("/crm/v8/settings/custom_views", params={"module": "Leads"})
    assert crm.received("/settings/custom_views")  # the faulted answer was read
    assert r.status_code == 200, r.text
    assert member in r.json()
    no_mark(r, email)


@pytest.mark.parametrize(
    "query",
    [
        "module=lEaDs",
        "Module=Leads",
        "MODULE=leads",
        "module=Leads&Module=Contacts",
        "module=Leads&module=Accounts",
        "module=Leads%00",
        "module=%20Leads",
    ],
)
def test_held_the_module_in_odd_spellings_judges_by_leads_or_is_refused(
    crm: Crm, gw: GatewayHandle, marked: Marked, query: str
) -> None:
    email = marked.lead["Email"]
    cvid = make_view(crm, "Leads", leaf("Email", email))
    assert (
        email
        in crm.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"}).text
    )
    for path in (f"/crm/v8/settings/custom_views/{cvid}", "/crm/v8/settings/custom_views"):
        r = gw.http.get(f"{path}?{query}")
        assert r.status_code in (200, 400), r.text
        no_mark(r, email)


@pytest.mark.parametrize(
    "policy",
    [
        {"rules": {"criteria": "off"}},
        {"rules": {"criteria": "shadow"}},
        {"rules": {"sort": "off"}},
        {"redaction": {"show": ["low", "high"]}},
    ],
)
def test_held_other_rules_and_wide_clients_never_see_a_restricted_value(
    crm: Crm, make_gateway: MakeGateway, marked: Marked, policy: dict[str, Any]
) -> None:
    gw = make_gateway(policy)
    email = marked.lead["Email"]
    cvid = make_view(crm, "Leads", leaf("Email", email))
    direct, through = _one(crm, gw, cvid)
    assert email in direct
    assert email not in through
    r = gw.http.get(
        f"/crm/v8/settings/custom_views/{cvid}",
        params={"module": "Leads", "include": "private_fields"},
    )
    no_mark(r, email)


def test_held_a_view_of_contacts_answered_for_leads_keeps_restricted_values_withheld(
    crm: Crm, gw: GatewayHandle
) -> None:
    """Where the two modules' fields of one name are both withheld, a view of the other
    module is withheld as well (the finding above needs a field public in the asked one)."""
    contact = next(c for c in crm.records("Contacts") if c.get("Email"))
    cvid = make_view(crm, "Contacts", leaf("Email", contact["Email"]))
    direct = crm.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Contacts"})
    assert contact["Email"] in direct.text
    _answer(crm, f"/settings/custom_views/{cvid}", direct.json())
    r = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    assert r.status_code == 200, r.text
    no_mark(r, contact["Email"])


@pytest.mark.parametrize(
    "path",
    [
        "/crm/v8/settings/Custom_Views",
        "/crm/v8/Settings/custom_views/{cvid}/",
        "/crm/v8/settings/custom%5Fviews/{cvid}",
        "/crm/v8/settings/custom_views/0{cvid}",
        "/crm/V8/SETTINGS/CUSTOM_VIEWS/{cvid}",
    ],
)
def test_held_the_custom_views_path_in_other_spellings_is_judged_or_refused(
    crm: Crm, gw: GatewayHandle, marked: Marked, path: str
) -> None:
    email = marked.lead["Email"]
    cvid = make_view(crm, "Leads", leaf("Email", email))
    assert (
        email
        in crm.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"}).text
    )
    r = gw.http.get(path.format(cvid=cvid), params={"module": "Leads"})
    assert r.status_code in (200, 400, 404), r.text
    no_mark(r, email)
