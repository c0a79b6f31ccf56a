"""kill -9 of the real gateway process under HTTP load: every request whose answer reached
its client has its audit entry on disk (the entry is written before the response), and a
restart continues the chain."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from gateway.audit.verify import TORN_TAIL, verify_log
from tests.conftest import AUTH, LEAD_FIELDS, Crm
from tests.servers import free_port

SECRET = "kill-test-secret"


def start_gateway(crm: Crm, audit: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_SECRET": SECRET,
        "GATEWAY_UPSTREAM": crm.url,
        "GATEWAY_PORT": str(port),
        "GATEWAY_AUDIT_LOG": str(audit),
    }
    env.pop("GATEWAY_POLICY", None)  # the default policy: fsync always, block when full
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/_gateway/health", timeout=1)
            return proc, url
        except httpx.HTTPError:
            assert proc.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)


def load_until_killed(proc: subprocess.Popen[bytes], url: str, kill_after: int) -> set[str]:
    """8 clients send reads, searches and refused searches, each with its own request id;
    the process is SIGKILLed once ``kill_after`` answers arrived. Returns the ids of every
    request that got an answer, before or after the kill."""
    acked: set[str] = set()
    lock = threading.Lock()
    killed = threading.Event()
    requests = [
        ("/crm/v8/Leads", {"per_page": "5"}),
        ("/crm/v8/Leads/search", {"criteria": "(Last_Name:starts_with:S)"}),
        ("/crm/v8/Leads/search", {"criteria": "(Email:equals:someone@example.com)"}),
    ]

    def client(n: int) -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as c:
            i = n
            while not killed.is_set():
                rid = uuid.uuid4().hex
                path, params = requests[i % len(requests)]
                i += 1
                try:
                    r = c.get(path, params=params, headers={"X-Request-ID": rid})
                except httpx.HTTPError:
                    return  # the process is gone
                assert r.status_code in (200, 204, 400), r.text
                assert r.headers["x-request-id"] == rid
                with lock:
                    acked.add(rid)
                    if len(acked) >= kill_after and not killed.is_set():
                        proc.send_signal(signal.SIGKILL)
                        killed.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return acked


def request_ids(audit: Path) -> set[str]:
    ids = set()
    for line in audit.read_bytes().splitlines():
        with contextlib.suppress(ValueError):  # a torn last line: all a kill may leave
            ids.add(json.loads(line).get("client_request_id"))
    return ids


def test_kill_9_under_load_loses_no_answered_request(crm: Crm, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc, url = start_gateway(crm, audit)
    try:
        acked = load_until_killed(proc, url, kill_after=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 300

    lost = acked - request_ids(audit)
    assert not lost, f"{len(lost)} answered requests have no audit entry"
    checkpoints = Path(str(audit) + ".checkpoints")
    result = verify_log(audit, checkpoints, SECRET.encode())
    if not result.ok:
        assert result.reason == TORN_TAIL, result.summary

    # A restart links a new segment to what is on disk; the whole log verifies again.
    proc, url = start_gateway(crm, audit)
    try:
        assert httpx.get(
            url + "/crm/v8/Leads", params={"per_page": 1, "fields": LEAD_FIELDS}, headers=AUTH
        ).is_success
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    after = verify_log(audit, checkpoints, SECRET.encode())
    assert after.ok, after.summary
    assert after.segments == 2
