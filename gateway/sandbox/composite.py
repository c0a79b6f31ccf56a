"""``POST /crm/{v}/__composite_requests``: up to five sub-requests in one call.

Each sub-request runs through this sandbox's own app, as if sent alone, with the composite
call's ``Authorization`` (a sub-request may not set its own, nor ``X-CRM-ORG``). They run
one after another, in order; a later one may use an earlier one's answer through
``@{sub_request_id:$.json.path}`` in its uri, params, headers or body, as the CRM allows.
Each executed sub-request answers ``SUCCESS`` with its own status code and body, whatever
that status is; one the sandbox cannot run answers an error entry in its place (HTTP 207
when mixed, 400 when none ran). Not modelled: ``rollback_on_fail`` (nothing is rolled
back), parallel execution, and the CRM's per-API record limits inside a composite call.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from .context import json_body
from .middleware import SUBREQUEST
from .paths import canonical_path
from .responses import SandboxError, json_response

MAX_SUBREQUESTS = 5
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH"})
_URI = re.compile(r"/crm(/.*)?/v[0-9]+([.][0-9]+)?/.*", re.IGNORECASE)
_SUB_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_]*")
_REF = re.compile(r"@\{([a-zA-Z0-9][a-zA-Z0-9_]*):(\$[^}]*)\}")
_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")
#: headers a sub-request may not set
RESTRICTED = frozenset({"authorization", "x-crm-org"})
#: headers the sandbox sets itself on a sub-request
_OWN = frozenset({"host", "content-length", "accept-encoding", "connection", "transfer-encoding"})
ROOT = "$.__composite_requests"


class SubError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.entry = {"code": code, "details": details, "message": message, "status": "error"}


def _invalid(index: int, key: str, **extra: Any) -> SubError:
    details = {"api_name": key, "json_path": f"{ROOT}[{index}].{key}", **extra}
    return SubError("INVALID_DATA", "invalid data", details)


def _lookup(doc: Any, path: str) -> Any:
    """A value by a simple JSONPath (``$.data[0].details.id``); KeyError when absent."""
    steps = _STEP.findall(path[1:])
    if "".join(f".{k}" if k else f"[{i}]" for k, i in steps) != path[1:]:
        raise KeyError(path)
    for key, index in steps:
        if key and isinstance(doc, dict) and key in doc:
            doc = doc[key]
        elif index and isinstance(doc, list) and int(index) < len(doc):
            doc = doc[int(index)]
        else:
            raise KeyError(path)
    return doc


def _substitute(value: Any, answers: dict[str, Any], index: int) -> Any:
    """Replace ``@{id:$.path}`` references with values from earlier sub-requests' bodies."""
    if isinstance(value, dict):
        return {k: _substitute(v, answers, index) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, answers, index) for v in value]
    if not isinstance(value, str) or "@{" not in value:
        return value

    def resolve(m: re.Match[str]) -> Any:
        try:
            return _lookup(answers[m.group(1)], m.group(2))
        except KeyError:
            raise SubError(
                "INVALID_REFERENCE",
                "invalid reference",
                {"reference": m.group(0), "json_path": f"{ROOT}[{index}]"},
            ) from None

    whole = _REF.fullmatch(value)
    if whole is not None:
        return resolve(whole)
    return _REF.sub(lambda m: str(resolve(m)), value)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_param(v) for v in value)
    return str(value)


def _validate(sub: Any, index: int, seen: set[str]) -> dict[str, Any]:
    if not isinstance(sub, dict):
        raise SubError(
            "INVALID_DATA",
            "invalid data",
            {"json_path": f"{ROOT}[{index}]", "expected_data_type": "jsonobject"},
        )
    for key in ("method", "uri"):
        if key not in sub:
            raise SubError(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                {"api_name": key, "json_path": f"{ROOT}[{index}].{key}"},
            )
    sub_id = sub.get("sub_request_id")
    if sub_id is not None:
        if not isinstance(sub_id, str) or not _SUB_ID.fullmatch(sub_id) or len(sub_id) > 100:
            raise _invalid(index, "sub_request_id")
        if sub_id in seen:
            raise SubError(
                "DUPLICATE_DATA",
                "duplicate data",
                {"api_name": "sub_request_id", "json_path": f"{ROOT}[{index}].sub_request_id"},
            )
        seen.add(sub_id)
    if not isinstance(sub["method"], str) or sub["method"].upper() not in METHODS:
        raise _invalid(index, "method")
    uri = sub["uri"]
    if not isinstance(uri, str) or not _URI.fullmatch(uri.partition("?")[0]) or len(uri) > 2048:
        raise _invalid(index, "uri", expected_data_type="text")
    for key in ("params", "headers"):
        if sub.get(key) is not None and not isinstance(sub[key], dict):
            raise _invalid(index, key, expected_data_type="jsonobject")
    headers = sub.get("headers") or {}
    if any(str(k).lower() in RESTRICTED for k in headers):
        raise _invalid(index, "headers")
    return sub


