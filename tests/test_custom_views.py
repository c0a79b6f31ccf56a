"""Custom views (``cvid``) and the parameter allow-list of record-bearing reads.

A read with ``cvid`` returns the records the view's own criteria select. The gateway
fetches the view's definition from the CRM (cached like field metadata, fail closed) and
checks its fields as it checks a ``criteria`` parameter: a view filtering on a restricted
field is refused before the CRM lists a record. A parameter outside a read's row of the
route table is refused too (default deny). Real HTTP: the sandbox CRM behind a real
gateway.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import AUTH, Crm, GatewayHandle, MakeGateway

RESTRICTED = "Cannot use the restricted field."
FIELDS = "Last_Name,Lead_Source,Email"


def view_id(crm: Crm, module: str, name: str) -> str:
    """A view's id as a client finds it: the CRM's list of the module's views."""
    r = crm.http.get("/crm/v8/settings/custom_views", params={"module": module})
    assert r.status_code == 200, r.text
    found = [v["id"] for v in r.json()["custom_views"] if v["name"] == name]
    assert len(found) == 1, r.text
    view: str = found[0]
    return view


def make_view(crm: Crm, module: str, criteria: Any, **extra: Any) -> str:
    """A view defined at the CRM, as its admin would; the client only names it by id."""
    body = {"name": "Admin view", "criteria": criteria, **extra}
    r = crm.admin.post(f"/_sandbox/custom_views/1/{module}", json=body)
    assert r.status_code == 200, r.text
    view: str = r.json()["id"]
    return view


def leaf(field: str, value: Any, comparator: str = "equal") -> dict[str, Any]:
    return {"comparator": comparator, "field": {"api_name": field, "id": "1"}, "value": value}


def record_calls(crm: Crm) -> list[dict[str, Any]]:
    """What reached the CRM besides metadata (org, modules, fields, views)."""
    return [
        r
        for r in crm.received("/crm/")
        if "/settings/" not in r["path"] and not r["path"].endswith("/org")
    ]


def refused_restricted(r: httpx.Response, api_name: str) -> None:
    assert r.status_code == 400, r.text
    assert r.json() == {
        "code": "INVALID_QUERY",
        "details": {"reason": RESTRICTED, "api_name": api_name},
        "message": "invalid query formed",
        "status": "error",
    }


# -- the sandbox CRM serves views and honours cvid ------------------------------------------


def test_the_crm_lists_views_and_filters_records_by_one(crm: Crm) -> None:
    r = crm.http.get("/crm/v8/settings/custom_views", params={"module": "Leads"})
    names = {v["name"]: v for v in r.json()["custom_views"]}
    assert names["All Leads"]["criteria"] is None
    assert names["Trade Show Leads"]["criteria"]["field"]["api_name"] == "Lead_Source"
    assert names["Leads at example domains"]["criteria"]["field"]["api_name"] == "Email"
    one = crm.http.get(
        f"/crm/v8/settings/custom_views/{names['Trade Show Leads']['id']}",
        params={"module": "Leads"},
    )
    assert one.json()["custom_views"][0]["name"] == "Trade Show Leads"
    listed = crm.http.get(
        "/crm/v8/Leads", params={"fields": FIELDS, "cvid": names["Trade Show Leads"]["id"]}
    ).json()["data"]
    assert listed and {x["Lead_Source"] for x in listed} == {"Trade Show"}
    unknown = crm.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": "123"})
    assert unknown.status_code == 400
    assert unknown.json()["details"] == {"api_name": "cvid"}


# -- views through the gateway ----------------------------------------------------------------


def test_a_view_on_a_field_that_is_not_private_returns_its_records(
    crm: Crm, gw: GatewayHandle
) -> None:
    cvid = view_id(crm, "Leads", "Trade Show Leads")
    direct = crm.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid}).json()
    r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [x["id"] for x in data] == [x["id"] for x in direct["data"]]
    assert {x["Lead_Source"] for x in data} == {"Trade Show"}
    assert {x["Email"] for x in data} == {None}  # still redacted
    entry = gw.requests()[-1]
    assert entry["outcome"] == "redacted" and entry["fields_refused"] == []


def test_a_view_without_criteria_passes(crm: Crm, gw: GatewayHandle) -> None:
    cvid = view_id(crm, "Leads", "All Leads")
    r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid, "per_page": 5})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 5


