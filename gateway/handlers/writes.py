"""Writes: refuse, per record, writes against records in stop processing.

Each write's targets are looked up (``state.py``) right before forwarding; only the allowed
inputs are forwarded and the CRM's entries are merged back in input order. Delete never
comes here: erasure must stay possible. Only GDPR modules (Leads, Contacts, Vendors,
custom modules) have the state; writes to the CRM's other standard modules pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.crm.request import CanonicalRequest
from gateway.crm.routes import Kind
from gateway.decision import REFUSED, Decision
from gateway.errors import InvalidData, NotAllowed, Reason, TooManyRecords
from gateway.forward import json_reply_of
from gateway.handlers import Context
from gateway.jsonbody import loads_request, record_id
from gateway.privacy import writes
from gateway.privacy.writes import Split
from gateway.state import Target
from gateway.types import Reply
from gateway.view import View

#: the CRM's own limit on records per insert, update and upsert
MAX_RECORDS = 100


async def write(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    module = req.module or ""
    if req.kind is Kind.BULK_WRITE_CREATE:
        _check_bulk_write_job(json_object(req.body), decision)
        return await ctx.forward.passthrough(req, decision)
    if req.kind is not Kind.INSERT and not await ctx.views.is_gdpr_module(view, module):
        # Stop processing exists only in GDPR modules; a Deal has no such state.
        return await ctx.forward.passthrough(req, decision)
    match req.kind:
        case Kind.RECORD_UPDATE | Kind.CONVERT | Kind.RELATED_WRITE:
            return await _one_record(ctx, req, view, decision)
        case Kind.MASS_UPDATE:
            return await _mass_update(ctx, req, view, decision)
    body = json_object(req.body)
    records = body.get("data")
    if not isinstance(records, list):
        raise InvalidData(details={"reason": "data must be a list of records"})
    if len(records) > MAX_RECORDS:
        decision.refuse(Reason.TOO_MANY_RECORDS)
        raise TooManyRecords(details={"limit": MAX_RECORDS})
    if req.kind is Kind.INSERT:
        refused = await missing_consent(ctx, view, module, records, range(len(records)), decision)
        targets: list[Target] = [(None, False)] * len(records)
        return await batch(ctx, req, decision, body, targets, refused=refused)
    if req.kind is Kind.UPSERT:
        fields = body.get("duplicate_check_fields")
        if not (isinstance(fields, list) and fields and all(isinstance(f, str) for f in fields)):
            fields = list(writes.DEFAULT_DUPLICATE_CHECK.get(module.lower(), ("Email",)))
        if req.external is not None:
            fields = []  # the external field decides the target: unknown to the gateway
        targets = await ctx.states.upsert_targets(view, module, records, fields)
        inserts = [i for i, (rid, state) in enumerate(targets) if rid is None and state is False]
        refused = await missing_consent(ctx, view, module, records, inserts, decision)
        return await batch(ctx, req, decision, body, targets, refused=refused)
    # UPDATE: every input names its record by id; one without an id names none, unless
    # X-EXTERNAL makes another field the key, whose target the gateway cannot look up.
    ids = [record_id(r) if isinstance(r, dict) else None for r in records]
    states = await ctx.states.states(view, module, [i for i in ids if i])
    keyless: bool | None = None if req.external is not None else False
    targets = [(i, states.get(i) if i else keyless) for i in ids]
    return await batch(ctx, req, decision, body, targets)


async def _one_record(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    """A write that names one record in its path: update, convert, a related-list write."""
    module = req.module or ""
    path_id = req.record_id or ""
    external = req.external
    if external is not None:
        rid, state = await ctx.states.by_external(view, module, external, path_id)
    else:
        rid, state = path_id, (await ctx.states.states(view, module, [path_id])).get(path_id)
        decision.add_record_id(path_id)
    if req.kind is Kind.RECORD_UPDATE:
        _body_names_only(req.body, {path_id, *([rid] if rid else [])})
    targets: list[Target] = [(rid, state)]
    if req.kind is Kind.CONVERT and state is False:
        # Converting into an existing Contact writes the lead's data onto it.
        contacts = _convert_contacts(req.body)
        found = await ctx.states.states(view, "Contacts", contacts)
        targets += [(cid, found.get(cid)) for cid in contacts]
    blocked = [(t, r) for t in targets if (r := writes.verdict(t[1])) is not None]
    if not blocked:
        return await ctx.forward.passthrough(req, decision)
    (rid, _), reason = blocked[0]
    decision.add_record_id(rid)
    decision.refuse(Reason(reason))
    return json_reply_of(400, {"data": [writes.refusal(rid, reason)]})


async def batch(
    ctx: Context,
    req: CanonicalRequest,
    decision: Decision,
    body: dict[str, Any],
    targets: Sequence[Target],
    *,
    list_key: str = "data",
    refused: dict[int, dict[str, Any]] | None = None,
) -> Reply:
    """``refused``: inputs already refused for another reason (missing consent)."""
    refused = dict(refused or {})
    for pos, (rid, state) in enumerate(targets):
        if pos in refused:
            continue
        decision.add_record_id(rid)
        reason = writes.verdict(state)
        if reason is not None:
            refused[pos] = writes.refusal(rid, reason)
            decision.refuse(Reason(reason))
    split = Split([i for i in range(len(targets)) if i not in refused], refused)
    total = len(targets)
    if not split.refused:
        return await ctx.forward.passthrough(req, decision)
    decision.outcome = REFUSED
    if not split.forward:
        entries = writes.merge(total, split, [], None)
        return json_reply_of(writes.batch_status(split, None), {"data": entries})
    items = body[list_key]
    sent = dict(body, **{list_key: [items[i] for i in split.forward]})
    resp = await ctx.forward.send(req.with_body(orjson.dumps(sent)), decision)
    answer = await ctx.forward.read_json(resp)
    upstream_entries = answer.get("data") if isinstance(answer, dict) else None
    entries = writes.merge(total, split, upstream_entries, answer)
    return json_reply_of(writes.batch_status(split, resp.status), {"data": entries})


async def missing_consent(
    ctx: Context,
    view: View,
    module: str,
    records: list[Any],
    inserts: Sequence[int],
    decision: Decision,
) -> dict[int, dict[str, Any]]:
    """Refusals for the inserted records without Data_Processing_Basis_Details, when the
    policy requires consent and the module is a GDPR module (it has that field)."""
    if not ctx.policy.require_consent or not inserts:
        return {}
    catalog = await ctx.views.catalog(view, module, decision)
    if catalog.get("Data_Processing_Basis_Details") is None:
        return {}
    refused = {
        i: writes.missing_consent(i)
        for i in inserts
        if not (isinstance(records[i], dict) and _has_consent(records[i]))
    }
    if refused:
        decision.refuse(Reason.MISSING_CONSENT)
    return refused


async def _mass_update(
    ctx: Context, req: CanonicalRequest, view: View, decision: Decision
) -> Reply:
    body = json_object(req.body)
    ids = body.get("ids")
    by_view = any(k.lower() in ("cvid", "territory") for k in body)
    if by_view or ids is None:
        # A custom view or territory picks records the gateway cannot see beforehand,
        # whatever ``ids`` holds.
        if ctx.policy.allow_mass_update_by_cvid:
            decision.note(Reason.MASS_UPDATE_UNCHECKED)
            return await ctx.forward.passthrough(req, decision)
        decision.refuse(Reason.UNKNOWN_TARGETS)
        raise NotAllowed(
            "Mass update by custom view or territory cannot be checked for records in "
            "stop processing; send the record ids.",
            details={"reason": "unknown_targets"},
        )
    if not isinstance(ids, list) or not all(
        isinstance(i, str | int) and not isinstance(i, bool) for i in ids
    ):
        raise InvalidData(details={"reason": "ids must be a list of record ids"})
    str_ids = [str(i) for i in ids]
    states = await ctx.states.states(view, req.module or "", str_ids)
    targets = [(i, states.get(i)) for i in str_ids]
    return await batch(ctx, req, decision, body, targets, list_key="ids")


def _check_bulk_write_job(body: dict[str, Any], decision: Decision) -> None:
    """An update or upsert job whose rows find their records by anything but ``id`` names
    targets the upload check could not see: refused."""
    operation = str(body.get("operation") or "").lower()
    resources = body.get("resource")
    if operation == "insert":
        return
    if not isinstance(resources, list):
        raise InvalidData(details={"reason": "resource must be a list"})
    for res in resources:
        find_by = res.get("find_by") if isinstance(res, dict) else None
        if find_by not in (None, "id"):
            decision.refuse(Reason.UNKNOWN_TARGETS)
            raise NotAllowed(
                "A bulk write that finds records by another field than id cannot be checked "
                "for records in stop processing.",
                details={"reason": "unknown_targets"},
            )


def _has_consent(record: dict[str, Any]) -> bool:
    for key, value in record.items():
        if key.lower() == "data_processing_basis_details":
            return isinstance(value, dict) and bool(value)
    return False


def _body_names_only(raw: bytes, allowed: set[str]) -> None:
    """A single-record write whose body names another record by id is refused: which of
    the two the CRM would update is not documented, and only the path's was checked."""
    if not raw.strip():
        return
    data = json_object(raw).get("data")
    for record in data if isinstance(data, list) else ():
        other = record_id(record) if isinstance(record, dict) else None
        if other is not None and other not in allowed:
            raise InvalidData(details={"reason": "the body names another record than the path"})


def _convert_contacts(raw: bytes) -> list[str]:
    """Ids of the existing Contacts a lead conversion merges into."""
    if not raw.strip():
        return []
    data = json_object(raw).get("data")
    out: list[str] = []
    for item in data if isinstance(data, list) else ():
        for key, value in item.items() if isinstance(item, dict) else ():
            if key.lower() != "contacts" or not value:
                continue
            cid = record_id(value) if isinstance(value, dict) else str(value)
            if cid:
                out.append(cid)
    return out


def json_object(raw: bytes) -> dict[str, Any]:
    # The SDKs send writes with no Content-Type: parse whatever it says.
    body = loads_request(raw)
    if not isinstance(body, dict):
        raise InvalidData(details={"reason": "the body must be a JSON object"})
    return body
