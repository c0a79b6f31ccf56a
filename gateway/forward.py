"""Sending a canonical request upstream, and the three ways an answer comes back: passed
through (streamed), rewritten as JSON, or read by the gateway itself.

The upstream request is built from the ``CanonicalRequest`` only (its path, query,
headers and body): what the guards checked is what the CRM receives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.crm.request import CanonicalRequest
from gateway.crm.routes import Kind
from gateway.decision import REDACTED, Decision
from gateway.errors import UnreadableUpstream
from gateway.policy import Policy
from gateway.privacy.redact import Counts
from gateway.types import Reply
from gateway.upstream import Headers, Upstream, UpstreamResponse, decode_body

JSON_TYPE = "application/json;charset=UTF-8"
# Response headers that no longer describe a rewritten body.
STALE_AFTER_REWRITE = frozenset(
    {"content-encoding", "content-type", "etag", "content-md5", "digest"}
)


def has_json_type(headers: Headers) -> bool:
    for n, v in headers:
        if n == "content-type":
            media = v.split(";", 1)[0].strip().lower()
            return media == "application/json" or media.endswith("+json") or media == "text/json"
    return False


def withheld_header(counts: Counts) -> str:
    if not counts:
        return "0"
    return f"{sum(counts.values())}; fields={','.join(sorted(counts))}"


def json_reply_of(status: int, body: Any) -> Reply:
    return Reply(status, [("content-type", JSON_TYPE)], orjson.dumps(body))


class Forwarder:
    def __init__(
        self, upstream: Upstream, upstream_url: str, upload_url: str, policy: Policy
    ) -> None:
        self.upstream = upstream
        self.upstream_url = upstream_url
        self.upload_url = upload_url
        self.policy = policy

    @staticmethod
    def headers(req: CanonicalRequest, request_id: str) -> Headers:
        """The request's end-to-end headers, plus the two the gateway sets itself."""
        return [*req.headers, ("accept-encoding", "gzip, identity"), ("x-request-id", request_id)]

    async def send(self, req: CanonicalRequest, decision: Decision) -> UpstreamResponse:
        base = self.upload_url if req.kind is Kind.UPLOAD else self.upstream_url
        url = base + req.path
        query = req.query
        if query:
            url += "?" + query
        resp = await self.upstream.send(
            req.method, url, self.headers(req, decision.request_id), req.body
        )
        decision.upstream_status = resp.status
        return resp

    async def passthrough(self, req: CanonicalRequest, decision: Decision) -> Reply:
        resp = await self.send(req, decision)
        out = list(resp.headers)
        gunzip = False
        if (resp.header("content-encoding") or "").lower() == "gzip" and not req.accepts_gzip:
            gunzip = True
            out = [(n, v) for n, v in out if n != "content-encoding"]
        elif resp.content_length is not None:
            out.append(("content-length", resp.content_length))
        return Reply(resp.status, out, stream=resp, gunzip=gunzip)

    async def json_reply(
        self, resp: UpstreamResponse, rewrite: Callable[[Any, Counts], None], decision: Decision
    ) -> Reply:
        """The upstream's JSON answer after ``rewrite``: a body that cannot be read is
        refused, never passed on."""
        limit = self.policy.max_response_body
        raw = await resp.read(limit)
        hdrs = [(n, v) for n, v in resp.headers if n not in STALE_AFTER_REWRITE]
        if resp.status in (204, 304) or (not raw and resp.status < 300):
            return Reply(resp.status, hdrs)
        if not has_json_type(resp.headers):
            raise UnreadableUpstream()
        try:
            body = orjson.loads(decode_body(raw, resp.header("content-encoding"), limit))
        except orjson.JSONDecodeError as exc:
            raise UnreadableUpstream() from exc
        counts: Counts = {}
        if resp.status < 300 or (isinstance(body, dict) and "data" in body):
            rewrite(body, counts)
            decision.outcome = REDACTED if counts else decision.outcome
        decision.withheld(counts)
        hdrs += [("content-type", JSON_TYPE), ("x-privacy-withheld", withheld_header(counts))]
        return Reply(resp.status, hdrs, orjson.dumps(body))

    async def read_json(self, resp: UpstreamResponse) -> Any:
        """A JSON answer the gateway reads itself (a write's per-record entries)."""
        limit = self.policy.max_response_body
        raw = decode_body(await resp.read(limit), resp.header("content-encoding"), limit)
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UnreadableUpstream() from exc
