"""The ASGI app: the gateway's own endpoints, the proxy corridor, and the lifespan that owns
the upstream client, the metadata cache and the audit trail.

The proxy path is a plain ASGI callable (no per-request routing or Request objects), since
every microsecond here is paid on every CRM call. ``/_gateway/...`` is a small Starlette
app and is never forwarded.

Before a request reaches the corridor, the edge refuses (CRM envelope, one audit entry,
``Connection: close`` when the body was not read through): a request head over
``max_header_bytes`` (431), one the two uvicorn parsers could frame differently or that asks
for a protocol upgrade or names a host not served (400, ``check_head``), more requests than
``max_concurrent_requests`` in flight (503 with ``Retry-After``, never queued), a body
declared or grown over ``max_request_body_bytes`` (413), one not complete within
``body_read_timeout_seconds`` (408), and one cut short by the client (never forwarded).

A request's one audit entry is written before its reply leaves (a request the HTTP parser
refused included, ``gateway.http1``), except for a body made while it is sent
(``Reply.produced``: an upstream body checked on the way, a bulk export): its entry is
written when it ends, before its last chunk (``_send_produced``); and except for a body
that turned out malformed half-way, whose refusal the parser sends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from gateway.audit import AuditTrail
from gateway.audit.config import trail_from_settings
from gateway.audit.scrub import CLIENT_REQUEST_ID
from gateway.crm.request import METHODS, canonicalize
from gateway.decision import CANCELLED, ERROR, REFUSED, Decision
from gateway.errors import (
    AuditUnavailable,
    BodyTimeout,
    BodyTooLarge,
    GatewayError,
    InvalidData,
    InvalidUrl,
    MethodNotAllowed,
    Overloaded,
    Reason,
)
from gateway.forward import JSON_TYPE
from gateway.http1 import PARSER_REFUSAL
from gateway.keys import load_or_create_secret
from gateway.metadata import MetadataCache
from gateway.metrics import CONTENT_TYPE as METRICS_TYPE
from gateway.metrics import MeteredUpstream, Metrics
from gateway.pipeline import Pipeline
from gateway.policy import Policy
from gateway.policy_store import PolicyStore
from gateway.readiness import Readiness
from gateway.serving import check_head, default_hosts
from gateway.settings import Settings
from gateway.types import Produced, Reply
from gateway.upstream import BreakerUpstream, Upstream, make_upstream

log = structlog.get_logger("gateway")


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        upstream: Upstream | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.settings = settings
        policy = settings.policy
        for key in policy.legacy:
            log.warning("policy_key_moved_to_settings", key=key)
        self.secret = load_or_create_secret(settings.secret_file, settings.secret)
        self.metrics = Metrics()
        self.upstream = MeteredUpstream(
            upstream
            or BreakerUpstream(
                make_upstream(
                    settings.transport,
                    settings.connect_timeout_s,
                    settings.read_timeout_s,
                    settings.max_upstream_connections,
                    settings.pool_timeout_s,
                    settings.upstream_proxy,
                ),
                settings.breaker_failures,
                settings.breaker_cooldown_s,
            ),
            self.metrics,
        )
        self.default_hosts = default_hosts(settings.host)
        self.in_flight = 0
        self.metadata = MetadataCache(
            self.upstream,
            settings.upstream,
            ttl=policy.metadata_ttl_s,
            max_stale=policy.metadata_max_stale_s,
        )
        self.audit = audit or trail_from_settings(settings, self.secret)
        self._meter_sources()
        self.readiness = Readiness(self)
        self.pipeline = Pipeline(
            upstream=self.upstream,
            upstream_url=settings.upstream,
            upload_url=settings.upload_upstream,
            metadata=self.metadata,
            policy=policy,
            secret=self.secret,
            exports=settings.max_concurrent_exports,
        )
        self.policies = PolicyStore(
            settings.policy_path,
            policy,
            self._use_policy,
            lambda fields: self.audit.record(fields, event="policy_reload"),
        )
        m = self.metrics
        m.carry("policy_applied", lambda: self.policies.reloads, m.policy_reloads.labels("applied"))
        m.carry(
            "policy_rejected", lambda: self.policies.rejected, m.policy_reloads.labels("rejected")
        )
        m.live(lambda: m.policy_in_force(self.pipeline.policy.version, self.pipeline.policy.digest))
        self.admin = Starlette(
            routes=[
                Route("/_gateway/health", self.health),
                Route("/_gateway/ready", self.ready),
                Route("/_gateway/metrics", self.render_metrics),
            ],
            lifespan=self.lifespan,
            exception_handlers={HTTPException: _admin_error},
        )

    def _meter_sources(self) -> None:
        m, stats, audit = self.metrics, self.metadata.stats, self.audit
        m.carry("hit", lambda: stats.hits, m.metadata.labels("hit"))
        m.carry("miss", lambda: stats.misses, m.metadata.labels("miss"))
        m.carry("refresh", lambda: stats.fetches, m.metadata.labels("refresh"))
        m.carry("refresh_failed", lambda: stats.failures, m.metadata.labels("refresh_failed"))
        m.carry("stale_served", lambda: stats.stale_served, m.metadata.labels("stale_served"))
        m.carry("audit_dropped", lambda: audit.dropped, m.audit_dropped)
        m.carry("audit_written", lambda: audit.written, m.audit_written)
        m.live(lambda: m.metadata_age.set(self.metadata.oldest_age()))
        m.live(lambda: m.audit_queue.set(audit.queue_depth))
        audit.on_fsync = m.fsync.observe

    def drain(self) -> None:
        """Shutdown has begun: ``/ready`` answers 503 from now on."""
        self.readiness.draining = True

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.audit.start()
        try:
            async with self.policies.running():
                yield
        finally:
            # uvicorn has drained in-flight requests (bounded by its graceful shutdown
            # timeout) and cancelled the rest: let those write their entries, then close
            # the trail, which flushes and checkpoints what they wrote.
            for _ in range(200):
                if not self.in_flight:
                    break
                await asyncio.sleep(0.01)
            await self.upstream.aclose()
            await self.audit.close()
            self.metrics.close()

    def _use_policy(self, policy: Policy) -> None:
        """A reloaded policy: new requests take the corridor built for it."""
        self.pipeline = self.pipeline.with_policy(policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_gateway/"):
            await self.proxy(scope, receive, send)
        else:
            await self.admin(scope, receive, send)

    # -- gateway endpoints --------------------------------------------------------------

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, _request: Request) -> Response:
        checks = await self.readiness.check()
        ok = all(c == "ok" for c in checks.values())
        body = {
            "status": "ready" if ok else "not_ready",
            "checks": checks,
            "problems": [f"{name}: {c}" for name, c in checks.items() if c != "ok"],
            "audit_dropped": self.audit.dropped,
            "policy_version": self.pipeline.policy.version,
            "policy_hash": self.pipeline.policy.digest or None,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def render_metrics(self, _request: Request) -> Response:
        return Response(self.metrics.render(), media_type=METRICS_TYPE)

    def parser_refused(self, request_id: str, error: GatewayError) -> asyncio.Task[bool]:
        """The audit entry, metrics and log line for a request the HTTP parser refused;
        ``gateway.http1`` answers it once the task is done. Its method and path were not
        read. The task's result: whether the entry could be written (if not, the answer
        is the audit trail's 503, as for any request)."""
        policy = self.pipeline.policy
        decision = Decision(
            request_id, "OTHER", policy_version=policy.version, policy_hash=policy.digest or None
        )
        _error_reply(error, decision)
        decision.status = error.status_code
        return asyncio.get_running_loop().create_task(self._account(decision))

    async def _account(self, decision: Decision) -> bool:
        recorded = True
        try:
            await self.audit.record(decision.as_dict())
        except AuditUnavailable as exc:
            log.error("audit_unavailable", request_id=decision.request_id)
            decision.status = _error_reply(exc, decision).status  # the answer is its 503
            recorded = False
        self._observe(decision, decision.status, 0.0)
        return recorded

    # -- the proxy ------------------------------------------------------------------------

    async def proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        # The entry's key is always the gateway's own id; a client's X-Request-Id is kept
        # beside it (and answered back) only when it is short and plain.
        client_rid = next(
            (v.decode("latin-1") for n, v in raw_headers if n.lower() == b"x-request-id"), ""
        )
        pipeline = self.pipeline  # the request keeps it, whatever a reload does meanwhile
        policy = pipeline.policy
        decision = Decision(
            uuid.uuid4().hex,
            _method_name(scope["method"]),
            policy_version=policy.version,
            policy_hash=policy.digest or None,
        )
        if CLIENT_REQUEST_ID.fullmatch(client_rid):
            decision.client_request_id = client_rid
        try:
            declared = check_head(
                scope,
                self.settings.max_header_bytes,
                policy.max_request_body,
                policy.allowed_hosts or self.default_hosts,
            )
            if self.in_flight >= self.settings.max_concurrent_requests:
                # Refused at once: a queue would only make every waiting client time out.
                raise Overloaded("Too many requests are in flight; retry later.")
        except GatewayError as exc:
            # A body the parser refused in the same read was answered by it (gateway.http1):
            # the entry says what the client got.
            refused = scope.get(PARSER_REFUSAL)
            error = refused if isinstance(refused, GatewayError) else exc
            await self._finish(_error_reply(error, decision), decision, started, send, close=True)
            return
        self.in_flight += 1
        try:
            reply, read_through = await self._through(
                pipeline, scope, receive, decision, declared
            )
            await self._finish(
                reply, decision, started, send, close=not read_through, receive=receive
            )
        except asyncio.CancelledError:
            if not decision.recorded:
                await self._cancelled(decision, started, send)
            raise
        finally:
            self.in_flight -= 1

    async def _cancelled(self, decision: Decision, started: float, send: Send) -> None:
        """uvicorn cancels what is still running at the drain deadline: the request gets
        its audit entry (outcome ``cancelled``; the CRM may have acted on it, see
        ``upstream_status``) and, if no answer has started, a 503 the client can retry."""
        exc = Overloaded(
            "The gateway is shutting down; retry later.",
            code="GATEWAY_SHUTTING_DOWN",
            reason=Reason.CANCELLED,
        )
        # A produced body (an export) whose head went out keeps that status: the client
        # holds a cut-off body, not a 503. Otherwise the 503 is its answer.
        begun = decision.status
        reply = _error_reply(exc, decision)
        decision.outcome = CANCELLED
        decision.status = begun or reply.status
        decision.duration_ms = (time.perf_counter() - started) * 1000
        decision.recorded = True
        try:
            await self.audit.record(decision.as_dict())
        except AuditUnavailable:
            log.error("audit_unavailable", request_id=decision.request_id)
        if not begun:
            _stamp(reply, decision)
            reply.headers.append(("connection", "close"))
            with contextlib.suppress(Exception):  # the client may be gone
                await _send_reply(reply, send)
        self._observe(decision, decision.status, time.perf_counter() - started)

    async def _through(
        self,
        pipeline: Pipeline,
        scope: Scope,
        receive: Receive,
        decision: Decision,
        declared: bool = True,
    ) -> tuple[Reply, bool]:
        """The corridor: the reply, and whether the request body was read through."""
        policy = pipeline.policy
        read_through = False
        try:
            if not self.audit.accepting and self.audit.blocks:
                # Refuse before anything reaches the CRM: it could not be recorded. (The
                # trail's own on_full: a reload does not change how it was built.)
                raise AuditUnavailable()
            try:
                body = await _read_body(
                    receive,
                    policy.max_request_body,
                    self.settings.body_read_timeout_s,
                    declared=declared,
                )
            except InvalidData as exc:
                # The parser refused the body half-way (gateway.http1) and has answered.
                refused = scope.get(PARSER_REFUSAL)
                raise (refused if isinstance(refused, GatewayError) else exc) from None
            read_through = True
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
            req = canonicalize(
                scope["method"],
                raw_path.split(b"?", 1)[0],
                scope.get("query_string", b""),
                scope["headers"],
                body,
                policy.routes,
            )
            reply = await pipeline.handle(req, decision)
        except GatewayError as exc:
            reply = _error_reply(exc, decision)
        except Exception as exc:  # fail closed: never the upstream's body, never a traceback
            log.error("internal_error", request_id=decision.request_id, error=type(exc).__name__)
            reply = _error_reply(GatewayError(), decision)
        return reply, read_through

    async def _finish(
        self,
        reply: Reply,
        decision: Decision,
        started: float,
        send: Send,
        *,
        close: bool,
        receive: Receive | None = None,
    ) -> None:
        decision.status = reply.status
        if reply.produced is None:
            reply = await self._record(reply, decision, started)
        _stamp(reply, decision)
        if close:
            # Body bytes left unread on the connection must never be parsed as a request.
            reply.headers.append(("connection", "close"))
        try:
            if reply.produced is None:
                await _send_reply(reply, send)
            else:
                assert receive is not None
                await self._send_produced(reply, reply.produced, decision, started, send, receive)
        finally:
            self._observe(decision, reply.status, time.perf_counter() - started)

    def _observe(self, decision: Decision, status: int, seconds: float) -> None:
        """Metrics and the request's log line, once its answer is written (or given up)."""
        self.metrics.observe(decision, seconds)
        (log.warning if status >= 500 else log.info)(
            "request",
            request_id=decision.request_id,
            method=decision.method,
            route=decision.route,
            module=decision.module,
            status=status,
            upstream_status=decision.upstream_status,
            outcome=decision.outcome,
            reasons=decision.reasons,
            duration_ms=round(seconds * 1000, 3),
        )


    async def _record(self, reply: Reply, decision: Decision, started: float) -> Reply:
        """The audit entry, written before the reply leaves: the reply, or the error that
        takes its place when the entry cannot be written."""
        decision.duration_ms = (time.perf_counter() - started) * 1000
        decision.recorded = True
        try:
            await self.audit.record(decision.as_dict())
        except AuditUnavailable as exc:
            # Nothing goes out unrecorded (the write, if any, already reached the CRM).
            return _error_reply(exc, decision)
        return reply

    async def _send_produced(
        self,
        reply: Reply,
        produced: Produced,
        decision: Decision,
        started: float,
        send: Send,
        receive: Receive,
    ) -> None:
        """A body made while it is sent (a bulk export): only its end can tell how it went
        (values withheld, a failure half-way), so its one audit entry is written then, and
        its last chunk, which completes it, leaves only after the entry is written. A
        failure half-way, a client gone or an entry that cannot be written leaves the body
        cut short and the connection closed (uvicorn closes it when the app returns without
        completing the body): the client never holds a complete-looking file."""
        # The request body was read through: what comes next is the client going away.
        gone = asyncio.ensure_future(receive())
        held: bytes | None = None
        complete = False
        try:
            start = {"type": "http.response.start", "status": reply.status, "headers": _raw(reply)}
            await send(start)
            async for chunk in produced.chunks():
                if gone.done():
                    raise _ClientGone()
                if held is not None:
                    await send({"type": "http.response.body", "body": held, "more_body": True})
                held = chunk
            complete = not gone.done()
            if not complete:
                raise _ClientGone()
        except _ClientGone:
            decision.outcome = ERROR
            decision.note(Reason.CLIENT_DISCONNECTED)
        except GatewayError as exc:
            decision.outcome = ERROR
            decision.note(exc.reason)
        except Exception as exc:
            log.error("internal_error", request_id=decision.request_id, error=type(exc).__name__)
            decision.outcome = ERROR
            decision.note(Reason.ERROR)
        finally:
            gone.cancel()
            await produced.aclose()
        decision.duration_ms = (time.perf_counter() - started) * 1000
        decision.recorded = True
        try:
            await self.audit.record(decision.as_dict())
        except AuditUnavailable as exc:
            decision.outcome = ERROR  # for the log and the metrics: cut short, unrecorded
            decision.note(exc.reason)
            return
        if complete:
            await send({"type": "http.response.body", "body": held or b"", "more_body": False})


