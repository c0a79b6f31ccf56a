"""Related lists: ``GET/PUT/DELETE /{module}/{id}/{related_list}[/{related_id}]``.

Most related lists are the records of another module whose lookup names the parent (a
Contact's Deals); Campaigns and their Leads / Contacts are many-to-many, kept in the org's
link table and served from both sides.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .context import Ctx, context, data_list, json_body, record_module, split_ids
from .projection import require_fields
from .reads import page_response
from .responses import invalid_id, invalid_url, json_response, param_missing
from .schema import RELATED_LISTS, RelatedList
from .store import OrgStore
from .writes import MAX_WRITE, apply_update, batch_status, success


def related_spec(module: str, name: str) -> RelatedList:
    for spec in RELATED_LISTS.get(module, []):
        if spec.api_name.lower() == name.lower():
            return spec
    raise invalid_url()


def members(org: OrgStore, spec: RelatedList, parent_id: str) -> list[dict[str, Any]]:
    if spec.linked:
        return [r for r in org.active(spec.target) if frozenset((parent_id, r["id"])) in org.links]
    key = spec.lookup or ""
    return [
        r
        for r in org.active(spec.target)
        if isinstance(r.get(key), dict) and r[key].get("id") == parent_id
    ]


def _parent(ctx: Ctx) -> tuple[str, RelatedList, dict[str, Any]]:
    module = record_module(ctx, ctx.request.path_params["module"])
    spec = related_spec(module, ctx.request.path_params["related"])
    raw = ctx.request.path_params["id"]
    parent = ctx.org.get(module, raw)
    if parent is None:
        raise invalid_id(raw)
    return module, spec, parent


async def related_records(request: Request) -> Response:
    ctx = context(request)
    _, spec, parent = _parent(ctx)
    require_fields(ctx)
    return page_response(ctx, spec.target, members(ctx.org, spec, parent["id"]))


def _link(
    org: OrgStore, module: str, spec: RelatedList, parent: dict[str, Any], rec: dict[str, Any]
) -> None:
    if spec.linked:
        org.links.add(frozenset((parent["id"], rec["id"])))
        org.touch()
    elif spec.lookup:
        apply_update(org, spec.target, rec, {spec.lookup: org.ref(module, parent)})


def _unlink(org: OrgStore, spec: RelatedList, parent: dict[str, Any], rec: dict[str, Any]) -> None:
    if spec.linked:
        org.links.discard(frozenset((parent["id"], rec["id"])))
        org.touch()
    elif spec.lookup:
        value = rec.get(spec.lookup)
        if isinstance(value, dict) and value.get("id") == parent["id"]:
            apply_update(org, spec.target, rec, {spec.lookup: None})


async def relate(request: Request) -> Response:
    """PUT links records to the parent, DELETE unlinks them (one in the path, or many)."""
    ctx = context(request)
    module, spec, parent = _parent(ctx)
    linking = request.method == "PUT"
    one = request.path_params.get("related_id")
    if one is not None:
        ids: list[Any] = [one]
    elif linking:
        ids = [
            i.get("id") if isinstance(i, dict) else i
            for i in data_list(await json_body(request), MAX_WRITE)
        ]
    else:
        ids = split_ids(request.query_params.get("ids"))
        if not ids:
            raise param_missing("ids")
    entries = []
    for rid in ids:
        rec = ctx.org.get(spec.target, rid)
        if rec is None:
            entries.append(invalid_id(str(rid)).envelope())
            continue
        if linking:
            _link(ctx.org, module, spec, parent, rec)
        else:
            _unlink(ctx.org, spec, parent, rec)
        message = "relation updated" if linking else "relation removed"
        entries.append(success(message, {"id": rec["id"]}))
    return json_response(request, {"data": entries}, batch_status(entries, 200))
