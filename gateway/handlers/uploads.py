"""Bulk-write uploads: the file names no module, so its ids are looked up in every GDPR
module. One stopped id refuses the whole file, which cannot be split. The file is parsed in
a worker thread with caps on what it may expand to, so a ZIP bomb costs neither the event
loop nor memory. Values read from the file never enter the audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson

from gateway.crm.request import CanonicalRequest
from gateway.crm.upload_file import UploadLimits, UploadRefused, scan_upload
from gateway.decision import Decision
from gateway.errors import InvalidData, Reason
from gateway.forward import json_reply_of
from gateway.handlers import Context
from gateway.types import Reply
from gateway.view import View


async def upload(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    """Values of the ``id`` column must be found; any other id-like value is checked too,
    since a job's field mapping may make any column the key. What the file names is kept
    by the file id the CRM gives it, so a bulk-write job checks it again when it runs."""
    limits = UploadLimits()
    try:
        scan = await asyncio.to_thread(
            scan_upload, req.header("content-type") or "", req.body, limits
        )
    except UploadRefused as exc:
        decision.refuse(Reason.UPLOAD_REFUSED)
        raise InvalidData(details={"reason": exc.reason}) from None
    refusal = await check_ids(ctx, view, decision, scan.ids, scan.other_ids)
    if refusal is not None:
        return refusal
    reply = await ctx.forward.passthrough(req, decision)
    file_id = _file_id(reply.body)
    if reply.status < 300 and file_id is not None:
        ctx.uploads[file_id] = scan
    return reply


async def check_ids(
    ctx: Context,
    view: View,
    decision: Decision,
    ids: Sequence[str],
    other_ids: Sequence[str],
) -> Reply | None:
    """The refusal of a file that names a record in stop processing (or an ``id`` whose
    state is unknown), or None."""
    if not ids and not other_ids:
        return None
    # A value of the id column must be a record of a GDPR module; any other id-like cell
    # counts only when it is one in stop processing.
    found = await ctx.states.locate(view, [*ids, *other_ids], absent=None)
    verdicts = [(i, ctx.verdict(decision, found[i])) for i in ids]
    verdicts += [(i, ctx.verdict(decision, True)) for i in other_ids if found[i]]
    bad = [(i, r) for i, r in verdicts if r is not None]
    if not bad:
        return None
    for _rid, reason in bad:
        decision.refuse(Reason(reason))
    return json_reply_of(
        400,
        {
            "code": "CANNOT_PROCESS",
            "details": {"ids": [i for i, _ in bad], "reason": bad[0][1]},
            "message": "The file names records in stop processing",
            "status": "error",
        },
    )


def _file_id(body: bytes) -> str | None:
    try:
        answer = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    details = answer.get("details") if isinstance(answer, dict) else None
    file_id = details.get("file_id") if isinstance(details, dict) else None
    return str(file_id) if isinstance(file_id, str | int) else None
