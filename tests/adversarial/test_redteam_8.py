"""Eighth red team: composite requests, the plan caches, and what an answer's bytes hold.

Every test drives the real gateway over HTTP against the sandbox CRM and asserts what a
user would check: a withheld value never reaches the client.

Part (A): FINDINGS, each failing against 692da5f, fixed in the commit that added this file.
Part (B): attacks that HELD, kept as coverage.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import no_mark
from tests.conftest import Crm, GatewayHandle, MakeGateway

MARK = "rt8-mark-5d2e@example.com"
COMPOSITE = "/crm/v8/__composite_requests"




def _lead(crm: Crm) -> dict[str, Any]:
    return next(r for r in crm.records("Leads") if not r["$stop_processing"])


def _raw_fault(crm: Crm, path: str, method: str, raw: str) -> None:
    crm.fault(path_contains=path, method=method, status=200, body=raw,
              content_type="application/json;charset=UTF-8", times=1)  # fmt: skip


# =========================================================================================
# (A) FINDINGS: these failed against 692da5f; fixed since
# =========================================================================================


@pytest.mark.parametrize("mode", ["shadow", "off"])
def test_a_value_no_metadata_describes_is_withheld_in_every_mode_even_under_a_repeated_data(
    crm: Crm, make_gateway: MakeGateway, mode: str
) -> None:
    """README/rules.py: a value no metadata describes is withheld in every mode ("shadow
    never turns 'could not check' into 'pass'"). forward.py ``_rewritten`` judges the answer
    by orjson's reading of it (the last of two ``data`` members) and, in shadow or off,
    passes the CRM's own bytes on: the first ``data``, unjudged, goes to the client."""
    gw = make_gateway({"rules": {"redact": mode}})
    lead = _lead(crm)
    first = orjson.dumps([{"id": lead["id"], "Last_Name": "X", "Brand_New": MARK}]).decode()
    second = orjson.dumps([{"id": lead["id"], "Last_Name": "X"}]).decode()
    # setup: sent once, the unknown key is withheld in this mode
    crm.fault(path_contains="/crm/v8/Leads", method="GET", status=200, times=1,
              json={"data": orjson.loads(first)})  # fmt: skip
    once = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"})
    assert once.status_code == 200 and MARK not in once.text, once.text[:300]
    _raw_fault(crm, "/crm/v8/Leads", "GET", f'{{"data":{first},"data":{second}}}')
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"})
    assert r.status_code in (200, 502), r.text[:300]
    no_mark(r, MARK)


# =========================================================================================
# (B) HELD: attacks that did not get through, kept as coverage
# =========================================================================================


def test_held_a_record_answer_naming_data_twice_is_redacted_in_enforce(
    crm: Crm, gw: GatewayHandle
) -> None:
    """In enforce the answer is always re-written from what was judged (the last ``data``)."""
    lead = _lead(crm)
    first = orjson.dumps([{"id": lead["id"], "Last_Name": "X", "Email": MARK}]).decode()
    second = orjson.dumps([{"id": lead["id"], "Last_Name": "X"}]).decode()
    _raw_fault(crm, "/crm/v8/Leads", "GET", f'{{"data":{first},"data":{second}}}')
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Email"})
    assert r.status_code in (200, 502), r.text[:300]
    no_mark(r, MARK)


def test_held_composite_sub_requests_are_guarded_like_direct_ones(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = _lead(crm)
    body = {"__composite_requests": [
        {"method": "POST", "uri": "/crm/v8/coql",
         "body": {"select_query": f"select Last_Name from Leads where Email = '{MARK}'"}},
        {"method": "GET", "uri": "/crm/v8/Leads", "params": {"sort_by": "No_Such_Field"}},
        {"method": "GET", "uri": "/crm/v8/Leads/search",
         "params": {"criteria": f"(Email:equals:{MARK})"}},
        {"method": "GET", "uri": f"/crm/v8/Leads/{lead['id']}", "params": {"fields": "Email"},
         "headers": {"X-Gateway-Key": "not-a-key"}},
    ]}  # fmt: skip
    crm.clear()
    r = gw.http.post(COMPOSITE, content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    coql, sort, search, read = (e["details"]["response"] for e in r.json()["__composite_requests"])
    assert coql["status_code"] == 400 and sort["status_code"] == 400
    assert search["status_code"] == 400
    # a sub-request naming another key than its request's is refused (red team 9)
    assert read["status_code"] == 400 and read["body"]["code"] == "INVALID_DATA", read
    assert not crm.received("/coql") and not crm.received("/search")
    assert MARK not in gw.audit_text()


def test_held_a_composite_sub_answer_with_data_in_another_case_fails_closed(
    crm: Crm, gw: GatewayHandle
) -> None:
    lead = _lead(crm)
    answer = {"data": [{"id": lead["id"]}], "Data": [{"id": lead["id"], "Email": MARK}]}
    crm.fault(path_contains="/crm/v8/Leads", method="GET", status=200, json=answer, times=1)
    body = {"__composite_requests": [{"method": "GET", "uri": "/crm/v8/Leads",
                                      "params": {"fields": "Last_Name"}}]}  # fmt: skip
    r = gw.http.post(COMPOSITE, content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    (entry,) = r.json()["__composite_requests"]
    assert entry["details"]["response"]["status_code"] == 502
    no_mark(r, MARK)
    assert MARK not in gw.audit_text()


def test_held_two_clients_with_different_shown_sensitivities_get_their_own_plans(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    import hashlib

    key = "rt8-client-key"
    gw = make_gateway({"redaction": {"show": []}, "clients": [
        {"name": "wide", "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
         "show": ["low", "high"]}]})  # fmt: skip
    lead = _lead(crm)
    crm.edit("Leads", lead["id"], City="RT8CITY")
    url = f"/crm/v8/Leads/{lead['id']}"
    wide = gw.http.get(url, params={"fields": "City"}, headers={"X-Gateway-Key": key})
    narrow = gw.http.get(url, params={"fields": "City"})
    wide2 = gw.http.get(url, params={"fields": "City"}, headers={"X-Gateway-Key": key})
    assert wide.status_code == narrow.status_code == 200, (wide.text, narrow.text)
    assert "RT8CITY" in wide.text and "RT8CITY" in wide2.text  # setup: City shown to "wide"
    assert "RT8CITY" not in narrow.text
