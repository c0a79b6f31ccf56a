"""Shutdown (engineering-anchors §B.4, items 41 and 63): a request still running at the
drain deadline is cancelled, and still has its one audit entry, which the final
checkpoint covers."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.audit import verify_log
from gateway.policy import policy_from_mapping
from gateway.settings import Settings
from tests.conftest import AUTH, Crm
from tests.edge.conftest import wait_for
from tests.servers import ThreadedServer

SLOW = "/crm/v8/settings/modules"


def test_c41_a_request_stuck_past_the_drain_deadline_is_cancelled_and_audited(
    crm: Crm, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    settings = Settings.build(
        upstream=crm.url,
        audit_log=str(log),
        policy=policy_from_mapping({"audit": {"fsync": "never"}}),
        env={"GATEWAY_SECRET": "test-secret"},
    )
    server = ThreadedServer(create_app(settings), graceful_shutdown_s=1).start()
    crm.clear()
    crm.fault(path_contains=SLOW, delay=6.0, times=1)
    answers: list[httpx.Response | Exception] = []

    def call() -> None:
        try:
            answers.append(httpx.get(server.url + SLOW, headers=AUTH, timeout=30))
        except httpx.HTTPError as exc:
            answers.append(exc)

    client = threading.Thread(target=call)
    client.start()
    wait_for(lambda: crm.received(SLOW))
    server.stop()  # drains for 1 s, then cancels the stuck request
    client.join(timeout=30)
    assert not server.thread.is_alive()

    (answer,) = answers
    assert isinstance(answer, httpx.Response), answer  # answered, not dropped
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["code"] == "GATEWAY_SHUTTING_DOWN"
    entries = [e for e in map(_json, log.read_text().splitlines()) if e["event"] == "request"]
    (entry,) = entries
    assert entry["outcome"] == "cancelled" and entry["reasons"] == ["cancelled"]
    assert entry["status"] == 503 and entry["route"] == "/crm/{v}/settings/{name}"
    assert entry["request_id"] == answer.headers["x-gateway-request-id"]
    result = verify_log(log, f"{log}.checkpoints", secret=b"test-secret")
    assert result.ok and result.last_checkpoint_seq == entry["seq"], result.summary


def _json(line: str) -> dict[str, object]:
    import json

    out: dict[str, object] = json.loads(line)
    return out
