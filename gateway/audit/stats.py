"""Counts a privacy officer asks for, read back from the audit log.

Reading is lenient (a line that does not parse is skipped): whether the log is intact is
``verify_log``'s question, and the report shows its answer next to these numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.files import log_files


@dataclass(slots=True)
class Tally:
    requests: int = 0
    forwarded: int = 0
    redacted: int = 0
    refused: int = 0
    errors: int = 0
    withheld: int = 0  # values withheld (nulled) from responses

    def add(self, entry: dict[str, Any]) -> None:
        self.requests += 1
        outcome = entry.get("outcome")
        if outcome == "forwarded":
            self.forwarded += 1
        elif outcome == "redacted":
            self.redacted += 1
        elif outcome == "refused":
            self.refused += 1
        elif outcome in ("error", "cancelled"):  # cancelled: stopped at shutdown
            self.errors += 1
        self.withheld += _withheld(entry)[1]


@dataclass(slots=True)
class AuditStats:
    totals: Tally = field(default_factory=Tally)
    by_client: dict[str, Tally] = field(default_factory=dict)
    by_module: dict[str, Tally] = field(default_factory=dict)
    by_day: dict[str, Tally] = field(default_factory=dict)
    refusal_reasons: Counter[str] = field(default_factory=Counter)
    withheld_fields: Counter[str] = field(default_factory=Counter)  # requests per field name
    segments: int = 0
    first_ts: str | None = None
    last_ts: str | None = None


def read_entries(base: Path) -> Iterator[dict[str, Any]]:
    for path in log_files(base):
        with path.open("rb") as f:
            for raw in f:
                try:
                    entry = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    yield entry


def _withheld(entry: dict[str, Any]) -> tuple[list[str], int]:
    withheld = entry.get("fields_withheld")
    if not isinstance(withheld, dict):
        return [], 0
    names = [n for n in withheld.get("names") or [] if isinstance(n, str)]
    count = withheld.get("count")
    return names, count if isinstance(count, int) and not isinstance(count, bool) else 0


def _bucket(tallies: dict[str, Tally], key: object) -> Tally:
    name = key if isinstance(key, str) else "(none)"
    tally = tallies.get(name)
    if tally is None:
        tally = tallies[name] = Tally()
    return tally


def collect(entries: Iterable[dict[str, Any]]) -> AuditStats:
    stats = AuditStats()
    for entry in entries:
        ts = entry.get("ts")
        if isinstance(ts, str):
            stats.first_ts = stats.first_ts or ts
            stats.last_ts = ts
        if entry.get("event") == "segment_start":
            stats.segments += 1
            continue
        if entry.get("event") != "request":
            continue
        stats.totals.add(entry)
        _bucket(stats.by_client, entry.get("client")).add(entry)
        _bucket(stats.by_module, entry.get("module")).add(entry)
        _bucket(stats.by_day, ts[:10] if isinstance(ts, str) else None).add(entry)
        if entry.get("outcome") == "refused":
            reasons = entry.get("reasons") or []
            stats.refusal_reasons.update(r for r in reasons if isinstance(r, str))
        stats.withheld_fields.update(set(_withheld(entry)[0]))
    return stats
