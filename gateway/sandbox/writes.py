"""Record writes: insert, update, upsert, delete, mass update, related-list (de)linking.

Every batch answers one entry per input record, in input order (research §4.5), with HTTP
201/200 when all succeeded, 207 when mixed and 400 when all failed. The sandbox is the raw
CRM the gateway protects: it does not refuse records in stop processing.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .coerce import FieldError, coerce_record
from .context import Ctx, context, data_list, json_body, record_module, split_ids
from .reads import related_spec, resolve_record_id
from .responses import SandboxError, invalid_id, json_response, param_missing
from .schema import DUPLICATE_CHECK, GDPR_MODULES
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
    """Derived values: Full_Name, subform rows' Parent_Id."""
    fmap = org.field_map(module)
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


def insert_one(org: OrgStore, module: str, data: Any) -> dict[str, Any]:
    try:
        values = coerce_record(org, module, data, None, creating=True)
    except FieldError as e:
        return e.entry()
    rec = create(org, module, values)
    return success("record added", _write_details(org, rec))


def update_one(org: OrgStore, module: str, rid: Any, data: Any) -> dict[str, Any]:
    rec = org.get(module, str(rid)) if isinstance(rid, str | int) else None
    if rec is None:
        return invalid_id(str(rid)).envelope()
    try:
        values = coerce_record(org, module, data, rec, creating=False)
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


def _check_fields(ctx: Ctx, module: str, body: dict[str, Any]) -> list[str]:
    given = body.get("duplicate_check_fields")
    if given is None:
        return list(DUPLICATE_CHECK.get(module, []))
    if not isinstance(given, list):
        raise SandboxError(
            400, "INVALID_DATA", "invalid data", {"api_name": "duplicate_check_fields"}
        )
    fmap = ctx.org.field_map(module)
    out = []
    for name in given:
        meta = fmap.get(str(name).lower())
        if meta is None:
            raise SandboxError(
                400, "INVALID_DATA", "invalid data", {"api_name": "duplicate_check_fields"}
            )
        out.append(str(meta["api_name"]))
    return out


def find_duplicate(
    org: OrgStore, module: str, item: dict[str, Any], checks: list[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """The record an upsert targets: by ``id``, else by the first matching check field."""
    rid = item.get("id")
    if isinstance(rid, str) and org.get(module, rid) is not None:
        return org.get(module, rid), None
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
    body = await json_body(request)
    data = data_list(body, MAX_WRITE)
    checks = _check_fields(ctx, module, body)
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


def delete_one(org: OrgStore, module: str, rid: str) -> dict[str, Any]:
    rec = org.remove(module, rid)
    if rec is None:
        return invalid_id(rid).envelope()
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
            entry = success("record updated", {"id": str(rid)})
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


async def relate(request: Request) -> Response:
    """PUT/DELETE ``/{module}/{id}/{related}[/{related_id}]``: set or clear the lookup."""
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    parent_id = request.path_params["id"]
    _, target, lookup_field = related_spec(ctx, module, request.path_params["related"])
    parent = ctx.org.get(module, parent_id)
    if parent is None:
        raise invalid_id(parent_id)
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
        rec = ctx.org.get(target, str(rid)) if isinstance(rid, str | int) else None
        if rec is None:
            entries.append(invalid_id(str(rid)).envelope())
            continue
        if linking:
            apply_update(ctx.org, target, rec, {lookup_field: ctx.org.ref(module, parent)})
        elif isinstance(rec.get(lookup_field), dict) and rec[lookup_field].get("id") == parent_id:
            apply_update(ctx.org, target, rec, {lookup_field: None})
        message = "relation updated" if linking else "relation removed"
        entries.append(success(message, {"id": str(rid)}))
    return json_response(request, {"data": entries}, batch_status(entries, 200))
