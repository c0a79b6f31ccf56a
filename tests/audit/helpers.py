"""Builders shared by the audit tests: decisions, trails, and a ready-made log."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.audit import AuditTrail
from gateway.decision import Decision
from gateway.errors import Reason

SECRET = b"test-secret-for-the-audit-trail"
CLIENTS = ("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210")
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def decision(i: int, **overrides: Any) -> dict[str, object]:
    """A plausible request decision; the outcome cycles through all four."""
    d = Decision(
        request_id=f"req-{i:05d}",
        method="GET" if i % 3 else "PUT",
        client=CLIENTS[i % 2],
        route="/crm/{v}/{module}/{id}",
        api_version="v8",
        module=("Leads", "Contacts", "Deals")[i % 3],
        record_ids=[str(5725767000000524000 + i)],
        status=200,
        upstream_status=200,
        duration_ms=1.5 + i,
        policy_version="default-1",
        metadata_age_s=12.25,
    )
    kind = i % 4
    if kind == 1:
        d.outcome = "redacted"
        d.withheld({"Email": 1, "Phone": 1})
    elif kind == 2:
        d.refuse(Reason.RESTRICTED_CRITERIA, "Email")
        d.status = 400
        d.upstream_status = None
    elif kind == 3:
        d.outcome = "error"
        d.note(Reason.METADATA_UNAVAILABLE)
        d.status = 503
    fields = d.as_dict()
    fields.update(overrides)
    return fields


def trail(path: Path | None, **kwargs: Any) -> AuditTrail:
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("fsync", "never")
    return AuditTrail(path, **kwargs)


async def write_segment(path: Path, count: int, start: int = 0, **kwargs: Any) -> AuditTrail:
    """One process lifetime: start, ``count`` requests one after another, close."""
    t = trail(path, **kwargs)
    await t.start()
    for i in range(start, start + count):
        await t.record(decision(i))
    await t.close()
    return t


def build_log(directory: Path, per_segment: int = 24, max_bytes: int = 12_000) -> Path:
    """About 50 entries over two segments, rotated at least once."""
    path = directory / "audit.jsonl"
    run(write_segment(path, per_segment, max_bytes=max_bytes))
    run(write_segment(path, per_segment, start=per_segment, max_bytes=max_bytes))
    return path


def entries(path: Path) -> list[dict[str, Any]]:
    """Every line of the log, oldest file first, parsed."""
    from gateway.audit.files import log_files

    out: list[dict[str, Any]] = []
    for f in log_files(path):
        out.extend(orjson.loads(line) for line in f.read_bytes().splitlines())
    return out


def checkpoints_of(path: Path) -> Path:
    return path.with_name(path.name + ".checkpoints")
