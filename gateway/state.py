"""The record-state look-up: the current ``$stop_processing`` of a write's targets.

Asked upstream right before a write is forwarded (a cached ``false`` is never trusted), in
batches of 100 ids per module, naming ``$stop_processing`` in ``fields``: the CRM returns a
``$``-key only when it is named. A target whose answer lacks the flag is unknown, and the
write to it is refused as ``state_unknown`` (fail closed); the gateway logs once per module
that the CRM did not return the flag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import structlog

from gateway.errors import GatewayError
from gateway.jsonbody import UNREADABLE, is_record_id, normal_id, record_id
from gateway.privacy import writes
from gateway.upstream import Upstream, fetch_json
from gateway.view import View, Views

STATE_LIMIT = 32 * 1024 * 1024
ID_BATCH = 100
log = structlog.get_logger("gateway")

#: causes of an unknown state the client is told (``details.cause``)
DUPLICATE_FIELDS_UNKNOWN = "duplicate_fields_unknown"
#: conditions one CRM search criteria may hold
MAX_CRITERIA = 10
DUPLICATE_SEARCH_REFUSED = "duplicate_search_refused"


@dataclass(frozen=True, slots=True)
class Target:
    """A record a write reaches: its id (None: not known) and state (True stop processing,
    False free, None unknown)."""

    id: str | None
    state: bool | None
    cause: str | None = None


FREE = Target(None, False)


def _plain_id(value: Any) -> bool:
    """An id every reading takes as one: a JSON integer or ASCII digits (spaces around)."""
    if isinstance(value, str):
        text = value.strip()
        return text.isascii() and text.isdigit()
    return isinstance(value, int) and not isinstance(value, bool)


def _converted_too(module: str) -> str:
    """The parameter a look-up of Leads needs to find converted ones as well: a converted
    lead is still a record a write reaches."""
    return "&converted=both" if module.lower() == "leads" else ""


def worse(a: Target, b: Target) -> Target:
    """Of two readings of one write's target, the one to judge it by: stop processing,
    else unknown, else an insert (so its consent is checked), else ``a``."""
    return min((a, b), key=_rank)  # the first of equals


def _rank(t: Target) -> int:
    return 0 if t.state is True else 1 if t.state is None else 2 if t.id is None else 3


class RecordStates:
    def __init__(self, upstream: Upstream, upstream_url: str, views: Views) -> None:
        self.upstream = upstream
        self.base = upstream_url
        self.views = views
        self._flag_missing_logged: set[str] = set()

    async def _records(
        self, view: View, module: str, ids: Sequence[str], fields: str
    ) -> tuple[list[Any], bool]:
        """The records of ``module`` among ``ids`` (only ``fields``), and whether every
        batch was answered (so an id missing from them is not in the module)."""
        records: list[Any] = []
        complete = True
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), ID_BATCH):
            chunk = unique[start : start + ID_BATCH]
            url = (
                f"{self.base}/crm/{view.version}/{quote(module, safe='')}"
                f"?ids={','.join(quote(i, safe='') for i in chunk)}"
                f"&fields={quote(fields, safe=',$')}&per_page={ID_BATCH}"
                f"{_converted_too(module)}"
            )
            try:
                answer = await fetch_json(self.upstream, "GET", url, view.headers, b"", STATE_LIMIT)
            except GatewayError:
                complete = False
                continue
            data = answer.body.get("data") if isinstance(answer.body, dict) else None
            if answer.status == 200 and isinstance(data, list):
                records += data
            elif answer.status != 204:
                complete = False
        return records, complete

    async def locate(
        self, view: View, ids: Sequence[str], *, absent: bool | None = False
    ) -> dict[str, bool | None]:
        """The state of records whose module the write does not say (a note's parent, an
        upload's ids): looked for in every GDPR module (ids are unique within an org). An
        id no GDPR module holds, when every module answered, gets ``absent``: free (no such
        state) for a parent, unknown (None) for an id a file says must be a record."""
        found: dict[str, bool | None] = {i: None for i in ids if not is_record_id(i)}
        remaining = [i for i in dict.fromkeys(ids) if is_record_id(i)]
        complete = True
        for module in await self.views.gdpr_modules(view, strict=True):
            if not remaining:
                break
            records, answered = await self._records(view, module, remaining, "id,$stop_processing")
            complete = complete and answered
            states = self._states(module, records)
            present = {normal_id(r.get("id")) for r in records if isinstance(r, dict)}
            for rid in remaining:
                if rid in present:
                    found[rid] = states.get(rid)  # returned without the flag: unknown
            remaining = [i for i in remaining if i not in present]
        for rid in remaining:
            found[rid] = absent if complete else None
        return found

    async def current_parents(
        self, view: View, module: str, ids: Sequence[str], names: Sequence[str]
    ) -> dict[str, list[str | None] | None]:
        """The parents records of ``module`` hang under now (``names``: its parent fields);
        None for a record the CRM did not return."""
        records, _ = await self._records(view, module, ids, ",".join(["id", *names]))
        out: dict[str, list[str | None] | None] = {}
        for rec in records:
            rid = normal_id(rec.get("id")) if isinstance(rec, dict) else None
            if rid is not None:
                out[rid] = writes.parent_ids(rec)
        return {i: out.get(i) for i in ids}

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
        records, _ = await self._records(view, module, ids, "id,$stop_processing")
        return self._states(module, records)

    async def by_external(self, view: View, module: str, external_field: str, value: str) -> Target:
        """The record an ``X-EXTERNAL`` value names, resolved by the CRM."""
        url = (
            f"{self.base}/crm/{view.version}/{quote(module, safe='')}/{quote(value, safe='')}"
            "?fields=id,$stop_processing"
        )
        try:
            answer = await fetch_json(
                self.upstream,
                "GET",
                url,
                [*view.headers, ("x-external", external_field)],
                b"",
                STATE_LIMIT,
            )
        except GatewayError:
            return Target(None, None)
        if answer.status == 204:
            return FREE  # no record holds that value
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        states = self._states(module, data) if answer.status == 200 else {}
        if len(states) != 1:
            return Target(None, None)
        ((rid, state),) = states.items()
        return Target(rid, state)

    async def upsert_targets(
        self, view: View, module: str, records: list[Any], fields: Sequence[str] | None
    ) -> list[Target]:
        """Per input record, the record the upsert would update: by id, else by the first
        duplicate-check field that matches (``fields``; None when the gateway cannot know
        them). No id and no duplicate-check value: an insert (``FREE``)."""
        by_id = await self.states(
            view,
            module,
            [
                rid
                for r in records
                if isinstance(r, dict) and (rid := record_id(r)) and rid != UNREADABLE
            ],
        )
        sem = asyncio.Semaphore(8)

        async def one(record: Any) -> Target:
            if not isinstance(record, dict):
                return Target(None, None)
            rid = record_id(record)
            if rid == UNREADABLE:
                return Target(None, None)
            if rid and _plain_id(record.get("id")):
                return Target(rid, by_id.get(rid))
            matched = await by_fields(record)
            # An id spelled in another case (``ID``) or written so a CRM may not read it as
            # one (``+123``, other digits): a CRM that sees no id matches the row by its
            # duplicate-check fields instead, so both are targets.
            return worse(Target(rid, by_id.get(rid)), matched) if rid else matched

        async def by_fields(record: dict[str, Any]) -> Target:
            if fields is None:
                return Target(None, None, DUPLICATE_FIELDS_UNKNOWN)
            pairs = writes.duplicate_values(record, fields)
            if not pairs:
                return FREE
            if len(pairs) > MAX_CRITERIA:
                # One search takes at most ten conditions; a record matched only on the
                # eleventh would look free. Cannot be checked: unknown, never "free".
                return Target(None, None, DUPLICATE_FIELDS_UNKNOWN)
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
            f"{_converted_too(module)}"
        )
        try:
            answer = await fetch_json(self.upstream, "GET", url, view.headers, b"", STATE_LIMIT)
        except GatewayError:
            return Target(None, None)
        if answer.status == 204:
            return FREE  # no duplicate: the upsert inserts
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 400 and body.get("code") == "INVALID_QUERY":
            # A CRM that enforces its GDPR rules refuses a restricted field as a criterion:
            # the gateway cannot see which record the upsert would update.
            return Target(None, None, DUPLICATE_SEARCH_REFUSED)
        data = body.get("data")
        info = body.get("info")
        more = isinstance(info, dict) and info.get("more_records") is not False
        if answer.status != 200 or not isinstance(data, list) or more:
            # An exact match could hide on a page the gateway did not read.
            return Target(None, None)
        # Search's equals matches loosely: a hit is a target when its value matches exactly,
        # or when the CRM withheld the value (a restricted field), so it cannot be ruled out.
        matches = [
            rec
            for rec in data
            if isinstance(rec, dict)
            and (writes.matches_duplicate(rec, pairs) or writes.hides_duplicate(rec, pairs))
        ]
        if not matches:
            return FREE
        states = self._states(module, matches)
        if len(states) != len(matches):
            return Target(None, None)
        stopped = [rid for rid, s in states.items() if s]
        return Target(stopped[0], True) if stopped else Target(next(iter(states)), False)
