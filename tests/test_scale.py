"""Scaling out, as an operator runs it: real ``serve`` processes over real HTTP.

A second process on an audit log that is in use refuses to start; ``--workers 2`` serves
on one port with one audit chain per worker, restarts a worker killed with SIGKILL (its
chain continues, linked) and drains every worker on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import AUTH, LEAD_FIELDS, Crm
from tests.servers import free_port

CLI = [sys.executable, "-m", "gateway"]
SECRET = "scale-test-secret"


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**clean, "GATEWAY_SECRET": SECRET, "GATEWAY_INSTANCE": "testhost", **extra}


class Serve:
    """One ``privacy-gateway serve`` process, up once its health endpoint answers."""

    def __init__(self, crm: Crm, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--upstream", crm.url, "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
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


def test_a_second_serve_on_an_audit_log_in_use_refuses_to_start(
    crm: Crm, tmp_path: Path, started: list[Serve]
) -> None:
    log = tmp_path / "audit.jsonl"
    started.append(Serve(crm, "--audit-log", str(log)))
    second = subprocess.run(
        [*CLI, "serve", "--upstream", crm.url, "--port", str(free_port()), "--audit-log", str(log)],
        capture_output=True, text=True, timeout=60, env=env(),
    )  # fmt: skip
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and str(log) in lines[0] and "in use" in lines[0], second.stderr
    assert read_leads(started[0].url).status_code == 200  # the first one is untouched
    assert started[0].stop()[0] in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