def _not_supported(path: str) -> bool:
    canon = canonical_path(path)
    return canon.startswith("/crm/bulk/") or canon.split("/")[3:4] in (
        ["__composite_requests"],
        ["upload"],
    )


async def _run(request: Request, sub: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """Send one sub-request through the app in-process; its status, headers and body."""
    path, _, query = sub["uri"].partition("?")
    params = [(str(k), _param(v)) for k, v in (sub.get("params") or {}).items() if v is not None]
    query = "&".join(q for q in (query, urlencode(params)) if q)
    body = b"" if sub.get("body") is None else orjson.dumps(sub["body"])
    headers = [
        (str(k).lower().encode("latin-1"), str(v).encode("latin-1"))
        for k, v in (sub.get("headers") or {}).items()
        if str(k).lower() not in _OWN
    ]
    auth = request.headers.get("authorization")
    if auth is not None:
        headers.append((b"authorization", auth.encode("latin-1")))
    headers.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": sub["method"].upper(),
        "scheme": request.url.scheme,
        "path": unquote(path),
        "raw_path": path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": headers,
        "server": request.scope.get("server"),
        "client": request.scope.get("client"),
        SUBREQUEST: True,
    }
    delivered = False
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await request.app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    out_headers = {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in start.get("headers", [])
        if k.decode("latin-1").lower() != "content-length"
    }
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), out_headers, raw


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def _subrequests(body: Any) -> list[Any]:
    subs = body.get("__composite_requests") if isinstance(body, dict) else None
    if subs is None:
        raise SandboxError(
            400,
            "MANDATORY_NOT_FOUND",
            "required field not found",
            {"api_name": "__composite_requests", "json_path": ROOT},
        )
    if not isinstance(subs, list) or not subs:
        raise SandboxError(
            400,
            "INVALID_DATA",
            "invalid data",
            {
                "api_name": "__composite_requests",
                "json_path": ROOT,
                "expected_data_type": "jsonarray",
            },
        )
    if len(subs) > MAX_SUBREQUESTS:
        raise SandboxError(
            400,
            "INVALID_DATA",
            "invalid data",
            {"api_name": "__composite_requests", "json_path": ROOT, "maximum_length": 5},
        )
    if body.get("rollback_on_fail") is True and body.get("parallel_execution") is True:
        raise SandboxError(
            400,
            "AMBIGUITY_DURING_PROCESSING",
            "ambiguity during processing",
            {
                "ambiguity_due_to": [
                    {"api_name": "rollback_on_fail", "json_path": "$.rollback_on_fail"},
                    {"api_name": "parallel_execution", "json_path": "$.parallel_execution"},
                ]
            },
        )
    return subs


async def composite_requests(request: Request) -> Response:
    subs = _subrequests(await json_body(request))
    answers: dict[str, Any] = {}
    seen: set[str] = set()
    entries: list[dict[str, Any]] = []
    for index, raw_sub in enumerate(subs):
        try:
            sub = _substitute(_validate(raw_sub, index, seen), answers, index)
            if _not_supported(sub["uri"].partition("?")[0]):
                raise SubError(
                    "NOT_SUPPORTED",
                    "the api is not supported in composite requests",
                    {"api_name": "uri", "json_path": f"{ROOT}[{index}].uri"},
                )
            status, headers, raw = await _run(request, sub)
        except SubError as e:
            entries.append(e.entry)
            continue
        parsed = _parse(raw)
        if sub.get("sub_request_id") is not None:
            answers[sub["sub_request_id"]] = parsed
        entries.append(
            {
                "code": "SUCCESS",
                "details": {
                    "response": {"headers": headers, "body": parsed, "status_code": status}
                },
                "message": "composite sub request executed successfully",
                "status": "success",
            }
        )
    ran = sum(1 for e in entries if e["status"] == "success")
    status = 200 if ran == len(entries) else 400 if ran == 0 else 207
    return json_response(request, {"__composite_requests": entries}, status)
