"""Search API: criteria grammar (escapes, nesting, operators, limits), email/phone/word."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.sandbox.criteria import Leaf, parse

from .conftest import envelope, leads


def search(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get("/crm/v2/Leads/search", params=params)


def ids(r: httpx.Response) -> set[str]:
    assert r.status_code == 200, r.text
    return {x["id"] for x in r.json()["data"]}


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").replace(",", "\\,")


def test_equals_is_contains_for_text(client: httpx.Client) -> None:
    data = leads(client) + leads(client, page=2) + leads(client, page=3)
    expected = {x["id"] for x in data if "ill" in x["Last_Name"].lower()}
    assert expected
    assert ids(search(client, criteria="(Last_Name:equals:ILL)")) == expected
    # The outer parentheses of a single criterion may be missing.
    assert ids(search(client, criteria="Last_Name:equals:ill")) == expected


def test_percent_encoded_criteria(client: httpx.Client) -> None:
    r = client.get("/crm/v2/Leads/search?criteria=%28Last_Name%3Aequals%3ABoyle%29")
    assert r.status_code == 200
    assert all("boyle" in x["Last_Name"].lower() for x in r.json()["data"])


def test_and_or_nesting_in_between_starts_with(client: httpx.Client) -> None:
    data = leads(client) + leads(client, page=2) + leads(client, page=3)
    crit = (
        "((City:equals:Berlin)or((Country:equals:Spain)and(Annual_Revenue:greater_than:2500000)))"
    )
    expected = {
        x["id"]
        for x in data
        if x["City"] == "Berlin" or (x["Country"] == "Spain" and x["Annual_Revenue"] > 2_500_000)
    }
    assert ids(search(client, criteria=crit)) == expected
    expected_in = {x["id"] for x in data if x["City"] in ("Paris", "Rome")}
    assert ids(search(client, criteria="(City:in:Paris,Rome)")) == expected_in
    expected_between = {x["id"] for x in data if 1_000_000 <= x["Annual_Revenue"] <= 1_200_000}
    r = search(client, criteria="(Annual_Revenue:between:1000000,1200000)")
    assert ids(r) == expected_between
    expected_sw = {x["id"] for x in data if x["Email"].startswith("ma")}
    assert ids(search(client, criteria="(Email:starts_with:ma)")) == expected_sw
    r = search(client, criteria="(Lead_Status:not_equal:Contacted)")
    statuses = {x["Lead_Status"] for x in r.json()["data"]}
    assert statuses and "Contacted" not in statuses
    total = search(client, criteria="(Created_Time:less_than:2023-06-01T00:00:00+00:00)")
    assert all(x["Created_Time"] < "2023-06-01" for x in total.json()["data"])


def test_escapes_in_values(fresh: httpx.Client) -> None:
    target = leads(fresh)[5]
    odd = "Burns, (B) & Co \\ Ltd"
    assert (
        fresh.post(
            f"/_sandbox/records/1/Leads/{target['id']}", content=orjson.dumps({"Company": odd})
        ).status_code
        == 200
    )
    assert ids(search(fresh, criteria=f"(Company:equals:{escape(odd)})")) == {target["id"]}
    both = f"((Company:equals:{escape(odd)})and(Last_Name:equals:{target['Last_Name']}))"
    assert ids(search(fresh, criteria=both)) == {target["id"]}
    # An unescaped parenthesis inside a value is malformed.
    details = envelope(search(fresh, criteria="(Company:equals:Burns (B))"), 400, "INVALID_QUERY")
    assert "reason" in details


def test_lookup_criteria(client: httpx.Client) -> None:
    lead = next(x for x in leads(client) if x["Referrer"])
    ref = lead["Referrer"]
    assert lead["id"] in ids(search(client, criteria=f"(Referrer:equals:{ref['id']})"))
    assert lead["id"] in ids(search(client, criteria=f"(Referrer.id:equals:{ref['id']})"))


def test_eleven_criteria_is_limit_exceeded(client: httpx.Client) -> None:
    ten = "and".join(["(Last_Name:equals:a)"] * 10)
    assert search(client, criteria=f"({ten})").status_code in (200, 204)
    eleven = "and".join(["(Last_Name:equals:a)"] * 11)
    envelope(search(client, criteria=f"({eleven})"), 400, "LIMIT_EXCEEDED")


def test_malformed_criteria(client: httpx.Client) -> None:
    for bad in [
        "(Last_Name:equals:x",
        "(Last_Name:equals)",
        "(Last_Name:like:x)",
        "()",
        "((Last_Name:equals:x)and)",
        "(Nope:equals:x)",
        "(Last_Name:greater_than:x)",
        "(Annual_Revenue:between:1)",
        "(Last_Name:equals:x))",
    ]:
        r = search(client, criteria=bad)
        details = envelope(r, 400, "INVALID_QUERY")
        assert r.json()["message"] == "invalid query formed"
        assert details["reason"], bad
    assert (
        envelope(search(client, criteria="(Nope:equals:x)"), 400, "INVALID_QUERY")["api_name"]
        == "Nope"
    )


def test_email_phone_word(client: httpx.Client) -> None:
    data = leads(client)
    target = data[8]
    assert target["id"] in ids(search(client, email=target["Email"].upper()))
    phone_digits = target["Phone"].replace("-", "").replace("+", "")
    assert target["id"] in ids(search(client, phone=phone_digits))
    word_hits = ids(search(client, word=target["Company"].split()[0]))
    assert target["id"] in word_hits
    assert search(client, email="nobody@nowhere.example").status_code == 204
    # criteria wins over email when both are given
    r = search(client, criteria="(Last_Name:equals:zzzz)", email=target["Email"])
    assert r.status_code == 204


def test_search_without_parameters(client: httpx.Client) -> None:
    envelope(search(client), 400, "REQUIRED_PARAM_MISSING")


def test_search_paging(client: httpx.Client) -> None:
    r = search(client, criteria="(Last_Name:equals:a)", per_page=3)
    assert r.json()["info"]["count"] == 3 and r.json()["info"]["more_records"] is True


@given(st.text(alphabet=st.sampled_from(list("ab(),\\ :%é")), min_size=1, max_size=20))
def test_escaping_round_trips(value: str) -> None:
    node = parse(f"(Company:equals:{escape(value)})")
    assert node == Leaf("Company", "equals", (value,))


@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list("xy(),\\")), min_size=1, max_size=6),
        min_size=1,
        max_size=5,
    )
)
def test_in_values_split_on_unescaped_commas(values: list[str]) -> None:
    node = parse("(City:in:" + ",".join(escape(v) for v in values) + ")")
    assert node == Leaf("City", "in", tuple(values))
