"""Attacks tried while reviewing the whole change: shadow and off may pass the CRM's answer
on, but never a value the gateway could not judge (a key no metadata describes, a CSV
column no field names), and never a CRM error that echoes what the request carried."""

from __future__ import annotations

import pytest

from tests.adversarial.test_redteam_4 import BulkCrm, _export, _zip, bulk_crm  # noqa: F401
from tests.conftest import Crm, MakeGateway

MARK = "review2-mark-7d41@example.com"
MODES = ["shadow", "off"]


@pytest.mark.parametrize("mode", MODES)
def test_a_key_no_metadata_describes_is_withheld_in_shadow_and_off(
    crm: Crm, make_gateway: MakeGateway, mode: str
) -> None:
    gw = make_gateway({"rules": {"redact": mode}})
    page = {
        "data": [{"id": "1", "Last_Name": "Doe", "Mystery": MARK, "MYSTERY_2": {"x": MARK}}],
        "info": {"per_page": 1, "count": 1, "page": 1, "more_records": False},
    }
    crm.fault(path_contains="/crm/v8/Leads", method="GET", status=200, json=page, times=1)
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name"})
    assert r.status_code == 200, r.text
    assert MARK not in r.text
    (record,) = r.json()["data"]
    assert record["Last_Name"] == "Doe" and record["Mystery"] is None


@pytest.mark.parametrize("mode", MODES)
def test_a_crm_error_echoing_the_request_is_scrubbed_in_shadow_and_off(
    crm: Crm, make_gateway: MakeGateway, mode: str
) -> None:
    gw = make_gateway({"rules": {"redact": mode}})
    error = {
        "code": "DUPLICATE_DATA",
        "details": {"api_name": "Email", "value": MARK},
        "message": f"duplicate data: {MARK}",
        "status": "error",
    }
    crm.fault(path_contains="/crm/v8/Leads", method="POST", status=400, json=error, times=1)
    lead = {"Last_Name": "Doe", "Company": "Acme", "Email": MARK}
    r = gw.http.post("/crm/v8/Leads", json={"data": [lead]})
    assert r.status_code == 400
    assert MARK not in r.text and r.json()["code"] == "DUPLICATE_DATA"


@pytest.mark.parametrize("mode", MODES)
def test_a_csv_column_no_field_names_is_refused_in_shadow_and_off(
    bulk_crm: tuple[BulkCrm, str],  # noqa: F811
    make_gateway: MakeGateway,
    mode: str,
) -> None:
    fake, url = bulk_crm
    fake.result = _zip(("111.csv", f"id,Last_Name,Hidden_Note\r\n1,Doe,{MARK}\r\n".encode()))
    gw = make_gateway({"rules": {"redact": mode}}, upstream=url)
    r = _export(gw)
    assert r.status_code == 502 and MARK.encode() not in r.content
    # the same export under enforce goes out with the column emptied
    enforced = make_gateway(upstream=url)
    r = _export(enforced)
    assert r.status_code == 200 and MARK.encode() not in r.content


def test_json_member_names_in_another_case_are_read_as_the_crm_reads_them(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """The CRM compares member names in any letter case (jsonbody.member): a criterion's
    ``Field`` and a bulk job's ``Find_By`` are what it reads, so the gateway reads them."""
    import io
    import zipfile

    import orjson

    gw = make_gateway()
    crm.clear()
    criteria = {"api_name": "Last_Name", "Field": {"api_name": "Email"}, "comparator": "equal"}
    query = {"module": {"api_name": "Leads"}, "fields": ["Last_Name"], "criteria": criteria}
    r = gw.http.post("/crm/bulk/v8/read", content=orjson.dumps({"query": query}))
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY", r.text
    assert not crm.received("/crm/bulk/v8/read")

    lead = next(x for x in crm.records("Leads") if x["$stop_processing"] is False)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Leads.csv", f"id,Email,City\n{lead['id']},a@b.c,Town\n")
    up = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", buf.getvalue(), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert up.status_code == 200, up.text
    file_id = up.json()["details"]["file_id"]
    resource = {"type": "data", "module": {"api_name": "Leads"}, "file_id": file_id}
    job = {"operation": "update", "resource": [{**resource, "Find_By": "Email"}]}
    r = gw.http.post("/crm/bulk/v8/write", content=orjson.dumps(job))
    assert r.status_code == 400 and r.json()["details"] == {"reason": "unknown_targets"}
    assert not crm.received("/crm/bulk/v8/write")


def test_a_streamed_body_cut_off_half_way_is_audited_as_the_error_it_was(
    make_gateway: MakeGateway,
) -> None:
    """A photo passed on as it is checked: when the CRM stalls half-way the client's
    connection is cut, and the one audit entry says so (not "forwarded")."""
    import socket

    from tests.conftest import AUTH
    from tests.edge.conftest import wait_for
    from tests.test_forward import WireCrm

    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    with WireCrm([head, b"\x89PNG" + b"\x00" * 20000, 5.0]) as upstream:
        gw = make_gateway({"limits": {"read_timeout_seconds": 0.5}}, upstream=upstream.url)
        host, port = gw.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=4) as s:
            s.sendall(
                b"GET /crm/v8/Leads/1/photo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                + AUTH["Authorization"].encode()
                + b"\r\nConnection: close\r\n\r\n"
            )
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    (entry,) = wait_for(gw.requests)
    assert entry["outcome"] == "error" and "upstream_timeout" in entry["reasons"], entry


