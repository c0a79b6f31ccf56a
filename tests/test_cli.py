"""The command line, run as a user runs it: a real process, its exit status and output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import AUTH, LEAD_FIELDS, Crm
from tests.servers import free_port

CLI = [sys.executable, "-m", "gateway"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _one_clear_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_serve_without_upstream_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    p = subprocess.run([*CLI, "serve"], capture_output=True, text=True, timeout=30, env=env)
    assert "--upstream" in _one_clear_line(p)


def test_serve_with_malformed_upstream_exits_2() -> None:
    assert "--upstream" in _one_clear_line(run("serve", "--upstream", "ftp://crm.example"))
    assert "--upstream" in _one_clear_line(run("serve", "--upstream", "not a url"))


def test_serve_with_a_bad_export_limit_exits_2() -> None:
    for bad in ("0", "four", "-1"):
        env = {"GATEWAY_MAX_CONCURRENT_EXPORTS": bad}
        p = run("serve", "--upstream", "http://crm.example", env=env)
        assert "GATEWAY_MAX_CONCURRENT_EXPORTS" in _one_clear_line(p)


def test_serve_with_bad_policy_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[redaction]\nshow = ["medium"]\n')
    assert "redaction.show" in _one_clear_line(
        run("serve", "--upstream", "http://127.0.0.1:9", "--policy", str(bad))
    )
    bad.write_text("[search]\nallow_words = true\n")
    assert "search.allow_words" in _one_clear_line(
        run("serve", "--upstream", "http://127.0.0.1:9", "--policy", str(bad))
    )


def test_policy_check_explains_the_default_policy() -> None:
    p = run("policy", "check", "policies/default.toml", "--explain")
    assert p.returncode == 0, p.stderr
    assert "restricted private fields are always withheld" in p.stdout


def test_policy_check_rejects_a_wrong_type(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[metadata]\nttl_seconds = "soon"\n')
    assert "metadata.ttl_seconds" in _one_clear_line(run("policy", "check", str(bad)))


def test_demo_once_runs_the_tour() -> None:
    p = run("demo", "--once", timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "X-Privacy-Withheld" in out
    assert '"code": "INVALID_QUERY"' in out
    assert '"reason": "stop_processing"' in out
    assert "audit log intact" in out
    assert "checkpoints verified" in out and "unchecked" not in out  # signatures too
    workdir = next(
        Path(line.split(":", 1)[1].strip()).parent
        for line in out.splitlines()
        if line.startswith("request log")
    )
    assert not workdir.exists()  # the demo leaves no temporary files behind


def test_c53_serve_logs_json_without_values_or_tokens_and_stops_cleanly_on_sigterm(
    crm: Crm, tmp_path: Path
) -> None:
    """``serve`` as shipped: uvicorn's access log (whose line holds the query string) is
    off, and the gateway's own request lines carry the route template. A search whose
    criteria hold an e-mail address leaves it nowhere, nor the token (item 54 too)."""
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    env = {
        **os.environ,
        "GATEWAY_UPSTREAM": crm.url,
        "GATEWAY_PORT": str(port),
        "GATEWAY_AUDIT_LOG": str(audit),
    }
    proc = subprocess.Popen(
        [*CLI, "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/_gateway/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        marker = "marker.value@example.com"
        r = httpx.get(
            url + "/crm/v8/Leads/search",
            params={"criteria": f"(Last_Name:equals:{marker})"},
            headers=AUTH,
        )
        assert r.status_code == 204
        r = httpx.get(
            url + "/crm/v8/Leads", params={"per_page": 3, "fields": LEAD_FIELDS}, headers=AUTH
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # uvicorn drains, runs the lifespan shutdown, then re-raises SIGTERM for the caller.
    assert proc.returncode in (0, -signal.SIGTERM), err
    last = json.loads(audit.read_text().splitlines()[-1])
    final = json.loads(Path(str(audit) + ".checkpoints").read_text().splitlines()[-1])
    assert final["seq"] == last["seq"]  # the trail was closed: nothing acknowledged is lost
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [entry for entry in lines if entry.get("event") == "request"]
    assert [e["route"] for e in requests][-2:] == ["/crm/{v}/{module}/search", "/crm/{v}/{module}"]
    for text in (err, out, audit.read_text()):
        assert marker not in text
        assert "test-token" not in text
    verify = run(
        "audit",
        "verify",
        str(audit),
        "--checkpoints",
        str(audit) + ".checkpoints",
        env={"GATEWAY_SECRET_FILE": str(tmp_path / ".gateway-secret")},
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_c40_sigterm_drains_in_flight_refuses_new_connections_and_checkpoints(
    crm: Crm, tmp_path: Path
) -> None:
    """The request in flight finishes; a connection opened after the signal is refused;
    the last checkpoint covers the last entry; the process exits well inside the
    orchestrator's usual 30 s (the gateway's grace is 10 s)."""
    port = free_port()
    log = tmp_path / "audit.jsonl"
    env = {
        **os.environ,
        "GATEWAY_UPSTREAM": crm.url,
        "GATEWAY_PORT": str(port),
        "GATEWAY_AUDIT_LOG": str(log),
    }
    proc = subprocess.Popen(
        [*CLI, "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    url = f"http://127.0.0.1:{port}"
    late: list[BaseException | int] = []
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/_gateway/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        crm.fault(path_contains="/settings/modules", delay=2.0, times=1)
        import threading

        result: list[int] = []
        slow = threading.Thread(
            target=lambda: result.append(
                httpx.get(url + "/crm/v8/settings/modules", headers=AUTH, timeout=10).status_code
            )
        )
        slow.start()
        time.sleep(0.5)  # the request is now waiting on the CRM
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            late.append(httpx.get(url + "/_gateway/health", timeout=2).status_code)
        except httpx.HTTPError as exc:
            late.append(exc)
        slow.join(10)
        code = proc.wait(15)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn re-raises the signal once it has shut down: the status says "ended by SIGTERM"
    assert result == [200] and code in (0, -signal.SIGTERM) and took < 10
    assert len(late) == 1 and isinstance(late[0], httpx.ConnectError), late
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert entries[-1]["route"] == "/crm/{v}/settings/{name}" and entries[-1]["status"] == 200
    checkpoints = [json.loads(x) for x in Path(f"{log}.checkpoints").read_text().splitlines()]
    assert checkpoints[-1]["seq"] == entries[-1]["seq"]
    assert checkpoints[-1]["hash"] == entries[-1]["hash"]
