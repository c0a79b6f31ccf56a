"""Record writes: insert, update, delete, mass update (upsert: ``upsert``; related lists:
``related``).

Every batch answers one entry per input record, in input order (research §4.5), with HTTP
201/200 when all succeeded, 207 when mixed and 400 when all failed. The sandbox is the raw
CRM the gateway protects: it does not refuse records in stop processing.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .coerce import FieldError, coerce_record
from .context import context, data_list, json_body, record_module, split_ids
from .reads import resolve_record_id
from .responses import SandboxError, invalid_id, json_response, param_missing
from .schema import GDPR_MODULES
from .seed import dollar_keys
from .store import OrgStore, now_iso
from .values import equal

MAX_WRITE = 100
MAX_MASS_UPDATE = 500


def batch_status(entries: list[dict[str, Any]], all_ok: int) -> int:
    ok = sum(1 for e in entries if e.get("status") == "success")
    if ok == len(entries):
        return all_ok
    return 400 if ok == 0 else 207


def _write_details(org: OrgStore, rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "Modified_Time": rec.get("Modified_Time"),
        "Modified_By": _short(rec.get("Modified_By")),
        "Created_Time": rec.get("Created_Time"),
        "id": rec["id"],
        "Created_By": _short(rec.get("Created_By")),
        "$approval_state": "approved",
    }


def _short(user: Any) -> Any:
    return {"name": user.get("name"), "id": user.get("id")} if isinstance(user, dict) else user


def success(message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"code": "SUCCESS", "details": details, "message": message, "status": "success"}


def _finish(org: OrgStore, module: str, rec: dict[str, Any]) -> None:
    """Derived values: Full_Name, subform rows' Parent_Id, ``$se_module``."""
    fmap = org.field_map(module)
    se_field = org.se_lookup_field(module)
    if se_field is not None:
        parent = rec.get(se_field)
        rec["$se_module"] = org.module_of(parent.get("id")) if isinstance(parent, dict) else None
    if "full_name" in fmap and ("first_name" in fmap or "last_name" in fmap):
        rec["Full_Name"] = " ".join(
            str(rec.get(k)) for k in ("First_Name", "Last_Name") if rec.get(k)
        )
    for name in org.subform_fields(module):
        for row in rec.get(name) or []:
            if isinstance(row, dict):
                row["Parent_Id"] = org.ref(module, rec)


def create(org: OrgStore, module: str, values: dict[str, Any]) -> dict[str, Any]:
    """Store a new record built from already-coerced values."""
    stamp = now_iso()
    me = org.user_ref()
    rec: dict[str, Any] = {"Owner": values.pop("Owner", None) or me}
    for meta in org.fields.get(module, []):
        name = str(meta.get("api_name"))
        if name in ("id", "Owner", "Created_Time", "Modified_Time", "Created_By", "Modified_By"):
            continue
        dtype = meta.get("data_type")
        rec[name] = values.get(name, [] if dtype in ("subform", "jsonarray") else None)
    rec.update(
        {
            "Created_By": me,
            "Created_Time": stamp,
            "Modified_By": me,
            "Modified_Time": stamp,
            "id": org.new_id(),
            **dollar_keys(),
        }
    )
    if module in GDPR_MODULES:
        rec["$stop_processing"] = False
    _finish(org, module, rec)
    org.put(module, rec)
    return rec


def apply_update(org: OrgStore, module: str, rec: dict[str, Any], values: dict[str, Any]) -> None:
    rec.update(values)
    rec["Modified_By"] = org.user_ref()
    rec["Modified_Time"] = now_iso()
    _finish(org, module, rec)
    org.touch()


def unique_fields(org: OrgStore, module: str) -> list[str]:
    """Fields whose metadata marks them unique (``{"casesensitive": ...}``, or ``true``)."""
    return [
        str(f["api_name"])
        for f in org.fields.get(module, [])
        if isinstance(f, dict) and "api_name" in f and f.get("unique")
    ]


def _check_unique(org: OrgStore, module: str, values: dict[str, Any], own_id: str | None) -> None:
    """A value of a unique field another record holds is refused, as the CRM does."""
    types = org.field_types(module)
    for name in unique_fields(org, module):
        value = values.get(name)
        if value in (None, ""):
            continue
        for rec in org.records.get(module, {}).values():
            if rec["id"] != own_id and equal(types.get(name, "text"), rec.get(name), value):
                raise FieldError(
                    "DUPLICATE_DATA",
                    "duplicate data",
                    {
                        "api_name": name,
                        "duplicate_record": {"id": rec["id"], "module": {"api_name": module}},
                    },
                )


