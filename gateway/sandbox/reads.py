"""Record reads: list, one record (by id or ``X-EXTERNAL``), deleted, search, count, COQL."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .context import Ctx, context, info_block, json_body, page_params, record_module, split_ids
from .coql import CoqlError
from .coql_exec import run_query
from .criteria import CriteriaError, compile_criteria
from .custom_views import in_view
from .projection import project, render_page, require_fields, selection
from .responses import SandboxError, invalid_id, json_response, no_content, raw_json
from .store import canon_id
from .values import contains, sort_key


def _sorted(
    ctx: Ctx, module: str, recs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str, str]:
    q = ctx.request.query_params
    sort_by = q.get("sort_by")
    if not sort_by:
        return recs, "id", "asc"
    meta = ctx.org.field_map(module).get(sort_by.lower())
    if meta is None:
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"param_name": "sort_by"})
    order = (q.get("sort_order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"param_name": "sort_order"})
    key, dtype = str(meta["api_name"]), str(meta.get("data_type", "text"))
    out = sorted(recs, key=lambda r: sort_key(dtype, r.get(key)), reverse=order == "desc")
    return out, key, order


def page_response(
    ctx: Ctx, module: str, recs: list[dict[str, Any]], cache_key: Any = None
) -> Response:
    recs, sort_by, order = _sorted(ctx, module, recs)
    body = render_page(ctx, module, recs, sort_by, order)
    if cache_key is not None:
        ctx.org.page_cache[cache_key] = body or b""
    return raw_json(ctx.request, body) if body is not None else no_content()


async def list_records(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    require_fields(ctx)
    # Pages are pre-rendered per org generation: the benchmark hammers this route.
    cache_key = (ctx.version, module, request.url.query)
    cached = ctx.org.page_cache.get(cache_key)
    if cached is not None:
        return raw_json(request, cached) if cached else no_content()
    converted = (request.query_params.get("converted") or "false").lower()
    recs = in_view(ctx, module, ctx.org.active(module, converted), request.query_params.get("cvid"))
    ids = split_ids(request.query_params.get("ids"))
    if ids:
        wanted = {canon_id(x) for x in ids}
        recs = [r for r in recs if r["id"] in wanted]
    if len(ctx.org.page_cache) > 512:
        ctx.org.page_cache.clear()
    return page_response(ctx, module, recs, cache_key)


def resolve_record_id(ctx: Ctx, module: str, raw: str) -> str:
    """The record id a path segment names, honouring ``X-EXTERNAL: Module.Field``."""
    external = ctx.request.headers.get("x-external")
    if not external:
        return raw
    mod_name, _, field = external.partition(".")
    if ctx.org.resolve_module(mod_name) != module or not field:
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"header_name": "X-EXTERNAL"})
    meta = ctx.org.field_map(module).get(field.lower())
    key = str(meta["api_name"]) if meta else field
    for rec in ctx.org.records[module].values():
        value = rec.get(key)
        if value is not None and str(value) == raw:
            return str(rec["id"])
    raise invalid_id(raw)


async def get_record(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    rid = resolve_record_id(ctx, module, request.path_params["id"])
    rec = ctx.org.get(module, rid)
    if rec is None:
        raise invalid_id(rid)
    # One record by id: subform rows included, ``fields`` optional in every version.
    return json_response(request, {"data": [project(rec, selection(ctx, module), [])]})


async def deleted_records(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    kind = (request.query_params.get("type") or "all").lower()
    entries = [e for m, e in ctx.org.deleted if m == module] if kind in ("all", "recycle") else []
    page, per_page = page_params(ctx)
    start = (page - 1) * per_page
    chunk = entries[start : start + per_page]
    if not chunk:
        return no_content()
    info = info_block(ctx, page, per_page, len(chunk), len(entries) > start + per_page)
    return json_response(request, {"data": chunk, "info": info})


def _typed_fields(ctx: Ctx, module: str, types: frozenset[str]) -> list[str]:
    return [name for name, t in ctx.org.field_types(module).items() if t in types]


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))


def search_hits(ctx: Ctx, module: str, *, required: bool = True) -> list[dict[str, Any]]:
    """The records ``criteria`` / ``email`` / ``phone`` / ``word`` select. Without any of
    them: an error when ``required`` (search), else every record (count)."""
    q = ctx.request.query_params
    converted = (q.get("converted") or "false").lower()
    recs = in_view(ctx, module, ctx.org.active(module, converted), q.get("cvid"))
    # Precedence when several are given: criteria > email > phone > word (research §7).
    if q.get("criteria") is not None:
        try:
            keep = compile_criteria(ctx.org, module, q["criteria"])
        except CriteriaError as e:
            if e.reason == "too many criteria":
                raise SandboxError(
                    400, "LIMIT_EXCEEDED", "criteria limit exceeded", {"limit": 10}
                ) from None
            raise SandboxError(
                400, "INVALID_QUERY", "invalid query formed", {"reason": e.reason, **e.details}
            ) from None
        return [r for r in recs if keep(r)]
    if q.get("email") is not None:
        needle = q["email"].strip().casefold()
        names = _typed_fields(ctx, module, frozenset({"email"}))
        return [r for r in recs if any(str(r.get(n) or "").casefold() == needle for n in names)]
    if q.get("phone") is not None:
        digits = _digits(q["phone"])
        names = _typed_fields(ctx, module, frozenset({"phone"}))
        return [
            r
            for r in recs
            if digits and any(_digits(r.get(n)).endswith(digits) for n in names if r.get(n))
        ]
    if q.get("word") is not None:
        word = q["word"].strip()
        names = _typed_fields(ctx, module, frozenset({"text", "email", "phone", "textarea"}))
        return [r for r in recs if word and any(contains(r.get(n), word) for n in names)]
    if required:
        raise SandboxError(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            {"param": "criteria"},
        )
    return recs


async def search_records(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    return page_response(ctx, module, search_hits(ctx, module))


async def count_records(request: Request) -> Response:
    """``GET /{module}/actions/count``: search's parameters (none = every record)."""
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    return json_response(request, {"count": len(search_hits(ctx, module, required=False))})


async def coql(request: Request) -> Response:
    ctx = context(request)
    body = await json_body(request)
    query = body.get("select_query") if isinstance(body, dict) else None
    if not isinstance(query, str) or not query.strip():
        raise SandboxError(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            {"param": "select_query"},
        )
    try:
        result = run_query(ctx.org, query)
    except CoqlError as e:
        raise SandboxError(400, e.code, e.message, e.details) from None
    return no_content() if result is None else json_response(request, result)
