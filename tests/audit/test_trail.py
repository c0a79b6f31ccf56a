"""AuditTrail: what it writes, in what order, and what never reaches the file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest

from gateway.audit import AuditTrail, AuditUnavailable, verify_log
from gateway.audit.canonical import GENESIS_HASH
from gateway.audit.checkpoints import read_checkpoints
from gateway.audit.logfile import LogFile
from tests.audit.helpers import (
    SECRET,
    build_log,
    checkpoints_of,
    decision,
    entries,
    run,
    trail,
    write_segment,
)

TOKEN = "1000.0123456789abcdef0123456789abcdef.fedcba9876543210fedcba9876543210"
EMAIL = "jane.marker@example.com"


def tainted(i: int) -> dict[str, object]:
    """A decision whose every field also tries to smuggle a private value in."""
    return {
        **decision(i),
        "token": TOKEN,
        "authorization": f"Zoho-oauthtoken {TOKEN}",
        "query": f"criteria=(Email:equals:{EMAIL})",
        "body": {"data": [{"Email": EMAIL, "Last_Name": "Marker"}]},
        "message": f"no record with email {EMAIL}",
        "request_id": f"id-{EMAIL}",
        "route": f"/crm/v8/Leads/search?email={EMAIL}",
        "record_ids": [EMAIL, "5725767000000524157", f"Marker {TOKEN}"],
        "reasons": [f"restricted_criteria:Email={EMAIL}", "Marker says no", "stop_processing:1"],
        "module": f"Leads {EMAIL}",
        "client": TOKEN,
        "policy_version": f"{EMAIL} v2",
        "api_version": f"v8?{EMAIL}",
        "method": f"GET {EMAIL}",
        "fields_withheld": {"names": ["Email", EMAIL], "count": 1},
        "event": f"marker {EMAIL}",
        "seq": f"marker {EMAIL}",
        "ts": f"marker {EMAIL}",
    }


class TestWhatIsWritten:
    def test_markers_never_reach_the_file_or_stdout(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Tokens, queries, bodies, emails and echoed messages are scrubbed everywhere."""
        path = tmp_path / "audit.jsonl"

        async def go() -> None:
            t = trail(path, stdout=True)
            await t.start()
            await asyncio.gather(*(t.record(tainted(i)) for i in range(20)))
            await t.close()

        run(go())
        written = path.read_bytes()
        shipped = capfd.readouterr().out.encode()
        for data in (written, shipped, checkpoints_of(path).read_bytes()):
            assert b"marker" not in data.lower()
            assert b"0123456789abcdef0123456789abcdef" not in data
            assert b"oauthtoken" not in data.lower()
        assert shipped == written
        assert entries(path)[1]["record_ids"] == ["5725767000000524157"]
        assert verify_log(path).ok

    def test_entry_has_exactly_the_documented_keys(self, tmp_path: Path) -> None:
        """One line per request, with the schema the report and readers rely on."""
        path = tmp_path / "audit.jsonl"
        run(write_segment(path, 1))
        start, request = entries(path)
        keys = {
            "event", "ts", "seq", "request_id", "client", "method", "route", "api_version",
            "module", "record_ids", "outcome", "reasons", "fields_withheld", "upstream_status",
            "client_rule", "fields_refused", "client_request_id", "instance",
            "status", "duration_ms", "policy_version", "metadata_age_s", "prev_hash", "hash",
            "would_refuse", "would_refuse_fields", "would_redact", "shadowed_rules", "policy_hash",
            "gateway_version", "schema",
        }  # fmt: skip
        assert set(request) == keys == set(start)
        assert request["event"] == "request" and request["request_id"] == "req-00000"

    def test_lines_are_canonical_json(self, tmp_path: Path) -> None:
        """Sorted keys, no spaces: the hash is reproducible from the line itself."""
        path = tmp_path / "audit.jsonl"
        run(write_segment(path, 3))
        for line in path.read_bytes().splitlines():
            assert orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS) == line

    def test_first_entry_starts_a_segment_from_genesis(self, tmp_path: Path) -> None:
        """A new log begins with segment_start, seq 1, prev_hash 64 zeros."""
        path = tmp_path / "audit.jsonl"
        run(write_segment(path, 0))
        (first,) = entries(path)
        assert first["event"] == "segment_start" and first["seq"] == 1
        assert first["prev_hash"] == GENESIS_HASH
        assert first["route"] == "/_gateway/segment"
        assert first["outcome"] is None and first["reasons"] == []


