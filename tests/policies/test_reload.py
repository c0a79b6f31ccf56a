"""Hot reload: a valid file takes effect for new requests, an invalid one is refused and the
last good policy stays; the version is in every audit entry, in /_gateway/ready and in a
metric, and a reload is itself an audit entry."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import AUTH, Crm, GatewayHandle, MakeGateway
from tests.servers import free_port

V1 = b'version = "one"\n[audit]\nfsync = "never"\n[redaction]\nshow = []\n'
V2 = b'version = "two"\n[audit]\nfsync = "never"\n[redaction]\nshow = ["high"]\n'
BAD = b'version = "three"\n[audit]\nfsync = "never"\n[redaction]\nshw = ["high"]\n'


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the gateway did not pick the change up"
        time.sleep(0.1)


def _ready(gw: GatewayHandle) -> dict[str, Any]:
    body: dict[str, Any] = gw.http.get("/_gateway/ready").json()
    return body


def _phones(gw: GatewayHandle) -> list[Any]:
    return [
        r["Phone"] for r in gw.http.get("/crm/v2/Leads", params={"per_page": 10}).json()["data"]
    ]


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # as an editor or a config manager does: never half a file


def test_a_valid_change_takes_effect_and_an_invalid_one_keeps_the_last_good_policy(
    crm: Crm, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(V1)
    gw = make_gateway(policy_path=path)
    assert _ready(gw)["policy_version"] == "one" and _ready(gw)["policy_hash"] == _short(V1)
    assert not any(_phones(gw))
    assert gw.requests()[-1]["policy_hash"] == _short(V1)

    _write(path, V2)
    _until(lambda: _ready(gw)["policy_version"] == "two")
    assert any(_phones(gw))  # High is shown now
    entry = gw.requests()[-1]
    assert (entry["policy_version"], entry["policy_hash"]) == ("two", _short(V2))
    (reload,) = [e for e in gw.audit() if e["event"] == "policy_reload"]
    assert reload["reasons"] == ["policy_reloaded"] and reload["policy_hash"] == _short(V2)

    _write(path, BAD)
    rejected = 'privacy_gateway_policy_reloads_total{result="rejected"} 1.0'
    _until(lambda: rejected in gw.http.get("/_gateway/metrics").text)
    assert _ready(gw)["policy_hash"] == _short(V2)  # the last good policy stays
    assert any(_phones(gw))
    rejected = [e for e in gw.audit() if e["event"] == "policy_reload"][-1]
    assert rejected["outcome"] == "refused" and rejected["reasons"] == ["policy_invalid"]
    assert rejected["policy_version"] == "two"
    metrics = gw.http.get("/_gateway/metrics").text
    assert f'privacy_gateway_policy_info{{hash="{_short(V2)}",version="two"}} 1.0' in metrics

    _write(path, V1)  # fixed again: taken
    _until(lambda: _ready(gw)["policy_version"] == "one")
    assert not any(_phones(gw))


def test_sighup_reloads_and_an_invalid_file_is_one_log_line_naming_the_key(
    crm: Crm, tmp_path: Path
) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(V1)
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_UPSTREAM": crm.url,
        "GATEWAY_PORT": str(port),
        "GATEWAY_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GATEWAY_POLICY": str(path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def version() -> str:
        try:
            found: str = httpx.get(url + "/_gateway/ready", timeout=2).json()["policy_version"]
        except httpx.HTTPError:
            return ""
        return found

    try:
        _until(lambda: version() == "one", 30)
        # Same size, same mtime: only the signal can tell the gateway to look again.
        stat = path.stat()
        swapped = V1.replace(b'"one"', b'"won"')
        path.write_bytes(swapped)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        time.sleep(2.5)
        assert version() == "one"
        proc.send_signal(signal.SIGHUP)
        _until(lambda: version() == "won")
        # A key the process reads once, at start: the rest of the change applies, and one
        # line names the key that waits for a restart.
        later = swapped.replace(b'fsync = "never"', b'fsync = "always"')
        path.write_bytes(later.replace(b'"won"', b'"four"'))
        proc.send_signal(signal.SIGHUP)
        _until(lambda: version() == "four")
        path.write_bytes(BAD)
        proc.send_signal(signal.SIGHUP)
        time.sleep(2.5)
        assert version() == "four"
        r = httpx.get(url + "/crm/v2/Leads", params={"per_page": 1}, headers=AUTH)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    rejected = [json.loads(line) for line in err.splitlines() if '"policy_rejected"' in line]
    assert len(rejected) == 1, err
    assert rejected[0]["key"] == "redaction.shw"
    waiting = [json.loads(line) for line in err.splitlines() if "policy_key_needs_restart" in line]
    assert [w["key"] for w in waiting] == ["audit.fsync"], err
