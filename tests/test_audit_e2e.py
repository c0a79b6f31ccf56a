"""The audit trail as the gateway writes it: one entry per request, no personal data,
a chain that verifies, and a sink failure that never goes unnoticed."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import orjson

from gateway.audit import verify_log
from tests.conftest import AUTH, Crm, GatewayHandle, MakeGateway, envelope


def test_c63_one_entry_per_request_with_its_outcome(crm: Crm, gw: GatewayHandle) -> None:
    """Exactly one entry per request, naming its id, actor, method, route template,
    decision, policy version and the fields withheld or refused (values: the next test).
    Requests refused by the parser and cancelled at shutdown are the integrator's."""
    gw.http.get("/crm/v8/settings/modules")
    gw.http.get("/crm/v8/Leads", params={"per_page": 3, "fields": "Last_Name,Email"})
    gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Email:equals:x@example.com)"})
    crm.fault(path_contains="/settings/fields", status=500, json={"code": "INTERNAL_ERROR"})
    gw.http.get("/crm/v8/Contacts", params={"per_page": 3})
    entries = gw.requests()
    assert [(e["route"], e["outcome"], e["status"]) for e in entries] == [
        ("/crm/{v}/settings/{name}", "forwarded", 200),
        ("/crm/{v}/{module}", "redacted", 200),
        ("/crm/{v}/{module}/search", "refused", 400),
        ("/crm/{v}/{module}", "error", 503),
    ]
    listed = entries[1]
    assert listed["module"] == "Leads" and listed["api_version"] == "v8"
    assert "Email" in listed["fields_withheld"]["names"] and listed["fields_withheld"]["count"] > 0
    assert listed["upstream_status"] == 200 and listed["metadata_age_s"] is not None
    assert entries[2]["reasons"] == ["restricted_criteria"]
    assert entries[2]["fields_refused"] == ["Email"]
    assert entries[2]["upstream_status"] is None
    assert entries[3]["reasons"] == ["metadata_unavailable"]
    assert [e["seq"] for e in gw.audit()] == list(range(1, len(gw.audit()) + 1))
    for e in entries:
        assert len(e["request_id"]) == 32 and e["method"] == "GET"
        assert e["client"] and AUTH["Authorization"].split()[-1] not in e["client"]
        assert e["policy_version"]
    assert len({e["request_id"] for e in entries}) == len(entries)


def test_c63_entries_hold_no_tokens_values_or_bodies(crm: Crm, gw: GatewayHandle) -> None:
    marker = "marker-5f1e@example.com"
    lead = crm.records("Leads")[0]
    gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Last_Name:equals:{marker})"})
    gw.http.get("/crm/v8/Leads/search", params={"email": marker})
    gw.http.put(
        "/crm/v8/Leads", content=orjson.dumps({"data": [{"id": lead["id"], "Description": marker}]})
    )
    gw.http.post(
        "/crm/v8/coql",
        content=orjson.dumps(
            {"select_query": f"select Last_Name from Leads where Last_Name = '{marker}'"}
        ),
    )
    gw.http.get(
        "/crm/v8/Leads",
        params={"per_page": 5},
        headers={"Authorization": "Zoho-oauthtoken secret-token-123"},
    )
    text = gw.audit_text()
    for secret in (marker, "test-token", "secret-token-123", lead["Email"], lead["Last_Name"]):
        assert secret not in text
    clients = {e["client"] for e in gw.requests()}
    assert len(clients) == 2 and all(len(c) == 32 for c in clients)


def test_c72_five_hundred_parallel_requests_leave_a_gapless_chain_that_verifies(
    make_gateway: MakeGateway,
) -> None:
    """Every line whole (``audit()`` parses each), ``seq`` strictly increasing by one."""
    gw = make_gateway({"limits": {"max_concurrent_requests": 1000}})

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=500)
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=60, limits=limits) as c:
            rs = await asyncio.gather(
                *(
                    c.get("/crm/v8/Leads", params={"per_page": 1, "fields": "Last_Name"})
                    for _ in range(500)
                )
            )
        return [r.status_code for r in rs]

    assert asyncio.run(burst()) == [200] * 500
    assert len(gw.requests()) == 500
    for log in gw.audit_files():  # one chain, or one per worker
        seqs = [orjson.loads(line)["seq"] for line in log.read_bytes().splitlines()]
        assert seqs == list(range(1, len(seqs) + 1))
        result = verify_log(log)
        assert result.ok, result.summary


def _break_the_sink(gw: GatewayHandle) -> None:
    # With a tiny max_bytes every entry rotates the file; without its folder it cannot.
    shutil.rmtree(gw.audit_log.parent)


def test_c37_block_mode_refuses_when_the_sink_fails_and_forwards_nothing(
    crm: Crm, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gw = make_gateway({"audit": {"fsync": "never", "max_bytes": 200}})
    assert gw.http.get("/crm/v8/settings/modules").status_code == 200
    _break_the_sink(gw)
    first = gw.http.get("/crm/v8/settings/modules")
    assert first.status_code == 503
    crm.clear()
    envelope(gw.http.put("/crm/v8/Leads", content=b'{"data":[]}'), 503, "GATEWAY_AUDIT_UNAVAILABLE")
    assert not crm.received("/crm/v8/Leads")
    ready = gw.http.get("/_gateway/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["audit"] == "audit sink is not keeping up"


def test_c37_drop_mode_keeps_serving_and_counts_what_it_dropped(make_gateway: MakeGateway) -> None:
    gw = make_gateway({"audit": {"fsync": "never", "max_bytes": 200, "on_full": "drop"}})
    assert gw.http.get("/crm/v8/settings/modules").status_code == 200
    _break_the_sink(gw)
    for _ in range(5):
        assert gw.http.get("/crm/v8/settings/modules").status_code == 200
    time.sleep(0.1)
    metrics = gw.http.get("/_gateway/metrics").text
    dropped = next(
        line
        for line in metrics.splitlines()
        if line.startswith("privacy_gateway_audit_dropped_total ")
    )
    assert float(dropped.split()[1]) >= 1
    assert gw.http.get("/_gateway/ready").json()["audit_dropped"] >= 1
