"""Sending a canonical request upstream, and the three ways an answer comes back: passed
through (streamed), rewritten as JSON, or read by the gateway itself.

The upstream request is built from the ``CanonicalRequest`` only (its path, query,
headers and body): what the guards checked is what the CRM receives.
"""

from __future__ import annotations

import gc
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from gateway.crm.request import CanonicalRequest
from gateway.crm.routes import RECORD_BEARING, Kind
from gateway.decision import REDACTED, Decision
from gateway.errors import BodyTooLarge, UnreadableUpstream
from gateway.policy import Policy
from gateway.privacy.errors_body import request_values, scrub_answer
from gateway.privacy.redact import Counts, Tally
from gateway.privacy.status_body import scrub_status
from gateway.privacy.view_body import withhold_settings_criteria
from gateway.rules import Rule, withholds
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


_VALIDATORS = frozenset({"if-none-match", "if-match", "if-range"})
#: kinds whose answers are bytes, streamed (checked, not parsed)
_BINARY = frozenset({Kind.BLOB, Kind.BULK_READ_RESULT})
#: answers that carry no record, checked by what they may hold (privacy/status_body.py)
_STATUS = frozenset(
    {Kind.JOB_STATUS, Kind.UPLOAD, Kind.BULK_READ_CREATE, Kind.BULK_WRITE_CREATE}
)

#: configuration (org, users, settings): no record, but criteria that may hold a record's
#: values (privacy/view_body.py), judged by no field
_CONFIGURATION = frozenset({Kind.METADATA, Kind.SETTINGS})


def _has_errors(body: Any, status: int) -> bool:
    if not isinstance(body, dict):
        return False
    if body.get("status") == "error" or status >= 400:
        return True
    data = body.get("data")
    if isinstance(data, list):
        for e in data:  # a loop, not any(): a 200-record page runs it 200 times
            if isinstance(e, dict) and e.get("status") == "error":
                return True
    return False


def echoed_values(req: CanonicalRequest) -> frozenset[str]:
    """What the request carried, for scrubbing the CRM's errors (``errors_body.py``)."""
    try:
        body = orjson.loads(req.body) if req.body.strip() else None
    except orjson.JSONDecodeError:
        body = None
    return request_values(req.params, body)


