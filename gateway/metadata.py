"""Org and field metadata: fetched from the CRM, cached with a TTL, single-flight, fail closed.

Keys: a client's org by the keyed fingerprint of its token (never the token); field
metadata and related-list metadata by (org id, API version, module).

An entry is fresh for ``ttl`` seconds. After that the next request refreshes it; while the
CRM cannot answer, the stale entry may still serve until it is ``max_stale`` old (the
cachetools TTLCache drops it then), never longer. Any number of concurrent requests for a
cold key share one upstream fetch. When no entry can be had, ``MetadataUnavailable`` (503)
is raised and record data is not forwarded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from cachetools import TTLCache

from gateway.errors import GatewayError, MetadataUnavailable, UnreadableUpstream, UpstreamRefused
from gateway.privacy.catalog import (
    CustomView,
    MetadataShapeError,
    ModuleCatalog,
    OrgInfo,
    parse_custom_view,
    parse_custom_view_ids,
    parse_fields,
    parse_modules,
    parse_org,
    parse_related_lists,
)
from gateway.upstream import Headers, Upstream, fetch_json

T = TypeVar("T")
METADATA_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    fetched_at: float


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0  # absent or no longer fresh: a fetch started or joined
    fetches: int = 0
    failures: int = 0
    stale_served: int = 0
    failing: bool = False  # the last fetch from the CRM failed


class MetadataCache:
    def __init__(
        self,
        upstream: Upstream,
        base_url: str,
        *,
        ttl: float,
        max_stale: float,
        maxsize: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = upstream
        self._base = base_url
        self._ttl = ttl
        self._clock = clock
        self._cache: TTLCache[tuple[str, ...], _Entry[Any]] = TTLCache(
            maxsize=maxsize, ttl=max_stale, timer=clock
        )
        #: the entries still fresh, in front of the TTLCache (whose look-ups run its timer
        #: and expiry on every call): a plain dict read per look-up in steady state
        self._fresh: dict[tuple[str, ...], _Entry[Any]] = {}
        self._maxsize = maxsize
        #: a fetch in flight and the credentials it was started with
        self._inflight: dict[tuple[str, ...], tuple[asyncio.Task[Any], tuple[str, ...]]] = {}
        self.stats = CacheStats()
        #: bumped whenever an entry is stored: what was built from entries read before
        #: (views.py's ready plans) is rebuilt
        self.generation = 0

    @property
    def ttl(self) -> float:
        return self._ttl

    def now(self) -> float:
        return self._clock()

    async def org(self, client: str, version: str, headers: Headers) -> tuple[OrgInfo, float]:
        return await self._get(
            ("org", client),
            headers,
            lambda: self._fetch(f"{self._base}/crm/{version}/org", headers, parse_org),
        )

    async def fields(
        self, org_id: str, version: str, module: str, headers: Headers
    ) -> tuple[ModuleCatalog, float]:
        # type=all: from v7 the default list leaves out unused fields, whose values a
        # record may still hold (and which may be private).
        url = f"{self._base}/crm/{version}/settings/fields?type=all&module="
        return await self._get(
            ("fields", org_id, version, module.lower()),
            headers,
            lambda: self._fetch(
                url + quote(module, safe=""), headers, lambda body: parse_fields(module, body)
            ),
        )

    async def modules(
        self, org_id: str, version: str, headers: Headers
    ) -> tuple[dict[str, tuple[str, str]], float]:
        return await self._get(
            ("modules", org_id, version),
            headers,
            lambda: self._fetch(
                f"{self._base}/crm/{version}/settings/modules", headers, parse_modules
            ),
        )

    async def related_lists(
        self, org_id: str, version: str, module: str, headers: Headers
    ) -> tuple[dict[str, tuple[str, str]], float]:
        url = f"{self._base}/crm/{version}/settings/related_lists?module={quote(module, safe='')}"
        return await self._get(
            ("related", org_id, version, module.lower()),
            headers,
            lambda: self._fetch(url, headers, parse_related_lists),
        )

    async def custom_view(
        self, org_id: str, version: str, module: str, cvid: str, headers: Headers
    ) -> tuple[CustomView, float]:
        """A custom view's definition (its criteria decide which records a ``cvid`` read
        returns). ``cvid`` is a plain numeric id (the caller checked it)."""
        url = (
            f"{self._base}/crm/{version}/settings/custom_views/{cvid}"
            f"?module={quote(module, safe='')}"
        )
        return await self._get(
            ("custom_view", org_id, version, module.lower(), cvid),
            headers,
            lambda: self._fetch(url, headers, lambda body: parse_custom_view(cvid, body)),
        )

    async def custom_view_ids(
        self, org_id: str, version: str, module: str, headers: Headers, *, fresh: bool = False
    ) -> tuple[frozenset[str], float]:
        """The ids of ``module``'s custom views (leading zeros dropped); ``fresh``: asked
        of the CRM now (a view created since the list was cached)."""
        url = f"{self._base}/crm/{version}/settings/custom_views?module={quote(module, safe='')}"
        return await self._get(
            ("custom_view_ids", org_id, version, module.lower()),
            headers,
            lambda: self._fetch(url, headers, parse_custom_view_ids),
            refresh=fresh,
        )

    def oldest_age(self) -> float:
        """Seconds since the oldest entry still usable (fresh or within max_stale) was
        fetched; 0 when the cache is empty."""
        self._cache.expire()
        oldest = min((e.fetched_at for e in self._cache.values()), default=None)
        return 0.0 if oldest is None else self._clock() - oldest

    async def _get(
        self,
        key: tuple[str, ...],
        headers: Headers,
        fetch: Callable[[], Awaitable[T]],
        *,
        refresh: bool = False,
    ) -> tuple[T, float]:
        now = self._clock()
        entry: _Entry[T] | None = None if refresh else self._fresh.get(key)
        if entry is not None and now - entry.fetched_at < self._ttl:
            self.stats.hits += 1
            return entry.value, now - entry.fetched_at
        entry = None if refresh else self._cache.get(key)
        if entry is not None and now - entry.fetched_at < self._ttl:
            self.stats.hits += 1
            return entry.value, now - entry.fetched_at
        self.stats.misses += 1
        who = _credentials(headers)
        try:
            task, owner = self._flight(key, key, who, fetch)
            try:
                fresh: _Entry[T] = await asyncio.shield(task)
            except UpstreamRefused:
                if owner == who:
                    raise
                # The CRM refused the credentials of the request that started the flight:
                # its answer is that request's alone. Ask again with this request's own
                # (one flight for every request holding them).
                task, _ = self._flight((*key, *who), key, who, fetch)
                fresh = await asyncio.shield(task)
        except MetadataUnavailable:
            # The TTLCache has already dropped anything older than max_stale.
            entry = self._cache.get(key)
            if entry is None:
                raise
            self.stats.stale_served += 1
            return entry.value, self._clock() - entry.fetched_at
        return fresh.value, self._clock() - fresh.fetched_at

    def _flight(
        self,
        flight: tuple[str, ...],
        key: tuple[str, ...],
        who: tuple[str, ...],
        fetch: Callable[[], Awaitable[T]],
    ) -> tuple[asyncio.Task[_Entry[T]], tuple[str, ...]]:
        """The fetch in flight under ``flight`` and the credentials it was started with;
        one started with ``who``'s (its entry stored under ``key``) when none is."""
        found = self._inflight.get(flight)
        if found is None:
            task = asyncio.ensure_future(self._refresh(key, fetch))
            found = self._inflight[flight] = (task, who)
            task.add_done_callback(lambda _t: self._inflight.pop(flight, None))
        return found

    async def _refresh(self, key: tuple[str, ...], fetch: Callable[[], Awaitable[T]]) -> _Entry[T]:
        self.stats.fetches += 1
        try:
            value = await fetch()
        except MetadataUnavailable:
            self.stats.failures += 1
            self.stats.failing = True
            raise
        self.stats.failing = False
        entry = _Entry(value, self._clock())
        self._cache[key] = entry
        if len(self._fresh) >= self._maxsize:
            self._fresh.clear()
        self._fresh[key] = entry
        self.generation += 1
        return entry

    async def _fetch(self, url: str, headers: Headers, parse: Callable[[Any], T]) -> T:
        try:
            answer = await fetch_json(self._upstream, "GET", url, headers, b"", METADATA_LIMIT)
        except UnreadableUpstream as exc:
            raise MetadataUnavailable() from exc
        except GatewayError as exc:  # unreachable, timeout, too large
            raise MetadataUnavailable() from exc
        if answer.status in (400, 401, 403, 404) and _is_envelope(answer.body):
            raise UpstreamRefused(answer.status, answer.raw)
        if answer.status not in (200, 204):
            raise MetadataUnavailable()
        try:
            return parse(answer.body)
        except MetadataShapeError as exc:
            raise MetadataUnavailable() from exc


def _credentials(headers: Headers) -> tuple[str, ...]:
    """What the CRM answers a metadata call by: its token and chosen org."""
    return tuple(f"{n}:{v}" for n, v in headers if n in ("authorization", "x-crm-org"))


def _is_envelope(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("code"), str)
