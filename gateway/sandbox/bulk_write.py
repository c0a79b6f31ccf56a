"""Bulk write: upload a ZIP of a CSV, create a job that applies it, poll the job.

Jobs run at creation. Rows become the same coerced writes the record API performs (insert,
update by ``find_by``, or upsert), so a bulk write and a record write leave equal records.
"""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .bulk_read import build_zip, module_name, module_shape
from .context import context, json_body
from .formdata import FormError, parse_multipart
from .responses import SandboxError, invalid_id, invalid_module, json_response, param_missing
from .schema import SUBFORM_MODULES
from .store import OrgStore, now_iso
from .writes import insert_one, update_one

MAX_UPLOAD = 25 * 1024 * 1024
OPERATIONS = frozenset({"insert", "update", "upsert"})


def _csv_rows(data: bytes) -> list[list[str]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        name = next(n for n in zf.namelist() if n.lower().endswith(".csv"))
        text = zf.read(name).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text)))


async def upload(request: Request) -> Response:
    ctx = context(request)
    if request.headers.get("feature", "").lower() != "bulk-write":
        raise SandboxError(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            {"header_name": "feature"},
        )
    body = await request.body()
    if len(body) > MAX_UPLOAD:
        raise SandboxError(413, "FILE_TOO_LARGE", "The file size exceeds the limit", {})
    try:
        parts = parse_multipart(request.headers.get("content-type", ""), body)
    except FormError:
        raise param_missing("file") from None
    if "file" not in parts:
        raise param_missing("file")
    content = parts["file"][1]
    try:
        _csv_rows(content)
    except (zipfile.BadZipFile, StopIteration, UnicodeDecodeError, csv.Error):
        raise SandboxError(
            400, "INVALID_FILE_FORMAT", "The file format is not supported", {}
        ) from None
    file_id = ctx.org.new_id()
    ctx.org.uploads[file_id] = content
    return json_response(
        request,
        {
            "status": "success",
            "code": "FILE_UPLOAD_SUCCESS",
            "message": "file uploaded.",
            "details": {"file_id": file_id, "created_time": now_iso()},
        },
    )


def _cell_value(org: OrgStore, module: str, api: str, cell: str) -> Any:
    meta = org.field_map(module).get(api.lower()) or {}
    dtype = meta.get("data_type")
    if dtype in ("lookup", "ownerlookup"):
        return {"id": cell}
    if dtype == "boolean":
        return cell.strip().lower() == "true"
    if dtype in ("jsonarray", "multiselectpicklist"):
        return [
            {"name": x.strip()} if dtype == "jsonarray" else x.strip()
            for x in cell.split(",")
            if x.strip()
        ]
    return cell


def _mapping(
    org: OrgStore, module: str, resource: dict[str, Any], header: list[str]
) -> dict[int, str]:
    fmap = org.field_map(module)
    mappings = resource.get("field_mappings")
    out: dict[int, str] = {}
    if isinstance(mappings, list) and mappings:
        for m in mappings:
            if isinstance(m, dict) and isinstance(m.get("index"), int) and m.get("api_name"):
                out[m["index"]] = str(m["api_name"])
        return out
    for i, name in enumerate(header):
        meta = fmap.get(name.strip().lower())
        if meta is not None:
            out[i] = str(meta["api_name"])
    return out


