"""Bulk-write uploads: the file names no module, so its ids are looked up in every GDPR
module. One stopped id refuses the whole file, which cannot be split. The file is parsed in
a worker thread with caps on what it may expand to, so a ZIP bomb costs neither the event
loop nor memory. Values read from the file never enter the audit trail."""

from __future__ import annotations

import asyncio

from gateway.crm.request import CanonicalRequest
from gateway.crm.upload_file import UploadLimits, UploadRefused, scan_upload
from gateway.decision import Decision
from gateway.errors import InvalidData, Reason
from gateway.forward import json_reply_of
from gateway.handlers import Context
from gateway.privacy import writes
from gateway.types import Reply
from gateway.view import View


async def upload(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    """Values of the ``id`` column must be found; any other id-like value is checked too,
    since a job's field mapping may make any column the key."""
    limits = UploadLimits()
    try:
        scan = await asyncio.to_thread(
            scan_upload, req.header("content-type") or "", req.body, limits
        )
    except UploadRefused as exc:
        decision.refuse(Reason.UPLOAD_REFUSED)
        raise InvalidData(details={"reason": exc.reason}) from None
    if scan.ids or scan.other_ids:
        modules = tuple(await ctx.views.gdpr_modules(view))
        wanted = list(dict.fromkeys([*scan.ids, *scan.other_ids]))
        found = await ctx.states.resolve(view, [(modules, i) for i in wanted])
        verdicts = [(i, writes.verdict(found[(modules, i)])) for i in scan.ids]
        verdicts += [(i, writes.STOP_PROCESSING) for i in scan.other_ids if found[(modules, i)]]
        bad = [(i, r) for i, r in verdicts if r is not None]
        if bad:
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
    return await ctx.forward.passthrough(req, decision)
