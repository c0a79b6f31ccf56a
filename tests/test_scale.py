"""Scaling out, as an operator runs it: real ``serve`` processes over real HTTP.

A second process on an audit log that is in use refuses to start; ``--workers 2`` serves
on one port with one audit chain per worker, restarts a worker killed with SIGKILL (its
chain continues, linked) and drains every worker on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.settings import SettingsError, worker_count
from tests.conftest import AUTH, LEAD_FIELDS, Crm
from tests.servers import free_port

CLI = [sys.executable, "-m", "gateway"]
SECRET = "scale-test-secret"


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**clean, "GATEWAY_SECRET": SECRET, "GATEWAY_INSTANCE": "testhost", **extra}


class Serve:
    """One ``privacy-gateway serve`` process, up once its health endpoint answers."""

    def __init__(self, crm: Crm, *args: str, **extra_env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--upstream", crm.url, "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(**extra_env),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/_gateway/health", timeout=1)
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    _, err = self.proc.communicate(timeout=10)
                    raise AssertionError(f"serve did not start: {err.decode()}") from None
                time.sleep(0.1)

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit status and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err.decode()


@pytest.fixture
def started() -> Iterator[list[Serve]]:
    servers: list[Serve] = []
    yield servers
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)


def read_leads(url: str) -> httpx.Response:
    return httpx.get(
        url + "/crm/v8/Leads", params={"per_page": 3, "fields": LEAD_FIELDS}, headers=AUTH
    )


@pytest.mark.parametrize(("first", "second"), [("1", "1"), ("2", "1"), ("1", "2")])
def test_a_second_serve_on_an_audit_log_in_use_refuses_to_start(
    crm: Crm, tmp_path: Path, started: list[Serve], first: str, second: str
) -> None:
    """Whatever either one's worker count: the first holds the log, the second stops."""
    log = tmp_path / "audit.jsonl"
    started.append(Serve(crm, "--audit-log", str(log), "--workers", first))
    p = subprocess.run(
        [*CLI, "serve", "--upstream", crm.url, "--port", str(free_port()), "--audit-log", str(log),
         "--workers", second],
        capture_output=True, text=True, timeout=60, env=env(),
    )  # fmt: skip
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(log) in lines[0] and "in use" in lines[0], p.stderr
    assert read_leads(started[0].url).status_code == 200  # the first one is untouched
    assert started[0].stop()[0] in (0, -signal.SIGTERM)  # uvicorn re-raises the signal


# -- serve --workers 2 ------------------------------------------------------------------------


def workers_of(parent: int) -> set[int]:
    """The pids of the worker processes under a ``serve`` (not multiprocessing's tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == parent and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def wait_for(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def exercise(url: str, crm: Crm, rounds: int = 4) -> int:
    """Redaction, a guard and a write through the gateway, over several connections at
    once (so both workers see some); how many requests were sent."""
    lead = crm.records(fields=LEAD_FIELDS)[0]

    def one(i: int) -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
            r = c.get("/crm/v8/Leads", params={"per_page": 3, "fields": LEAD_FIELDS})
            assert r.status_code == 200 and all(x["Email"] is None for x in r.json()["data"])
            r = c.get("/crm/v8/Leads/search", params={"criteria": "(Email:equals:a@b.example)"})
            assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY", r.text
            r = c.put(f"/crm/v8/Leads/{lead['id']}", json={"data": [{"City": f"Town-{i}"}]})
            assert r.status_code == 200, r.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(rounds * 8)))
    return rounds * 8 * 3


def verify_dir(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "audit", "verify", str(directory)],
        capture_output=True, text=True, timeout=60, env=env(),
    )  # fmt: skip


def test_two_workers_share_the_port_each_with_its_own_verifiable_chain(
    crm: Crm, tmp_path: Path, started: list[Serve]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    gw = Serve(
        crm, "--workers", "2", "--audit-log", str(logs / "audit.jsonl"), TMPDIR=str(tmp_path)
    )
    started.append(gw)
    wait_for(lambda: len(workers_of(gw.proc.pid)) == 2, "two workers")
    # the workers' shared prometheus-client directory, made fresh by the parent
    assert len(list(tmp_path.glob("privacy-gateway-metrics-*"))) == 1
    sent = exercise(gw.url, crm)

    # kill -9 one worker: the supervisor starts another, which continues the dead one's chain
    victim = min(workers_of(gw.proc.pid))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(workers_of(gw.proc.pid) - {victim}) == 2, "a replacement worker")
    wait_for(lambda: read_leads(gw.url).status_code == 200, "serving again")
    sent += 1 + exercise(gw.url, crm, rounds=2)

    status, err = gw.stop()
    assert status == 0, err
    assert not workers_of(gw.proc.pid)
    assert not list(tmp_path.glob("privacy-gateway-metrics-*"))
    files = sorted(logs.glob("*.jsonl"))
    assert [f.name for f in files] == ["audit-testhost-w1.jsonl", "audit-testhost-w2.jsonl"]
    p = verify_dir(logs)
    assert p.returncode == 0, p.stdout
    assert len(p.stdout.splitlines()) == 2 and "2 segments" in p.stdout  # the restarted one
    entries = [json.loads(x) for f in files for x in f.read_text().splitlines() if x[:1] == "{"]
    requests = [e for e in entries if e["event"] == "request"]
    assert len(requests) >= sent  # every answered request is in a chain (plus readiness probes)
    for f in files:  # each chain is one writer's, and says whose
        lines = f.read_text().splitlines()
        assert {json.loads(x)["instance"] for x in lines if x[:1] == "{"} == {f.stem[6:]}


def test_two_workers_need_an_audit_file_each(crm: Crm) -> None:
    p = subprocess.run(
        [*CLI, "serve", "--upstream", crm.url, "--workers", "2"],
        capture_output=True, text=True, timeout=60, env=env(),
    )  # fmt: skip
    assert p.returncode == 2 and "--workers above 1 needs --audit-log" in p.stderr


def test_worker_count_is_a_number_or_auto() -> None:
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count("3") == 3
    for bad in ("0", "-1", "two", "1000"):
        with pytest.raises(SettingsError):
            worker_count(bad)


def test_sigterm_drains_requests_in_flight_on_every_worker(
    crm: Crm, tmp_path: Path, started: list[Serve]
) -> None:
    gw = Serve(crm, "--workers", "2", "--audit-log", str(tmp_path / "audit.jsonl"))
    started.append(gw)
    wait_for(lambda: len(workers_of(gw.proc.pid)) == 2, "two workers")
    crm.fault(path_contains="/settings/modules", delay=1.5, times=4)

    def slow(i: int) -> int:
        rid = f"slow-{i}"
        r = httpx.get(
            gw.url + "/crm/v8/settings/modules",
            headers={**AUTH, "X-Request-Id": rid},
            timeout=20,
        )
        return r.status_code

    with ThreadPoolExecutor(4) as pool:
        answers = pool.map(slow, range(4))
        time.sleep(0.5)  # all four now wait on the CRM
        status, err = gw.stop()
        assert list(answers) == [200] * 4
    assert status == 0, err
    logs = sorted(tmp_path.glob("audit-*.jsonl"))
    entries = [json.loads(x) for f in logs for x in f.read_text().splitlines()]
    assert {e.get("client_request_id") for e in entries} >= {f"slow-{i}" for i in range(4)}
    assert verify_dir(tmp_path).returncode == 0