def insert_one(org: OrgStore, module: str, data: Any) -> dict[str, Any]:
    try:
        values = coerce_record(org, module, data, None, creating=True)
        _check_unique(org, module, values, None)
    except FieldError as e:
        return e.entry()
    rec = create(org, module, values)
    return success("record added", _write_details(org, rec))


def update_one(org: OrgStore, module: str, rid: Any, data: Any) -> dict[str, Any]:
    rec = org.get(module, rid)
    if rec is None:
        return invalid_id(str(rid)).envelope()
    try:
        values = coerce_record(org, module, data, rec, creating=False)
        _check_unique(org, module, values, rec["id"])
    except FieldError as e:
        return e.entry()
    apply_update(org, module, rec, values)
    return success("record updated", _write_details(org, rec))


async def insert_records(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    data = data_list(await json_body(request), MAX_WRITE)
    entries = [insert_one(ctx.org, module, item) for item in data]
    return json_response(request, {"data": entries}, batch_status(entries, 201))


async def update_records(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    data = data_list(await json_body(request), MAX_WRITE)
    path_id = request.path_params.get("id")
    if path_id is not None:
        path_id = resolve_record_id(ctx, module, path_id)
    entries = []
    for item in data:
        rid = (
            path_id if path_id is not None else (item.get("id") if isinstance(item, dict) else None)
        )
        if rid is None:
            entries.append(
                {
                    "code": "MANDATORY_NOT_FOUND",
                    "details": {"api_name": "id"},
                    "message": "required field not found",
                    "status": "error",
                }
            )
            continue
        entries.append(update_one(ctx.org, module, rid, item))
    return json_response(request, {"data": entries}, batch_status(entries, 200))


def delete_one(org: OrgStore, module: str, raw: str) -> dict[str, Any]:
    rec = org.remove(module, raw)
    if rec is None:
        return invalid_id(raw).envelope()
    rid = str(rec["id"])
    me = org.user_ref()
    org.deleted.append(
        (
            module,
            {
                "id": rid,
                "display_name": org.display_name(module, rec),
                "type": "recycle",
                "deleted_by": {"name": me["name"], "id": me["id"]},
                "deleted_time": now_iso(),
                "created_by": _short(rec.get("Created_By")),
            },
        )
    )
    return success("record deleted", {"id": rid})


async def delete_records(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    path_id = request.path_params.get("id")
    if path_id is not None:
        ids = [resolve_record_id(ctx, module, path_id)]
    else:
        ids = split_ids(request.query_params.get("ids"))
        if not ids:
            raise param_missing("ids")
        if len(ids) > MAX_WRITE:
            raise SandboxError(
                400,
                "LIMIT_EXCEEDED",
                "the number of records exceeds the limit",
                {"limit": MAX_WRITE},
            )
    entries = [delete_one(ctx.org, module, rid) for rid in ids]
    return json_response(request, {"data": entries}, batch_status(entries, 200))


async def mass_update(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    body = await json_body(request)
    data = data_list(body, 1)
    if "cvid" in body and "ids" not in body:
        # Scheduled form: the sandbox has no custom views, so the job completes doing nothing.
        job_id = ctx.org.new_id()
        ctx.org.mass_jobs[job_id] = {
            "Status": "COMPLETED",
            "Failed_Count": 0,
            "Updated_Count": 0,
            "Not_Updated_Count": 0,
            "Total_Count": 0,
        }
        entry = success("mass update scheduled successfully", {"job_id": job_id})
        return json_response(request, {"data": [entry]})
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise param_missing("ids")
    if len(ids) > MAX_MASS_UPDATE:
        raise SandboxError(
            400,
            "LIMIT_EXCEEDED",
            "the number of records exceeds the limit",
            {"limit": MAX_MASS_UPDATE},
        )
    entries = []
    for rid in ids:
        entry = update_one(ctx.org, module, rid, data[0])
        if entry["status"] == "success":
            entry = success("record updated", {"id": entry["details"]["id"]})
        entries.append(entry)
    return json_response(request, {"data": entries}, batch_status(entries, 200))


async def mass_update_status(request: Request) -> Response:
    ctx = context(request)
    record_module(ctx, request.path_params["module"])
    job_id = request.query_params.get("job_id")
    if not job_id:
        raise param_missing("job_id")
    job = ctx.org.mass_jobs.get(job_id)
    if job is None:
        raise invalid_id(job_id)
    return json_response(request, {"data": [job]})
