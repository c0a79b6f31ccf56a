"""``serve`` as an operator meets it: a real process, its stderr line by line, its stdout
audit stream, and every way a start can fail."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.cli import _parser
from tests.conftest import AUTH, LEAD_FIELDS, Crm
from tests.servers import free_port
from tests.test_cli import CLI, _one_clear_line, run

MARKER = "zz-marker-4815@example.com"


def _env(crm: Crm, port: int, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**base, "GATEWAY_UPSTREAM": crm.url, "GATEWAY_PORT": str(port), **extra}


def _wait_up(url: str, proc: subprocess.Popen[str]) -> None:
    for _ in range(150):
        assert proc.poll() is None, proc.communicate()
        try:
            httpx.get(url + "/_gateway/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("serve did not start")


def _serve(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*CLI, "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    _wait_up(url, proc)
    return proc, url


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), err
    return out, err


def _traffic(url: str, crm: Crm) -> None:
    r = httpx.get(
        url + "/crm/v8/Leads/search",
        params={"criteria": f"(Email:equals:{MARKER})"},
        headers=AUTH,
    )
    assert r.status_code == 400
    r = httpx.get(
        url + "/crm/v8/Leads", params={"per_page": 3, "fields": LEAD_FIELDS}, headers=AUTH
    )
    assert r.status_code == 200
    assert httpx.get(url + "/_gateway/nope").status_code == 404


def test_every_stderr_line_is_json_with_one_start_and_one_stop_line(
    crm: Crm, tmp_path: Path
) -> None:
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    env = _env(crm, port, GATEWAY_AUDIT_LOG=str(audit), GATEWAY_SECRET="s3cret-for-test")
    proc, url = _serve(env)
    try:
        _traffic(url, crm)
        # a request uvicorn's parser refuses: uvicorn logs a warning through stdlib logging
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            raw.recv(1024)
        crm.fault(path_contains="/crm/v8/Deals", status=503, times=1)
        r = httpx.get(url + "/crm/v8/Deals", params={"fields": "Deal_Name"}, headers=AUTH)
        assert r.status_code >= 500
    finally:
        out, err = _stop(proc)
    lines = [json.loads(line) for line in err.splitlines()]  # every line, no exceptions
    assert all(isinstance(e, dict) and "level" in e and "timestamp" in e for e in lines)
    assert any(e.get("logger") == "uvicorn.error" for e in lines), err  # routed, as JSON
    started = [e for e in lines if e["event"] == "started"]
    assert len(started) == 1
    assert started[0]["version"] == __version__
    assert started[0]["listen"] == f"http://127.0.0.1:{port}"
    assert started[0]["upstream"] == crm.url
    assert started[0]["audit_sink"] == str(audit)
    assert started[0]["workers"] == 1 and started[0]["policy_version"]
    assert [e["event"] for e in lines].count("stopped") == 1
    requests = [e for e in lines if e["event"] == "request"]
    refused = next(e for e in requests if e["route"] == "/crm/{v}/{module}/search")
    assert refused["reasons"] == ["restricted_criteria"] and refused["level"] == "info"
    failed = next(e for e in requests if e["status"] >= 500)
    assert failed["level"] == "warning" and failed["upstream_status"] >= 500
    for text in (err, out, audit.read_text()):
        assert MARKER not in text and "test-token" not in text


def test_log_level_warning_keeps_only_warnings(crm: Crm, tmp_path: Path) -> None:
    port = free_port()
    env = _env(crm, port, GATEWAY_AUDIT_LOG=str(tmp_path / "a.jsonl"), GATEWAY_SECRET="s")
    proc, url = _serve(env, "--log-level", "warning")
    try:
        httpx.get(url + "/crm/v8/settings/modules", headers=AUTH)
    finally:
        _, err = _stop(proc)
    levels = {json.loads(line)["level"] for line in err.splitlines()}
    assert levels <= {"warning", "error", "critical"}


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_start_failures_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, busy_port: int
) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_text("")  # an existing log: a failed start must not append to it
    upstream = "http://127.0.0.1:9"
    base = ["serve", "--upstream", upstream, "--audit-log", str(audit), "--port", str(free_port())]
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["--port", str(busy_port)], {}, "--port"),
        (["--audit-log", str(tmp_path)], {}, "--audit-log"),
        (["--audit-log", str(a_file / "audit.jsonl")], {}, "--audit-log"),
        (["--checkpoint-file", str(tmp_path)], {}, "--checkpoint-file"),
        ([], {"GATEWAY_SECRET_FILE": str(tmp_path)}, "GATEWAY_SECRET_FILE"),
        ([], {"GATEWAY_SECRET_FILE": str(a_file / "secret")}, "GATEWAY_SECRET_FILE"),
        (["--policy", str(tmp_path)], {}, str(tmp_path)),
        (["--upstream", "http://127.0.0.1:9/crm/v8"], {}, "--upstream"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--drain-timeout", "soon"], {}, "--drain-timeout"),
        ([], {"GATEWAY_DRAIN_TIMEOUT_SECONDS": "-1"}, "GATEWAY_DRAIN_TIMEOUT_SECONDS"),
        ([], {"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL"),
    ]
    for args, env, named in cases:
        p = run(*base, *args, env={"GATEWAY_SECRET": "", **env})
        if args[:1] == ["--log-level"]:  # argparse's own choices check: one usage error
            assert p.returncode == 2 and "--log-level" in p.stderr
            continue
        assert named in _one_clear_line(p), (args, env, p.stderr)
    assert audit.read_text() == ""
    assert not list(tmp_path.glob("audit.jsonl.*")) and not (tmp_path / ".gateway-secret").exists()


def test_in_a_container_serve_refuses_to_generate_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "mounted" / "secret"
    p = run(
        "serve",
        "--upstream",
        "http://127.0.0.1:9",
        "--port",
        str(free_port()),
        env={"GATEWAY_IN_CONTAINER": "1", "GATEWAY_SECRET": "", "GATEWAY_SECRET_FILE": str(secret)},
    )
    line = _one_clear_line(p)
    assert "GATEWAY_SECRET_FILE" in line and "GATEWAY_SECRET" in line and "mount" in line
    assert not secret.exists()


def test_version_and_help_for_every_argument() -> None:
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"privacy-gateway {__version__}"

    def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, Any]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
                yield path, action

    undocumented = [(p, a.dest) for p, a in walk(_parser(), "privacy-gateway") if not a.help]
    assert undocumented == []


def test_stdout_stream_carries_instance_version_schema_and_checkpoints(
    crm: Crm, tmp_path: Path
) -> None:
    port = free_port()
    env = _env(crm, port, GATEWAY_SECRET="stream-secret", GATEWAY_INSTANCE="pod-a")
    streams = []
    for _ in range(2):  # two process lifetimes captured into one stream
        proc, url = _serve(env)
        try:
            _traffic(url, crm)
        finally:
            out, err = _stop(proc)
        streams.append(out)
        started = next(json.loads(x) for x in err.splitlines() if '"started"' in x)
        assert started["audit_sink"] == "stdout"
    captured = tmp_path / "captured.jsonl"
    captured.write_text("".join(streams))
    entries = [json.loads(line) for line in captured.read_text().splitlines()]
    assert MARKER not in captured.read_text()
    chain = [e for e in entries if e["event"] != "checkpoint"]
    assert {e["instance"] for e in chain} == {"pod-a-w1"}
    assert {e["gateway_version"] for e in chain} == {__version__}
    assert {e["schema"] for e in chain} == {2}
    checkpoints = [e for e in entries if e["event"] == "checkpoint"]
    assert len(checkpoints) >= 2 and all(c["instance"] == "pod-a-w1" for c in checkpoints)

    ok = run("audit", "verify", str(captured), env={"GATEWAY_SECRET": "stream-secret"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit stream intact" in ok.stdout and "2 process starts" in ok.stdout
    assert "unchecked" not in ok.stdout

    wrong = run("audit", "verify", str(captured), env={"GATEWAY_SECRET": "another"})
    assert wrong.returncode == 1
    # an entry cut out of the stream before a checkpoint breaks the chain
    lines = captured.read_text().splitlines(keepends=True)
    victim = next(i for i, e in enumerate(entries) if e["event"] == "request")
    captured.write_text("".join(lines[:victim] + lines[victim + 1 :]))
    cut = run("audit", "verify", str(captured), env={"GATEWAY_SECRET": "stream-secret"})
    assert cut.returncode == 1 and "BROKEN" in cut.stdout


def test_metrics_aggregate_across_processes_in_multiprocess_mode(crm: Crm, tmp_path: Path) -> None:
    shared = tmp_path / "prom"
    shared.mkdir()
    port = free_port()
    env = _env(
        crm,
        port,
        GATEWAY_AUDIT_LOG=str(tmp_path / "a.jsonl"),
        GATEWAY_SECRET="s",
        PROMETHEUS_MULTIPROC_DIR=str(shared),
    )
    proc, url = _serve(env)
    try:
        for _ in range(3):
            assert httpx.get(url + "/crm/v8/settings/modules", headers=AUTH).status_code == 200
        text = httpx.get(url + "/_gateway/metrics").text
    finally:
        _stop(proc)
    assert list(shared.glob("*.db")), "values are kept in the shared directory"
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    total = sum(
        s.value
        for s in fams["privacy_gateway_requests"].samples
        if s.name == "privacy_gateway_requests_total"
        and s.labels["route"] == "/crm/{v}/settings/{name}"
    )
    assert total == 3
    assert "privacy_gateway_build_info" in fams


def _dockerfile_command(prefix: str) -> str:
    """The shell command of the Dockerfile line (with its continuations) that starts so."""
    text = Path("Dockerfile").read_text().replace("\\\n", " ")
    line = next(x.strip() for x in text.splitlines() if x.strip().startswith(prefix))
    return line.split(" CMD ", 1)[1] if prefix == "HEALTHCHECK" else line[len("RUN ") :]


def test_the_image_health_check_follows_gateway_port(crm: Crm, tmp_path: Path) -> None:
    port = free_port()
    env = _env(crm, port, GATEWAY_AUDIT_LOG=str(tmp_path / "a.jsonl"), GATEWAY_SECRET="s")
    check = _dockerfile_command("HEALTHCHECK").replace("python ", f"{CLI[0]} ", 1)
    proc, _ = _serve(env)
    try:
        assert subprocess.run(check, shell=True, env=env, timeout=30).returncode == 0
    finally:
        _stop(proc)
    assert subprocess.run(check, shell=True, env=env, timeout=30).returncode != 0


def test_the_image_installs_only_the_runtime_dependencies(tmp_path: Path) -> None:
    step = _dockerfile_command("RUN python -c")
    extract = step.split(" && ")[0].replace("python ", f"{CLI[0]} ", 1)
    (tmp_path / "pyproject.toml").write_bytes(Path("pyproject.toml").read_bytes())
    subprocess.run(extract, shell=True, cwd=tmp_path, check=True, timeout=30)
    wanted = (tmp_path / "requirements.txt").read_text().split()
    assert any(r.startswith("prometheus-client") for r in wanted)
    assert not any(r.startswith(("pytest", "mypy", "ruff", "hypothesis")) for r in wanted)
