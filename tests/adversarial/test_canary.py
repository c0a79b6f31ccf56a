"""Canaries (checklist 51, 54): unique strings in every restricted field the sandbox CRM
holds, a scenario through every read channel, error and refusal, and then one scan of
everything the gateway gave out: answers (bodies and headers), its log lines, the audit
trail, the metrics. Secrets of the caller (token, cookie) get the same scan, on the error
paths too."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import AUTH, Crm, GatewayHandle, MakeGateway
from tests.servers import free_port

RESTRICTED = ("Email", "Mobile", "Date_of_Birth")


def _plant(crm: Crm) -> tuple[list[str], list[dict[str, Any]]]:
    """A canary in every restricted field of every lead; (the canaries, the leads)."""
    canaries: list[str] = []
    leads = crm.records("Leads")
    for lead in leads:
        values = {name: f"cnry-{uuid.uuid4().hex[:12]}" for name in RESTRICTED}
        crm.edit("Leads", lead["id"], **values)
        canaries += values.values()
    stored = crm.one("Leads", leads[0]["id"])
    assert all(stored[name] in canaries for name in RESTRICTED)  # they are really there
    return canaries, leads


def _server_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every stdlib log record but the test's own HTTP client's (which logs its URLs)."""
    return "\n".join(
        rec.getMessage() for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))
    )


def _given_out(r: httpx.Response) -> str:
    return r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.multi_items())


def test_c51_no_canary_reaches_an_answer_a_log_line_the_audit_or_a_metric(
    crm: Crm,
    gw: GatewayHandle,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    canaries, leads = _plant(crm)
    caplog.set_level("DEBUG")
    capfd.readouterr()
    one, stopped = leads[0], next(r for r in leads if r["$stop_processing"])
    http, name = gw.http, one["Last_Name"]
    answers = [
        http.get("/crm/v8/Leads", params={"per_page": 200, "fields": "Last_Name,Email,Mobile"}),
        http.get("/crm/v2/Leads", params={"per_page": 200}),
        http.get(f"/crm/v8/Leads/{one['id']}"),
        http.get(f"/crm/v2/Leads/{one['id']}", params={"include_private_fields": "true"}),
        http.get("/crm/v8/Leads/search", params={"criteria": f"(Last_Name:equals:{name})"}),
        http.get("/crm/v8/Leads/search", params={"word": one["Last_Name"]}),
        http.get("/crm/v8/Leads/search", params={"criteria": f"(Email:equals:{canaries[0]})"}),
        http.get("/crm/v8/Leads/actions/count", params={"email": canaries[0]}),
        http.post("/crm/v8/coql", content=orjson.dumps(
            {"select_query": f"select Last_Name, Email, Mobile, Date_of_Birth from Leads "
                             f"where id = {one['id']}"})),
        http.put(f"/crm/v8/Leads/{stopped['id']}",
                 content=orjson.dumps({"data": [{"Email": canaries[1]}]})),
        http.post("/crm/v8/Leads/upsert",
                  content=orjson.dumps({"data": [{"Last_Name": "X", "Email": canaries[2]}]})),
        http.get(f"/crm/v8/{canaries[3]}"),
        http.get(f"/crm/v8/Leads/{canaries[4]}"),
    ]  # fmt: skip
    # a CRM error that echoes a canary
    crm.fault(
        path_contains="/crm/v8/Leads/search",
        status=400,
        json={"code": "INVALID_QUERY", "details": {"value": canaries[5]},
              "message": f"nothing like {canaries[5]}", "status": "error"},
        times=1,
    )  # fmt: skip
    answers.append(http.get("/crm/v8/Leads/search", params={"criteria": "(Last_Name:equals:x)"}))
    answers.append(http.get("/_gateway/metrics"))
    assert any(a.status_code == 200 for a in answers) and any(a.status_code >= 400 for a in answers)
    out, err = capfd.readouterr()
    assert "request" in out + err  # the log lines were captured
    places = {
        "answers": "\n".join(_given_out(a) for a in answers),
        "logs": out + err + _server_logs(caplog),
        "audit": gw.audit_log.read_text(),
    }
    for place, text in places.items():
        found = [c for c in canaries if c in text]
        assert not found, (place, found[:3], [ln for ln in text.splitlines() if found[0] in ln][:3])


def test_c54_tokens_and_cookies_never_reach_a_log_line_even_on_error_paths(
    crm: Crm,
    make_gateway: MakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused upstream, an unreachable one, an exception inside the gateway whose
    message holds the token (the log names its type, no message, no traceback), a 401."""
    from gateway.privacy import guards

    token = f"tok-{uuid.uuid4().hex}"
    cookie = f"ck-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Zoho-oauthtoken {token}", "Cookie": f"session={cookie}"}
    caplog.set_level("DEBUG")

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError(f"broken with {token} and {cookie}")

    gw = make_gateway()
    down = make_gateway(upstream=f"http://127.0.0.1:{free_port()}")
    capfd.readouterr()
    refused = gw.http.get("/crm/v8/Leads", params={"per_page": 1}, headers=headers)
    assert refused.status_code in (400, 401), refused.text  # the CRM's answer to a bad token
    down.http.get("/crm/v8/settings/modules", headers=headers)
    good = {**AUTH, "Cookie": f"session={cookie}"}
    gw.http.get("/crm/v8/Leads", params={"per_page": 1, "fields": "Last_Name"}, headers=good)
    monkeypatch.setattr(guards, "check_search_params", broken)
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Last_Name:equals:x)"},
                    headers=good)  # fmt: skip
    assert r.status_code == 500
    out, err = capfd.readouterr()
    text = out + err + _server_logs(caplog) + gw.audit_log.read_text() + down.audit_log.read_text()
    assert "internal_error" in text and "Traceback" not in text
    for secret in (token, cookie, AUTH["Authorization"]):
        assert secret not in text, secret
