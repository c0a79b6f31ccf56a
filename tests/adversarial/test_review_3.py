"""Attacks tried while reviewing the corridor's performance round and the cvid guard: each
test here failed before its fix (one commit per finding)."""

from __future__ import annotations

import time
from typing import Any

from tests.adversarial.conftest import Marked
from tests.adversarial.test_cvid import leaf, make_view
from tests.conftest import Crm, GatewayHandle, MakeGateway
from tests.test_custom_views import record_calls
from tests.test_custom_views import refused_restricted as refused

MARK = "review3-mark-5c2e@example.com"


def test_a_view_criterion_naming_a_field_twice_is_checked_on_both(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """A criterion with a top-level ``api_name`` (v2's spelling) and a ``field`` object
    (v2.1+'s) naming another field: the CRM filters on the first, so the gateway must not
    check only the second (bulk criteria are checked on both already)."""
    email = marked.lead["Email"]
    criterion = {
        "comparator": "equal",
        "api_name": "Email",
        "field": {"api_name": "Last_Name", "id": "1"},
        "value": email,
    }
    cvid = make_view(crm, "Leads", criterion)
    # straight at the CRM the view is an oracle on Email
    direct = crm.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    assert [x["id"] for x in direct.json()["data"]] == [marked.lead["id"]]
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    refused(r, "Email")
    assert record_calls(crm) == []
    marked.assert_clean(r)


def test_a_reused_plan_expires_with_its_lookup_targets_metadata(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """Pins the plan cache (view.py ``_ready``, untested until now): a module's plan holds
    the plans of its lookups' targets, so it may be reused only while all the metadata it
    was built from is fresh. Contacts' fields are fetched first, Leads' later; once
    Contacts' entry is past its TTL (Leads' still fresh), a field newly restricted in
    Contacts is withheld inside a Leads record's Referrer lookup. (Fails when a ready plan
    is validated neither by the generation counter nor by the age of its oldest input.)"""
    gw = make_gateway({"redaction": {"show": ["high"]}, "metadata": {"ttl_seconds": 2.0}})
    page = {
        "data": [
            {
                "id": "1",
                "Last_Name": "Doe",
                "Referrer": {"name": "Ann", "id": "2", "Mailing_City": MARK},
            }
        ],
        "info": {"per_page": 1, "count": 1, "page": 1, "more_records": False},
    }

    def referrer() -> Any:
        crm.fault(path_contains="/crm/v8/Leads", method="GET", status=200, json=page, times=1)
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Referrer"})
        assert r.status_code == 200, r.text
        return r.json()["data"][0]["Referrer"]

    started = time.monotonic()
    assert gw.http.get("/crm/v8/Contacts", params={"fields": "Last_Name"}).status_code == 200
    time.sleep(1.2)
    assert referrer()["Mailing_City"] == MARK  # not private yet: the plan is built
    assert referrer()["Mailing_City"] == MARK  # and kept (nothing was fetched meanwhile)
    fields = crm.http.get("/crm/v8/settings/fields", params={"module": "Contacts"}).json()["fields"]
    for f in fields:
        if f["api_name"] == "Mailing_City":
            f["private"] = {"restricted": True, "type": "High", "export": True}
    assert (
        crm.admin.post("/_sandbox/metadata/1/Contacts", json={"fields": fields}).status_code == 200
    )
    time.sleep(max(0.0, 2.4 - (time.monotonic() - started)))  # Contacts stale, Leads fresh
    assert referrer()["Mailing_City"] is None


def test_a_view_on_a_field_the_gateways_metadata_does_not_know_is_refused(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """A stored view names fields the CRM has: one the gateway's (cached) metadata does not
    know was added since, and may be restricted. It cannot be judged, so it is refused
    (fail closed), as a record's unknown key is withheld."""
    assert gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"}).status_code == 200
    fields = crm.http.get("/crm/v8/settings/fields", params={"module": "Leads"}).json()["fields"]
    secret = {"restricted": True, "type": "High", "export": True}
    fields.append({"api_name": "Secret_Code", "data_type": "text", "private": secret})
    assert crm.admin.post("/_sandbox/metadata/1/Leads", json={"fields": fields}).status_code == 200
    crm.edit("Leads", marked.lead["id"], Secret_Code=MARK)
    cvid = make_view(crm, "Leads", leaf("Secret_Code", MARK))
    direct = crm.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    assert [x["id"] for x in direct.json()["data"]] == [marked.lead["id"]]  # an oracle
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "INVALID_QUERY"
    assert record_calls(crm) == []


def _secret_field_added_since(crm: Crm, gw: GatewayHandle, marked: Marked) -> None:
    """The gateway caches Leads' metadata; then the CRM gains a restricted field, which the
    marked lead holds: within the metadata's TTL the gateway does not know it."""
    assert gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"}).status_code == 200
    fields = crm.http.get("/crm/v8/settings/fields", params={"module": "Leads"}).json()["fields"]
    secret = {"restricted": True, "type": "High", "export": True}
    fields.append({"api_name": "Secret_Code", "data_type": "text", "private": secret})
    assert crm.admin.post("/_sandbox/metadata/1/Leads", json={"fields": fields}).status_code == 200
    crm.edit("Leads", marked.lead["id"], Secret_Code=MARK)
    crm.clear()


def test_criteria_on_a_field_the_gateways_metadata_does_not_know_is_refused(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """A search or a COQL WHERE (bulk read criteria take the same check_paths) naming a
    field the cached metadata does not know: the CRM may know it (added since) and it may
    be restricted, so the gateway refuses it as the CRM refuses an unknown field, before
    any record call. (It used to pass such a name on as "the CRM's to refuse".)"""
    _secret_field_added_since(crm, gw, marked)
    direct = crm.http.get(
        "/crm/v8/Leads/search", params={"criteria": f"(Secret_Code:equals:{MARK})"}
    )
    assert [x["id"] for x in direct.json()["data"]] == [marked.lead["id"]]  # an oracle
    crm.clear()
    answers = [
        gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Secret_Code:equals:{MARK})"}),
        gw.http.post(
            "/crm/v8/coql",
            json={"select_query": f"select Last_Name from Leads where Secret_Code = '{MARK}'"},
        ),
        # other spellings and another endpoint answering from the same records
        gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(secret_code:equals:{MARK})"}),
        gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Secret_Code.id:equals:1)"}),
        gw.http.get(
            "/crm/v8/Leads/actions/count", params={"criteria": f"(Secret_Code:equals:{MARK})"}
        ),
    ]
    for r in answers:
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "INVALID_QUERY"
    assert record_calls(crm) == []
    # the record's own id is no field of the metadata, and stays a criterion
    r = gw.http.get(
        "/crm/v8/Leads/search", params={"criteria": f"(id:equals:{marked.lead['id']})"}
    )
    assert r.status_code == 200, r.text


def test_a_view_criterion_spelled_in_other_letter_cases_is_checked_on_every_field(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """The members of a view's criteria in other letter cases (``Field``, ``API_NAME``,
    ``Group``): the CRM compares member names case-insensitively, so the view's fields are
    read the same way (one reading, shared with bulk read criteria)."""
    email = marked.lead["Email"]
    criterion = {
        "Group_Operator": "and",
        "Group": [
            {
                "comparator": "equal",
                "API_NAME": "Last_Name",
                "Field": {"Api_Name": "Email", "id": "1"},
                "value": email,
            }
        ],
    }
    cvid = make_view(crm, "Leads", criterion)
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    refused(r, "Email")
    assert record_calls(crm) == []
    marked.assert_clean(r)