def test_a_view_filtering_on_a_restricted_field_is_refused_before_the_crm_lists_records(
    crm: Crm, gw: GatewayHandle
) -> None:
    cvid = view_id(crm, "Leads", "Leads at example domains")
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid})
    refused_restricted(r, "Email")
    assert record_calls(crm) == []
    # the view's definition was read, and nothing else of the org's records
    assert [x["path"] for x in crm.received("/settings/custom_views/")] == [
        f"/crm/v8/settings/custom_views/{cvid}"
    ]
    entry = gw.requests()[-1]
    assert entry["outcome"] == "refused"
    assert "restricted_criteria" in entry["reasons"] and entry["fields_refused"] == ["Email"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/crm/v8/Leads/search", {"criteria": "(Last_Name:starts_with:a)"}),
        ("/crm/v8/Leads/actions/count", {}),
        ("/crm/v2/Leads", {}),
    ],
)
def test_a_restricted_view_is_refused_on_a_search_a_count_and_in_v2(
    crm: Crm, gw: GatewayHandle, path: str, params: dict[str, str]
) -> None:
    cvid = view_id(crm, "Leads", "Leads at example domains")
    crm.clear()
    refused_restricted(gw.http.get(path, params={**params, "cvid": cvid}), "Email")
    assert record_calls(crm) == []


def test_a_restricted_view_on_another_module_is_refused(crm: Crm, gw: GatewayHandle) -> None:
    cvid = view_id(crm, "Contacts", "Contacts at example domains")
    crm.clear()
    refused_restricted(
        gw.http.get("/crm/v8/Contacts", params={"fields": "Last_Name", "cvid": cvid}), "Email"
    )
    assert record_calls(crm) == []
    ok = view_id(crm, "Contacts", "Contacts named B")
    r = gw.http.get("/crm/v8/Contacts", params={"fields": "Last_Name", "cvid": ok})
    assert r.status_code == 200, r.text
    assert all(x["Last_Name"].startswith("B") for x in r.json()["data"])


@pytest.mark.parametrize("version", ["v2", "v2.1", "v8"])
def test_a_bulk_read_of_a_restricted_view_is_refused(
    crm: Crm, gw: GatewayHandle, version: str
) -> None:
    cvid = view_id(crm, "Leads", "Leads at example domains")
    module: Any = "Leads" if version == "v2" else {"api_name": "Leads"}
    crm.clear()
    r = gw.http.post(
        f"/crm/bulk/{version}/read", json={"query": {"module": module, "cvid": cvid}}
    )
    refused_restricted(r, "Email")
    assert crm.received("/read") == []


def test_a_bulk_read_of_an_allowed_view_exports_its_records(crm: Crm, gw: GatewayHandle) -> None:
    cvid = view_id(crm, "Leads", "Trade Show Leads")
    query = {"module": {"api_name": "Leads"}, "cvid": int(cvid), "fields": ["Last_Name"]}
    r = gw.http.post("/crm/bulk/v8/read", json={"query": query})
    assert r.status_code == 201, r.text
    job = r.json()["data"][0]["details"]["id"]
    status = gw.http.get(f"/crm/bulk/v8/read/{job}").json()["data"][0]
    trade_show = crm.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid})
    assert status["result"]["count"] == len(trade_show.json()["data"])


def test_in_shadow_a_restricted_view_is_forwarded_and_audited(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"rules": {"criteria": "shadow"}})
    cvid = view_id(crm, "Leads", "Leads at example domains")
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid})
    assert r.status_code in (200, 204), r.text
    assert len(record_calls(crm)) == 1
    entry = gw.requests()[-1]
    assert entry["outcome"] != "refused"
    assert entry["would_refuse"] == ["restricted_criteria"]
    assert entry["would_refuse_fields"] == ["Email"]
    assert "criteria" in entry["shadowed_rules"]


def test_with_the_criteria_rule_off_a_restricted_view_is_forwarded_unrecorded(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway({"rules": {"criteria": "off"}})
    cvid = view_id(crm, "Leads", "Leads at example domains")
    r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid})
    assert r.status_code in (200, 204), r.text
    assert gw.requests()[-1]["would_refuse"] == []


# -- the view's definition: cached, fail closed ---------------------------------------------------


