"""The front door of ``/crm/...``: request log, fault injection, auth, version check, and
the canonical spelling of path keywords (routing is case-insensitive, as the CRM's may be).
Composite sub-requests come through here too, marked ``SUBREQUEST``: they are checked and
routed like any request but neither logged nor faulted (the composite call was).

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware) because it must read the
whole body for the log and then replay it to the route, and because it is the last line
that turns an unexpected exception into the CRM's JSON envelope instead of a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .paths import canonical_path
from .responses import JSON_TYPE, SandboxError, dumps, error_envelope, invalid_url
from .schema import VERSIONS
from .store import FaultRule, Sandbox

log = logging.getLogger("gateway.sandbox")

INVALID_TOKENS = frozenset({"invalid", "org2-invalid"})
#: scope key marking a composite sub-request run in-process
SUBREQUEST = "sandbox.subrequest"


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _version_ok(path: str) -> bool:
    parts = path.split("/")  # ["", "crm", v | "bulk", ...]
    if len(parts) < 3:
        return False
    version = parts[3] if parts[2] == "bulk" and len(parts) > 3 else parts[2]
    return version in VERSIONS


def auth_error(headers: dict[str, str]) -> SandboxError | None:
    header = headers.get("authorization")
    if not header:
        return SandboxError(401, "AUTHENTICATION_FAILURE", "Authentication failed")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "zoho-oauthtoken" or not token or token in INVALID_TOKENS:
        return SandboxError(401, "INVALID_TOKEN", "invalid oauth token")
    return None


async def _send(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    await response(scope, receive, send)


def _envelope_response(err: SandboxError) -> Response:
    return Response(dumps(err.envelope()), status_code=err.status, media_type=JSON_TYPE)


def _fault_response(rule: FaultRule) -> Response:
    headers = {"Content-Encoding": rule.content_encoding} if rule.content_encoding else {}
    body = orjson.dumps(rule.json) if rule.json is not None else (rule.body or "").encode("utf-8")
    return Response(
        body,
        status_code=rule.status or 200,
        media_type=rule.content_type or JSON_TYPE,
        headers=headers,
    )


class SandboxMiddleware:
    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        original: str = scope["path"]
        path = canonical_path(original)
        if not path.startswith("/crm/"):
            await self._guarded(scope, receive, send)
            return
        body = await _read_body(receive)
        headers = _headers(scope)
        sub = bool(scope.get(SUBREQUEST))
        if not sub:
            self._log(scope, headers, body)
        rule = None if sub else self._match_fault(scope, (original, path))
        if rule is not None:
            if rule.delay > 0:
                await asyncio.sleep(rule.delay)
            if rule.status is not None or rule.body is not None or rule.json is not None:
                await _send(_fault_response(rule), scope, receive, send)
                return
        err = auth_error(headers)
        if err is None and not _version_ok(path):
            err = invalid_url()
        if err is not None:
            await _send(_envelope_response(err), scope, receive, send)
            return
        routed = scope if path == original else {**scope, "path": path}
        await self._guarded(routed, _replay(body, receive), send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("sandbox handler failed")
            if not started:
                envelope = error_envelope("INTERNAL_ERROR", "Internal server error occurred.")
                response = Response(dumps(envelope), status_code=500, media_type=JSON_TYPE)
                await _send(response, scope, receive, send)

    def _log(self, scope: Scope, headers: dict[str, str], body: bytes) -> None:
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
        }
        try:
            entry["body"] = body.decode("utf-8")
            entry["body_encoding"] = "utf-8"
        except UnicodeDecodeError:
            entry["body"] = base64.b64encode(body).decode("ascii")
            entry["body_encoding"] = "base64"
        self.sandbox.requests.append(entry)

    def _match_fault(self, scope: Scope, paths: tuple[str, str]) -> FaultRule | None:
        """The first rule matching the method and the path as sent or as routed."""
        method = scope["method"].upper()
        for rule in self.sandbox.faults:
            if not any(rule.path_contains in p for p in paths):
                continue
            if rule.method is not None and rule.method != method:
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self.sandbox.faults.remove(rule)
            return rule
        return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the already-read body to the route once, then defer to the real channel."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
