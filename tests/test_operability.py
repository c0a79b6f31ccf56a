"""What an operator's tools read: the metrics (parsed by prometheus-client's own parser),
readiness, and the gateway endpoints' errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway import __version__
from tests.conftest import AUTH, LEAD_FIELDS, Crm, GatewayHandle, MakeGateway, envelope
from tests.servers import free_port

MARKER = "zz-marker-4815@example.com"


def _families(gw: GatewayHandle) -> dict[str, Any]:
    r = gw.http.get("/_gateway/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert MARKER not in r.text
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def _value(family: Any, name: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == name and _has(s, labels)]
    assert len(found) == 1, (name, labels, family.samples)
    return float(found[0])


def _has(sample: Sample, labels: dict[str, str]) -> bool:
    return all(sample.labels.get(k) == v for k, v in labels.items())


def test_metrics_have_types_help_and_bounded_labels(gw: GatewayHandle) -> None:
    gw.http.get("/crm/v8/Leads", params={"per_page": 5, "fields": LEAD_FIELDS})
    gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Email:equals:{MARKER})"})
    fams = _families(gw)
    ours = {n: f for n, f in fams.items() if n.startswith("privacy_gateway_")}
    assert all(f.documentation for f in ours.values()), "every family has HELP"
    kinds = {n: f.type for n, f in ours.items()}
    assert kinds["privacy_gateway_requests"] == "counter"
    assert kinds["privacy_gateway_request_duration_seconds"] == "histogram"
    assert kinds["privacy_gateway_upstream_latency_seconds"] == "histogram"
    assert kinds["privacy_gateway_upstream_errors"] == "counter"
    assert kinds["privacy_gateway_refusals"] == "counter"
    assert kinds["privacy_gateway_values_withheld"] == "counter"
    assert kinds["privacy_gateway_metadata_cache"] == "counter"
    assert kinds["privacy_gateway_metadata_oldest_entry_age_seconds"] == "gauge"
    assert kinds["privacy_gateway_audit_queue_depth"] == "gauge"
    assert kinds["privacy_gateway_audit_dropped"] == "counter"
    assert kinds["privacy_gateway_audit_fsync_seconds"] == "histogram"
    assert kinds["privacy_gateway_build_info"] == "gauge"
    assert "process_resident_memory_bytes" in fams

    requests = ours["privacy_gateway_requests"]
    route = "/crm/{v}/{module}"
    assert (
        _value(
            requests,
            "privacy_gateway_requests_total",
            route=route,
            method="GET",
            outcome="redacted",
        )
        == 1
    )
    refused = {"route": "/crm/{v}/{module}/search", "method": "GET", "outcome": "refused"}
    assert _value(requests, "privacy_gateway_requests_total", **refused) == 1
    duration = ours["privacy_gateway_request_duration_seconds"]
    count = "privacy_gateway_request_duration_seconds_count"
    assert _value(duration, count, route=route, outcome="redacted") == 1
    refusals = ours["privacy_gateway_refusals"]
    assert (
        _value(
            refusals, "privacy_gateway_refusals_total", reason="restricted_criteria", module="Leads"
        )
        == 1
    )
    withheld = ours["privacy_gateway_values_withheld"]
    nulled = gw.requests()[0]["fields_withheld"]["count"]  # the audit entry's own count
    assert nulled >= 5
    assert _value(withheld, "privacy_gateway_values_withheld_total", module="Leads") == nulled
    cache = ours["privacy_gateway_metadata_cache"]
    assert _value(cache, "privacy_gateway_metadata_cache_total", result="refresh") >= 2
    assert _value(cache, "privacy_gateway_metadata_cache_total", result="hit") >= 1
    assert ours["privacy_gateway_metadata_oldest_entry_age_seconds"].samples[0].value >= 0
    latency = ours["privacy_gateway_upstream_latency_seconds"]
    assert (
        _value(latency, "privacy_gateway_upstream_latency_seconds_count", status_class="2xx") >= 3
    )
    assert _value(ours["privacy_gateway_audit_dropped"], "privacy_gateway_audit_dropped_total") == 0
    info = ours["privacy_gateway_build_info"]
    assert _value(info, "privacy_gateway_build_info", version=__version__) == 1
    # labels are templates and codes: no path value, record id or field value
    for family in ours.values():
        for sample in family.samples:
            assert not any("@" in v or v.isdigit() for v in sample.labels.values()), sample


def test_fsync_latency_is_measured(make_gateway: MakeGateway) -> None:
    gw = make_gateway({"audit": {"fsync": "always"}})
    gw.http.get("/crm/v8/settings/modules")
    fsync = _families(gw)["privacy_gateway_audit_fsync_seconds"]
    assert _value(fsync, "privacy_gateway_audit_fsync_seconds_count") >= 1


def test_upstream_errors_are_counted_by_kind(make_gateway: MakeGateway) -> None:
    down = make_gateway(upstream=f"http://127.0.0.1:{free_port()}")
    envelope(down.http.get("/crm/v8/settings/modules"), 502, "GATEWAY_UPSTREAM_UNREACHABLE")
    fams = _families(down)
    errors = fams["privacy_gateway_upstream_errors"]
    assert _value(errors, "privacy_gateway_upstream_errors_total", kind="upstream_unreachable") >= 1
    requests = fams["privacy_gateway_requests"]
    assert (
        _value(
            requests,
            "privacy_gateway_requests_total",
            route="/crm/{v}/settings/{name}",
            method="GET",
            outcome="error",
        )
        == 1
    )


def test_gateway_endpoint_errors_use_the_crm_envelope(gw: GatewayHandle) -> None:
    envelope(gw.http.get("/_gateway/nope"), 404, "INVALID_URL_PATTERN")
    envelope(gw.http.post("/_gateway/health"), 405, "INVALID_REQUEST_METHOD")


def test_ready_names_each_check_and_follows_the_crm(crm: Crm, gw: GatewayHandle) -> None:
    gw.app.readiness.cache_s = 0  # re-probe on every call
    r = gw.http.get("/_gateway/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {
        "policy": "ok",
        "upstream": "ok",
        "metadata": "ok",
        "audit": "ok",
        "draining": "ok",
    }
    crm.fault(path_contains="/crm/v2/org", status=503, times=1)
    gone = gw.http.get("/_gateway/ready")
    assert gone.status_code == 503 and gone.json()["checks"]["upstream"] == "the CRM answers 503"
    assert gw.http.get("/_gateway/ready").status_code == 200  # back again


def test_ready_reports_failing_metadata(crm: Crm, gw: GatewayHandle) -> None:
    gw.app.readiness.cache_s = 0
    crm.fault(path_contains="/settings/fields", status=500, times=1)
    leads = {"per_page": 1, "fields": LEAD_FIELDS}
    envelope(gw.http.get("/crm/v8/Leads", params=leads), 503, "GATEWAY_METADATA_UNAVAILABLE")
    r = gw.http.get("/_gateway/ready")
    assert r.status_code == 503 and "failing" in r.json()["checks"]["metadata"]
    assert gw.http.get("/crm/v8/Leads", params=leads).status_code == 200
    assert gw.http.get("/_gateway/ready").status_code == 200


def test_ready_is_503_once_shutdown_begins(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    assert gw.http.get("/_gateway/ready").status_code == 200
    gw.app.drain()
    r = gw.http.get("/_gateway/ready")
    assert r.status_code == 503 and r.json()["checks"]["draining"] == "shutting down"
    assert gw.http.get("/_gateway/health").status_code == 200  # alive, only not ready


def test_stopping_the_server_drains_the_app(crm: Crm, tmp_path: Path) -> None:
    from gateway.app import create_app
    from gateway.policy import policy_from_mapping
    from gateway.settings import Settings
    from tests.servers import ThreadedServer

    settings = Settings.build(
        upstream=crm.url,
        policy=policy_from_mapping({"audit": {"fsync": "never"}}),
        audit_log=str(tmp_path / "audit.jsonl"),
        env={"GATEWAY_SECRET": "s"},
    )
    app = create_app(settings)
    server = ThreadedServer(app).start()
    assert not app.readiness.draining
    server.stop()
    assert app.readiness.draining


def test_upstream_calls_go_through_the_proxy_only_when_asked(crm: Crm, tmp_path: Path) -> None:
    from gateway.app import create_app
    from gateway.policy import policy_from_mapping
    from gateway.settings import Settings, env_proxy
    from tests.servers import serve

    seen: list[str] = []
    policy = policy_from_mapping({"audit": {"fsync": "never"}})
    with serve(_forward_proxy(seen)) as proxy:
        # h1 has no proxy support: with a proxy configured it is the aiohttp transport
        for opt_in, transport in (
            (True, "aiohttp"),
            (True, "httpx"),
            (True, "h1"),
            (False, "aiohttp"),
            (False, "h1"),
        ):
            seen.clear()
            settings = Settings.build(
                upstream=crm.url,
                audit_log=str(tmp_path / f"audit-{opt_in}-{transport}.jsonl"),
                transport=transport,
                policy=policy,
                proxy_from_env=opt_in,
                env={"GATEWAY_SECRET": "s", "HTTP_PROXY": proxy.url},
            )
            with serve(create_app(settings)) as gw:
                r = httpx.get(gw.url + "/crm/v8/settings/modules", headers=AUTH)
                assert r.status_code == 200, r.text
            assert bool(seen) is opt_in, (transport, seen)
            assert all(u.startswith(crm.url) for u in seen)
    env = {"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "localhost,.zoho.eu"}
    assert env_proxy("https://www.zohoapis.eu", env) == "http://proxy.internal:3128"
    assert env_proxy("https://crm.zoho.eu", env) is None
    assert env_proxy("http://www.zohoapis.eu", env) is None  # no HTTP_PROXY given


def _forward_proxy(seen: list[str]) -> Any:
    """A plain forward HTTP proxy: it records each absolute URL and relays the raw bytes."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"proxy-connection"]
        host = next(v for k, v in headers if k.lower() == b"host").decode()
        path = scope["raw_path"].decode()
        url = path if path.startswith("http") else f"http://{host}{path}"
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        seen.append(url)
        async with httpx.AsyncClient() as client:
            req = client.build_request(scope["method"], url, headers=headers, content=body)
            resp = await client.send(req, stream=True)
            raw = b"".join([chunk async for chunk in resp.aiter_raw()])
        hop = {b"transfer-encoding", b"connection", b"content-length"}
        out = [(k.lower(), v) for k, v in resp.headers.raw if k.lower() not in hop]
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": raw})

    return app
