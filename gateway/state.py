"""The record-state look-up: the current ``$stop_processing`` of a write's targets.

Asked upstream right before a write is forwarded (a cached ``false`` is never trusted), in
batches of 100 ids per module, naming ``$stop_processing`` in ``fields``: the CRM returns a
``$``-key only when it is named. A target whose answer lacks the flag is unknown, and the
write to it is refused as ``state_unknown`` (fail closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import structlog

from gateway.errors import GatewayError
from gateway.jsonbody import record_id
from gateway.privacy import writes
from gateway.upstream import Headers, Upstream, fetch_json
from gateway.view import View

STATE_LIMIT = 32 * 1024 * 1024
ID_BATCH = 100
log = structlog.get_logger("gateway")

#: (target id or None, state): True stop processing, False free, None unknown
Target = tuple[str | None, bool | None]


class RecordStates:
    def __init__(self, upstream: Upstream, upstream_url: str) -> None:
        self.upstream = upstream
        self.base = upstream_url
        self._flag_missing_logged: set[str] = set()

    async def _get(self, url: str, headers: Headers) -> Any:
        try:
            answer = await fetch_json(self.upstream, "GET", url, headers, b"", STATE_LIMIT)
        except GatewayError:
            return None  # unknown: the targets are refused with state_unknown
        return answer.body if answer.status == 200 else None

    def _states(self, module: str, records: Any) -> dict[str, bool]:
        found = writes.states_from_records(records)
        if isinstance(records, list) and len(found) < len(records):
            key = module.lower()
            if key not in self._flag_missing_logged:
                self._flag_missing_logged.add(key)
                log.warning("stop_processing_flag_missing", module=module)
        return found

    async def states(self, view: View, module: str, ids: Sequence[str]) -> dict[str, bool]:
        """Current ``$stop_processing`` of ``ids``; an id missing from the answer is unknown."""
        found: dict[str, bool] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), ID_BATCH):
            chunk = unique[start : start + ID_BATCH]
            url = (
                f"{self.base}/crm/{view.version}/{quote(module, safe='')}"
                f"?ids={','.join(quote(i, safe='') for i in chunk)}"
                f"&fields=id,$stop_processing&per_page={ID_BATCH}"
            )
            body = await self._get(url, view.headers)
            if isinstance(body, dict):
                found.update(self._states(module, body.get("data")))
        return found

    async def by_external(self, view: View, module: str, external_field: str, value: str) -> Target:
        """(id, state) of the record an ``X-EXTERNAL`` value names, resolved by the CRM."""
        url = (
            f"{self.base}/crm/{view.version}/{quote(module, safe='')}/{quote(value, safe='')}"
            "?fields=id,$stop_processing"
        )
        body = await self._get(url, [*view.headers, ("x-external", external_field)])
        data = body.get("data") if isinstance(body, dict) else None
        states = self._states(module, data)
        if len(states) != 1:
            return None, None
        ((rid, state),) = states.items()
        return rid, state

    async def upsert_targets(
        self, view: View, module: str, records: list[Any], fields: Sequence[str]
    ) -> list[Target]:
        """Per input record: (target id, state). A record with no id and no duplicate-check
        value is an insert: (None, False)."""
        by_id = await self.states(
            view, module, [rid for r in records if isinstance(r, dict) and (rid := record_id(r))]
        )
        sem = asyncio.Semaphore(8)

        async def one(record: Any) -> Target:
            if not isinstance(record, dict):
                return None, None
            rid = record_id(record)
            if rid:
                return rid, by_id.get(rid)
            if not fields:
                return None, None
            pairs = writes.duplicate_values(record, fields)[:10]
            if not pairs:
                return None, False
            async with sem:
                return await self._duplicate(view, module, pairs)

        return list(await asyncio.gather(*(one(r) for r in records)))

    async def _duplicate(self, view: View, module: str, pairs: list[tuple[str, str]]) -> Target:
        criteria = "or".join(
            f"({name}:equals:{writes.escape_criteria_value(value)})" for name, value in pairs
        )
        names = ",".join(dict.fromkeys(["id", "$stop_processing", *(n for n, _ in pairs)]))
        url = (
            f"{self.base}/crm/{view.version}/{quote(module, safe='')}/search"
            f"?criteria={quote(criteria, safe='')}&fields={quote(names, safe=',$')}&per_page=200"
        )
        try:
            answer = await fetch_json(self.upstream, "GET", url, view.headers, b"", STATE_LIMIT)
        except GatewayError:
            return None, None
        if answer.status == 204:
            return None, False  # no duplicate: the upsert inserts
        body = answer.body if isinstance(answer.body, dict) else {}
        data = body.get("data")
        info = body.get("info")
        more = isinstance(info, dict) and info.get("more_records") is not False
        if answer.status != 200 or not isinstance(data, list) or more:
            # An exact match could hide on a page the gateway did not read.
            return None, None
        # Search's equals matches loosely: a hit is a target when its value matches exactly,
        # or when the CRM withheld the value (a restricted field), so it cannot be ruled out.
        matches = [
            rec
            for rec in data
            if isinstance(rec, dict)
            and (writes.matches_duplicate(rec, pairs) or writes.hides_duplicate(rec, pairs))
        ]
        if not matches:
            return None, False
        states = self._states(module, matches)
        if len(states) != len(matches):
            return None, None
        stopped = [rid for rid, s in states.items() if s]
        return (stopped[0], True) if stopped else (next(iter(states)), False)
