"""``/{module}/actions/count`` and ``/__composite_requests``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import envelope, leads, post_json

pytestmark = pytest.mark.usefixtures("fresh")


def count(client: httpx.Client, module: str = "Leads", **params: Any) -> int:
    r = client.get(f"/crm/v8/{module}/actions/count", params=params)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"count"}
    n: int = r.json()["count"]
    return n


def found(client: httpx.Client, **params: Any) -> int:
    r = client.get("/crm/v2/Leads/search", params={"per_page": 200, **params})
    return 0 if r.status_code == 204 else len(r.json()["data"])


def test_count_matches_search(client: httpx.Client) -> None:
    assert count(client) == 600 and count(client, "Campaigns") == 4
    target = leads(client)[8]
    for params in (
        {"criteria": "(City:equals:Berlin)"},
        {"criteria": "((Country:equals:Spain)or(Annual_Revenue:greater_than:4000000))"},
        {"email": target["Email"].upper()},
        {"phone": target["Phone"]},
        {"word": target["Company"].split()[0]},
    ):
        assert count(client, **params) == found(client, **params) > 0, params
    assert count(client, criteria="(Last_Name:equals:zzzz)") == 0
    envelope(
        client.get("/crm/v8/Leads/actions/count", params={"criteria": "(Nope:equals:x)"}),
        400,
        "INVALID_QUERY",
    )


def composite(client: httpx.Client, subs: list[Any], **extra: Any) -> httpx.Response:
    return post_json(
        client, "/crm/v8/__composite_requests", {"__composite_requests": subs, **extra}
    )


def test_composite_runs_each_sub_request_as_if_alone(client: httpx.Client) -> None:
    lead = leads(client)[3]
    client.delete("/_sandbox/requests")
    r = composite(
        client,
        [
            {"sub_request_id": "1", "method": "GET", "uri": f"/crm/v8/Leads/{lead['id']}"},
            {
                "sub_request_id": "2",
                "method": "GET",
                "uri": "/crm/v8/LEADS",
                "params": {"fields": ["Email", "$stop_processing"], "per_page": 2},
            },
            {"sub_request_id": "3", "method": "GET", "uri": "/crm/v8/Leads"},
            {"sub_request_id": "4", "method": "GET", "uri": "/crm/v2/Leads/deleted"},
            {
                "sub_request_id": "5",
                "method": "POST",
                "uri": "/crm/v8/Leads",
                "body": {"data": [{"Last_Name": "Composite"}]},
            },
        ],
    )
    assert r.status_code == 200
    log = client.get("/_sandbox/requests").json()["requests"]
    assert [x["path"] for x in log] == ["/crm/v8/__composite_requests"]  # sub-requests unlogged
    entries = r.json()["__composite_requests"]
    assert all(
        set(e) == {"code", "details", "message", "status"} and e["code"] == "SUCCESS"
        for e in entries
    )
    answers = [e["details"]["response"] for e in entries]
    assert [a["status_code"] for a in answers] == [200, 200, 400, 204, 201]
    assert answers[0]["body"]["data"][0]["$stop_processing"] is True
    assert answers[0]["headers"]["content-type"].startswith("application/json")
    assert answers[1]["body"]["data"][0] == {
        "Email": leads(client)[0]["Email"],
        "id": leads(client)[0]["id"],
        "$stop_processing": False,
    }
    assert answers[2]["body"]["code"] == "REQUIRED_PARAM_MISSING"  # same rules as alone
    assert answers[3]["body"] is None
    new_id = answers[4]["body"]["data"][0]["details"]["id"]
    assert client.get(f"/crm/v2/Leads/{new_id}").status_code == 200


def test_composite_references_and_auth(client: httpx.Client) -> None:
    r = composite(
        client,
        [
            {
                "sub_request_id": "a",
                "method": "POST",
                "uri": "/crm/v8/Leads",
                "body": {"data": [{"Last_Name": "Chained"}]},
            },
            {
                "sub_request_id": "b",
                "method": "put",
                "uri": "/crm/v8/Leads/@{a:$.data[0].details.id}",
                "body": {"data": [{"City": "Tallinn"}]},
            },
            {"method": "GET", "uri": "/crm/v8/Leads/@{zz:$.data[0].id}"},
            {"method": "GET", "uri": "/crm/v8/org", "headers": {"Authorization": "x"}},
            {"method": "POST", "uri": "/crm/v8/__composite_requests", "body": {}},
        ],
    )
    assert r.status_code == 207
    entries = r.json()["__composite_requests"]
    assert [e["code"] for e in entries] == [
        "SUCCESS",
        "SUCCESS",
        "INVALID_REFERENCE",
        "INVALID_DATA",
        "NOT_SUPPORTED",
    ]
    new_id = entries[0]["details"]["response"]["body"]["data"][0]["details"]["id"]
    assert entries[1]["details"]["response"]["status_code"] == 200
    got = client.get(f"/crm/v2/Leads/{new_id}").json()["data"][0]
    assert got["City"] == "Tallinn"
    # The composite call's token is the sub-requests' token: org 2 sees org 2.
    org2 = post_json(
        client,
        "/crm/v8/__composite_requests",
        {"__composite_requests": [{"method": "GET", "uri": "/crm/v8/org"}]},
        headers={"Authorization": "Zoho-oauthtoken org2-token"},
    )
    body = org2.json()["__composite_requests"][0]["details"]["response"]["body"]
    assert body["org"][0]["company_name"] == "Second Org"


def test_composite_request_errors(client: httpx.Client) -> None:
    one = {"method": "GET", "uri": "/crm/v8/org"}
    assert envelope(composite(client, [one] * 6), 400, "INVALID_DATA")["maximum_length"] == 5
    envelope(post_json(client, "/crm/v8/__composite_requests", {}), 400, "MANDATORY_NOT_FOUND")
    envelope(composite(client, []), 400, "INVALID_DATA")
    envelope(
        composite(client, [one], rollback_on_fail=True, parallel_execution=True),
        400,
        "AMBIGUITY_DURING_PROCESSING",
    )
    bad = composite(
        client,
        [
            {"method": "GET", "uri": "/v8/Leads"},
            {"method": "FETCH", "uri": "/crm/v8/org"},
            {"uri": "/crm/v8/org"},
            {"sub_request_id": "1", **one},
            {"sub_request_id": "1", **one},
        ],
    )
    assert bad.status_code == 207
    entries = bad.json()["__composite_requests"]
    assert [e["code"] for e in entries] == [
        "INVALID_DATA",
        "INVALID_DATA",
        "MANDATORY_NOT_FOUND",
        "SUCCESS",
        "DUPLICATE_DATA",
    ]
    assert entries[0]["details"]["json_path"] == "$.__composite_requests[0].uri"
    unauth = httpx.post(
        str(client.base_url) + "/crm/v8/__composite_requests",
        content=b'{"__composite_requests": [{"method": "GET", "uri": "/crm/v8/org"}]}',
    )
    envelope(unauth, 401, "AUTHENTICATION_FAILURE")