async def _checked(
    chunks: AsyncIterator[bytes], gzip: bool, decode: bool, limit: int
) -> AsyncIterator[bytes]:
    """The body's chunks, refused on the way when the decoded size passes ``limit`` or a
    gzip stream is corrupt or ends early (the connection is then cut: a client never
    receives a complete-looking body)."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
    size = 0
    async for chunk in chunks:
        if decoder is None:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge("The CRM's answer is larger than the gateway passes on.")
            yield chunk
            continue
        try:
            data = decoder.decompress(chunk, limit - size + 1)
        except zlib.error as exc:
            raise UnreadableUpstream() from exc
        size += len(data)
        if size > limit or decoder.unconsumed_tail:
            raise BodyTooLarge("The CRM's answer expands beyond what the gateway passes on.")
        out = data if decode else chunk
        if out:
            yield out
    if decoder is not None:
        rest = decoder.flush()
        if not decoder.eof:
            raise UnreadableUpstream()
        if decode and rest:
            yield rest


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
        """The request's end-to-end headers, plus the two the gateway sets itself. On a
        record-bearing read, validators of the whole answer are dropped: a 304 to a guessed
        ETag would confirm values the gateway withholds."""
        sent = req.headers
        if req.kind in RECORD_BEARING:
            sent = tuple((n, v) for n, v in sent if n not in _VALIDATORS)
        return [*sent, ("accept-encoding", "gzip, identity"), ("x-request-id", request_id)]

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
        if 300 <= resp.status < 400 and resp.status != 304:
            # A redirect would lead the client around the gateway (and the CRM's API does
            # not redirect): never passed on.
            await resp.aclose()
            raise UnreadableUpstream()
        return resp

    async def passthrough(self, req: CanonicalRequest, decision: Decision) -> Reply:
        """An answer the gateway does not rewrite is still checked before it goes on: a
        JSON answer is read whole (bounded), decoded, parsed and its CRM errors scrubbed;
        bytes (a photo, an attachment, an export of an org without GDPR) are streamed with
        a known encoding, a bounded decoded size and a complete gzip stream."""
        resp = await self.send(req, decision)
        if req.kind in _BINARY:
            return self._stream_checked(req, resp)
        raw, parsed = await self._json(resp, typed=True)
        hdrs = [(n, v) for n, v in resp.headers if n != "content-encoding"]
        if parsed is None:
            return Reply(resp.status, hdrs, raw)
        errors = _has_errors(parsed, resp.status)
        if errors:
            parsed = scrub_answer(
                parsed,
                echoed_values(req),
                failed=resp.status >= 400,
                fields=req.kind not in _CONFIGURATION,
            )
        if req.kind in _STATUS or req.kind in _CONFIGURATION:
            # What the gateway cannot judge is withheld in every mode (no rule's to pass),
            # errors' scrubbed details included. Sent as judged, re-serialised: a member
            # given twice keeps the judged copy.
            if not isinstance(parsed, dict):
                raise UnreadableUpstream()
            if req.kind in _CONFIGURATION:
                n = withhold_settings_criteria(parsed)
            else:
                n = scrub_status(parsed, failed=resp.status >= 400)
            withheld = {"unknown": n} if n else {}
            if withheld:
                decision.withheld(withheld)
                decision.outcome = REDACTED
            hdrs.append(("x-privacy-withheld", withheld_header(withheld)))
        elif not errors:
            return Reply(resp.status, hdrs, raw)
        raw = orjson.dumps(parsed)
        hdrs = [(n, v) for n, v in hdrs if n not in STALE_AFTER_REWRITE]
        hdrs.append(("content-type", JSON_TYPE))
        return Reply(resp.status, hdrs, raw)

    def _stream_checked(self, req: CanonicalRequest, resp: UpstreamResponse) -> Reply:
        coding = (resp.header("content-encoding") or "identity").strip().lower()
        if coding not in ("identity", "gzip"):
            raise UnreadableUpstream()
        gzip = coding == "gzip"
        decode_for_client = gzip and not req.accepts_gzip
        out = list(resp.headers)
        if decode_for_client:
            out = [(n, v) for n, v in out if n != "content-encoding"]
        elif resp.content_length is not None:
            out.append(("content-length", resp.content_length))
        chunks = _checked(resp.chunks, gzip, decode_for_client, self.policy.max_response_body)
        return Reply(resp.status, out, produced=_Checked(resp, chunks))


    async def json_reply(
        self,
        resp: UpstreamResponse,
        rewrite: Callable[[Any, Counts], None],
        decision: Decision,
        req: CanonicalRequest | None = None,
    ) -> Reply:
        """The upstream's JSON answer after ``rewrite``: a body that cannot be read is
        refused, never passed on. CRM errors in it are scrubbed of what ``req`` carried."""
        if resp.status in (204, 304):
            await resp.aclose()
            return Reply(
                resp.status, [(n, v) for n, v in resp.headers if n not in STALE_AFTER_REWRITE]
            )
        raw = await self._read(resp)
        # Parse, rewrite and dump with the cyclic collector paused: JSON makes no cycles
        # (every object goes when the answer is dumped), and a 200-record page's
        # thousands of new containers would otherwise set off collections that walk
        # them, young and alive, many times over (no await in here: the pause ends
        # before any other request runs).
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return self._rewritten(resp, raw, rewrite, decision, req)
        finally:
            if paused:
                gc.enable()

    def _rewritten(
        self,
        resp: UpstreamResponse,
        raw: bytes,
        rewrite: Callable[[Any, Counts], None],
        decision: Decision,
        req: CanonicalRequest | None,
    ) -> Reply:
        hdrs = [(n, v) for n, v in resp.headers if n not in STALE_AFTER_REWRITE]
        body = self._parse(resp, raw, typed=True)
        if body is None:
            if resp.status < 300:
                return Reply(resp.status, hdrs)
            raise UnreadableUpstream()  # an error without a body the gateway can show
        counts = Tally()
        rewrite(body, counts)  # whatever the status: an error body is checked too
        if not withholds(self.policy.rule_mode(Rule.REDACT), decision, counts):
            if not _has_errors(body, resp.status):
                # Checked the same way, then the CRM's own answer goes on, as the gateway
                # read it: bytes its parse did not keep (a member given twice, whose first
                # a client may keep) must not pass unjudged.
                hdrs += [("content-type", JSON_TYPE)]
                return Reply(resp.status, hdrs, orjson.dumps(orjson.loads(raw)))
            # An error is scrubbed of what the request carried in every mode (no rule
            # of the policy's): the CRM's own body, unredacted, scrubbed.
            body, counts = orjson.loads(raw), Tally()
        decision.outcome = REDACTED if counts else decision.outcome
        if _has_errors(body, resp.status):
            echoed = echoed_values(req) if req is not None else frozenset()
            body = scrub_answer(body, echoed, failed=resp.status >= 400)
        hdrs += [("content-type", JSON_TYPE), ("x-privacy-withheld", withheld_header(counts))]
        return Reply(resp.status, hdrs, orjson.dumps(body))

    async def read_json(self, resp: UpstreamResponse) -> Any:
        """A JSON answer the gateway reads itself (a write's per-record entries)."""
        return (await self._json(resp, typed=False))[1]

    async def _json(self, resp: UpstreamResponse, *, typed: bool) -> tuple[bytes, Any]:
        """The answer, read whole (bounded) and decoded, and its JSON (None when empty).
        ``typed``: an answer that does not say it is JSON is refused. What cannot be read
        is refused, never passed on."""
        raw = await self._read(resp)
        return raw, self._parse(resp, raw, typed=typed)

    async def _read(self, resp: UpstreamResponse) -> bytes:
        limit = self.policy.max_response_body
        return decode_body(await resp.read(limit), resp.header("content-encoding"), limit)

    @staticmethod
    def _parse(resp: UpstreamResponse, raw: bytes, *, typed: bool) -> Any:
        if not raw.strip():
            return None
        if typed and not has_json_type(resp.headers):
            raise UnreadableUpstream()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UnreadableUpstream() from exc


class _Checked:
    """An upstream body passed on as it is checked (``Produced``): its audit entry is
    written when it ends, so a body cut off half-way is audited as the error it was."""

    def __init__(self, resp: UpstreamResponse, chunks: AsyncIterator[bytes]) -> None:
        self._resp = resp
        self._chunks = chunks

    def chunks(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        await self._resp.aclose()
