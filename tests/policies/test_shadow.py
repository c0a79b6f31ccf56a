"""Shadow mode: every rule is evaluated on the same code path, the client receives what the
CRM answered, and the audit names everything enforce mode would have done. What could not
be checked still fails closed."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import orjson
import pytest

from gateway.policy import PolicyError, policy_from_mapping
from tests.conftest import Crm, GatewayHandle, MakeGateway, envelope

SHADOW = {"mode": "shadow", "writes": {"require_consent": True}}


def _same_as_direct(crm: Crm, gw: GatewayHandle, method: str, url: str, **kw: Any) -> Any:
    """The gateway's answer is the CRM's, byte for byte (headers aside)."""
    direct = crm.http.request(method, url, **kw)
    through = gw.http.request(method, url, **kw)
    assert through.status_code == direct.status_code, through.text
    assert through.content == direct.content
    return gw.requests()[-1]


def test_in_shadow_nothing_is_redacted_or_refused_and_the_audit_says_what_would_have_been(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(SHADOW)
    read = _same_as_direct(crm, gw, "GET", "/crm/v2/Leads", params={"per_page": 10})
    assert read["outcome"] == "forwarded" and read["fields_withheld"]["count"] == 0
    assert {"Email", "Mobile", "Phone"} <= set(read["would_redact"]["names"])
    assert read["shadowed_rules"] == ["redact"] and read["would_refuse"] == []

    search = _same_as_direct(
        crm, gw, "GET", "/crm/v8/Leads/search", params={"criteria": "(Email:equals:x@y.z)"}
    )
    assert search["would_refuse"] == ["restricted_criteria"]
    assert search["would_refuse_fields"] == ["Email"] and search["fields_refused"] == []
    assert search["outcome"] != "refused" and "criteria" in search["shadowed_rules"]

    query = {"select_query": "select Last_Name, Email from Leads where Mobile is not null"}
    coql = _same_as_direct(crm, gw, "POST", "/crm/v8/coql", content=orjson.dumps(query))
    assert coql["would_refuse_fields"] == ["Mobile"]
    assert set(coql["shadowed_rules"]) == {"criteria", "redact"}

    sort = gw.http.get("/crm/v2/Leads", params={"sort_by": "Email", "per_page": 2})
    assert sort.status_code != 400 or "restricted" not in sort.text
    assert gw.requests()[-1]["shadowed_rules"][-1] == "sort"


def test_in_shadow_writes_reach_stopped_records_and_unconsented_inserts_pass(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(SHADOW)
    stopped = next(r for r in crm.records("Leads") if r["$stop_processing"])
    r = gw.http.put("/crm/v2/Leads", json={"data": [{"id": stopped["id"], "City": "Oslo"}]})
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text
    assert crm.one("Leads", stopped["id"])["City"] == "Oslo"
    entry = gw.requests()[-1]
    assert entry["would_refuse"] == ["stop_processing"] and entry["outcome"] != "refused"

    r = gw.http.post("/crm/v2/Leads", json={"data": [{"Last_Name": "Shadow", "Company": "Z"}]})
    assert r.status_code == 201, r.text
    assert gw.requests()[-1]["would_refuse"] == ["missing_consent"]


def test_in_shadow_a_read_keyed_by_a_withheld_field_goes_on_and_is_recorded(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(SHADOW)
    lead = crm.records("Leads")[0]
    crm.edit("Leads", lead["id"], Email="shadow.key@example.com")
    headers = {"X-EXTERNAL": "Leads.Email"}
    entry = _same_as_direct(crm, gw, "GET", "/crm/v8/Leads/shadow.key@example.com", headers=headers)
    assert entry["would_refuse"] == ["restricted_external"]
    assert entry["would_refuse_fields"] == ["Email"]


def test_the_same_requests_in_enforce_mode_are_refused_and_redacted(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """The shadow test's counterpart: the audit of shadow mode named what happens here."""
    gw = make_gateway({"writes": {"require_consent": True}})
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Email:equals:x@y.z)"})
    envelope(r, 400, "INVALID_QUERY")
    assert gw.requests()[-1]["fields_refused"] == ["Email"]
    stopped = next(r for r in crm.records("Leads") if r["$stop_processing"])
    r = gw.http.put("/crm/v2/Leads", json={"data": [{"id": stopped["id"], "City": "Oslo"}]})
    assert r.json()["data"][0]["code"] != "SUCCESS"
    assert gw.requests()[-1]["reasons"] == ["stop_processing"]
    assert gw.requests()[-1]["would_refuse"] == []


