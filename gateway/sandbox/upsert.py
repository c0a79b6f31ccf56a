"""Upsert: update the record the duplicate check finds, else insert (research §4.6).

The check runs over the request's ``duplicate_check_fields`` in their order, else over the
module's system-defined duplicate-check fields and then its unique fields. Only those
fields may be named; Tasks, Events, Calls and Notes have no upsert.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .coerce import FieldError
from .context import Ctx, context, data_list, json_body, record_module
from .responses import SandboxError, json_response
from .schema import CUSTOM_DUPLICATE_CHECK, DUPLICATE_CHECK, NO_UPSERT_MODULES
from .store import OrgStore
from .values import equal
from .writes import MAX_WRITE, batch_status, insert_one, unique_fields, update_one


def _bad_check_fields() -> SandboxError:
    return SandboxError(400, "INVALID_DATA", "invalid data", {"api_name": "duplicate_check_fields"})


def default_checks(org: OrgStore, module: str) -> list[str]:
    """System-defined duplicate-check fields, then unique fields."""
    custom = org.modules.get(module, {}).get("generated_type") == "custom"
    system = DUPLICATE_CHECK.get(module, CUSTOM_DUPLICATE_CHECK if custom else [])
    fmap = org.field_map(module)
    out = [str(fmap[n.lower()]["api_name"]) for n in system if n.lower() in fmap]
    return out + [u for u in unique_fields(org, module) if u not in out]


def check_fields(ctx: Ctx, module: str, body: dict[str, Any]) -> list[str]:
    allowed = default_checks(ctx.org, module)
    given = body.get("duplicate_check_fields")
    if given is None:
        return allowed
    if not isinstance(given, list):
        raise _bad_check_fields()
    fmap = ctx.org.field_map(module)
    out = []
    for name in given:
        meta = fmap.get(str(name).lower())
        if meta is None or meta["api_name"] not in allowed:
            raise _bad_check_fields()
        out.append(str(meta["api_name"]))
    return out


def find_duplicate(
    org: OrgStore, module: str, item: dict[str, Any], checks: list[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """The record an upsert targets: by ``id``, else by the first matching check field."""
    by_id = org.get(module, item["id"]) if item.get("id") is not None else None
    if by_id is not None:
        return by_id, None
    lowered = {str(k).lower(): v for k, v in item.items()}
    types = org.field_types(module)
    for name in checks:
        wanted = lowered.get(name.lower())
        if wanted in (None, ""):
            continue
        for rec in org.active(module):
            if equal(types.get(name, "text"), rec.get(name), wanted):
                return rec, name
    return None, None


async def upsert_records(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    if module in NO_UPSERT_MODULES:
        raise SandboxError(
            400,
            "INVALID_MODULE",
            "the given module is not supported in api",
            {"resource_path_index": 0},
        )
    body = await json_body(request)
    data = data_list(body, MAX_WRITE)
    checks = check_fields(ctx, module, body)
    entries: list[dict[str, Any]] = []
    for item in data:
        if not isinstance(item, dict):
            entries.append(
                FieldError(
                    "INVALID_DATA", "invalid data", {"expected_data_type": "jsonobject"}
                ).entry()
            )
            continue
        target, dup_field = find_duplicate(ctx.org, module, item, checks)
        if target is None:
            entry = insert_one(ctx.org, module, item)
            action = "insert"
        else:
            entry = update_one(ctx.org, module, target["id"], item)
            action = "update"
        if entry["status"] == "success":
            entry = {
                "code": "SUCCESS",
                "duplicate_field": dup_field,
                "action": action,
                **{k: entry[k] for k in ("details", "message", "status")},
            }
        entries.append(entry)
    all_inserts = all(e.get("action") == "insert" for e in entries)
    return json_response(
        request, {"data": entries}, batch_status(entries, 201 if all_inserts else 200)
    )