def test_a_views_definition_is_fetched_once_for_many_requests(
    crm: Crm, gw: GatewayHandle
) -> None:
    cvid = view_id(crm, "Leads", "Trade Show Leads")
    crm.clear()
    for _ in range(5):
        r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid})
        assert r.status_code == 200, r.text
    assert len(crm.received("/settings/custom_views/")) == 1
    assert len(record_calls(crm)) == 5


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "json": {"code": "INTERNAL_ERROR"}},
        {"status": 200, "body": "{not json", "content_type": "application/json"},
        {"status": 200, "json": {"custom_views": []}},
        {"status": 200, "json": {"custom_views": [{"id": "1", "criteria": None}]}},
        {"status": 200, "json": {"unexpected": True}},
        {"status": 204},
    ],
)
def test_a_view_whose_definition_cannot_be_had_is_refused(
    crm: Crm, gw: GatewayHandle, fault: dict[str, Any]
) -> None:
    cvid = view_id(crm, "Leads", "Trade Show Leads")
    crm.fault(path_contains="/settings/custom_views/", **fault)
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid})
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "GATEWAY_METADATA_UNAVAILABLE"
    assert record_calls(crm) == []
    assert "metadata_unavailable" in gw.requests()[-1]["reasons"]


def test_a_view_the_crm_does_not_know_gets_the_crms_own_answer(
    crm: Crm, gw: GatewayHandle
) -> None:
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": "4242"})
    assert r.status_code == 400, r.text
    assert r.json() == {
        "code": "INVALID_DATA",
        "details": {"api_name": "cvid"},
        "message": "invalid data",
        "status": "error",
    }
    assert record_calls(crm) == []


@pytest.mark.parametrize("cvid", ["", "abc", "12a", "-1", "1.5", "1 2", "1,2", "0x1F"])
def test_a_cvid_that_is_not_a_numeric_id_is_refused_before_any_fetch(
    crm: Crm, gw: GatewayHandle, cvid: str
) -> None:
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": FIELDS, "cvid": cvid})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "INVALID_DATA"
    assert r.json()["details"]["param_name"] == "cvid"
    assert crm.received("/custom_views") == [] and record_calls(crm) == []


@pytest.mark.parametrize("cvid", ["abc", True, 1.5, [1], {"id": "1"}])
def test_a_bulk_reads_cvid_that_is_not_a_numeric_id_is_refused(
    crm: Crm, gw: GatewayHandle, cvid: Any
) -> None:
    crm.clear()
    r = gw.http.post(
        "/crm/bulk/v8/read", content=orjson.dumps({"query": {"module": "Leads", "cvid": cvid}})
    )
    assert r.status_code == 400, r.text
    assert crm.received("/custom_views") == [] and crm.received("/read") == []


# -- the views' definitions: criteria values withheld -----------------------------------------


def _definitions(http: httpx.Client, route: str, cvid: str, module: str = "Leads") -> Any:
    path = "/crm/v8/settings/custom_views" + (f"/{cvid}" if route == "one" else "")
    return http.get(path, params={"module": module})


def _criteria_of(answer: httpx.Response, cvid: str) -> Any:
    assert answer.status_code == 200, answer.text[:300]
    (found,) = [v for v in answer.json()["custom_views"] if v["id"] == cvid]
    return found["criteria"]


@pytest.mark.parametrize("route", ["one", "list"])
def test_a_views_definition_withholds_the_values_of_withheld_fields_at_any_depth(
    crm: Crm, gw: GatewayHandle, route: str
) -> None:
    """A criterion on a field that is not private keeps its value; one on a restricted
    field (Email; Mobile in a nested group) has it withheld; the rest is the CRM's."""
    lead = next(x for x in crm.records("Leads") if x.get("Email") and x.get("Mobile"))
    criteria = {
        "group_operator": "and",
        "group": [
            leaf("Lead_Source", "Trade Show"),
            leaf("Email", lead["Email"]),
            {"group_operator": "or", "group": [leaf("Last_Name", "B", "starts_with"),
                                               leaf("mobile", [lead["Mobile"]], "in")]},
        ],
    }  # fmt: skip
    cvid = make_view(crm, "Leads", criteria)
    direct = _definitions(crm.http, route, cvid)
    assert _criteria_of(direct, cvid) == criteria  # the CRM hands the values out
    r = _definitions(gw.http, route, cvid)
    expected = direct.json()
    for view in expected["custom_views"]:
        # a withheld criterion keeps how it compares and its field's name, not its id
        if view["id"] == cvid:
            for withheld in (view["criteria"]["group"][1],
                             view["criteria"]["group"][2]["group"][1]):
                withheld["value"] = withheld["field"]["id"] = None
        elif view["name"] == "Leads at example domains":  # a seeded view on Email
            view["criteria"]["value"] = view["criteria"]["field"]["id"] = None
    assert r.json() == expected
    got = _criteria_of(r, cvid)
    assert got["group"][0]["value"] == "Trade Show"
    assert got["group"][2]["group"][0]["value"] == "B"
    assert lead["Email"] not in r.text and lead["Mobile"] not in r.text
    withheld = 2 if route == "one" else 3
    assert r.headers["x-privacy-withheld"] == f"{withheld}; fields=Email,Mobile"
    entry = gw.requests()[-1]
    assert entry["route"].startswith("/crm/{v}/settings/custom_views")
    assert entry["module"] == "Leads" and entry["outcome"] == "redacted"
    assert entry["fields_withheld"] == {"names": ["Email", "Mobile"], "count": withheld}