def test_a_foreign_log_record_keeps_its_template_and_first_line_only() -> None:
    """asyncio's "Task exception was never retrieved" carries the exception's repr on its
    next line; uvicorn formats request values into its messages. Neither reaches stderr."""
    import io
    import logging

    import structlog

    from gateway.logs import configure_logging

    root = logging.getLogger()
    kept = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        configure_logging(out)
        never = f"Task exception was never retrieved\nKeyError({MARK!r})"
        logging.getLogger("asyncio").error(never)
        logging.getLogger("uvicorn.error").warning("Invalid request from %r", MARK)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in kept[0]:
            root.addHandler(handler)
        root.setLevel(kept[1])
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and MARK not in out.getvalue()
    assert "Task exception was never retrieved" in lines[0]


def test_composite_sub_requests_are_served_under_the_callers_gateway_key(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """The caller's key names its client for each sub-request, as for a plain read: what
    its rule shows a plain read, it shows a sub-request (and nothing more)."""
    from tests.adversarial.test_redteam_4 import EXC_KEY, _partner

    gw = make_gateway({"clients": [_partner(None)]})
    key = {"X-Gateway-Key": EXC_KEY}
    params = {"fields": "Phone", "per_page": 50}
    plain = gw.http.get("/crm/v8/Leads", params=params, headers=key).json()["data"]
    shown = [r["Phone"] for r in plain if r["Phone"]]
    assert shown  # the rule shows Phone to this client
    sub = {"method": "GET", "uri": "/crm/v8/Leads", "params": params}
    r = gw.http.post(
        "/crm/v8/__composite_requests", json={"__composite_requests": [sub]}, headers=key
    )
    body = r.json()["__composite_requests"][0]["details"]["response"]["body"]
    assert [x["Phone"] for x in body["data"] if x["Phone"]] == shown


def test_a_policy_name_the_audit_trail_would_scrub_is_refused_when_the_policy_loads() -> None:
    """The audit trail keeps only names from its vocabulary; a policy whose version or
    client name it would scrub is refused at load, not silently lost from every entry."""
    from gateway.policy import PolicyError, policy_from_mapping

    client = {"name": "billing sync", "key_sha256": "0" * 64, "show": []}
    for mapping in ({"version": "2026 Q1 rules"}, {"clients": [client]}):
        with pytest.raises(PolicyError):
            policy_from_mapping(mapping)
    ok = {"version": "2026-q1", "clients": [{**client, "name": "billing-sync"}]}
    assert policy_from_mapping(ok).version == "2026-q1"


def test_a_report_over_a_collection_never_calls_a_log_without_checkpoints_intact(
    crm: Crm, make_gateway: MakeGateway, tmp_path: object
) -> None:
    """``audit report DIR`` says what ``audit verify DIR`` says of a log whose checkpoints
    file is missing: unverifiable, not intact."""
    import shutil
    from pathlib import Path

    from gateway.audit.report import run_report

    gw = make_gateway()
    assert gw.http.get("/crm/v8/settings/modules").status_code == 200
    folder = Path(str(tmp_path)) / "collected"
    folder.mkdir()
    for log in gw.audit_files():
        shutil.copy(log, folder / log.name)  # the log alone, its checkpoints left behind
    html = folder / "r.html"
    assert run_report([str(folder)], str(html), None, b"test-secret") == 1
    assert "unverifiable" in html.read_text()
