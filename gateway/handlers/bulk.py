"""Bulk read: a job's criteria are guarded like a search; its result (a ZIP holding a CSV)
is rewritten with the private columns emptied, headers kept."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway import bulk
from gateway.crm.request import CanonicalRequest
from gateway.decision import REDACTED, Decision
from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidData,
    MetadataUnavailable,
    UnreadableUpstream,
)
from gateway.forward import STALE_AFTER_REWRITE
from gateway.handlers import Context
from gateway.handlers.reads import guard_custom_view
from gateway.jsonbody import loads_request, member
from gateway.privacy import guards
from gateway.privacy.catalog import COMPLETE, ModuleCatalog, walk_path
from gateway.privacy.redact import (
    ID_ONLY,
    Counts,
    MaskPlan,
    is_masked,
    path_mask,
    redact_body,
    safe_label,
)
from gateway.rules import Mode, Rule, withholds
from gateway.types import Reply
from gateway.upstream import GzipStreamDecoder, UpstreamResponse, fetch_json
from gateway.view import View

#: a CSV header the CRM writes: a field's api name, or a path of them (``Owner.id``)
_HEADER = re.compile(r"[A-Za-z0-9_$]{1,100}(\.[A-Za-z0-9_$]{1,100}){0,3}")


async def read_create(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    body = loads_request(req.body)
    query = body.get("query") if isinstance(body, dict) else None
    if not isinstance(query, dict):
        raise InvalidData(details={"reason": "query is missing"})
    name = module_name(query.get("module"))
    if name is None:
        raise InvalidData(details={"reason": "query.module is missing"})
    module = await ctx.views.resolve_module(view, name)
    decision.module = module
    # Keys in any letter case: the CRM may read "Criteria" as criteria (the body parser has
    # refused a key given twice in two cases).
    criteria = member(query, "criteria")
    paths = guards.bulk_criteria_fields(criteria)
    # whole_values: a criterion on a lookup is matched by its target's name too
    catalogs = await ctx.views.catalogs_for_paths(
        view, module, paths, decision, whole_values=True
    )
    ctx.guard(
        decision, Rule.CRITERIA, lambda found: guards.check_paths(module, paths, catalogs, found)
    )
    # A job may export a custom view's records: its criteria are checked as these are.
    cvid = member(query, "cvid")
    if cvid is not None:
        await guard_custom_view(ctx, view, module, cvid, decision)
    return await ctx.forward.passthrough(req, decision)


async def read_result(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    """The export streams out as it is rewritten. Its ``X-Privacy-Withheld`` leaves before
    any row is read, so it names the fields whose columns are emptied; how many values were,
    and how the export ended, the audit entry tells (written once the body is made)."""
    release = ctx.exports.take()  # refused before anything is fetched
    export: bulk.Export | None = None
    handed = False  # the body that releases the slot when it is closed is made
    try:
        fwd = ctx.forward
        status_url = f"{fwd.upstream_url}/crm/bulk/{req.version}/read/{req.job_id}"
        try:
            job = await fetch_json(fwd.upstream, "GET", status_url, view.headers, b"", 1 << 20)
        except UnreadableUpstream as exc:
            raise MetadataUnavailable(details={"reason": "bulk job unreadable"}) from exc
        name, fields = _job_module(job.body)
        if job.status != 200 or name is None:
            # Without the job's module, the export cannot be checked.
            raise MetadataUnavailable(details={"reason": "bulk job module unknown"})
        module = await ctx.views.resolve_module(view, name)
        decision.module = module
        paths = [tuple(f.split(".")) for f in fields if "." in f]
        catalogs = await ctx.views.catalogs_for_paths(view, module, paths, decision)
        plan = await ctx.views.plan(view, module, decision)
        resp = await fwd.send(req, decision)
        if resp.status != 200:
            # Not an export: a JSON answer, checked as any record-bearing answer is.

            def rewrite(body: Any, counts: Counts) -> None:
                redact_body(body, plan, counts)

            return await fwd.json_reply(resp, rewrite, decision, req)
        source = await _spool(resp, ctx.policy.max_bulk_result)
        blank = _blanker(module, catalogs, view.shown, names=_names_withheld(plan, catalogs))
        mode = ctx.policy.rule_mode(Rule.REDACT)
        enforce = mode is Mode.ENFORCE
        # Redaction not enforced: the columns are counted (in shadow, what enforce would
        # withhold is recorded) and kept. A column no metadata describes cannot be judged:
        # enforce empties it, every other mode refuses the file (fail closed).
        unresolved = _blanker(module, catalogs, view.shown, judge=False)
        unchecked: list[str] = []

        def judged(header: str) -> str | None:
            if not enforce and unresolved(header) is not None:
                unchecked.append(header)
            return blank(header)

        def closed() -> None:
            counts = export.counts if export else {}
            if enforce:
                decision.withheld(counts)
            else:
                withholds(mode, decision, counts)
            release()

        name = f"{req.job_id}.csv"  # the CRM's own name for it
        export = bulk.Export(source, judged, closed, name=name, empty=enforce)
        handed = True
        withheld = await export.start()  # reads every member's header row
        if unchecked:
            await export.aclose()
            raise UnreadableUpstream()
    finally:
        if not handed:
            release()
    # a new ZIP, sent chunked, named by the gateway as the CRM names it: <job id>.zip
    stale = (*STALE_AFTER_REWRITE, "content-length", "content-disposition")
    hdrs = [(n, v) for n, v in resp.headers if n not in stale]
    hdrs.append(("content-type", "application/zip"))
    if resp.header("content-disposition") is not None:
        hdrs.append(("content-disposition", f'attachment; filename="{req.job_id}.zip"'))
    if enforce:
        decision.outcome = REDACTED
        hdrs.append(("x-privacy-withheld", f"fields={','.join(withheld)}" if withheld else "0"))
    return Reply(resp.status, hdrs, produced=export)


def module_name(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("api_name"), str):
        name: str = value["api_name"]
        return name
    return None


def _job_module(body: Any) -> tuple[str | None, list[str]]:
    try:
        query = body["data"][0]["query"]
    except (KeyError, IndexError, TypeError):
        return None, []
    if not isinstance(query, dict):
        return None, []
    fields = query.get("fields")
    names = [f for f in fields if isinstance(f, str)] if isinstance(fields, list) else []
    return module_name(query.get("module")), names


def _names_withheld(plan: MaskPlan, catalogs: dict[str, ModuleCatalog]) -> dict[str, str]:
    """Multi-select lookup columns (lower-case name -> api name) whose cells hold the names
    of the records they point to, when those names are withheld (their module's name
    field is: ``MaskPlan.name_field``, or any module's for a parent field)."""
    fields = catalogs[plan.module.lower()].fields
    out = {}
    for lower, act in plan.by_lower.items():
        info = fields.get(lower)
        if act is None or act[1] is None or info is None:
            continue
        if info.data_type == "multiselectlookup" and (act[1].name_field or act[1] is ID_ONLY):
            out[lower] = info.api_name
    return out


def _blanker(
    module: str,
    catalogs: dict[str, ModuleCatalog],
    shown: frozenset[str],
    *,
    judge: bool = True,
    names: Mapping[str, str] | None = None,
) -> Callable[[str], str | None]:
    """A CSV column is emptied when a field on its path is exported blank by the CRM
    (``private.export``), restricted or not shown to this client, or when its header names
    no field the gateway can check: none the metadata lists, or a subform, whose cells
    would be rows of another module. ``judge=False``: only the latter. ``names``: columns
    whose cells are names the answer withholds (``_names_withheld``)."""

    def masked(info: Any) -> bool:
        if not judge:
            return False
        return info.private is not None and (info.private.export or is_masked(info, shown))

    def blank(header: str) -> str | None:
        if not _HEADER.fullmatch(header.strip()):
            # The header cell goes on as the CRM wrote it: only a field name may.
            raise UnreadableUpstream()
        path = header.strip().split(".")
        label = path_mask(module, path, catalogs, masked)
        if label is None:
            walk = walk_path(module, path, catalogs)
            if walk.stop == COMPLETE and walk.infos and walk.infos[-1].data_type == "subform":
                label = walk.label(len(path) - 1)
        if label is None and names and judge:
            label = names.get(header.strip().lower())
        # A header is the CRM's text: it names a count in the audit entry and a field in
        # X-Privacy-Withheld only when it is a plain name, as a JSON answer's keys do.
        return label if label is None or safe_label(label) else "unknown"

    return blank


async def _spool(resp: UpstreamResponse, limit: int) -> Any:
    """The upstream body, identity-decoded, in a spooled temporary file (bounded). A file
    that cannot be written (a full disk) is refused before the first byte leaves."""
    out = bulk.spooled()
    coding = (resp.header("content-encoding") or "identity").lower()
    if coding not in ("identity", "gzip"):
        await resp.aclose()
        raise UnreadableUpstream()
    decoder = GzipStreamDecoder() if coding == "gzip" else None
    size = 0
    try:
        async for chunk in resp.chunks:
            for data in decoder.pieces(chunk) if decoder else (chunk,):
                size += len(data)
                if size > limit:
                    raise BodyTooLarge("The bulk result is larger than the gateway inspects.")
                out.write(data)
        if decoder:
            out.write(decoder.flush())
    except OSError as exc:
        out.close()
        raise GatewayError("The gateway could not hold the bulk result to check it.") from exc
    except BaseException:
        out.close()
        raise
    finally:
        await resp.aclose()
    out.seek(0)
    return out