def test_a_views_private_field_value_is_withheld_unless_the_policy_shows_it(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """City is private (Low), not restricted: withheld from a client shown nothing, kept
    for one shown Low fields; a restricted field's value is withheld from both."""
    cvid = make_view(crm, "Leads", {"group_operator": "or", "group": [
        leaf("City", "Springfield"), leaf("Email", "x@example.com")]})  # fmt: skip
    narrow = _criteria_of(_definitions(make_gateway().http, "one", cvid), cvid)
    assert [c["value"] for c in narrow["group"]] == [None, None]
    wide = make_gateway({"redaction": {"show": ["low"]}})
    assert [c["value"] for c in _criteria_of(_definitions(wide.http, "one", cvid), cvid)[
        "group"]] == ["Springfield", None]  # fmt: skip


def test_in_shadow_a_views_values_pass_and_what_would_be_withheld_is_audited(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """The redact rule in shadow passes a judged value on; a value the gateway cannot
    judge (a field its metadata does not know) is withheld in every mode, and with it the
    answer is sent as judged (as a record read's is)."""
    gw = make_gateway({"rules": {"redact": "shadow"}})
    judged = make_view(crm, "Leads", leaf("Email", "x@example.com"))
    r = _definitions(gw.http, "one", judged)
    assert _criteria_of(r, judged)["value"] == "x@example.com"
    entry = gw.requests()[-1]
    assert entry["would_redact"] == {"names": ["Email"], "count": 1}
    assert entry["fields_withheld"]["count"] == 0
    unknown = make_view(crm, "Leads", {"group_operator": "or", "group": [
        leaf("Email", "x@example.com"), leaf("No_Such_Field", "y@example.com")]})  # fmt: skip
    got = _criteria_of(_definitions(gw.http, "one", unknown), unknown)
    assert [c["value"] for c in got["group"]] == [None, None]
    entry = gw.requests()[-1]
    assert entry["fields_withheld"] == {"names": ["Email", "unknown"], "count": 2}


def test_a_views_definition_without_a_known_module_withholds_every_value(
    crm: Crm, gw: GatewayHandle
) -> None:
    """No module named: the CRM's own refusal goes on, as before. A module the gateway's
    metadata does not list gives no field to judge a value by: every one is withheld."""
    cvid = make_view(crm, "Leads", leaf("Lead_Source", "Trade Show"))
    missing = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}")
    direct = crm.http.get(f"/crm/v8/settings/custom_views/{cvid}")
    assert missing.status_code == direct.status_code == 400
    assert missing.json() == direct.json()
    r = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Leads"})
    assert _criteria_of(r, cvid)["value"] == "Trade Show"
    crm.fault(
        path_contains="/settings/custom_views",
        status=200,
        json={"custom_views": [{"id": cvid, "criteria": leaf("Lead_Source", "Trade Show")}]},
    )
    unknown = gw.http.get(f"/crm/v8/settings/custom_views/{cvid}", params={"module": "Nope"})
    assert _criteria_of(unknown, cvid)["value"] is None


@pytest.mark.parametrize(
    "fault",
    [
        {"path_contains": "/settings/fields", "status": 500, "json": {"code": "INTERNAL_ERROR"}},
        {"path_contains": "/settings/modules", "status": 500, "json": {"code": "INTERNAL_ERROR"}},
    ],
)
def test_a_views_definition_is_not_forwarded_without_the_modules_metadata(
    crm: Crm, gw: GatewayHandle, fault: dict[str, Any]
) -> None:
    crm.fault(**fault)
    crm.clear()
    r = gw.http.get("/crm/v8/settings/custom_views", params={"module": "Leads"})
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "GATEWAY_METADATA_UNAVAILABLE"
    assert crm.received("/settings/custom_views") == []


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 200, "body": "{not json", "content_type": "application/json"},
        {"status": 200, "json": [{"criteria": {"value": "x"}}]},
    ],
)
def test_a_views_definition_that_cannot_be_read_is_refused(
    crm: Crm, gw: GatewayHandle, fault: dict[str, Any]
) -> None:
    crm.fault(path_contains="/settings/custom_views", **fault)
    r = gw.http.get("/crm/v8/settings/custom_views", params={"module": "Leads"})
    assert r.status_code == 502, r.text
    assert r.json()["code"] == "GATEWAY_UNREADABLE_UPSTREAM"


