"""Metadata routes: ``/org``, ``/users``, ``/settings/modules|fields|related_lists``.

Fields are stored in the v8 shape; v2 and v2.1 name a lookup's module by a bare string
(what the v2 SDK parses). Metadata an admin call replaced is served verbatim.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .context import context, info_block
from .responses import SandboxError, invalid_module, json_response, param_missing
from .schema import OLD_SHAPE_VERSIONS, RELATED_LISTS, make_id, module_id


async def org_details(request: Request) -> Response:
    ctx = context(request)
    return json_response(request, {"org": [ctx.org.info]})


async def users(request: Request) -> Response:
    ctx = context(request)
    kind = (request.query_params.get("type") or "AllUsers").lower()
    found = [ctx.org.current_user] if kind == "currentuser" else list(ctx.org.users)
    info = info_block(ctx, 1, 200, len(found), False)
    return json_response(request, {"users": found, "info": info})


async def modules(request: Request) -> Response:
    ctx = context(request)
    return json_response(request, {"modules": list(ctx.org.modules.values())})


def render_field(field: dict[str, Any], version: str, type_case: str) -> dict[str, Any]:
    out = field
    lookup = field.get("lookup")
    old_lookup = (
        version in OLD_SHAPE_VERSIONS
        and isinstance(lookup, dict)
        and isinstance(lookup.get("module"), dict)
    )
    private = field.get("private")
    lower = (
        type_case == "lower" and isinstance(private, dict) and isinstance(private.get("type"), str)
    )
    if old_lookup or lower:
        out = copy.deepcopy(field)
        if old_lookup:
            out["lookup"]["module"] = out["lookup"]["module"].get("api_name")
        if lower:
            out["private"]["type"] = out["private"]["type"].lower()
    return out


async def fields(request: Request) -> Response:
    ctx = context(request)
    name = request.query_params.get("module")
    if not name:
        raise param_missing("module")
    module = ctx.org.resolve_module(name)
    if module is None:
        raise SandboxError(
            400,
            "INVALID_MODULE",
            "the given module is not supported for this api",
            {"param_name": "module"},
        )
    rows = ctx.org.fields.get(module, [])
    if module not in ctx.org.fields_override:
        case = ctx.sandbox.config.private_type_case
        rows = [render_field(f, ctx.version, case) for f in rows]
    return json_response(request, {"fields": rows})


async def related_lists(request: Request) -> Response:
    ctx = context(request)
    name = request.query_params.get("module")
    if not name:
        raise param_missing("module")
    module = ctx.org.resolve_module(name)
    if module is None:
        raise invalid_module()
    out = []
    for i, spec in enumerate(RELATED_LISTS.get(module, [])):
        api_name, target = spec.api_name, spec.target
        target_ref: Any = target
        if ctx.version not in OLD_SHAPE_VERSIONS:
            target_ref = {"api_name": target, "id": module_id(ctx.org.num, target)}
        out.append(
            {
                "api_name": api_name,
                "display_label": api_name.replace("_", " "),
                "id": make_id(ctx.org.num, 5000 + 10 * list(ctx.org.modules).index(module) + i),
                "name": api_name,
                "type": "default",
                "module": target_ref,
                "href": f"{module}/{{ENTITYID}}/{api_name}",
                "sequence_number": str(i + 1),
                "visible": True,
            }
        )
    return json_response(request, {"related_lists": out})