def _apply(
    org: OrgStore, module: str, operation: str, resource: dict[str, Any], ignore_empty: bool
) -> tuple[dict[str, int], list[list[str]]]:
    rows = _csv_rows(org.uploads[str(resource["file_id"])])
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    mapping = _mapping(org, module, resource, header)
    find_by = str(resource.get("find_by") or "id")
    counts = {"added_count": 0, "updated_count": 0, "skipped_count": 0, "total_count": len(body)}
    report: list[list[str]] = []
    for row in body:
        values: dict[str, Any] = {}
        for index, api in mapping.items():
            cell = row[index] if index < len(row) else ""
            if cell == "" and ignore_empty:
                continue
            values[api] = None if cell == "" else _cell_value(org, module, api, cell)
        key = values.get(find_by) if find_by != "id" else values.get("id")
        target = None
        if key not in (None, "") and find_by == "id":
            target = org.get(module, key)
        elif key not in (None, ""):
            target = next((r for r in org.active(module) if str(r.get(find_by)) == str(key)), None)
        if operation == "update" or (operation == "upsert" and target is not None):
            entry = (
                update_one(org, module, target["id"], values)
                if target
                else invalid_id(str(key)).envelope()
            )
            status = "UPDATED"
        else:
            entry = insert_one(org, module, {k: v for k, v in values.items() if k != "id"})
            status = "ADDED"
        if entry["status"] == "success":
            counts["updated_count" if status == "UPDATED" else "added_count"] += 1
            report.append([str(entry["details"]["id"]), status, ""])
        else:
            counts["skipped_count"] += 1
            report.append([str(key or ""), "SKIPPED", str(entry["code"])])
    return counts, report


async def create_write(request: Request) -> Response:
    ctx = context(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise param_missing("operation")
    operation = str(body.get("operation", "")).lower()
    if operation not in OPERATIONS:
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"api_name": "operation"})
    resources = body.get("resource")
    if not isinstance(resources, list) or not resources:
        raise param_missing("resource")
    checked = []
    for res in resources:
        if not isinstance(res, dict):
            raise SandboxError(400, "INVALID_DATA", "invalid data", {"api_name": "resource"})
        name = module_name(res.get("module"))
        module = ctx.org.resolve_module(name) if name else None
        if module is None or module in SUBFORM_MODULES:
            raise invalid_module()
        if str(res.get("file_id")) not in ctx.org.uploads:
            raise SandboxError(400, "INVALID_DATA", "invalid data", {"api_name": "file_id"})
        checked.append((module, res))
    job_id = ctx.org.new_id()
    me = ctx.org.user_ref()
    created_by = {"id": me["id"], "name": me["name"]}
    done = []
    report: list[list[str]] = []
    for module, res in checked:
        counts, rows = _apply(ctx.org, module, operation, res, bool(body.get("ignore_empty")))
        report.extend(rows)
        done.append(
            {
                "status": "COMPLETED",
                "type": "data",
                "module": module,
                "field_mappings": res.get("field_mappings") or [],
                "file": {"status": "COMPLETED", "name": f"{res['file_id']}.csv", **counts},
            }
        )
    ctx.org.bulk_writes[job_id] = {
        "operation": operation,
        "resource": done,
        "created_by": created_by,
        "created_time": now_iso(),
        "zip": build_zip(job_id, ["id", "STATUS", "ERRORS"], report),
    }
    return json_response(
        request,
        {
            "status": "success",
            "code": "SUCCESS",
            "message": "success",
            "details": {"id": job_id, "created_by": created_by},
        },
        201,
    )


async def write_status(request: Request) -> Response:
    ctx = context(request)
    job_id = request.path_params["job_id"]
    job = ctx.org.bulk_writes.get(job_id)
    if job is None:
        raise invalid_id(job_id)
    resources = [{**r, "module": module_shape(ctx.version, r["module"])} for r in job["resource"]]
    return json_response(
        request,
        {
            "status": "COMPLETED",
            "character_encoding": "UTF-8",
            "resource": resources,
            "id": job_id,
            "result": {"download_url": f"/crm/bulk/{ctx.version}/write/{job_id}/result"},
            "created_by": job["created_by"],
            "operation": job["operation"],
            "created_time": job["created_time"],
        },
    )


async def write_result(request: Request) -> Response:
    ctx = context(request)
    job_id = request.path_params["job_id"]
    job = ctx.org.bulk_writes.get(job_id)
    if job is None:
        raise invalid_id(job_id)
    return Response(
        job["zip"],
        media_type="application/zip",
        headers={"Content-Disposition": f"attachment; filename={job_id}.zip"},
    )