class TestChain:
    def test_c72_concurrent_records_get_consecutive_seqs(self, tmp_path: Path) -> None:
        """2,000 gathered record() calls: seq 1..N, no gap, no duplicate, chain verifies."""
        path = tmp_path / "audit.jsonl"

        async def go() -> AuditTrail:
            t = trail(path, fsync="always")
            await t.start()
            await asyncio.gather(*(t.record(decision(i)) for i in range(2000)))
            await t.close()
            return t

        t = run(go())
        seqs = [e["seq"] for e in entries(path)]
        assert seqs == list(range(1, 2002))
        assert t.written == 2001 and t.seq == 2001 and t.head == entries(path)[-1]["hash"]
        assert sorted(e["request_id"] for e in entries(path)[1:]) == [
            f"req-{i:05d}" for i in range(2000)
        ]
        assert verify_log(path, checkpoints_of(path), SECRET).ok

    def test_c69_restart_continues_the_chain_in_a_new_segment(self, tmp_path: Path) -> None:
        """Each start writes a segment_start linked to the previous head."""
        path = tmp_path / "audit.jsonl"
        first = run(write_segment(path, 3))
        run(write_segment(path, 2, start=3))
        log = entries(path)
        assert [e["seq"] for e in log] == list(range(1, 8))
        assert log[4]["event"] == "segment_start" and log[4]["prev_hash"] == first.head
        result = verify_log(path, checkpoints_of(path), SECRET)
        assert result.ok and result.segments == 2

    def test_rotation_keeps_every_file_and_continues_the_chain(self, tmp_path: Path) -> None:
        """Rotated files shift up; the new file's first prev_hash is the old file's last hash."""
        path = build_log(tmp_path)
        rotated = sorted(p.name for p in tmp_path.glob("audit.jsonl.[0-9]*"))
        assert len(rotated) >= 2
        assert all(p.stat().st_size <= 12_000 for p in tmp_path.glob("audit.jsonl*"))
        newest = (tmp_path / "audit.jsonl.1").read_bytes().splitlines()[-1]
        current = path.read_bytes().splitlines()[0]
        assert orjson.loads(current)["prev_hash"] == orjson.loads(newest)["hash"]
        assert verify_log(path, checkpoints_of(path), SECRET).ok

    def test_stdout_only_is_still_hashed_and_sequenced(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """path=None, stdout=True: the shipped lines form a verifiable chain, and the
        checkpoints are lines of their own kind among them."""
        run(write_segment(None, 3, stdout=True))  # type: ignore[arg-type]
        shipped = tmp_path / "shipped.jsonl"
        shipped.write_text(capfd.readouterr().out)
        chain = [e for e in entries(shipped) if e["event"] != "checkpoint"]
        assert [e["seq"] for e in chain] == [1, 2, 3, 4]
        result = verify_log(shipped)
        assert result.ok and result.checkpoints >= 1, result.summary


class TestLifecycle:
    def test_record_before_start_or_after_close_is_refused(self, tmp_path: Path) -> None:
        """A trail that is not running cannot acknowledge anything."""

        async def go() -> None:
            t = trail(tmp_path / "audit.jsonl")
            with pytest.raises(AuditUnavailable):
                await t.record(decision(0))
            await t.start()
            await t.close()
            with pytest.raises(AuditUnavailable):
                await t.record(decision(1))

        run(go())

    def test_close_drains_what_is_queued(self, tmp_path: Path) -> None:
        """Entries queued when close() starts are written before it returns."""
        path = tmp_path / "audit.jsonl"

        async def go() -> None:
            t = trail(path)
            await t.start()
            tasks = [asyncio.create_task(t.record(decision(i))) for i in range(50)]
            await asyncio.sleep(0)
            await t.close()
            await asyncio.gather(*tasks)

        run(go())
        assert len(entries(path)) == 51
        cps = read_checkpoints(checkpoints_of(path))
        assert cps[-1].seq == 51

    def test_c70_checkpoints_are_written_while_idle(self, tmp_path: Path) -> None:
        """With nothing to record, signed checkpoints still prove the gateway was alive."""
        path = tmp_path / "audit.jsonl"

        async def go() -> None:
            t = trail(path, checkpoint_interval_s=0.05)
            await t.start()
            await asyncio.sleep(0.4)
            await t.close()

        run(go())
        cps = read_checkpoints(checkpoints_of(path))
        assert len(cps) >= 4
        assert {c.seq for c in cps} == {1}
        assert all(c.signed_by(SECRET) for c in cps)
        stamps = [c.body["ts"] for c in cps if c.body]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

    def test_checkpoints_keep_coming_under_constant_load(self, tmp_path: Path) -> None:
        """A queue that is never empty does not starve the checkpoint timer."""
        path = tmp_path / "audit.jsonl"

        async def go() -> None:
            t = trail(path, checkpoint_interval_s=0.05)
            await t.start()
            loop = asyncio.get_running_loop()
            stop = loop.time() + 0.4
            # open-loop arrivals, as from many clients: new entries queue during every write
            tasks = []
            while loop.time() < stop:
                tasks.append(asyncio.create_task(t.record(decision(len(tasks)))))
                await asyncio.sleep(0.0002)
            await asyncio.gather(*tasks)
            await t.close()

        run(go())
        seqs = [c.seq or 0 for c in read_checkpoints(checkpoints_of(path))]
        # start and close alone give two; anything more was written while under load
        assert len(set(seqs)) >= 4 and seqs == sorted(seqs)
        assert verify_log(path, checkpoints_of(path), SECRET).ok

    def test_interval_fsync_syncs_on_a_timer_not_per_entry(self, tmp_path: Path) -> None:
        """fsync="interval:N" returns after write() and fsyncs in the background."""
        syncs: list[int] = []

        class CountingFile(LogFile):
            def sync(self) -> None:
                syncs.append(1)
                super().sync()

        class CountingTrail(AuditTrail):
            file_class = CountingFile

        path = tmp_path / "audit.jsonl"

        async def go() -> None:
            t = CountingTrail(path, secret=SECRET, fsync="interval:30")
            await t.start()
            for i in range(40):
                await t.record(decision(i))
            await asyncio.sleep(0.1)
            assert syncs, "no fsync within the interval"
            await t.close()

        run(go())
        assert 1 <= len(syncs) < 40

    def test_configuration_errors_are_caught_early(self, tmp_path: Path) -> None:
        """Bad fsync or on_full values, or no sink at all, fail at construction."""
        for kwargs in ({"fsync": "sometimes"}, {"on_full": "ignore"}, {"fsync": "interval:x"}):
            with pytest.raises(ValueError):
                trail(tmp_path / "a.jsonl", **kwargs)
        with pytest.raises(ValueError):
            trail(None)

    def test_refuses_a_path_that_is_not_a_regular_file(self, tmp_path: Path) -> None:
        """Rotation renames the log, so a FIFO or device is refused at start."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(ValueError):
            run(trail(fifo).start())


def test_fields_that_are_not_names_are_never_written(tmp_path: Path) -> None:
    """A caller's dict with keys that are not strings gets its entry; those keys do not."""
    path = tmp_path / "a.jsonl"

    async def main() -> None:
        t = trail(path)
        await t.start()
        await t.record({**decision(1), 7: EMAIL, ("k",): TOKEN})  # type: ignore[dict-item]
        await t.close()

    run(main())
    raw = path.read_bytes()
    assert b"req-00001" in raw
    assert EMAIL.encode() not in raw and TOKEN.encode() not in raw
    assert verify_log(path).ok
