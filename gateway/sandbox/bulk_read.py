"""Bulk read: create a job, poll it, download a ZIP holding one CSV (research §9).

Jobs complete at creation: the snapshot is taken then, like a job that ran instantly.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .context import Ctx, context, json_body
from .responses import SandboxError, invalid_id, invalid_module, json_response, param_missing
from .schema import SUBFORM_MODULES, TOKEN_INFO_VERSIONS
from .store import OrgStore, now_iso
from .values import compare, contains, equal, scalar, starts_with

Predicate = Callable[[dict[str, Any]], bool]
COMPARATORS = frozenset(
    {
        "equal",
        "not_equal",
        "in",
        "not_in",
        "less_than",
        "less_equal",
        "greater_than",
        "greater_equal",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
        "between",
        "not_between",
    }
)
#: a fixed timestamp keeps the ZIP bytes a function of the data alone
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def _bad(what: str, **details: Any) -> SandboxError:
    return SandboxError(400, "INVALID_DATA", f"invalid {what}", details)


def module_name(raw: Any) -> str | None:
    """``query.module``: a string in v2, ``{"api_name": ...}`` from v2.1 (accept both)."""
    if isinstance(raw, dict):
        raw = raw.get("api_name")
    return raw if isinstance(raw, str) else None


def module_shape(version: str, module: str) -> Any:
    return module if version == "v2" else {"api_name": module}


def compile_bulk_criteria(org: OrgStore, module: str, crit: Any) -> Predicate:
    if not isinstance(crit, dict):
        raise _bad("criteria", api_name="criteria")
    if "group" in crit:
        op = str(crit.get("group_operator", "and")).lower()
        group = crit.get("group")
        if op not in ("and", "or") or not isinstance(group, list) or not group:
            raise _bad("criteria", api_name="group_operator")
        parts = [compile_bulk_criteria(org, module, c) for c in group]
        if op == "and":
            return lambda rec: all(p(rec) for p in parts)
        return lambda rec: any(p(rec) for p in parts)
    name = crit.get("api_name")
    if name is None and isinstance(crit.get("field"), dict):
        name = crit["field"].get("api_name")
    head, _, sub = str(name).partition(".") if name else ("", "", "")
    meta = org.field_map(module).get(head.lower()) if head else None
    if meta is None:
        raise _bad("criteria", api_name=name)
    comparator = str(crit.get("comparator", "")).lower()
    if comparator not in COMPARATORS:
        raise _bad("criteria", api_name="comparator")
    if not sub:
        return _leaf(
            str(meta["api_name"]), str(meta.get("data_type", "text")), comparator, crit.get("value")
        )
    # ``Lookup.Field``: the field of the record the lookup names (custom view criteria)
    target = org.lookup_target(meta)
    sub_meta = org.field_map(target).get(sub.lower()) if target else None
    if target is None or sub_meta is None:
        raise _bad("criteria", api_name=name)
    test = _leaf(
        str(sub_meta["api_name"]),
        str(sub_meta.get("data_type", "text")),
        comparator,
        crit.get("value"),
    )
    key = str(meta["api_name"])

    def through(rec: dict[str, Any]) -> bool:
        ref = rec.get(key)
        looked = org.get(target, ref.get("id")) if isinstance(ref, dict) else None
        return test(looked or {})

    return through


def _leaf(key: str, dtype: str, comparator: str, value: Any) -> Predicate:
    negate = comparator.startswith("not_")
    base = comparator.removeprefix("not_")
    values = value if isinstance(value, list) else [value]

    def test(rec: dict[str, Any]) -> bool:
        v = scalar(rec.get(key))
        if base == "equal" and value in ("${EMPTY}", "${NOTEMPTY}"):
            empty: bool = v in (None, "")
            return empty is (value == "${EMPTY}")
        if base == "equal":
            return equal(dtype, v, value) or (value is None and v in (None, ""))
        if base == "in":
            return any(equal(dtype, v, x) for x in values)
        if base == "contains":
            return contains(v, value)
        if base == "starts_with":
            return starts_with(v, value)
        if base == "ends_with":
            return v is not None and str(v).casefold().endswith(str(value).casefold())
        if base == "between":
            return (
                len(values) == 2
                and compare(dtype, v, values[0]) in (0, 1)
                and compare(dtype, v, values[1]) in (-1, 0)
            )
        wanted = {
            "less_than": (-1,),
            "less_equal": (-1, 0),
            "greater_than": (1,),
            "greater_equal": (0, 1),
        }[base]
        return compare(dtype, v, value) in wanted

    return (lambda rec: not test(rec)) if negate else test


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return str(value.get("id", ""))
    if isinstance(value, list):
        return ",".join(
            str(v.get("name", v.get("id", ""))) if isinstance(v, dict) else str(v) for v in value
        )
    return str(value)


def build_zip(name: str, header: list[str], rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(f"{name}.csv", date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, text.getvalue().encode("utf-8"))
    return buf.getvalue()


def _columns(ctx: Ctx, module: str, wanted: Any) -> list[str]:
    fmap = ctx.org.field_map(module)
    if wanted in (None, []):
        names = [str(f["api_name"]) for f in fmap.values() if f.get("data_type") != "subform"]
    elif isinstance(wanted, list):
        names = []
        for w in wanted:
            meta = fmap.get(str(w).lower())
            if meta is None or meta.get("data_type") == "subform":
                raise _bad("field", api_name=w)
            names.append(str(meta["api_name"]))
    else:
        raise _bad("fields", api_name="fields")
    return ["id", *[n for n in names if n != "id"]]


async def create_read(request: Request) -> Response:
    ctx = context(request)
    body = await json_body(request)
    query = body.get("query") if isinstance(body, dict) else None
    if not isinstance(query, dict):
        raise param_missing("query")
    name = module_name(query.get("module"))
    module = ctx.org.resolve_module(name) if name else None
    if module is None or module in SUBFORM_MODULES:
        raise invalid_module()
    columns = _columns(ctx, module, query.get("fields"))
    from .custom_views import in_view  # it evaluates views with compile_bulk_criteria

    recs = in_view(ctx, module, ctx.org.active(module), query.get("cvid"))
    if query.get("criteria") is not None:
        keep = compile_bulk_criteria(ctx.org, module, query["criteria"])
        recs = [r for r in recs if keep(r)]
    job_id = ctx.org.new_id()
    me = ctx.org.user_ref()
    created_by = {"id": me["id"], "name": me["name"]}
    rows = [[csv_cell(r.get(c)) for c in columns] for r in recs]
    echoed = {**query, "module": module_shape(ctx.version, module)}
    ctx.org.bulk_reads[job_id] = {
        "query": echoed,
        "zip": build_zip(job_id, columns, rows),
        "count": len(rows),
        "created_by": created_by,
        "created_time": now_iso(),
        "file_type": body.get("file_type", "csv") if isinstance(body, dict) else "csv",
    }
    details = {
        "id": job_id,
        "operation": "read",
        "state": "ADDED",
        "created_by": created_by,
        "created_time": ctx.org.bulk_reads[job_id]["created_time"],
    }
    entry = {
        "status": "success",
        "code": "ADDED_SUCCESSFULLY",
        "message": "Added successfully.",
        "details": details,
    }
    return json_response(request, {"data": [entry], "info": {}}, 201)


def _job(ctx: Ctx, job_id: str) -> dict[str, Any]:
    job = ctx.org.bulk_reads.get(job_id)
    if job is None:
        raise invalid_id(job_id)
    return job


async def read_status(request: Request) -> Response:
    ctx = context(request)
    job_id = request.path_params["job_id"]
    job = _job(ctx, job_id)
    result: dict[str, Any] = {
        "page": 1,
        "per_page": 200000,
        "count": job["count"],
        "download_url": f"/crm/bulk/{ctx.version}/read/{job_id}/result",
        "more_records": False,
    }
    if ctx.version in TOKEN_INFO_VERSIONS:
        result["next_page_token"] = None
    query = dict(job["query"])
    name = module_name(query.get("module"))
    if name:
        query["module"] = module_shape(ctx.version, name)
    data = {
        "id": job_id,
        "operation": "read",
        "state": "COMPLETED",
        "query": query,
        "result": result,
        "created_by": job["created_by"],
        "created_time": job["created_time"],
        "file_type": job["file_type"],
    }
    return json_response(request, {"data": [data]})


async def read_result(request: Request) -> Response:
    ctx = context(request)
    job_id = request.path_params["job_id"]
    job = _job(ctx, job_id)
    return Response(
        job["zip"],
        media_type="application/zip",
        headers={"Content-Disposition": f"attachment; filename={job_id}.zip"},
    )
