"""When the disk is slow or failing: block mode refuses loudly, drop mode counts."""

from __future__ import annotations

import asyncio
import errno
import shutil
import threading
import time
from pathlib import Path

import pytest

from gateway.audit import AuditTrail, AuditUnavailable, verify_log
from gateway.audit.logfile import LogFile
from tests.audit.helpers import SECRET, checkpoints_of, decision, entries, run


class SlowFile(LogFile):
    """A disk that takes ``delay`` seconds per write."""

    delay = 0.3

    def append(self, lines: list[bytes]) -> None:
        time.sleep(self.delay)
        super().append(lines)


class BrokenFile(LogFile):
    """A disk that fails every write while ``failing`` is set (ENOSPC)."""

    failing = threading.Event()

    def append(self, lines: list[bytes]) -> None:
        if self.failing.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        super().append(lines)


class SlowTrail(AuditTrail):
    file_class = SlowFile


class BrokenTrail(AuditTrail):
    file_class = BrokenFile


@pytest.fixture(autouse=True)
def _disk_works_again() -> None:
    BrokenFile.failing.clear()


class TestBlockMode:
    def test_full_queue_raises_within_the_timeout(self, tmp_path: Path) -> None:
        """A sink that cannot keep up turns into AuditUnavailable after block_timeout_s."""

        async def go() -> None:
            t = SlowTrail(
                tmp_path / "audit.jsonl", secret=SECRET, queue_size=2, block_timeout_s=0.1
            )
            await t.start()
            began = time.monotonic()
            tasks = [asyncio.create_task(t.record(decision(i))) for i in range(8)]
            await asyncio.sleep(0.02)
            assert not t.healthy  # queue full
            results = await asyncio.gather(*tasks, return_exceptions=True)
            refused = [r for r in results if isinstance(r, AuditUnavailable)]
            assert refused and time.monotonic() - began < 1.0
            assert all(r is None or isinstance(r, AuditUnavailable) for r in results)
            await t.close()
            # everything acknowledged is there, and nothing else
            assert len(entries(tmp_path / "audit.jsonl")) == 1 + results.count(None)

        run(go())
        assert verify_log(tmp_path / "audit.jsonl").ok

    def test_write_error_fails_pending_and_later_records(self, tmp_path: Path) -> None:
        """After a write error nothing is acknowledged any more, so nothing is lost silently."""

        async def go() -> None:
            t = BrokenTrail(tmp_path / "audit.jsonl", secret=SECRET)
            await t.start()
            await t.record(decision(0))
            BrokenFile.failing.set()
            results = await asyncio.gather(
                *(t.record(decision(i)) for i in range(1, 6)), return_exceptions=True
            )
            assert all(isinstance(r, AuditUnavailable) for r in results)
            BrokenFile.failing.clear()  # even once the disk is back: this trail stays down
            with pytest.raises(AuditUnavailable):
                await t.record(decision(9))
            assert not t.healthy and t.written == 2
            await t.close()

        run(go())
        assert verify_log(tmp_path / "audit.jsonl").ok

    def test_a_removed_directory_is_a_write_error(self, tmp_path: Path) -> None:
        """A real failure, no seam: rotation into a deleted directory raises 503-worthy."""
        directory = tmp_path / "logs"
        directory.mkdir()

        async def go() -> None:
            t = AuditTrail(directory / "audit.jsonl", secret=SECRET, max_bytes=1500)
            await t.start()
            await t.record(decision(0))
            shutil.rmtree(directory)
            with pytest.raises(AuditUnavailable):
                for i in range(1, 10):
                    await t.record(decision(i))
            assert not t.healthy
            await t.close()

        run(go())

    def test_audit_unavailable_is_a_503(self) -> None:
        """The gateway answers with the CRM envelope and status 503."""
        exc = AuditUnavailable()
        assert exc.status_code == 503 and exc.reason == "audit_unavailable"


class TestDropMode:
    def test_full_queue_counts_drops_without_taking_a_seq(self, tmp_path: Path) -> None:
        """Dropped entries are counted, and the written chain has no gap."""
        path = tmp_path / "audit.jsonl"

        async def go() -> None:
            t = SlowTrail(path, secret=SECRET, queue_size=2, on_full="drop")
            await t.start()
            first = asyncio.create_task(t.record(decision(0)))
            await asyncio.sleep(0.05)  # the writer is now stuck in a slow write
            tasks = [asyncio.create_task(t.record(decision(i))) for i in range(1, 10)]
            await asyncio.sleep(0)
            assert not t.healthy and t.dropped == 7  # two queued, the rest dropped
            await asyncio.gather(first, *tasks)
            assert t.written + t.dropped == 11
            assert t.healthy
            await t.close()

        run(go())
        assert [e["seq"] for e in entries(path)] == list(range(1, len(entries(path)) + 1))
        assert verify_log(path, checkpoints_of(path), SECRET).ok

    def test_failing_sink_drops_then_recovers_in_a_new_segment(self, tmp_path: Path) -> None:
        """A failing disk: record() still returns, dropped counts, healthy is False; once the
        disk works again a segment_start marks the gap and the chain still verifies."""
        path = tmp_path / "audit.jsonl"

        async def go() -> None:
            t = BrokenTrail(path, secret=SECRET, on_full="drop")
            await t.start()
            await t.record(decision(0))
            BrokenFile.failing.set()
            await asyncio.gather(*(t.record(decision(i)) for i in range(1, 4)))
            assert t.dropped == 3 and not t.healthy
            await t.record(decision(4))  # while recovering: dropped at once
            assert t.dropped == 4
            BrokenFile.failing.clear()
            for _ in range(100):
                if t.healthy:
                    break
                await asyncio.sleep(0.02)
            assert t.healthy
            await t.record(decision(5))
            await t.close()

        run(go())
        log = entries(path)
        assert [e["seq"] for e in log] == [1, 2, 3, 4]
        assert log[2]["event"] == "segment_start"
        assert log[2]["reasons"] == ["sink_recovered"]
        assert log[3]["request_id"] == "req-00005"
        assert verify_log(path, checkpoints_of(path), SECRET).ok
