"""``/_sandbox/...``: test controls (no auth). Reset, request log, privacy switch, raw
record edits, metadata replacement, wire-format config and fault injection."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .custom_views import new_view
from .responses import SandboxError, json_response
from .schema import SUBFORM_MODULES
from .store import FaultRule, OrgStore, Sandbox


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SandboxError(
            400, "INVALID_DATA", "invalid data", {"reason": "body is not JSON"}
        ) from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"reason": "expected an object"})
    return body


def _not_found(what: str) -> SandboxError:
    return SandboxError(404, "NOT_FOUND", f"{what} not found", {})


def _org(request: Request) -> OrgStore:
    try:
        return _sandbox(request).orgs[int(request.path_params["org"])]
    except (KeyError, ValueError):
        raise _not_found("org") from None


def _module(org: OrgStore, request: Request) -> str:
    module = org.resolve_module(request.path_params["module"])
    if module is None:
        raise _not_found("module")
    return module


async def reset(request: Request) -> Response:
    body = _object(await _body(request))
    seed = body.get("seed")
    _sandbox(request).reset(int(seed) if isinstance(seed, int) else None)
    return json_response(None, {"status": "ok", "seed": _sandbox(request).seed})


async def requests_log(request: Request) -> Response:
    sandbox = _sandbox(request)
    if request.method == "DELETE":
        sandbox.requests.clear()
        return json_response(None, {"status": "ok"})
    return json_response(None, {"requests": sandbox.requests})


async def privacy(request: Request) -> Response:
    body = _object(await _body(request))
    org_num, value = body.get("org", 1), body.get("privacy_settings")
    sandbox = _sandbox(request)
    if org_num not in sandbox.orgs or not isinstance(value, bool):
        raise SandboxError(
            400, "INVALID_DATA", "invalid data", {"reason": "org and privacy_settings"}
        )
    sandbox.orgs[org_num].info["privacy_settings"] = value
    return json_response(None, {"org": org_num, "privacy_settings": value})


def _find_row(org: OrgStore, rid: str) -> dict[str, Any] | None:
    """A subform row by id, searched in every parent record."""
    for module, recs in org.records.items():
        names = org.subform_fields(module)
        for rec in recs.values():
            for name in names:
                for row in rec.get(name) or []:
                    if isinstance(row, dict) and row.get("id") == rid:
                        return row
    return None


async def record(request: Request) -> Response:
    """GET the raw stored record, or POST keys to merge into it (any key, any value)."""
    org = _org(request)
    module = _module(org, request)
    rid = request.path_params["id"]
    rec = _find_row(org, rid) if module in SUBFORM_MODULES else org.get(module, rid)
    if rec is None:
        raise _not_found("record")
    if request.method == "POST":
        own_id = rec.get("id", rid)
        rec.update(_object(await _body(request)))
        rec["id"] = own_id
        org.touch()
    return json_response(None, rec)


async def add_record(request: Request) -> Response:
    org = _org(request)
    module = _module(org, request)
    if module in SUBFORM_MODULES:
        raise SandboxError(400, "INVALID_MODULE", "subform rows live inside their parent", {})
    rec = dict(_object(await _body(request)))
    rid = str(rec.get("id") or org.new_id())
    if org.id_module.get(rid, module) != module:
        raise SandboxError(400, "DUPLICATE_DATA", "id already used in another module", {"id": rid})
    rec["id"] = rid
    org.put(module, rec)
    return json_response(None, rec)


async def add_custom_view(request: Request) -> Response:
    """A custom view of the module: ``name``, ``criteria`` (the CRM's shape, stored as
    given), and any other key of a view (``sort_by``, ``cross_filters``, ...)."""
    org = _org(request)
    module = _module(org, request)
    if module in SUBFORM_MODULES:
        raise SandboxError(400, "INVALID_MODULE", "subform modules have no views", {})
    body = _object(await _body(request))
    vid = org.new_id()
    extra = {k: v for k, v in body.items() if k not in ("id", "module", "name", "criteria")}
    view = new_view(org, module, vid, str(body.get("name") or "View"), body.get("criteria"))
    view.update(extra)
    org.custom_views[vid] = view
    org.touch()
    return json_response(None, {k: v for k, v in view.items() if k != "module"})


async def metadata(request: Request) -> Response:
    org = _org(request)
    module = _module(org, request)
    body = _object(await _body(request))
    fields = body.get("fields")
    if not isinstance(fields, list):
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"reason": "fields must be a list"})
    org.fields[module] = fields
    org.fields_override.add(module)
    org.touch()
    return json_response(None, {"fields": fields})


async def config(request: Request) -> Response:
    sandbox = _sandbox(request)
    if request.method == "POST":
        body = _object(await _body(request))
        if "gzip" in body:
            sandbox.config.gzip = bool(body["gzip"])
        if "private_type_case" in body:
            case = body["private_type_case"]
            if case not in ("title", "lower"):
                raise SandboxError(
                    400,
                    "INVALID_DATA",
                    "invalid data",
                    {"reason": "private_type_case is title or lower"},
                )
            sandbox.config.private_type_case = case
    return json_response(
        None, {"gzip": sandbox.config.gzip, "private_type_case": sandbox.config.private_type_case}
    )


async def faults(request: Request) -> Response:
    sandbox = _sandbox(request)
    if request.method == "DELETE":
        sandbox.faults.clear()
        return json_response(None, {"status": "ok"})
    if request.method == "POST":
        body = _object(await _body(request))
        if not isinstance(body.get("path_contains"), str):
            raise SandboxError(
                400, "INVALID_DATA", "invalid data", {"reason": "path_contains is required"}
            )
        try:
            rule = FaultRule(
                path_contains=body["path_contains"],
                method=body["method"].upper() if isinstance(body.get("method"), str) else None,
                status=int(body["status"]) if body.get("status") is not None else None,
                body=body.get("body"),
                json=body.get("json"),
                content_type=body.get("content_type"),
                content_encoding=body.get("content_encoding"),
                delay=float(body.get("delay") or 0.0),
                times=int(body["times"]) if body.get("times") is not None else None,
            )
        except (TypeError, ValueError):
            raise SandboxError(
                400, "INVALID_DATA", "invalid data", {"reason": "bad fault rule"}
            ) from None
        if rule.times is not None and rule.times < 1:
            raise SandboxError(
                400, "INVALID_DATA", "invalid data", {"reason": "times must be >= 1"}
            )
        sandbox.faults.append(rule)
    return json_response(None, {"faults": [vars(f) for f in sandbox.faults]})
