"""``privacy-gateway demo``: the sandbox CRM and the gateway side by side, narrated.

The same requests go straight to the sandbox (the raw CRM, which enforces nothing) and
through the gateway, so the difference is what the gateway does.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.audit import run_verify
from gateway.logs import configure_logging
from gateway.policy import Policy
from gateway.serving import ThreadedServer
from gateway.settings import Settings

AUTH = {"Authorization": "Zoho-oauthtoken demo-token"}
SHOWN = ("id", "Last_Name", "Email", "Mobile", "Phone", "Company", "$stop_processing")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _pick(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in SHOWN if k in record}


def _show(label: str, resp: httpx.Response) -> None:
    _say(f"  {label}: HTTP {resp.status_code}")
    withheld = resp.headers.get("x-privacy-withheld")
    if withheld is not None:
        _say(f"    X-Privacy-Withheld: {withheld}")
    if not resp.content:
        return
    body = resp.json()
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        for entry in body["data"][:2]:
            shown = _pick(entry) if "code" not in entry else entry
            _say("    " + json.dumps(shown, ensure_ascii=False))
    else:
        _say("    " + json.dumps(body, ensure_ascii=False))


def tour(crm: str, gateway: str, audit_log: Path) -> None:
    with httpx.Client(headers=AUTH, timeout=30) as http:
        # The CRM returns only the fields a list names (from v3 on it requires them), and a
        # $-key only when it is named.
        leads = http.get(
            f"{crm}/crm/v8/Leads",
            params={"per_page": 20, "fields": "Last_Name,Email,$stop_processing"},
        ).json()["data"]
        plain = next(r for r in leads if not r.get("$stop_processing"))
        stopped = next(r for r in leads if r.get("$stop_processing"))

        _say("1. A page of Leads. The CRM's field metadata marks Email and Mobile restricted,")
        _say("   Phone private (High). Straight from the CRM the values are there; through the")
        _say("   gateway they are null, and X-Privacy-Withheld says how many were withheld.")
        for label, base in (("direct ", crm), ("gateway", gateway)):
            page: dict[str, str | int] = {
                "per_page": 2,
                "fields": "Last_Name,Email,Mobile,Phone,City",
            }
            _show(label, http.get(f"{base}/crm/v8/Leads", params=page))
        _say()

        _say("2. A search on a restricted field. The raw CRM answers it (and so tells whoever")
        _say("   asks whether that e-mail address is in the CRM); the gateway refuses it the")
        _say("   way the CRM's own GDPR rules do, before the request leaves.")
        criteria = f"(Email:equals:{plain['Email']})"
        for label, base in (("direct ", crm), ("gateway", gateway)):
            _show(label, http.get(f"{base}/crm/v8/Leads/search", params={"criteria": criteria}))
        _say()

        _say(f"3. An update of two Leads; the second ({stopped['id']}) is in stop processing.")
        _say("   The gateway forwards the first and refuses the second, per record (HTTP 207).")
        body = {
            "data": [
                {"id": plain["id"], "Lead_Status": "Contacted"},
                {"id": stopped["id"], "Lead_Status": "Contacted"},
            ]
        }
        _show("gateway", http.put(f"{gateway}/crm/v8/Leads", json=body))
        _show("direct ", http.put(f"{crm}/crm/v8/Leads", json=body))
        _say()

    _say("4. Every request through the gateway left one hash-chained audit entry (no values,")
    _say(f"   no tokens) in {audit_log}:")
    time.sleep(0.2)
    for line in audit_log.read_text().splitlines()[-3:]:
        entry = json.loads(line)
        _say(
            "    "
            + json.dumps(
                {
                    k: entry.get(k)
                    for k in ("seq", "route", "outcome", "reasons", "fields_withheld", "status")
                }
            )
        )
    _say("   privacy-gateway audit verify says:")
    secret_file = audit_log.with_name(".gateway-secret")
    secret = secret_file.read_bytes().strip() if secret_file.exists() else None
    run_verify(str(audit_log), None, secret)


def run_demo(*, once: bool) -> int:
    from gateway.sandbox import create_app as create_sandbox

    workdir = Path(tempfile.mkdtemp(prefix="privacy-gateway-demo-"))
    audit_log = workdir / "audit.jsonl"
    request_log = (workdir / "requests.log").open("w")
    configure_logging(request_log)
    crm = ThreadedServer(create_sandbox(seed=42)).start()
    settings = Settings.build(
        upstream=crm.url,
        audit_log=str(audit_log),
        port=0,
        policy=Policy(version="demo"),
        env={"GATEWAY_SECRET_FILE": str(workdir / ".gateway-secret")},
    )
    gateway = ThreadedServer(create_app(settings)).start()
    try:
        _say(f"sandbox CRM : {crm.url}   (the raw upstream; enforces nothing)")
        _say(f"gateway     : {gateway.url}   (in front of it)")
        _say(f"request log : {request_log.name}")
        _say()
        tour(crm.url, gateway.url, audit_log)
        if once:
            return 0
        _say()
        _say("Both keep serving. Try, for example:")
        auth = "Authorization: Zoho-oauthtoken demo"
        _say(f"  curl -H '{auth}' '{gateway.url}/crm/v8/Leads?per_page=1&fields=Last_Name,Email'")
        _say(f"  curl '{gateway.url}/_gateway/metrics'")
        _say("Ctrl-C stops them.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        gateway.stop()
        crm.stop()
        request_log.close()
        shutil.rmtree(workdir, ignore_errors=True)  # the audit log, secret and request log