# -- parameters outside the route table -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "param"),
    [
        ("/crm/v8/Leads", "fields=Last_Name&filter=secret-value", "filter"),
        ("/crm/v8/Leads", "fields=Last_Name&criteria=(Last_Name:equals:secret-value)", "criteria"),
        ("/crm/v8/Leads/search", "word=abc&query=secret-value", "query"),
        ("/crm/v8/Leads/actions/count", "fields=secret-value", "fields"),
        ("/crm/v8/Leads/deleted", "type=all&cvid=1&x=secret-value", "cvid"),
        ("/crm/v8/Contacts/1/Leads", "fields=Last_Name&cvid=1&y=secret-value", "cvid"),
        ("/crm/v8/Leads/1", "view_id=secret-value", "view_id"),
        # a territory's rules may select records by a restricted field's value
        ("/crm/v8/Leads", "fields=Last_Name&territory_id=secret-value", "territory_id"),
        ("/crm/v8/Leads/search", "word=abc&include_child=true", "include_child"),
    ],
)
def test_a_parameter_a_read_does_not_take_is_refused_and_audited(
    crm: Crm, gw: GatewayHandle, path: str, query: str, param: str
) -> None:
    crm.clear()
    r = gw.http.get(f"{path}?{query}")
    assert r.status_code == 400, r.text
    assert r.json() == {
        "code": "INVALID_DATA",
        "details": {"reason": "the gateway does not forward this parameter", "param_name": param},
        "message": "invalid data",
        "status": "error",
    }
    assert crm.received("/crm/") == []  # refused before anything is fetched
    entry = gw.requests()[-1]
    assert entry["outcome"] == "refused" and entry["reasons"] == ["unknown_parameter"]
    assert "secret-value" not in gw.audit_text()


def test_a_parameter_name_in_another_letter_case_is_the_same_parameter(
    crm: Crm, gw: GatewayHandle
) -> None:
    r = gw.http.get("/crm/v8/Leads?Fields=Last_Name&PER_PAGE=2&Page=1")
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    bad = gw.http.get("/crm/v8/Leads?fields=Last_Name&Filter=x")
    assert bad.status_code == 400 and bad.json()["details"]["param_name"] == "filter"


def test_the_documented_parameters_of_each_read_are_forwarded(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = crm.records("Leads")[0]
    calls = [
        (
            "/crm/v8/Leads",
            {
                "fields": "Last_Name",
                "approved": "both",
                "converted": "false",
                "ids": lead["id"],
                "sort_order": "asc",
                "page": "1",
                "per_page": "5",
                "startDateTime": "2020-01-01T00:00:00+00:00",
                "include": "private_fields",
            },
        ),
        ("/crm/v8/Leads/search", {"criteria": "(Last_Name:starts_with:a)", "type": "all"}),
        ("/crm/v8/Leads/actions/count", {"criteria": "(Last_Name:starts_with:a)"}),
        ("/crm/v8/Leads/deleted", {"type": "all", "page": "1", "per_page": "10"}),
        (f"/crm/v8/Leads/{lead['id']}", {"fields": "Last_Name", "on_demand_properties": "x"}),
    ]
    for path, params in calls:
        r = gw.http.get(path, params=params)
        assert r.status_code in (200, 204), (path, r.text)
    with httpx.Client(base_url=gw.url, headers=AUTH) as http:
        assert http.get("/crm/v8/Leads", params={"fields": "Last_Name"}).status_code == 200
