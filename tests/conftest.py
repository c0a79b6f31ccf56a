"""Fixtures for the gateway's tests: the real sandbox CRM and real gateways over HTTP.

``crm`` is the sandbox (reset before each test), with helpers for its ``/_sandbox/`` admin
endpoints: what it received, faults to inject, raw record edits. ``make_gateway`` starts a
real gateway in front of it (any policy), ``gw`` is one with the default policy.

``GATEWAY_TEST_WORKERS=2 pytest tests/test_redaction.py ...`` runs the same tests against
``privacy-gateway serve --workers 2`` in a subprocess instead (policies given as a mapping;
``handle.app`` is then None and ``handle.audit()`` merges every worker's chain by time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings

from gateway.app import Gateway, create_app
from gateway.policy import Policy, load_policy, policy_from_mapping
from gateway.sandbox import create_app as create_sandbox
from gateway.settings import Settings
from tests.servers import ThreadedServer, free_port

# CI machines are shared: judge properties by their examples, never by how fast they came.
settings.register_profile(
    "gateway",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("gateway")

AUTH = {"Authorization": "Zoho-oauthtoken test-token"}
ORG2_AUTH = {"Authorization": "Zoho-oauthtoken org2-token"}
#: the CRM lists only the fields a request names (required from v3 on), $-keys included
LEAD_FIELDS = "Last_Name,Company,Email,Mobile,Phone,$stop_processing"


@dataclass
class Crm:
    url: str
    admin: httpx.Client
    http: httpx.Client  # authenticated, straight to the sandbox

    def received(self, path_contains: str = "/crm/") -> list[dict[str, Any]]:
        log = self.admin.get("/_sandbox/requests").json()["requests"]
        return [r for r in log if path_contains in r["path"]]

    def clear(self) -> None:
        self.admin.delete("/_sandbox/requests")

    def fault(self, **rule: Any) -> None:
        r = self.admin.post("/_sandbox/faults", json=rule)
        assert r.status_code == 200, r.text

    def edit(self, module: str, record_id: str, org: int = 1, **values: Any) -> None:
        r = self.admin.post(f"/_sandbox/records/{org}/{module}/{record_id}", json=values)
        assert r.status_code == 200, r.text

    def privacy(self, on: bool, org: int = 1) -> None:
        r = self.admin.post("/_sandbox/privacy", json={"org": org, "privacy_settings": on})
        assert r.status_code == 200, r.text

    def config(self, **values: Any) -> None:
        assert self.admin.post("/_sandbox/config", json=values).status_code == 200

    def records(self, module: str = "Leads", **params: Any) -> list[dict[str, Any]]:
        r = self.http.get(f"/crm/v2/{module}", params={"per_page": 200, **params})
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data

    def one(self, module: str, record_id: str) -> dict[str, Any]:
        r = self.http.get(f"/crm/v2/{module}/{record_id}")
        assert r.status_code == 200, r.text
        rec: dict[str, Any] = r.json()["data"][0]
        return rec


@pytest.fixture(scope="session")
def crm_server() -> Iterator[ThreadedServer]:
    server = ThreadedServer(create_sandbox(seed=42)).start()
    yield server
    server.stop()


@pytest.fixture
def crm(crm_server: ThreadedServer) -> Iterator[Crm]:
    with (
        httpx.Client(base_url=crm_server.url, timeout=30) as admin,
        httpx.Client(base_url=crm_server.url, headers=AUTH, timeout=30) as http,
    ):
        assert admin.post("/_sandbox/reset").status_code == 200
        yield Crm(crm_server.url, admin, http)


WORKERS = int(os.environ.get("GATEWAY_TEST_WORKERS", "1"))


@dataclass
class GatewayHandle:
    url: str
    app: Gateway | None  # None when the gateway runs as `serve --workers N`
    http: httpx.Client  # authenticated, through the gateway
    audit_log: Path

    def audit_files(self) -> list[Path]:
        """The log, or with several workers each worker's log beside it."""
        if self.app is None:
            return sorted(self.audit_log.parent.glob(f"{self.audit_log.stem}-*.jsonl"))
        return [self.audit_log] if self.audit_log.exists() else []

    def audit_text(self) -> str:
        return "".join(f.read_text() for f in self.audit_files())

    def audit(self) -> list[dict[str, Any]]:
        """Every entry; several workers' chains merged in time order."""
        entries = [json.loads(x) for x in self.audit_text().splitlines() if x[:1] == "{"]
        return sorted(entries, key=lambda e: e["ts"]) if self.app is None else entries

    def requests(self) -> list[dict[str, Any]]:
        return [e for e in self.audit() if e.get("event") == "request"]