def test_a_rule_in_shadow_beside_enforced_rules(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway({"rules": {"criteria": "shadow"}})
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Email:equals:x@y.z)"})
    assert r.status_code in (200, 204), r.text
    entry = gw.requests()[-1]
    assert entry["would_refuse"] == ["restricted_criteria"]
    # redact is still enforced: whatever came back was redacted.
    listed = gw.http.get("/crm/v2/Leads", params={"per_page": 5}).json()["data"]
    assert all(rec["Email"] is None for rec in listed)


def test_off_records_nothing_and_changes_nothing(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway({"rules": {"criteria": "off"}})
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Email:equals:x@y.z)"})
    assert r.status_code in (200, 204), r.text
    entry = gw.requests()[-1]
    assert entry["would_refuse"] == [] and entry["shadowed_rules"] == []


def test_shadow_still_fails_closed_when_it_cannot_check(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(SHADOW)
    # A criteria path that cannot be resolved, after a restricted field: not "pass".
    r = gw.http.get(
        "/crm/v8/Leads/search",
        params={"criteria": "((Email:equals:x)and(Company.Name:equals:y))"},
    )
    envelope(r, 400, "INVALID_QUERY")
    crm.fault(path_contains="/crm/v2/Leads", status=200, body="not json {", times=1)
    r = gw.http.get("/crm/v2/Leads", params={"per_page": 2})
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    crm.fault(path_contains="/settings/fields", status=500, json={"code": "INTERNAL_ERROR"})
    r = gw.http.get("/crm/v2/Contacts", params={"per_page": 2})
    envelope(r, 503, "GATEWAY_METADATA_UNAVAILABLE")
    r = gw.http.get("/crm/v2/Leads/unknown-thing/deeper/still")
    assert r.status_code in (400, 404), r.text


def test_metrics_count_what_shadow_mode_held_back(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway(SHADOW)
    gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Email:equals:x@y.z)"})
    text = gw.http.get("/_gateway/metrics").text
    assert 'privacy_gateway_shadow_would_act_total{rule="criteria"} 1.0' in text


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"mode": "off"}, "mode"),
        ({"rules": {"criteria": "audit"}}, "rules.criteria"),
        ({"rules": {"redaction": "shadow"}}, "rules.redaction"),
        ({"rules": {"unknown_route": "shadow"}}, "rules.unknown_route"),
        ({"rules": {"metadata": "off"}}, "rules.metadata"),
    ],
)
def test_modes_are_validated(raw: dict[str, object], key: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping(raw)
    assert err.value.key == key


def test_in_shadow_a_bulk_result_holds_the_crms_cells_and_its_columns_are_counted(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """The ZIP is the gateway's own (red team 10: only bytes it wrote leave), its CSV the
    CRM's cells, unchanged."""
    gw = make_gateway(SHADOW)
    job = gw.http.post("/crm/bulk/v2.1/read", json={"query": {"module": {"api_name": "Leads"}}})
    assert job.status_code in (200, 201), job.text
    job_id = job.json()["data"][0]["details"]["id"]
    url = f"/crm/bulk/v2.1/read/{job_id}/result"
    direct, through = crm.http.get(url), gw.http.get(url)
    assert direct.status_code == through.status_code == 200, through.text[:200]

    def rows(zipped: bytes) -> list[list[str]]:
        with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
            (name,) = zf.namelist()
            return list(csv.reader(io.StringIO(zf.read(name).decode("utf-8-sig"))))

    crm_rows = rows(direct.content)
    assert len(crm_rows) > 1 and "Email" in crm_rows[0]
    assert rows(through.content) == crm_rows
    entry = gw.requests()[-1]
    assert {"Email", "Mobile", "Phone"} <= set(entry["would_redact"]["names"])
    assert entry["outcome"] == "forwarded" and entry["fields_withheld"]["count"] == 0


def test_a_composite_request_records_what_each_part_would_have_done(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(SHADOW)
    sub = {"method": "GET", "uri": "/crm/v8/Leads/search"}
    body = {"__composite_requests": [{**sub, "params": {"criteria": "(Email:equals:x@y.z)"}}]}
    r = gw.http.post("/crm/v8/__composite_requests", content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    (part,) = r.json()["__composite_requests"]
    assert part["details"]["response"]["status_code"] != 400
    entry = gw.requests()[-1]
    assert (
        entry["would_refuse"] == ["restricted_criteria"] and "criteria" in entry["shadowed_rules"]
    )
