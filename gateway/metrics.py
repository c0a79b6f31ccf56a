"""``GET /_gateway/metrics``: Prometheus metrics through prometheus-client, all named
``privacy_gateway_*`` (plus the client's own ``process_*``).

Every app has its own ``CollectorRegistry`` (tests run many apps in one process). When
``PROMETHEUS_MULTIPROC_DIR`` is set (several worker processes serving one port), the values
live in that directory, shared by every worker, and a scrape renders the
``MultiProcessCollector``'s aggregate whichever worker answers it. The directory must be
empty when the first worker starts. Gauges say how they aggregate across workers
(``livesum``, ``max``); ``process_*`` then describe the worker that answered the scrape.

Label values are bounded: route templates (never paths), methods from a closed list,
outcomes, reason codes from the closed ``Reason`` vocabulary, CRM module names resolved
through metadata, error kinds. Never a field value, id or client.

Counts kept elsewhere (the metadata cache's and the audit trail's) are carried over into
counters as deltas, on every request and every scrape: no callback gauges, which
multiprocess mode cannot aggregate.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway import __version__
from gateway.compiled import redactor_build
from gateway.decision import REFUSED, Decision
from gateway.errors import GatewayError
from gateway.upstream import Headers, Upstream, UpstreamResponse

PREFIX = "privacy_gateway_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_GAUGE_EVERY_S = 1.0  # the cache scan behind the age gauge runs at most this often
_SYNC_EVERY_S = 0.2  # carried totals are brought over at most this often between scrapes


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        if multiprocess_dir() is None:
            ProcessCollector(registry=r)
        self.requests = Counter(
            PREFIX + "requests",
            "Requests answered, by route template, method and outcome.",
            ["route", "method", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from the request's arrival until its answer was written (audit write "
            "included), by route template and outcome.",
            ["route", "outcome"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            PREFIX + "upstream_latency_seconds",
            "Time until the CRM's answer head arrived, by the answer's status class.",
            ["status_class"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            PREFIX + "upstream_errors",
            "Calls to the CRM that got no answer, by kind (timeout, unreachable, ...).",
            ["kind"],
            registry=r,
        )
        self.refusals = Counter(
            PREFIX + "refusals",
            'Refused requests, by reason code and CRM module ("" when none was resolved).',
            ["reason", "module"],
            registry=r,
        )
        self.withheld = Counter(
            PREFIX + "values_withheld",
            "Private values nulled in answers, by CRM module.",
            ["module"],
            registry=r,
        )
        self.metadata = Counter(
            PREFIX + "metadata_cache",
            "Metadata cache lookups by result: hit (fresh), miss (absent or stale), refresh "
            "(fetches from the CRM), refresh_failed, stale_served.",
            ["result"],
            registry=r,
        )
        self.metadata_age = Gauge(
            PREFIX + "metadata_oldest_entry_age_seconds",
            "Age of the oldest metadata cache entry still usable.",
            registry=r,
            multiprocess_mode="max",
        )
        self.audit_queue = Gauge(
            PREFIX + "audit_queue_depth",
            "Audit entries waiting for the writer.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.audit_dropped = Counter(
            PREFIX + "audit_dropped",
            'Audit entries dropped (on_full = "drop" with a full queue or a failing sink).',
            registry=r,
        )
        self.audit_written = Counter(PREFIX + "audit_written", "Audit entries written.", registry=r)
        self.fsync = Histogram(
            PREFIX + "audit_fsync_seconds",
            "Time one fsync of the audit log took.",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        info = Gauge(
            PREFIX + "build_info",
            "Always 1; the labels name the gateway's version, Python's, and whether its "
            "redactor runs compiled (mypyc) or as Python.",
            ["version", "python", "redactor"],
            registry=r,
            multiprocess_mode="max",
        )
        info.labels(__version__, platform.python_version(), redactor_build()).set(1)
        self.shadowed = Counter(
            PREFIX + "shadow_would_act",
            "Times a rule in shadow mode would have refused or withheld, by rule.",
            ["rule"],
            registry=r,
        )
        self.policy_reloads = Counter(
            PREFIX + "policy_reloads",
            "Policy file changes seen, by result: applied, or rejected (the last good "
            "policy stays).",
            ["result"],
            registry=r,
        )
        self._policy_info = Gauge(
            PREFIX + "policy_info",
            "Always 1; the labels name the policy in force (its version and file hash).",
            ["version", "hash"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self._policy_now: tuple[str, str] | None = None
        #: name -> (read the running total, the counter it feeds)
        self._totals: dict[str, tuple[Callable[[], int], Counter]] = {}
        self._carried: dict[str, int] = {}
        self._live: list[Callable[[], None]] = []
        self._live_at = 0.0
        self._synced_at = 0.0
        self._sync_later: asyncio.TimerHandle | None = None
        #: (metric, *labels) -> its child: prometheus-client's labels() validates and locks
        #: on every call; the label sets are bounded (see above), so this map is too
        self._children: dict[tuple[object, ...], Any] = {}

    def carry(self, name: str, read: Callable[[], int], counter: Counter) -> None:
        """Feed ``counter`` with the increases of a running total kept elsewhere."""
        self._totals[name] = (read, counter)
        self._carried[name] = 0

    def live(self, update: Callable[[], None]) -> None:
        """Run ``update`` (which sets gauges) before each scrape and now and then."""
        self._live.append(update)

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def _sync_soon(self) -> None:
        """After a request: the carried totals at most every ``_SYNC_EVERY_S``, and a
        timer for the last deltas of a burst (a scrape syncs at once anyway)."""
        clock = time.monotonic()
        if clock - self._synced_at >= _SYNC_EVERY_S:
            self.sync()
            return
        if self._sync_later is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.sync()
                return
            self._sync_later = loop.call_later(_SYNC_EVERY_S, self.sync)

    def sync(self, *, force: bool = False) -> None:
        if self._sync_later is not None:
            self._sync_later.cancel()
            self._sync_later = None
        self._synced_at = time.monotonic()
        for name, (read, counter) in self._totals.items():
            now = read()
            if now != self._carried[name]:
                counter.inc(max(0, now - self._carried[name]))
                self._carried[name] = now
        clock = time.monotonic()
        if force or clock - self._live_at >= _GAUGE_EVERY_S:
            self._live_at = clock
            for update in self._live:
                update()

    def policy_in_force(self, version: str, digest: str) -> None:
        if self._policy_now != (version, digest):
            self._policy_info.clear()
            self._policy_info.labels(version, digest).set(1)
            self._policy_now = (version, digest)

    def observe(self, d: Decision, seconds: float) -> None:
        child = self.child
        child(self.requests, d.route, d.method, d.outcome).inc()
        child(self.duration, d.route, d.outcome).observe(seconds)
        module = d.module or ""
        if d.outcome == REFUSED:
            for reason in d.reasons:
                child(self.refusals, reason, module).inc()
        if d.fields_withheld:
            child(self.withheld, module).inc(sum(d.fields_withheld.values()))
        for rule, n in d.shadowed.items():
            child(self.shadowed, rule).inc(n)
        self._sync_soon()

    def close(self) -> None:
        """This process stops serving: in multiprocess mode its live gauges (queue depth,
        the policy in force) leave the aggregate (a worker killed outright cannot say so;
        its gauges stay until the directory is removed)."""
        if multiprocess_dir() is not None:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def render(self) -> bytes:
        self.sync(force=True)
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=merged)
        return generate_latest(merged)


class MeteredUpstream:
    """An ``Upstream`` that times each call until the answer's head and counts failures."""

    def __init__(self, inner: Upstream, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    async def send(self, method: str, url: str, headers: Headers, body: bytes) -> UpstreamResponse:
        started = time.perf_counter()
        try:
            resp = await self.inner.send(method, url, headers, body)
        except GatewayError as exc:
            self._metrics.upstream_errors.labels(_kind(exc)).inc()
            raise
        status_class = _CLASSES.get(resp.status // 100) or f"{resp.status // 100}xx"
        m = self._metrics
        m.child(m.upstream_latency, status_class).observe(time.perf_counter() - started)
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


_CLASSES = {n: f"{n}xx" for n in range(10)}


def _kind(exc: GatewayError) -> str:
    """``GATEWAY_UPSTREAM_TIMEOUT`` -> ``upstream_timeout``: a closed set of codes."""
    return exc.code.removeprefix("GATEWAY_").lower()
