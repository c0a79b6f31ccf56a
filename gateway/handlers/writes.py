"""Writes: refuse, per record, writes that reach a record in stop processing.

A write reaches every record it changes or attaches to: the records it names by id (body,
path, or an ``X-EXTERNAL`` value the CRM resolves), the parent a note, attachment or
activity is attached to (``Parent_Id`` with ``$se_module``, ``What_Id``, ``Who_Id``), both
ends of a related-list write, the Contact a convert merges into, and the record an upsert's
duplicate check finds. All of them are looked up (``state.py``) right before forwarding,
each module once; only the inputs whose targets are all free are forwarded, and the CRM's
entries are merged back in input order. Delete never comes here: erasure must stay possible.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Sequence
from typing import Any, NoReturn

import orjson

from gateway.crm.request import CanonicalRequest
from gateway.crm.routes import Kind
from gateway.crm.upload_file import UploadScan
from gateway.decision import REFUSED, Decision
from gateway.errors import (
    InvalidData,
    MetadataUnavailable,
    NotAllowed,
    Reason,
    TooManyRecords,
    UpstreamRefused,
)
from gateway.forward import echoed_values, json_reply_of
from gateway.handlers import Context, uploads
from gateway.handlers.reads import guard_related_link
from gateway.jsonbody import UNREADABLE, is_record_id, loads_request, member, normal_id, record_id
from gateway.privacy import writes
from gateway.privacy.catalog import ModuleCatalog
from gateway.privacy.errors_body import scrub_answer
from gateway.privacy.redact import (
    LOOKUP,
    WRITE_DETAILS,
    Counts,
    MaskPlan,
    Tally,
    count_unjudged,
    redact_record,
    redact_write_answer,
)
from gateway.privacy.writes import Split
from gateway.rules import Mode, Rule, withholds
from gateway.state import FREE, Target, worse
from gateway.types import Reply
from gateway.view import View

#: the CRM's own limit on records per insert, update and upsert
MAX_RECORDS = 100


async def write(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    match req.kind:
        case Kind.BULK_WRITE_CREATE:
            return await _bulk_write_job(ctx, req, view, decision)
        case Kind.MASS_UPDATE:
            return await _mass_update(ctx, req, view, decision)
        case Kind.RELATED_WRITE:
            if req.related_module is not None:  # not a photo: a related list's link
                await guard_related_link(ctx, req, view, decision)
            return await _one_record(ctx, req, view, decision)
        case Kind.RECORD_UPDATE | Kind.CONVERT:
            return await _one_record(ctx, req, view, decision)
    module = req.module or ""
    body = json_object(req.body)
    records = member(body, "data")
    if not isinstance(records, list):
        raise InvalidData(details={"reason": "data must be a list of records"})
    if len(records) > MAX_RECORDS:
        decision.refuse(Reason.TOO_MANY_RECORDS)
        raise TooManyRecords(details={"limit": MAX_RECORDS})
    gdpr = await ctx.views.is_gdpr_module(view, module)
    ids = [record_id(r) if isinstance(r, dict) else UNREADABLE for r in records]
    own: list[Target]
    if req.kind is Kind.INSERT:
        own = [FREE] * len(records)
    elif gdpr and req.external is not None:
        own = await _external_targets(ctx, view, module, req, records, ids)
        if req.kind is Kind.UPSERT:
            # The CRM may match an upsert's row by its duplicate-check fields as well.
            fields = await _duplicate_fields(ctx, view, module, body, decision)
            matched = await ctx.states.upsert_targets(view, module, records, fields)
            own = [worse(a, b) for a, b in zip(own, matched, strict=True)]
    elif req.kind is Kind.UPSERT and gdpr:
        fields = await _duplicate_fields(ctx, view, module, body, decision)
        own = await ctx.states.upsert_targets(view, module, records, fields)
    elif gdpr:  # UPDATE: every input names its record by id
        states = await ctx.states.states(view, module, [i for i in ids if i and i != UNREADABLE])
        own = [
            Target(None, None) if i == UNREADABLE else Target(i, states.get(i)) if i else FREE
            for i in ids
        ]
    else:
        own = [Target(i if i != UNREADABLE else None, False) for i in ids]
    links = await _link_names(ctx, view, module, decision)
    parents = [writes.parent_ids(r, links) if isinstance(r, dict) else [] for r in records]
    if req.kind is not Kind.INSERT:
        await _add_current_parents(ctx, view, module, decision, [t.id for t in own], parents)
    targets = await _deciding(ctx, view, own, parents)
    refused: dict[int, dict[str, Any]] = {}
    if req.kind is Kind.INSERT or req.kind is Kind.UPSERT:
        inserts = [i for i, t in enumerate(own) if t.id is None and t.state is False]
        refused = await missing_consent(ctx, view, module, records, inserts, decision)
    return await batch(ctx, req, view, decision, body, targets, refused=refused)


async def _one_record(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    """A write that names one record in its path: an update, a convert, a related-list
    write. Every record it reaches must be free, or the whole request is refused."""
    module = req.module or ""
    path_id = req.record_id or ""
    gdpr = await ctx.views.is_gdpr_module(view, module)
    also: list[Target] = []
    if req.external is not None:
        # The CRM resolves the external value; the record it names is the target.
        own = await ctx.states.by_external(view, module, req.external, path_id)
        if not gdpr and own.id is not None:
            own = Target(own.id, False)
        as_id = normal_id(path_id)
        if (
            req.kind is not Kind.RECORD_UPDATE
            and gdpr
            and as_id
            and is_record_id(as_id)
            and as_id != own.id
        ):
            # The CRM documents X-EXTERNAL for a record's own path, not a convert's or a
            # related list's: one that does not resolve it there reads the path as an id.
            located = await ctx.states.locate(view, [as_id])
            also.append(Target(as_id, located.get(as_id)))
    else:
        rid = normal_id(path_id) or path_id
        state = (await ctx.states.states(view, module, [rid])).get(rid) if gdpr else False
        own = Target(rid, state)
    decision.add_record_id(own.id)
    body = _optional_json(req)
    data = member(body, "data") if isinstance(body, dict) else None
    if body is not None and data is not None and not isinstance(data, list):
        raise InvalidData(details={"reason": "data must be a list"})
    items = data if isinstance(data, list) else []
    named_module, named_ids = "", []  # the other records the write reaches by id
    parents: list[str | None] = []
    if req.kind is Kind.RECORD_UPDATE:
        objects = [i for i in items if isinstance(i, dict)]
        if len(objects) != len(items):
            raise InvalidData(details={"reason": "data must be a list of records"})
        # Under X-EXTERNAL the path holds a value, not an id: only the record the CRM
        # resolved it to may be named.
        allowed = {own.id} if req.external is not None else {normal_id(path_id), own.id}
        _body_names_only(objects, allowed)
        links = await _link_names(ctx, view, module, decision)
        parents = [p for item in objects for p in writes.parent_ids(item, links)]
        await _add_current_parents(ctx, view, module, decision, [own.id], [parents])
    elif req.kind is Kind.CONVERT:
        # Converting into an existing Contact writes the lead's data onto it.
        named_module, named_ids = "Contacts", _convert_contacts(items)
    elif req.related_module is not None and await ctx.views.is_gdpr_module(
        view, req.related_module
    ):
        ids = [_item_id(i) for i in items]
        if req.method == "DELETE":
            ids = (req.param("ids") or "").split(",")  # delink several: ?ids=1,2
        if req.related_id:
            # The path names the record; whichever other one the body or ``ids`` names (the
            # CRM's choice between them is not documented) is a target too.
            ids = [req.related_id, *(i for i in ids if i not in (None, ""))]
        named_module, named_ids = req.related_module, [normal_id(i) or UNREADABLE for i in ids]
    readable = [i for i in named_ids if i != UNREADABLE]
    states = await ctx.states.states(view, named_module, readable) if readable else {}
    targets = [own, *also]
    targets += [
        Target(None, None) if i == UNREADABLE else Target(i, states.get(i)) for i in named_ids
    ]
    (deciding,) = await _deciding(ctx, view, [FREE], [parents])
    targets.append(deciding)
    blocked = [(t, r) for t in targets if (r := ctx.verdict(decision, t.state)) is not None]
    if not blocked:
        return await forward_write(ctx, req, view, decision)
    target, reason = blocked[0]
    decision.add_record_id(target.id)
    decision.refuse(Reason(reason))
    return json_reply_of(400, {"data": [writes.refusal(target.id, reason, target.cause)]})


async def _external_targets(
    ctx: Context,
    view: View,
    module: str,
    req: CanonicalRequest,
    records: list[Any],
    ids: list[str | None],
) -> list[Target]:
    """Under ``X-EXTERNAL: Module.Field`` each row names its record by that field's value:
    the CRM resolves it (``by_external``). A row that also carries an ``id`` naming another
    record, or no value at all, is ambiguous: unknown. An upsert row whose value names no
    record inserts."""
    name = req.external_field[1].lower()
    external, kind = req.external or "", req.kind
    sem = asyncio.Semaphore(8)

    async def one(record: Any, rid: str | None) -> Target:
        value = member(record, name) if isinstance(record, dict) else None
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            return Target(None, None)
        async with sem:
            found = await ctx.states.by_external(view, module, external, str(value))
        if rid is not None and rid != found.id:
            return Target(None, None)
        if found.id is None and found.state is False and kind is not Kind.UPSERT:
            return Target(None, None)  # an update of a record that is not there: unknown
        return found

    return list(await asyncio.gather(*(one(r, i) for r, i in zip(records, ids, strict=True))))


async def _link_names(ctx: Context, view: View, module: str, decision: Decision) -> frozenset[str]:
    """The fields through which a written record links to others (lower case): its lookup
    fields and a note's or activity's parent. Setting one attaches the record to the
    record it names, so that record is a target too."""
    catalog = await ctx.views.catalog(view, module, decision)
    lookups = {
        n for n, f in catalog.fields.items() if f.data_type in ("lookup", "multiselectlookup")
    }
    return frozenset(lookups) | writes.PARENT_FIELDS


def _item_id(item: Any) -> Any:
    """An item of a related-list link: a record ``{"id": ...}`` or a bare id."""
    return record_id(item) if isinstance(item, dict) else item


async def _add_current_parents(
    ctx: Context,
    view: View,
    module: str,
    decision: Decision,
    ids: Sequence[str | None],
    parents: list[list[str | None]],
) -> None:
    """Add to each input's parents those its record hangs under now: editing a note under
    a record in stop processing processes that record too."""
    catalog = await ctx.views.catalog(view, module, decision)
    names = [
        f.api_name for f in catalog.fields.values() if f.api_name.lower() in writes.PARENT_FIELDS
    ]
    if not names:
        return
    wanted = [i for i in ids if i]
    now = await ctx.states.current_parents(view, module, wanted, names) if wanted else {}
    for pos, rid in enumerate(ids):
        if rid:
            current = now.get(rid)
            parents[pos] += current if current is not None else [None]


async def _deciding(
    ctx: Context, view: View, own: Sequence[Target], parents: Sequence[Sequence[str | None]]
) -> list[Target]:
    """Per input, the target that decides it: its own record when that is refused, else
    the first refused parent, else its own. Parents are found in whichever GDPR module
    holds them; a parent the gateway cannot read is unknown."""
    wanted = [p for ps in parents for p in ps if p]
    located = await ctx.states.locate(view, wanted) if wanted else {}
    out: list[Target] = []
    for target, ps in zip(own, parents, strict=True):
        deciding = target
        if writes.verdict(target.state) is None:
            for pid in ps:
                state = located.get(pid) if pid else None
                if writes.verdict(state) is not None:
                    deciding = Target(pid, state)
                    break
        out.append(deciding)
    return out


async def _duplicate_fields(
    ctx: Context, view: View, module: str, body: dict[str, Any], decision: Decision
) -> list[str] | None:
    """The fields an upsert matches on, as the CRM chooses them: the request's
    ``duplicate_check_fields``, else the module's system-defined fields and then every
    field its metadata marks unique. None when the gateway cannot know them."""
    given = member(body, "duplicate_check_fields")
    named = isinstance(given, list) and given and all(isinstance(f, str) for f in given)
    if named and "duplicate_check_fields" in body:
        return list(given)
    defaults = await _default_duplicate_fields(ctx, view, module, decision)
    if not named:
        return defaults
    # Spelled in another case: a CRM reading member names exactly matches by its defaults.
    return None if defaults is None else [*given, *(d for d in defaults if d not in given)]


async def _default_duplicate_fields(
    ctx: Context, view: View, module: str, decision: Decision
) -> list[str] | None:
    system = writes.SYSTEM_DUPLICATE_CHECK.get(module.lower())
    if system is None:
        kind = (await ctx.views.modules(view)).get(module.lower())
        if kind is None or kind[1] != "custom":
            return None
        system = writes.CUSTOM_DUPLICATE_CHECK
    catalog = await ctx.views.catalog(view, module, decision)
    return [*system, *(u for u in catalog.unique_fields() if u not in system)]


async def batch(
    ctx: Context,
    req: CanonicalRequest,
    view: View,
    decision: Decision,
    body: dict[str, Any],
    targets: Sequence[Target],
    *,
    list_key: str = "data",
    refused: dict[int, dict[str, Any]] | None = None,
) -> Reply:
    """``refused``: inputs already refused for another reason (missing consent)."""
    refused = dict(refused or {})
    for pos, target in enumerate(targets):
        if pos in refused:
            continue
        decision.add_record_id(target.id)
        reason = ctx.verdict(decision, target.state)
        if reason is not None:
            refused[pos] = writes.refusal(target.id, reason, target.cause)
            decision.refuse(Reason(reason))
    split = Split([i for i in range(len(targets)) if i not in refused], refused)
    total = len(targets)
    if not split.refused:
        return await forward_write(ctx, req, view, decision)
    decision.outcome = REFUSED
    if not split.forward:
        entries = writes.merge(total, split, [], None)
        return json_reply_of(writes.batch_status(split, None), {"data": entries})
    items = body[list_key]
    sent = dict(body, **{list_key: [items[i] for i in split.forward]})
    resp = await ctx.forward.send(req.with_body(orjson.dumps(sent)), decision)
    # The CRM's own entries are redacted and its errors scrubbed of echoed values; the
    # gateway's refusals hold neither.
    answer = scrub_answer(
        await ctx.forward.read_json(resp), echoed_values(req), failed=resp.status >= 400
    )
    counts = Tally()
    plan = await _answer_plan(ctx, req, view, decision)
    catalog = await ctx.views.catalog(view, plan.module, decision) if plan else None
    mode = ctx.policy.rule_mode(Rule.REDACT)
    redacted = answer if mode is Mode.ENFORCE else copy.deepcopy(answer)
    redact_write_answer(redacted, plan, counts)
    hide_duplicate_holders(redacted, catalog, counts)
    if withholds(mode, decision, counts):
        answer = redacted
    upstream_entries = answer.get("data") if isinstance(answer, dict) else None
    entries = writes.merge(total, split, upstream_entries, answer)
    return json_reply_of(writes.batch_status(split, resp.status), {"data": entries})


async def forward_write(
    ctx: Context, req: CanonicalRequest, view: View, decision: Decision
) -> Reply:
    """Forward a write whose targets are all free; its answer is read and redacted too (a
    write's entries may carry field values in ``details``)."""
    try:
        plan = await _answer_plan(ctx, req, view, decision)
    except (MetadataUnavailable, UpstreamRefused):
        if req.kind is not Kind.DELETE:
            raise
        # A delete is never refused: its answer is then checked as one of a module the
        # gateway does not know (every value but ids withheld).
        plan = None
    catalog = await ctx.views.catalog(view, plan.module, decision) if plan else None
    made = await _convert_plans(ctx, view, decision) if req.kind is Kind.CONVERT else {}
    resp = await ctx.forward.send(req, decision)

    kept = CONVERT_DETAILS if made else WRITE_DETAILS

    def rewrite(body: Any, counts: Counts) -> None:
        if made:
            _redact_converted(body, made, counts)
        redact_write_answer(body, plan, counts, kept)
        hide_duplicate_holders(body, catalog, counts)

    return await ctx.forward.json_reply(resp, rewrite, decision, req)


async def _answer_plan(
    ctx: Context, req: CanonicalRequest, view: View, decision: Decision
) -> MaskPlan | None:
    """The plan a write's answer is checked with: its records' module (a related-list
    write's answers are about the related records)."""
    module = req.related_module or req.module
    return await ctx.views.plan(view, module, decision) if module else None


def hide_duplicate_holders(body: Any, catalog: ModuleCatalog | None, counts: Counts) -> None:
    """A write refused for a duplicate value names the record holding it
    (``duplicate_record`` beside ``api_name``, in an error's details at any depth: a
    ``MULTIPLE_OR_MULTI_ERRORS`` nests them): for a restricted field, the answer a
    criterion on it would give. It is withheld unless ``api_name`` is a field of the module
    that is not restricted."""
    stack: list[tuple[Any, int]] = [(body, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, list) and depth < 16:
            stack.extend((v, depth + 1) for v in node)
        if not isinstance(node, dict) or depth >= 16:
            continue
        stack.extend((v, depth + 1) for v in node.values())
        holders = [k for k, v in node.items() if str(k).lower() == "duplicate_record" and v]
        if not holders:
            continue
        name = member(node, "api_name")
        info = catalog.get(name) if catalog is not None and isinstance(name, str) else None
        if info is None or (info.private is not None and info.private.restricted):
            for key in holders:
                node[key] = None
            if info is None:  # no field judged it: withheld in every mode
                count_unjudged(counts, len(holders))
            else:
                counts[info.api_name] = counts.get(info.api_name, 0) + len(holders)


_ID = re.compile(r"\d{1,25}")

#: what a convert makes, named in its answer's details as ``{"Contacts": {"name", "id"}}``
CONVERTED = ("Contacts", "Accounts", "Deals")
CONVERT_DETAILS = WRITE_DETAILS | {m.lower() for m in CONVERTED}


async def _convert_plans(
    ctx: Context, view: View, decision: Decision
) -> dict[str, MaskPlan | None]:
    """The plans of the modules a convert names; None for one whose metadata this client
    cannot have (a profile without Deals converts without a deal): a record of it is then
    named by its id alone."""
    plans: dict[str, MaskPlan | None] = {}
    for module in CONVERTED:
        try:
            plans[module.lower()] = await ctx.views.plan(view, module, decision)
        except (MetadataUnavailable, UpstreamRefused):
            plans[module.lower()] = None
    return plans


def _redact_converted(body: Any, plans: dict[str, MaskPlan | None], counts: Counts) -> None:
    """A convert's answer names the records it made or merged into (in an entry's
    ``details``, or in v2 in the entry itself), each a lookup of its module: its ``name``
    is that module's name field, withheld as a lookup's is. Anything else there than such
    an object, or an id, is withheld (it was not judged)."""
    data = body.get("data") if isinstance(body, dict) else None
    for entry in data if isinstance(data, list) else ():
        if not isinstance(entry, dict):
            continue
        details = entry.get("details")
        for holder in (entry, details) if isinstance(details, dict) else (entry,):
            _redact_named(holder, plans, counts)


def _redact_named(
    holder: dict[str, Any], plans: dict[str, MaskPlan | None], counts: Counts
) -> None:
    for key, value in list(holder.items()):
        lower = str(key).lower()
        if lower not in plans:
            continue
        plan = plans[lower]
        many = value if isinstance(value, list) else [value]
        for i, one in enumerate(many):
            if isinstance(one, dict) and plan is not None:
                redact_record(one, plan, counts, level=LOOKUP)
            elif isinstance(one, dict):  # its module's metadata is not at hand: the id only
                hidden = [k for k, v in one.items() if v is not None and str(k).lower() != "id"]
                for k in hidden:
                    one[k] = None
                count_unjudged(counts, len(hidden))
            elif one is not None and not (isinstance(one, str) and _ID.fullmatch(one)):
                many[i] = None
                count_unjudged(counts)
        if not isinstance(value, list):
            holder[key] = many[0]


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
    if not refused or not ctx.refuses(decision, Rule.CONSENT, Reason.MISSING_CONSENT):
        return {}
    decision.refuse(Reason.MISSING_CONSENT)
    return refused


async def _mass_update(
    ctx: Context, req: CanonicalRequest, view: View, decision: Decision
) -> Reply:
    body = json_object(req.body)
    ids = member(body, "ids")
    by_view = any(k.lower() in ("cvid", "territory") for k in body)
    if by_view or ids is None:
        # A custom view or territory picks records the gateway cannot see beforehand,
        # whatever ``ids`` holds.
        if ctx.policy.allow_mass_update_by_cvid:
            decision.note(Reason.MASS_UPDATE_UNCHECKED)
            return await forward_write(ctx, req, view, decision)
        decision.refuse(Reason.UNKNOWN_TARGETS)
        raise NotAllowed(
            "Mass update by custom view or territory cannot be checked for records in "
            "stop processing; send the record ids.",
            details={"reason": "unknown_targets"},
        )
    normal = [normal_id(i) for i in ids] if isinstance(ids, list) else None
    if normal is None or not all(normal):
        raise InvalidData(details={"reason": "ids must be a list of record ids"})
    str_ids = [i for i in normal if i]
    module = req.module or ""
    if await ctx.views.is_gdpr_module(view, module):
        states = await ctx.states.states(view, module, str_ids)
        own = [Target(i, states.get(i)) for i in str_ids]
    else:
        own = [Target(i, False) for i in str_ids]
    # The values a mass update writes apply to every record it names.
    data = member(body, "data")
    values = [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
    links = await _link_names(ctx, view, module, decision)
    applied = [p for d in values for p in writes.parent_ids(d, links)]
    parents = [list(applied) for _ in str_ids]
    await _add_current_parents(ctx, view, module, decision, str_ids, parents)
    targets = await _deciding(ctx, view, own, parents)
    return await batch(ctx, req, view, decision, body, targets, list_key="ids")


async def _bulk_write_job(
    ctx: Context, req: CanonicalRequest, view: View, decision: Decision
) -> Reply:
    """A bulk-write job runs files uploaded earlier: their records are checked again now
    (a record free at upload may be in stop processing since), an insert's too (the parent
    a note or an activity is attached to is a target). An update or upsert job whose rows
    find their records by anything but ``id``, or any job that runs a file the gateway did
    not see uploaded, names targets it cannot check: refused."""
    body = json_object(req.body)
    operation = str(member(body, "operation") or "").lower()
    resources = member(body, "resource")
    if not isinstance(resources, list):
        raise InvalidData(details={"reason": "resource must be a list"})
    ids: list[str] = []
    others: list[str] = []
    for res in resources:
        find_by = member(res, "find_by") if isinstance(res, dict) else None
        file_id = member(res, "file_id") if isinstance(res, dict) else None
        named = ctx.uploads.get(str(file_id)) if isinstance(file_id, str | int) else None
        if (operation != "insert" and find_by not in (None, "id")) or named is None:
            _unknown_targets(decision)
        ids += named.ids
        others += named.other_ids
        keys, linked = await _mapped_ids(ctx, view, decision, res, named)
        ids += keys
        others += linked
    refusal = await uploads.check_ids(ctx, view, decision, ids, others)
    return refusal or await ctx.forward.passthrough(req, decision)


async def _mapped_ids(
    ctx: Context, view: View, decision: Decision, res: dict[str, Any], named: UploadScan
) -> tuple[list[str], list[str]]:
    """What a resource's ``field_mappings`` make a target beside the file's ``id`` column:
    the id-like values of a column mapped to ``id`` (their records must be found) and the
    ids in a mapping's ``default_value`` (set on every row). A mapping that finds the
    record a lookup or parent field names by another field than its id (``find_by``) names
    records the gateway cannot see, unless the lookup is into a module without stop
    processing: refused."""
    mappings = member(res, "field_mappings")
    if mappings is None:
        return [], []
    if not isinstance(mappings, list) or not all(isinstance(m, dict) for m in mappings):
        raise InvalidData(details={"reason": "field_mappings must be a list of objects"})
    columns = dict(named.columns)
    keys: list[str] = []
    linked: list[str] = []
    for mapping in mappings:
        api_name = member(mapping, "api_name")
        name = api_name.lower() if isinstance(api_name, str) else ""
        found = keys if name == "id" else linked
        found += _ids_in(member(mapping, "default_value"))
        if name == "id":
            index = normal_id(member(mapping, "index"))
            if index is None or not index.isdecimal():
                _unknown_targets(decision)
            keys += columns.get(int(index), ())
        if member(mapping, "find_by") not in (None, "id") and not await _free_lookup(
            ctx, view, decision, res, name
        ):
            _unknown_targets(decision)
    return keys, linked


async def _free_lookup(
    ctx: Context, view: View, decision: Decision, res: dict[str, Any], name: str
) -> bool:
    """Whether field ``name`` of the resource's module is a lookup into a module whose
    records cannot be in stop processing."""
    module = member(res, "module")
    module = member(module, "api_name") if isinstance(module, dict) else module
    if not isinstance(module, str) or name in writes.PARENT_FIELDS:
        return False
    catalog = await ctx.views.catalog(view, await ctx.views.resolve_module(view, module), decision)
    info = catalog.fields.get(name)
    if info is None or info.data_type not in ("lookup", "multiselectlookup"):
        return False
    target = info.target_module
    return target is not None and not await ctx.views.is_gdpr_module(view, target)


def _ids_in(value: Any) -> list[str]:
    """The record ids a JSON value holds, at any depth."""
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ids_in(v)]
    if isinstance(value, list):
        return [i for v in value for i in _ids_in(v)]
    found = normal_id(value)
    return [found] if found and is_record_id(found) else []


def _unknown_targets(decision: Decision) -> NoReturn:
    decision.refuse(Reason.UNKNOWN_TARGETS)
    raise NotAllowed(
        "A bulk write that finds records by another field than id, or runs a file "
        "not uploaded through the gateway, cannot be checked for records in stop "
        "processing.",
        details={"reason": "unknown_targets"},
    )


def _has_consent(record: dict[str, Any]) -> bool:
    value = member(record, "data_processing_basis_details")
    return isinstance(value, dict) and bool(value)


def _body_names_only(items: list[dict[str, Any]], allowed: set[str | None]) -> None:
    """A single-record write whose body names another record by id is refused: which of
    the two the CRM would update is not documented, and only the path's was checked."""
    for record in items:
        other = record_id(record)
        if other is not None and other not in allowed:
            raise InvalidData(details={"reason": "the body names another record than the path"})


def _convert_contacts(items: list[Any]) -> list[str]:
    """Ids of the existing Contacts a lead conversion merges into (``UNREADABLE`` for one
    given in a shape the gateway cannot read)."""
    out: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            out.append(UNREADABLE)
            continue
        for key, value in item.items():
            if key.lower() != "contacts" or value in (None, "", {}, []):
                continue
            for one in value if isinstance(value, list) else [value]:
                cid = record_id(one) if isinstance(one, dict) else normal_id(one)
                out.append(cid or UNREADABLE)
    return out


def _optional_json(req: CanonicalRequest) -> Any:
    """A write's JSON body, if it has one, whatever its Content-Type says (the CRM reads a
    write's body as JSON). Only a record's photo and attachments take a file, which
    carries no record ids."""
    if not req.body.strip():
        return None
    files = req.route.template.endswith("/photo") or (req.related_list or "").lower() == (
        "attachments"
    )
    if files and (req.header("content-type") or "").lower().startswith("multipart/"):
        return None
    return json_object(req.body)


def json_object(raw: bytes) -> dict[str, Any]:
    # The SDKs send writes with no Content-Type: parse whatever it says.
    body = loads_request(raw)
    if not isinstance(body, dict):
        raise InvalidData(details={"reason": "the body must be a JSON object"})
    return body
