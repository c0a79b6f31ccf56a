"""The audit trail's own cost, in process: CPU per entry to render it, and to record it
(render, write, and the fsync the mode asks for) with one and with 16 requests at a time.

    python -m bench.audit            # about 20 s

It runs on uvloop, as the served gateway does, pinned to CPU 0 like the proxies of
``bench.run``. CPU is the process's (the loop and the
trail's I/O thread); the fsync's kernel time is in it, so the figures depend on the disk
the temporary directory is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from pathlib import Path

import uvloop

from gateway.audit.trail import AuditTrail, _Pending
from gateway.decision import Decision

ENTRIES = 6000


def entry() -> dict[str, object]:
    """A redacted 1-record read, as the gateway records it."""
    d = Decision(
        request_id=uuid.uuid4().hex,
        method="GET",
        client="9f16268b031ef5b1a2f8e6df2636c9da",
        route="/crm/{v}/{module}",
        api_version="v2",
        module="Leads",
        status=200,
        upstream_status=200,
        duration_ms=0.683,
        policy_version="default-2",
        policy_hash="e19491c0aa19",
        metadata_age_s=0.004,
    )
    d.outcome = "redacted"
    for name in ("City", "Email", "First_Name", "Mobile", "Phone", "Secondary_Email"):
        d.fields_withheld[name] = 1
    return d.as_dict()


def trail(fsync: str) -> AuditTrail:
    path = Path(tempfile.mkdtemp(prefix="gateway-bench-audit-")) / "audit.jsonl"
    return AuditTrail(path, secret=b"bench", fsync=fsync, checkpoint_interval_s=3600)


async def render_us() -> float:
    t = trail("never")
    fields = entry()
    batch = [_Pending(i + 1, "request", fields, asyncio.Future()) for i in range(ENTRIES)]
    started = time.process_time()
    t._render(batch)
    return (time.process_time() - started) / ENTRIES * 1e6


async def record_us(fsync: str, concurrency: int) -> float:
    t = trail(fsync)
    await t.start()
    fields = entry()

    async def requests(n: int) -> None:
        for _ in range(n):
            await t.record(fields)

    await requests(200)
    started = time.process_time()
    await asyncio.gather(*[requests(ENTRIES // concurrency) for _ in range(concurrency)])
    spent = time.process_time() - started
    await t.close()
    return spent / ENTRIES * 1e6


def main() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not every machine lets it pin
        os.sched_setaffinity(0, {0})
    uvloop.install()
    print(f"render one entry:                  {asyncio.run(render_us()):6.1f} us CPU")
    for fsync in ("always", "interval:100"):
        for c in (1, 16):
            us = asyncio.run(record_us(fsync, c))
            print(f"record, fsync {fsync:<12} c={c:<2}:   {us:6.1f} us CPU an entry")


if __name__ == "__main__":
    main()
