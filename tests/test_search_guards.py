"""Search and query guards: a restricted field in any search channel is refused exactly as
the CRM refuses it, and the request never reaches the CRM."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ORG2_AUTH, Crm, GatewayHandle, MakeGateway

REFUSAL = {"code": "INVALID_QUERY", "message": "invalid query formed", "status": "error"}


def _refused(r: httpx.Response, api_name: str) -> None:
    assert r.status_code == 400, r.text
    assert r.json() == {
        **REFUSAL,
        "details": {"reason": "Cannot use the restricted field.", "api_name": api_name},
    }


def _nothing_reached(crm: Crm, path: str) -> None:
    assert not crm.received(path), crm.received(path)


@pytest.mark.parametrize(
    ("criteria", "field"),
    [
        ("(Email:equals:a@example.com)", "Email"),
        ("Email:equals:a@example.com", "Email"),
        ("((Last_Name:equals:A)and(email:starts_with:a))", "Email"),
        ("((Last_Name:equals:A)or((Company:equals:B)and(Mobile:equals:1)))", "Mobile"),
        ("(Date_of_Birth:between:1990-01-01,1991-01-01)", "Date_of_Birth"),
        ("(Em%2561il:equals:x)", "Email"),
        ("(Referrer.Email:equals:x)", "Referrer.Email"),
    ],
)
def test_criteria_on_a_restricted_field_are_refused(
    crm: Crm, gw: GatewayHandle, criteria: str, field: str
) -> None:
    crm.clear()
    _refused(gw.http.get("/crm/v8/Leads/search", params={"criteria": criteria}), field)
    _nothing_reached(crm, "/search")


def test_sdk_percent_encoded_criteria_are_refused(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    r = gw.http.get("/crm/v2/Leads/search?criteria=%28Email%3Aequals%3Aa%40example.com%29")
    _refused(r, "Email")
    _nothing_reached(crm, "/search")


def test_a_second_criteria_parameter_is_checked_too(crm: Crm, gw: GatewayHandle) -> None:
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search?criteria=(Last_Name:equals:A)&criteria=(Email:equals:b)")
    _refused(r, "Email")
    _nothing_reached(crm, "/search")


@pytest.mark.parametrize(
    ("param", "field"), [("email", "Email"), ("phone", "Mobile"), ("word", None)]
)
def test_email_phone_and_word_searches_are_refused(
    crm: Crm, gw: GatewayHandle, param: str, field: str | None
) -> None:
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search", params={param: "someone"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY"
    if field:
        assert r.json()["details"]["api_name"] == field
    _nothing_reached(crm, "/search")


def test_word_search_can_be_allowed_by_policy(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway({"search": {"allow_word_search": True}})
    name = crm.records("Leads")[0]["Last_Name"]
    r = gw.http.get("/crm/v8/Leads/search", params={"word": name})
    assert r.status_code == 200 and all(rec["Email"] is None for rec in r.json()["data"])


def test_allowed_criteria_are_forwarded_and_the_results_redacted(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = crm.records("Leads")[0]
    r = gw.http.get(
        "/crm/v8/Leads/search", params={"criteria": f"(Last_Name:equals:{lead['Last_Name']})"}
    )
    assert r.status_code == 200
    assert lead["id"] in {rec["id"] for rec in r.json()["data"]}
    assert all(rec["Email"] is None for rec in r.json()["data"])


def test_a_module_without_restricted_fields_searches_freely(gw: GatewayHandle) -> None:
    r = gw.http.get("/crm/v8/Deals/search", params={"word": "a"})
    assert r.status_code in (200, 204)


def test_restriction_is_per_org(crm: Crm, gw: GatewayHandle) -> None:
    # In org 2, Leads.Email is not private, and Company is restricted.
    r = gw.http.get(
        "/crm/v8/Leads/search", params={"criteria": "(Email:equals:x)"}, headers=ORG2_AUTH
    )
    assert r.status_code in (200, 204)
    _refused(
        gw.http.get(
            "/crm/v8/Leads/search", params={"criteria": "(Company:equals:x)"}, headers=ORG2_AUTH
        ),
        "Company",
    )


@pytest.mark.parametrize(
    "criteria",
    [
        "((Last_Name:equals:A)",
        "(Last_Name:equals:A\\",
        "(Last_Name:contains:A)",
        "()",
        "(Last_Name:equals:A)and",
        " ".join(["(Last_Name:equals:A)"] * 2),
        "and".join(f"(Last_Name:equals:{i})" for i in range(11)),
    ],
)
def test_unparsable_criteria_are_refused_with_a_reason_and_not_forwarded(
    crm: Crm, gw: GatewayHandle, criteria: str
) -> None:
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": criteria})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY"
    assert r.json()["details"]["reason"]
    _nothing_reached(crm, "/search")


def test_refusals_never_echo_the_searched_value(crm: Crm, gw: GatewayHandle) -> None:
    value = "needle-4711@example.com"
    for params in (
        {"criteria": f"(Email:equals:{value})"},
        {"email": value},
        {"criteria": f"((Email:equals:{value}"},
    ):
        r = gw.http.get("/crm/v8/Leads/search", params=params)
        assert r.status_code == 400 and value not in r.text
    assert value not in gw.audit_log.read_text()


def _coql(gw: GatewayHandle, query: str) -> httpx.Response:
    return gw.http.post("/crm/v8/coql", content=orjson.dumps({"select_query": query}))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("select Last_Name from Leads where Email = 'a@example.com'", "Email"),
        ("select Last_Name from Leads where (Last_Name = 'A' or Mobile like '%1%')", "Mobile"),
        (
            "select Last_Name from Leads where Last_Name is not null order by Date_of_Birth desc",
            "Date_of_Birth",
        ),
        ("select COUNT(id) from Leads where Last_Name is not null group by Email", "Email"),
        ("select Last_Name from Leads where Referrer.Email = 'x'", "Referrer.Email"),
        ("select COUNT(Email) from Leads where Last_Name is not null", "Email"),
        ("SELECT Last_Name FROM Leads WHERE EMAIL = 'a'", "Email"),
    ],
)
def test_coql_using_a_restricted_field_is_refused(
    crm: Crm, gw: GatewayHandle, query: str, field: str
) -> None:
    crm.clear()
    _refused(_coql(gw, query), field)
    _nothing_reached(crm, "/coql")


def test_coql_selecting_a_restricted_field_is_answered_with_nulls(
    crm: Crm, gw: GatewayHandle
) -> None:
    r = _coql(gw, "select Last_Name, Email from Leads where Last_Name is not null limit 5")
    assert r.status_code == 200
    assert all(row["Email"] is None and row["Last_Name"] for row in r.json()["data"])


@pytest.mark.parametrize(
    "body",
    [
        {"select_query": "select Last_Name from Leads where (Email = 'x'"},
        {"select_query": "select * from Leads"},
        {"select_query": 42},
        {"query": "select Last_Name from Leads"},
    ],
)
def test_bad_coql_is_refused_and_not_forwarded(
    crm: Crm, gw: GatewayHandle, body: dict[str, Any]
) -> None:
    crm.clear()
    r = gw.http.post("/crm/v8/coql", content=orjson.dumps(body))
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY"
    _nothing_reached(crm, "/coql")


@pytest.mark.parametrize(
    "query",
    [
        {"module": "Leads", "criteria": {"api_name": "Email", "comparator": "equal", "value": "x"}},
        {
            "module": {"api_name": "Leads"},
            "criteria": {
                "group_operator": "and",
                "group": [
                    {"field": {"api_name": "Last_Name"}, "comparator": "equal", "value": "A"},
                    {"field": {"api_name": "Mobile"}, "comparator": "equal", "value": "1"},
                ],
            },
        },
    ],
)
def test_bulk_read_criteria_on_restricted_fields_are_refused(
    crm: Crm, gw: GatewayHandle, query: dict[str, Any]
) -> None:
    crm.clear()
    r = gw.http.post("/crm/bulk/v2.1/read", json={"query": query})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY"
    assert r.json()["details"]["reason"] == "Cannot use the restricted field."
    _nothing_reached(crm, "/crm/bulk")


def test_refusals_are_audited_with_the_field_name(gw: GatewayHandle) -> None:
    gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Mobile:equals:1)"})
    (entry,) = gw.requests()
    assert entry["outcome"] == "refused" and entry["reasons"] == ["restricted_criteria:Mobile"]
    assert entry["upstream_status"] is None


def test_owner_paths_are_allowed_and_answered(crm: Crm, gw: GatewayHandle) -> None:
    owner = crm.records("Leads")[0]["Owner"]["name"]
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Owner.name:equals:{owner})"})
    assert r.status_code in (200, 204), r.text
    coql = _coql(gw, "select Last_Name, Owner.name from Leads where Owner.name is not null limit 3")
    assert coql.status_code == 200, coql.text
    assert all(row["Owner.name"] for row in coql.json()["data"])


def test_sorting_by_a_restricted_field_is_refused_on_every_read(
    crm: Crm, gw: GatewayHandle
) -> None:
    """The order of records sorted by a withheld value would disclose it."""
    contact_id = crm.http.get("/crm/v8/Contacts", params={"per_page": 1}).json()["data"][0]["id"]
    crm.clear()
    _refused(gw.http.get("/crm/v8/Leads", params={"sort_by": "Email"}), "Email")
    _refused(gw.http.get("/crm/v8/leads", params={"SORT_BY": "mobile"}), "Mobile")
    _refused(
        gw.http.get(
            "/crm/v8/Leads/search",
            params={"criteria": "(Last_Name:starts_with:S)", "sort_by": "Email"},
        ),
        "Email",
    )
    # a related list is sorted by the related module's fields
    _refused(
        gw.http.get(f"/crm/v8/Contacts/{contact_id}/Leads", params={"sort_by": "Email"}),
        "Email",
    )
    _nothing_reached(crm, "/crm/v8/Leads")
    _nothing_reached(crm, "/crm/v8/Contacts")
    ok = gw.http.get("/crm/v8/Leads", params={"sort_by": "Modified_Time", "per_page": 2})
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2
