"""kill -9 under load: nothing acknowledged is lost, and a restart continues the chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.audit import verify_log
from gateway.audit.verify import TORN_TAIL
from tests.audit.helpers import SECRET, checkpoints_of, run, write_segment

REPO = Path(__file__).resolve().parents[2]

# Eight concurrent "requests" in a loop; each prints its request id only after record()
# returned, i.e. after the entry was fsynced (fsync="always").
WRITER = """
import asyncio, sys
from pathlib import Path
from gateway.audit import AuditTrail

async def main():
    trail = AuditTrail(Path(sys.argv[1]), secret=sys.argv[2].encode(), fsync="always",
                       checkpoint_interval_s=0.05)
    await trail.start()

    async def worker(w):
        i = 0
        while True:
            rid = f"w{w}-{i}"
            await trail.record({"request_id": rid, "method": "GET", "outcome": "forwarded",
                                "route": "/crm/{v}/{module}", "status": 200})
            sys.stdout.write(rid + "\\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(worker(w) for w in range(8)))

asyncio.run(main())
"""


def kill_under_load(path: Path, acknowledged_before_kill: int = 400) -> set[str]:
    """Run the writer, SIGKILL it mid-stream, return every request id it acknowledged."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), SECRET.decode()],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    acked: set[str] = set()
    deadline = time.monotonic() + 20
    while len(acked) < acknowledged_before_kill:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, "writer died or stalled"
        acked.add(line.decode().strip())
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()  # printed before the kill landed: acknowledged too
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    acked.update(rest.decode().split())
    return acked


def test_kill_9_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    """Every id printed after record() returned is in the file; the chain verifies or
    ends in a torn line (the only damage a crash may leave), then a restart recovers."""
    path = tmp_path / "audit.jsonl"
    acked = kill_under_load(path)

    written = {e.get("request_id") for e in entries_tolerant(path)}
    assert acked <= written, f"lost acknowledged entries: {sorted(acked - written)[:5]}"

    result = verify_log(path, checkpoints_of(path), SECRET)
    if not result.ok:  # a crash mid-write: exactly the last line, and said so
        assert result.reason == TORN_TAIL
        assert result.first_bad_line == len(path.read_bytes().splitlines())

    restarted = run(write_segment(path, 3, fsync="always"))
    log = entries_tolerant(path)
    start = next(e for e in log if e["event"] == "segment_start" and e["seq"] > 1)
    assert start["seq"] == restarted.seq - 3
    after = verify_log(path, checkpoints_of(path), SECRET)
    assert after.ok, after.summary
    assert after.segments == 2 and after.entries == restarted.seq


def test_c71_a_torn_write_then_restart_is_a_recovered_crash(tmp_path: Path) -> None:
    """The damage a power cut can do (half a line), simulated exactly: verify says so."""
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 5, fsync="always"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the last entry was cut mid-write
    assert verify_log(path).reason == TORN_TAIL
    run(write_segment(path, 2, start=5))
    result = verify_log(path)
    assert result.ok and len(result.recovered) == 1
    starts = [e for e in entries_tolerant(path) if e["event"] == "segment_start"]
    assert starts[-1]["reasons"] == ["previous_tail_unreadable"]
    assert starts[-1]["seq"] == 6  # continues from the last whole entry, seq 5


def entries_tolerant(path: Path) -> list[dict[str, Any]]:
    """The log's entries, skipping a torn line if there is one."""
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return out