async def _admin_error(_request: Request, exc: Exception) -> Response:
    """``/_gateway/nope`` and a wrong method answer in the CRM envelope like every error."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error = {404: InvalidUrl, 405: MethodNotAllowed}.get(status, GatewayError)()
    return Response(error.body(), status_code=error.status_code, media_type=JSON_TYPE)


class _ClientGone(Exception):
    pass


def _method_name(method: str) -> str:
    """The method for the audit trail and logs: a known one, or a placeholder."""
    return method if method in METHODS else "OTHER"


def _stamp(reply: Reply, decision: Decision) -> None:
    reply.headers.append(("x-request-id", decision.client_request_id or decision.request_id))
    reply.headers.append(("x-gateway-request-id", decision.request_id))


def _error_reply(exc: GatewayError, decision: Decision) -> Reply:
    decision.outcome = REFUSED if 400 <= exc.status_code < 500 else ERROR
    decision.note(exc.reason)
    headers = [("content-type", JSON_TYPE)]
    if isinstance(exc, Overloaded):
        headers.append(("retry-after", str(exc.retry_after)))
    return Reply(exc.status_code, headers, exc.body())


async def _read_body(
    receive: Receive, limit: int, timeout: float, *, declared: bool = True
) -> bytes:
    """The whole body, within ``timeout`` seconds and ``limit`` bytes, or an error.

    A client that goes away first leaves a body that may be cut short: it is never
    forwarded as if complete. (uvicorn reports a disconnect even after a complete body if
    it came before the first ``receive``; nobody is left to answer then either.)

    ``declared``: the head has a Content-Length or Transfer-Encoding. Without one, uvicorn
    ended the message with its head, so the first receive answers at once and needs no
    timer (most requests are such GETs); anything more still takes the timed loop."""
    parts: list[bytes] = []
    size = 0
    if not declared:
        size, more = _take(await receive(), parts, size, limit)
        if not more:
            return b"".join(parts)
    try:
        async with asyncio.timeout(timeout):
            more = True
            while more:
                size, more = _take(await receive(), parts, size, limit)
            return b"".join(parts)
    except TimeoutError:
        raise BodyTimeout() from None


def _take(message: Message, parts: list[bytes], size: int, limit: int) -> tuple[int, bool]:
    """One ASGI receive message into ``parts``: the size so far, and whether more follows."""
    if message["type"] == "http.disconnect":
        raise InvalidData(
            details={"reason": "the client went away before its body was complete"},
            reason=Reason.CLIENT_DISCONNECTED,
        )
    chunk: bytes = message.get("body", b"")
    size += len(chunk)
    if size > limit:
        raise BodyTooLarge()
    parts.append(chunk)
    return size, bool(message.get("more_body", False))


def _raw(reply: Reply) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in reply.headers]


async def _send_reply(reply: Reply, send: Send) -> None:
    raw_headers = _raw(reply)
    raw_headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": reply.body})


def create_app(settings: Settings, **kwargs: Any) -> Gateway:
    return Gateway(settings, **kwargs)
