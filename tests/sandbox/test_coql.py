"""COQL: where / order by / limit / offset, lookup paths, aliases, errors."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import envelope, leads, post_json


def coql(client: httpx.Client, query: str, version: str = "v2") -> httpx.Response:
    return post_json(client, f"/crm/{version}/coql", {"select_query": query})


def rows(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def all_leads(client: httpx.Client) -> list[dict[str, Any]]:
    return leads(client) + leads(client, page=2) + leads(client, page=3)


def test_select_where_order_limit_offset(client: httpx.Client) -> None:
    data = all_leads(client)
    q = (
        "select Last_Name, Annual_Revenue from Leads where (Annual_Revenue > 1000000 and "
        "Country = 'germany') or City like '%ber%' order by Last_Name desc limit 10 offset 5"
    )
    r = coql(client, q)
    expected = [
        x
        for x in data
        if (x["Annual_Revenue"] > 1_000_000 and x["Country"] == "Germany")
        or "ber" in x["City"].lower()
    ]
    expected.sort(key=lambda x: int(x["id"]))
    expected.sort(key=lambda x: x["Last_Name"].casefold(), reverse=True)
    got = rows(r)
    assert [x["id"] for x in got] == [x["id"] for x in expected[5:15]]
    assert set(got[0]) == {"Last_Name", "Annual_Revenue", "id"}
    assert r.json()["info"] == {"count": 10, "more_records": len(expected) > 15}


def test_keywords_are_case_insensitive_and_limit_comma_form(client: httpx.Client) -> None:
    a = rows(coql(client, "SELECT Email FROM Leads ORDER BY Email ASC LIMIT 3, 4"))
    b = rows(coql(client, "select Email from Leads order by Email limit 4 offset 3"))
    assert a == b and len(a) == 4
    emails = [
        x["Email"] for x in rows(coql(client, "select Email from Leads order by Email limit 7"))
    ]
    assert emails[3:7] == [x["Email"] for x in a]


def test_lookup_paths_and_alias(client: httpx.Client) -> None:
    contacts = {c["id"]: c for c in client.get("/crm/v2/Contacts").json()["data"]}
    r = coql(
        client,
        "select Last_Name, Referrer, Referrer.Email as ref_email from Leads "
        "where Referrer is not null limit 50",
    )
    for row in rows(r):
        assert set(row) == {"Last_Name", "Referrer", "ref_email", "id"}
        assert row["ref_email"] == contacts[row["Referrer"]["id"]]["Email"]
        assert set(row["Referrer"]) >= {"id"}
    some = rows(r)[0]
    email = some["ref_email"]
    hits = rows(coql(client, f"select id from Leads where Referrer.Email = '{email}'"))
    assert some["id"] in {x["id"] for x in hits}
    owners = rows(coql(client, "select Owner.email from Leads limit 5"))
    assert all("@zylker.com" in x["Owner.email"] for x in owners)


def test_operators(client: httpx.Client) -> None:
    data = all_leads(client)
    got = rows(coql(client, "select City from Leads where City in ('Paris', 'Rome') limit 2000"))
    assert len(got) == sum(1 for x in data if x["City"] in ("Paris", "Rome"))
    got = rows(
        coql(
            client,
            "select City from Leads where City not in ('Paris') and "
            "Annual_Revenue between 100000 and 900000 limit 2000",
        )
    )
    assert len(got) == sum(
        1 for x in data if x["City"] != "Paris" and 100_000 <= x["Annual_Revenue"] <= 900_000
    )
    got = rows(coql(client, "select id from Leads where Mobile is null limit 2000"))
    assert len(got) == sum(1 for x in data if x["Mobile"] is None)
    got = rows(coql(client, "select id from Leads where Email not like 'ma%' limit 2000"))
    assert len(got) == sum(1 for x in data if not x["Email"].startswith("ma"))
    got = rows(coql(client, "select id from Leads where Annual_Revenue <= 50000 limit 2000"))
    assert len(got) == sum(1 for x in data if x["Annual_Revenue"] <= 50_000)


def test_string_escape_and_empty_result(fresh: httpx.Client) -> None:
    target = leads(fresh)[0]
    post_json(fresh, f"/_sandbox/records/1/Leads/{target['id']}", {"Last_Name": "O'Brien"})
    got = rows(coql(fresh, "select Last_Name from Leads where Last_Name = 'O\\'Brien'"))
    assert [x["id"] for x in got] == [target["id"]]
    r = coql(fresh, "select Last_Name from Leads where Last_Name = 'nobody-has-this'")
    assert r.status_code == 204 and r.content == b""


def test_group_by(client: httpx.Client) -> None:
    data = all_leads(client)
    got = rows(coql(client, "select Country, COUNT(id) from Leads group by Country limit 200"))
    counts = {row["Country"]: row["COUNT(id)"] for row in got}
    assert sum(counts.values()) == 600
    assert counts["Germany"] == sum(1 for x in data if x["Country"] == "Germany")


def test_errors(client: httpx.Client) -> None:
    envelope(coql(client, "select from Leads"), 400, "SYNTAX_ERROR")
    envelope(
        coql(client, "select Last_Name from Leads where Last_Name = 'open"), 400, "SYNTAX_ERROR"
    )
    envelope(coql(client, "select * from Leads"), 400, "SYNTAX_ERROR")
    details = envelope(coql(client, "select Nope from Leads"), 400, "INVALID_QUERY")
    assert details["column_name"] == "Nope"
    envelope(coql(client, "select Last_Name from Nowhere"), 400, "INVALID_QUERY")
    envelope(coql(client, "select Last_Name.Email from Leads"), 400, "INVALID_QUERY")
    envelope(coql(client, "select Last_Name from Leads limit 5000"), 400, "LIMIT_EXCEEDED")
    envelope(post_json(client, "/crm/v2/coql", {"other": 1}), 400, "REQUIRED_PARAM_MISSING")
    envelope(client.post("/crm/v2/coql", content=b"{not json"), 400, "INVALID_DATA")


def test_default_limit_and_more_records(client: httpx.Client) -> None:
    r = coql(client, "select Last_Name from Leads", version="v8")
    assert r.json()["info"] == {"count": 200, "more_records": True}
