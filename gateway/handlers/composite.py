"""Composite requests: each sub-request walks the corridor as if it were sent alone.

``POST /crm/{v}/__composite_requests`` carries up to five sub-requests. The gateway never
forwards the composite call itself: the CRM would run sub-requests the gateway could not
check. Each sub-request is canonicalised like a request of its own (with the composite
call's credentials), guarded, forwarded and rewritten by the same handlers, and the
answers are merged, in order, into the CRM's composite answer shape.

Refused whole, because their meaning cannot be kept when sub-requests run one by one:
``rollback_on_fail: true`` (the CRM would undo earlier sub-requests), references between
sub-requests (``@{sub_request_id:$.path}``), and a sub-request that is itself a composite
call, an upload or a bulk-read result (not JSON).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import orjson

from gateway.crm.request import CanonicalRequest, canonicalize, encode_query
from gateway.crm.routes import Kind
from gateway.decision import ERROR, REDACTED, REFUSED, Decision
from gateway.errors import GatewayError, InvalidData, NotSupported, UnreadableUpstream
from gateway.forward import json_reply_of
from gateway.jsonbody import loads_request, member
from gateway.types import Reply

MAX_SUBREQUESTS = 5
#: sub-request headers the CRM does not let a sub-request set
_FORBIDDEN_HEADERS = frozenset({"authorization", "x-crm-org"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+")
_HEADER_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_IN_COMPOSITE = frozenset({Kind.COMPOSITE, Kind.UPLOAD, Kind.BULK_READ_RESULT, Kind.BLOB})
_PRECEDENCE = {"forwarded": 0, REDACTED: 1, REFUSED: 2, ERROR: 3}

Corridor = Callable[[CanonicalRequest, Decision], Awaitable[Reply]]


async def composite(req: CanonicalRequest, decision: Decision, corridor: Corridor) -> Reply:
    body = loads_request(req.body)
    subs = body.get("__composite_requests") if isinstance(body, dict) else None
    if not isinstance(subs, list) or not 1 <= len(subs) <= MAX_SUBREQUESTS:
        raise InvalidData(details={"reason": "__composite_requests must hold 1 to 5 requests"})
    # The CRM reads the key in any letter case, and perhaps "true" as true: only false or
    # nothing is what running the sub-requests one by one keeps.
    if isinstance(body, dict) and member(body, "rollback_on_fail") not in (None, False):
        raise NotSupported(details={"reason": "rollback_on_fail cannot be kept"})
    if b"@{" in req.body:
        raise NotSupported(details={"reason": "references between sub-requests"})
    entries = []
    for sub in subs:
        sub_decision = Decision(
            decision.request_id,
            "OTHER",
            policy_version=decision.policy_version,
            policy_hash=decision.policy_hash,
        )
        try:
            sub_req = _sub_request(req, sub)
            sub_decision.method = sub_req.method
            if sub_req.kind in _NOT_IN_COMPOSITE:
                raise NotSupported(details={"reason": "not supported in a composite request"})
            reply = await corridor(sub_req, sub_decision)
            status, answer = reply.status, _json_of(reply)
        except GatewayError as exc:
            sub_decision.outcome = REFUSED if 400 <= exc.status_code < 500 else ERROR
            sub_decision.note(exc.reason)
            status, answer = exc.status_code, orjson.loads(exc.body())
        _merge(decision, sub_decision)
        entries.append(
            {
                "code": "SUCCESS",
                "details": {"response": {"status_code": status, "body": answer}},
                "message": "composite sub request executed successfully",
                "status": "success",
            }
        )
    return json_reply_of(200, {"__composite_requests": entries})


def _sub_request(parent: CanonicalRequest, sub: Any) -> CanonicalRequest:
    if not isinstance(sub, dict):
        raise InvalidData(details={"reason": "a sub-request must be an object"})
    method, uri = sub.get("method"), sub.get("uri")
    params, headers = sub.get("params") or {}, sub.get("headers") or {}
    if not isinstance(method, str) or not isinstance(uri, str):
        raise InvalidData(details={"reason": "a sub-request needs a method and a uri"})
    if not isinstance(params, dict) or not isinstance(headers, dict):
        raise InvalidData(details={"reason": "params and headers must be objects"})
    if any(str(k).lower() in _FORBIDDEN_HEADERS for k in headers):
        raise InvalidData(details={"reason": "a sub-request may not set its credentials"})
    # No parser has read these: a name must be an RFC 9110 token and a value hold no control
    # character, as on the wire (else the upstream client refuses them half-way through).
    if not all(
        _HEADER_NAME.fullmatch(str(k)) and not _HEADER_CTL.search(str(v))
        for k, v in headers.items()
    ):
        raise InvalidData(details={"reason": "a sub-request header is not a valid header"})
    path, _, inline = uri.partition("?")
    query = "&".join(
        q for q in (inline, encode_query((str(k), _param(v)) for k, v in params.items())) if q
    )
    inherited = [(n, v) for n, v in parent.headers if n != "content-type"]
    raw_headers = [
        *((n.encode("latin-1"), v.encode("latin-1")) for n, v in inherited),
        *((str(n).encode("latin-1"), str(v).encode("latin-1")) for n, v in headers.items()),
    ]
    payload = sub.get("body")
    raw_body = orjson.dumps(payload) if payload is not None else b""
    try:
        req = canonicalize(
            method.upper(), quote(path, safe="/%").encode(), query.encode(), raw_headers, raw_body
        )
    except UnicodeEncodeError:
        raise InvalidData(details={"reason": "a sub-request header is not latin-1"}) from None
    # The caller's X-Gateway-Key (never among the forwarded headers) names its client for
    # every sub-request: one request, one client, one audit entry naming its rule.
    if any(str(n).lower() == "x-gateway-key" for n in headers) and req.gateway_key != (
        parent.gateway_key
    ):
        raise InvalidData(
            details={"reason": "a sub-request cannot name another X-Gateway-Key than its request"}
        )
    return dataclasses.replace(req, gateway_key=parent.gateway_key)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_param(v) for v in value)
    return str(value)


def _json_of(reply: Reply) -> Any:
    """The sub-request's answer as JSON. Every kind a composite runs answers with a body
    the corridor has already read and checked (bytes are streamed only for the kinds
    refused above)."""
    if reply.produced is not None:
        raise UnreadableUpstream()  # pragma: no cover
    return orjson.loads(reply.body) if reply.body.strip() else None


def _merge(into: Decision, sub: Decision) -> None:
    """The composite call's one audit entry holds what each sub-request's would have."""
    for reason in sub.reasons:
        if reason not in into.reasons:
            into.reasons.append(reason)
    for rid in sub.record_ids:
        into.add_record_id(rid)
    for name in sub.fields_refused:
        if name not in into.fields_refused:
            into.fields_refused.append(name)
    into.withheld(sub.fields_withheld)
    into.merge_shadow(sub)
    into.client_rule = into.client_rule or sub.client_rule  # the request's: one client
    if _PRECEDENCE.get(sub.outcome, 0) > _PRECEDENCE.get(into.outcome, 0):
        into.outcome = sub.outcome
    if sub.metadata_age_s is not None:
        into.metadata_age_s = max(into.metadata_age_s or 0.0, sub.metadata_age_s)
