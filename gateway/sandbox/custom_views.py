"""Custom views: ``GET /settings/custom_views[/{id}]?module=``, and ``cvid`` on record reads.

A custom view is a saved filter: its ``criteria`` (the bulk-read criteria shape,
``{"comparator", "field": {"api_name", "id"}, "type": "value", "value"}`` or
``{"group_operator", "group": [...]}``) select the records a read with ``cvid`` returns.
Each org is seeded with an "All ..." view without criteria per record module, and for
Leads and Contacts one view filtering on a field that is not private and one filtering on a
restricted one (``Email``). ``/_sandbox/custom_views/{org}/{module}`` adds more.

An unknown ``cvid``, or the id of another module's view, is answered as the CRM answers an
invalid parameter value: 400 ``INVALID_DATA`` with ``details.api_name = "cvid"``.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .bulk_read import compile_bulk_criteria
from .context import Ctx, context, info_block
from .responses import SandboxError, invalid_module, json_response, param_missing
from .schema import MODULES, SUBFORM_MODULES, make_id
from .store import OrgStore, canon_id, now_iso

#: views per module beyond "All ...": (name, field, comparator, value)
_SEEDED: dict[str, list[tuple[str, str, str, str]]] = {
    "Leads": [
        ("Trade Show Leads", "Lead_Source", "equal", "Trade Show"),
        ("Leads at example domains", "Email", "contains", "example"),
    ],
    "Contacts": [
        ("Contacts named B", "Last_Name", "starts_with", "B"),
        ("Contacts at example domains", "Email", "contains", "example"),
    ],
}
_FIRST_ID = 450_000  # between the users' ids and the records'


def invalid_cvid() -> SandboxError:
    return SandboxError(400, "INVALID_DATA", "invalid data", {"api_name": "cvid"})


def _field_ref(org: OrgStore, module: str, name: str) -> dict[str, Any]:
    meta = org.field_map(module).get(name.lower()) or {}
    return {"api_name": str(meta.get("api_name", name)), "id": meta.get("id")}


def new_view(
    org: OrgStore,
    module: str,
    view_id: str,
    name: str,
    criteria: Any = None,
    *,
    system: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    me = org.user_ref()
    return {
        "id": view_id,
        "name": name,
        "display_value": name,
        "system_name": name.upper().replace(" ", "") if system else None,
        "system_defined": system,
        "default": system,
        "category": "public_views",
        "access_type": "public",
        "module": module,  # the sandbox's own key, never served
        "criteria": criteria,
        "sort_by": None,
        "sort_order": None,
        "cross_filters": None,
        "fields": [],
        "created_by": {"name": me["name"], "id": me["id"]},
        "modified_by": {"name": me["name"], "id": me["id"]},
        "created_time": now_iso(),
        "modified_time": now_iso(),
        "locked": False,
        "favorite": None,
        **(extra or {}),
    }


def seed_views(org: OrgStore) -> dict[str, dict[str, Any]]:
    views: dict[str, dict[str, Any]] = {}
    for index, (module, _singular, plural, _kind) in enumerate(MODULES):
        if module in SUBFORM_MODULES:
            continue
        base = _FIRST_ID + 10 * index
        vid = make_id(org.num, base)
        views[vid] = new_view(org, module, vid, f"All {plural}", system=True)
        for k, (name, field, comparator, value) in enumerate(_SEEDED.get(module, []), 1):
            vid = make_id(org.num, base + k)
            criteria = {
                "comparator": comparator,
                "field": _field_ref(org, module, field),
                "type": "value",
                "value": value,
            }
            views[vid] = new_view(org, module, vid, name, criteria)
    return views


def _served(view: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in view.items() if k != "module"}


def _module_param(ctx: Ctx) -> str:
    name = ctx.request.query_params.get("module")
    if not name:
        raise param_missing("module")
    module = ctx.org.resolve_module(name)
    if module is None or module in SUBFORM_MODULES:
        raise invalid_module()
    return module


def find_view(org: OrgStore, module: str, raw: str) -> dict[str, Any]:
    key = canon_id(raw)
    view = org.custom_views.get(key) if key is not None and key.isdigit() else None
    if view is None or view["module"] != module:
        raise invalid_cvid()
    return view


async def list_views(request: Request) -> Response:
    ctx = context(request)
    module = _module_param(ctx)
    found = [_served(v) for v in ctx.org.custom_views.values() if v["module"] == module]
    info = info_block(ctx, 1, 200, len(found), False)
    return json_response(request, {"custom_views": found, "info": info})


async def get_view(request: Request) -> Response:
    ctx = context(request)
    module = _module_param(ctx)
    view = find_view(ctx.org, module, request.path_params["id"])
    return json_response(request, {"custom_views": [_served(view)]})


def in_view(ctx: Ctx, module: str, recs: list[dict[str, Any]], cvid: Any) -> list[dict[str, Any]]:
    """The records of ``recs`` that view ``cvid`` selects (all of them without criteria)."""
    if cvid is None:
        return recs
    view = find_view(ctx.org, module, str(cvid))
    criteria = view.get("criteria")
    if not criteria:
        return recs
    keep = compile_bulk_criteria(ctx.org, module, criteria)
    return [r for r in recs if keep(r)]