MakeGateway = Callable[..., GatewayHandle]

#: uvicorn's two HTTP parsers; ``parser`` runs a test under each (checklist B.4: "run the
#: bad-input group under both uvicorn parser backends")
PARSERS = ("h11", "httptools")


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make_gateway(crm: Crm, tmp_path: Path) -> Iterator[MakeGateway]:
    started: list[tuple[Callable[[], None], httpx.Client]] = []

    def make(
        policy: dict[str, Any] | Policy | None = None,
        *,
        upstream: str | None = None,
        upload_upstream: str | None = None,
        transport: str = "h1",
        http: str = "auto",
        policy_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> GatewayHandle:
        """``policy_path``: the policy is that file's, watched for changes; ``env``: more
        ``GATEWAY_*`` variables (settings)."""
        pol = (
            policy
            if isinstance(policy, Policy)
            else load_policy(policy_path)
            if policy_path is not None
            else policy_from_mapping({"audit": {"fsync": "never"}, **(policy or {})})
        )
        n = len(started)
        if WORKERS > 1 and not isinstance(policy, Policy):
            raw = {"audit": {"fsync": "never"}, **(policy or {})}
            return _serve_workers(crm, tmp_path, n, raw, upstream, upload_upstream, transport)
        settings = Settings.build(
            upstream=upstream or crm.url,
            upload_upstream=upload_upstream,
            audit_log=str(tmp_path / f"audit{n}.jsonl"),
            transport=transport,
            policy=pol,
            policy_path=str(policy_path) if policy_path else None,
            env={"GATEWAY_SECRET": "test-secret", **(env or {})},
        )
        app = create_app(settings)
        server = ThreadedServer(app, http=http, max_header_bytes=settings.max_header_bytes).start()
        http = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
        started.append((server.stop, http))
        return GatewayHandle(server.url, app, http, tmp_path / f"audit{n}.jsonl")

    def _serve_workers(
        crm: Crm,
        tmp_path: Path,
        n: int,
        policy: dict[str, Any],
        upstream: str | None,
        upload_upstream: str | None,
        transport: str,
    ) -> GatewayHandle:
        policy_file = tmp_path / f"policy{n}.toml"
        policy_file.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in policy.items()))
        port = free_port()
        args = ["--upstream", upstream or crm.url, "--port", str(port), "--transport", transport]
        args += ["--policy", str(policy_file), "--workers", str(WORKERS)]
        args += ["--audit-log", str(tmp_path / f"audit{n}.jsonl")]
        if upload_upstream:
            args += ["--upload-upstream", upload_upstream]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *args],
            env={**env, "GATEWAY_SECRET": "test-secret", "GATEWAY_INSTANCE": "test"},
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/_gateway/health", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)

        def stop() -> None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

        http = httpx.Client(base_url=url, headers=AUTH, timeout=30)
        started.append((stop, http))
        return GatewayHandle(url, None, http, tmp_path / f"audit{n}.jsonl")

    yield make
    for stop, http in started:
        http.close()
        stop()


def _toml(value: Any) -> str:
    """A policy value as an inline TOML value (JSON's strings, numbers and booleans are
    TOML's too)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


@pytest.fixture
def gw(make_gateway: MakeGateway) -> GatewayHandle:
    return make_gateway()


def envelope(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the CRM's error envelope and return its details."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"code", "details", "message", "status"}, body
    assert body["code"] == code, body
    assert body["status"] == "error"
    details: dict[str, Any] = body["details"]
    return details
