"""The ``fields`` parameter as the CRM reads it, and the rendering of a page of records.

``fields=A,B`` keeps the named fields (matched case-insensitively, answered in their api
name spelling) plus ``id``; a ``$``-key (``$stop_processing``, ``$approved``, ...) comes back
only when it is named. Without ``fields`` the whole record comes back, but from v3 on the
list and related-list APIs refuse a request that lacks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .context import Ctx, info_block, page_params, split_ids
from .responses import dumps, param_missing
from .schema import OLD_SHAPE_VERSIONS


@dataclass(frozen=True)
class Selection:
    """What ``fields`` names: api names of known fields, and lower-cased ``$``-keys."""

    fields: tuple[str, ...]
    dollars: frozenset[str]


def require_fields(ctx: Ctx) -> None:
    """List and related-list reads need ``fields`` from v3 on (optional in v2 and v2.1)."""
    if ctx.version in OLD_SHAPE_VERSIONS:
        return
    raw = ctx.request.query_params.get("fields")
    if raw is None or not split_ids(raw):
        raise param_missing("fields")


def selection(ctx: Ctx, module: str) -> Selection | None:
    """The ``fields`` parameter (unknown names dropped), or None for whole records."""
    raw = ctx.request.query_params.get("fields")
    names = split_ids(raw)
    if not names:
        return None
    fmap = ctx.org.field_map(module)
    fields: list[str] = []
    dollars: set[str] = set()
    for name in names:
        if name.startswith("$"):
            dollars.add(name.lower())
            continue
        meta = fmap.get(name.lower())
        if meta is not None and meta["api_name"] not in fields:
            fields.append(str(meta["api_name"]))
    return Selection(tuple(fields), frozenset(dollars))


def project(rec: dict[str, Any], sel: Selection | None, drop: list[str]) -> dict[str, Any]:
    if sel is None:
        return {k: v for k, v in rec.items() if k not in drop} if drop else rec
    out = {f: rec.get(f) for f in sel.fields if f not in drop}
    out["id"] = rec.get("id")
    if sel.dollars:
        out.update((k, v) for k, v in rec.items() if k.lower() in sel.dollars)
    return out


def render_page(
    ctx: Ctx,
    module: str,
    recs: list[dict[str, Any]],
    sort_by: str = "id",
    sort_order: str = "asc",
) -> bytes | None:
    """One page of records as the serialised body; None when the page is empty (204)."""
    page, per_page = page_params(ctx)
    start = (page - 1) * per_page
    chunk = recs[start : start + per_page]
    if not chunk:
        return None
    sel = selection(ctx, module)
    # Subform rows come back only when one record is fetched by id, as in the CRM.
    drop = ctx.org.subform_fields(module)
    data = [project(r, sel, drop) for r in chunk]
    more = len(recs) > start + per_page
    info = info_block(ctx, page, per_page, len(chunk), more, sort_by, sort_order)
    return dumps({"data": data, "info": info})
