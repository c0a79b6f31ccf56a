"""Attacks through custom views: a ``cvid`` whose criteria use a restricted field is a
membership oracle (which records come back tells who holds a value), the channel the
criteria guard closes. Each attack is refused before the CRM lists a record, no marker
value reaches the client, and the audit trail holds none.

Views are made in the sandbox CRM with ``/_sandbox/custom_views/{org}/{module}``, as an
admin of the CRM would define them; the client only names them by id.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import Marked
from tests.conftest import Crm, GatewayHandle
from tests.test_custom_views import leaf, make_view, record_calls
from tests.test_custom_views import refused_restricted as refused


def test_a_view_on_a_restricted_field_is_a_real_oracle_at_the_crm(
    crm: Crm, marked: Marked
) -> None:
    """What the guard prevents: straight at the CRM, the view answers yes/no on a value."""
    cvid = make_view(crm, "Leads", leaf("Email", marked.lead["Email"]))
    r = crm.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    assert [x["id"] for x in r.json()["data"]] == [marked.lead["id"]]


@pytest.mark.parametrize(
    ("module", "criteria", "api_name"),
    [
        # through a lookup: the referring contact's email
        ("Leads", leaf("Referrer.Email", "x@example.com"), "Referrer.Email"),
        ("Leads", leaf("referrer.email", "x@example.com"), "Referrer.Email"),
        # nested groups, the restricted criterion deep and OR'd with an allowed one
        (
            "Leads",
            {
                "group_operator": "OR",
                "group": [
                    leaf("Lead_Source", "Web Download"),
                    {
                        "group_operator": "AND",
                        "group": [
                            leaf("Last_Name", "a", "starts_with"),
                            {"group_operator": "and", "group": [leaf("Mobile", "555", "contains")]},
                        ],
                    },
                ],
            },
            "Mobile",
        ),
        # the v2 shape: the field named by ``api_name`` on the criterion itself
        (
            "Leads",
            {"api_name": "Date_of_Birth", "comparator": "equal", "value": "1990-01-01"},
            "Date_of_Birth",
        ),
        # a field compared with another field
        ("Leads", leaf("Last_Name", {"api_name": "Email", "id": "1"}), "Email"),
        ("Contacts", leaf("EMAIL", "x@example.com"), "Email"),
        ("Patients", leaf("Diagnosis", "Asthma"), "Diagnosis"),
    ],
)
def test_a_view_with_restricted_criteria_is_refused_in_every_shape(
    crm: Crm, gw: GatewayHandle, marked: Marked, module: str, criteria: Any, api_name: str
) -> None:
    cvid = make_view(crm, module, criteria)
    crm.clear()
    r = gw.http.get(f"/crm/v8/{module}", params={"fields": "id", "cvid": cvid})
    refused(r, api_name)
    assert record_calls(crm) == []
    marked.assert_clean(r)
    marked.assert_audit_clean(gw)


@pytest.mark.parametrize("spelling", ["CVID", "Cvid", "cViD"])
def test_a_cvid_in_another_letter_case_is_the_same_parameter(
    crm: Crm, gw: GatewayHandle, marked: Marked, spelling: str
) -> None:
    cvid = make_view(crm, "Leads", leaf("Email", marked.lead["Email"]))
    crm.clear()
    r = gw.http.get(f"/crm/v8/Leads?fields=Last_Name&{spelling}={cvid}")
    refused(r, "Email")
    assert record_calls(crm) == []
    twice = gw.http.get(f"/crm/v8/Leads?fields=Last_Name&cvid=1&{spelling}={cvid}")
    assert twice.status_code == 400 and twice.json()["code"] == "INVALID_DATA"
    assert record_calls(crm) == []


def test_a_cvid_inside_a_composite_sub_request_is_guarded(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    cvid = make_view(crm, "Leads", leaf("Email", marked.lead["Email"]))
    body = {
        "__composite_requests": [
            {"method": "GET", "uri": "/crm/v8/Leads",
             "params": {"fields": "Last_Name", "CVID": cvid}},
            {"method": "GET", "uri": f"/crm/v8/Leads?fields=Last_Name&cvid={cvid}"},
            {"method": "GET", "uri": "/crm/v8/Leads/search",
             "params": {"word": "x", "cvid": cvid}},
        ]
    }  # fmt: skip
    crm.clear()
    r = gw.http.post("/crm/v8/__composite_requests", content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    for entry in r.json()["__composite_requests"]:
        answer = entry["details"]["response"]
        assert answer["status_code"] == 400 and answer["body"]["code"] == "INVALID_QUERY"
    assert record_calls(crm) == []
    marked.assert_clean(r)
    marked.assert_audit_clean(gw)


def test_a_bulk_read_of_a_view_through_a_lookup_is_refused(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    cvid = make_view(crm, "Leads", leaf("Referrer.Email", marked.contact.get("Email") or "x"))
    crm.clear()
    for key in ("cvid", "CVID"):
        query = {"module": {"api_name": "Leads"}, key: cvid, "fields": ["Last_Name"]}
        refused(gw.http.post("/crm/bulk/v8/read", json={"query": query}), "Referrer.Email")
    assert crm.received("/read") == []


def test_a_view_sorted_by_a_restricted_field_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    """The order of the records would rank them by the withheld value."""
    cvid = make_view(crm, "Leads", None, sort_by={"api_name": "Email", "id": "1"})
    crm.clear()
    refused(gw.http.get("/crm/v8/Leads", params={"fields": "id", "cvid": cvid}), "Email")
    assert record_calls(crm) == []


def test_a_view_filtering_by_related_records_cannot_be_checked_and_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    cross = [
        {
            "criteria": leaf("Note_Title", "e", "contains"),
            "relation": {"api_name": "Notes__r", "id": "1"},
            "include_objects": True,
        }
    ]
    cvid = make_view(crm, "Leads", None, cross_filters=cross)
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": "id", "cvid": cvid})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY", r.text
    assert r.json()["details"]["reason"] == "Cannot check the custom view's cross filters."
    assert record_calls(crm) == []


@pytest.mark.parametrize(
    "criteria",
    [
        {"comparator": "equal", "value": "x"},  # no field
        {"comparator": "equal", "field": {"api_name": ""}, "value": "x"},
        {"comparator": "equal", "field": {"api_name": "Referrer..Email"}, "value": "x"},
        {"group_operator": "and", "group": {"not": "a list"}},
        ["not", "an", "object"],
    ],
)
def test_a_view_whose_criteria_cannot_be_read_is_refused_not_taken_as_empty(
    crm: Crm, gw: GatewayHandle, criteria: Any
) -> None:
    cvid = make_view(crm, "Leads", criteria)
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": "id", "cvid": cvid})
    assert r.status_code == 503 and r.json()["code"] == "GATEWAY_METADATA_UNAVAILABLE", r.text
    assert record_calls(crm) == []


def test_a_view_is_checked_against_the_module_it_is_read_from(
    crm: Crm, gw: GatewayHandle
) -> None:
    """A Contacts view id given on a Leads read: the CRM refuses it (the gateway asked for
    the view of the module read), and nothing is listed."""
    cvid = make_view(crm, "Contacts", leaf("Last_Name", "B", "starts_with"))
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": "id", "cvid": cvid})
    assert r.status_code == 400 and r.json()["details"] == {"api_name": "cvid"}, r.text
    assert record_calls(crm) == []
    sent = crm.received("/settings/custom_views/")
    assert [x["query"] for x in sent] == ["module=Leads"]
