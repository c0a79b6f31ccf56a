"""One writer per audit log, and every entry names the instance that wrote it."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from gateway.audit import verify_log
from gateway.audit.config import instance_name
from gateway.audit.files import AuditLogInUse
from gateway.audit.verify import HASH_MISMATCH
from tests.audit.helpers import SECRET, decision, entries, run, trail, write_segment

LEGACY = Path(__file__).parent / "data" / "legacy"


def test_a_second_writer_on_the_same_log_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"

    async def go() -> None:
        first = trail(path)
        await first.start()
        second = trail(path)
        with pytest.raises(AuditLogInUse, match=str(path)):
            await second.start()
        await first.record(decision(0))
        await first.close()
        third = trail(path)  # the lock went with the first writer
        await third.start()
        await third.close()

    run(go())
    result = verify_log(path)
    assert result.ok and result.segments == 2, result.summary


def test_on_stdout_only_the_checkpoints_file_is_what_is_locked(tmp_path: Path) -> None:
    cps = tmp_path / "cps"

    async def go() -> None:
        first = trail(None, stdout=True, checkpoint_path=cps)
        first.claim()
        with pytest.raises(AuditLogInUse, match=str(cps)):
            trail(None, stdout=True, checkpoint_path=cps).claim()
        await first.close()

    run(go())


def test_every_entry_names_its_instance_and_the_caller_cannot(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 3, instance="pod-a-w2"))
    run(write_segment(path, 1, instance="pod-a-w2"))
    written = entries(path)
    assert [e["instance"] for e in written] == ["pod-a-w2"] * 6
    assert verify_log(path).ok

    async def forged() -> None:
        t = trail(path, instance="pod-a-w2")
        await t.start()
        await t.record(decision(9, instance="someone-else-w1"))
        await t.close()

    run(forged())
    assert entries(path)[-1]["instance"] == "pod-a-w2"


def test_the_instance_is_inside_what_the_hash_covers(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 3, instance="pod-a-w1"))
    lines = path.read_bytes().splitlines()
    entry = orjson.loads(lines[2])
    entry["instance"] = "pod-b-w1"  # "it was the other pod"
    lines[2] = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = verify_log(path)
    assert not result.ok and result.first_bad_line == 3 and result.reason == HASH_MISMATCH


def test_a_log_written_before_instances_verifies_and_continues(tmp_path: Path) -> None:
    """The legacy log's entries have no ``instance``: it verifies, and a gateway of today
    continues its chain."""
    shutil.copytree(LEGACY, tmp_path / "legacy")
    path = tmp_path / "legacy" / "audit.jsonl"
    assert all("instance" not in e for e in entries(path))
    assert verify_log(path, path.with_name("audit.jsonl.checkpoints"), SECRET).ok
    run(write_segment(path, 2, instance="gw-w1", checkpoint_path=tmp_path / "new.cps"))
    result = verify_log(path)
    assert result.ok, result.summary
    assert entries(path)[-1]["instance"] == "gw-w1"


def test_instance_name_is_host_and_worker_and_gateway_instance_overrides_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_INSTANCE", raising=False)
    assert instance_name(3).endswith("-w3")
    monkeypatch.setenv("GATEWAY_INSTANCE", "gateway-7d9f-x2k4")
    assert instance_name() == "gateway-7d9f-x2k4-w1"
    monkeypatch.setenv("GATEWAY_INSTANCE", "bad name/../x")
    assert instance_name(2) == "bad-name-..-x-w2"
