"""Record-bearing reads: list, one record, deleted, search, count and related lists.

Every parameter that names a field is checked against the records' module before the
request leaves (``criteria``, ``email``, ``phone``, ``word`` on any read, since a CRM could
honour them on more routes than it documents; ``sort_by``), and every answer is redacted.
A ``cvid`` names a custom view whose own criteria select the records: they are fetched
from the CRM and checked as a ``criteria`` parameter would be (``guard_custom_view``).
Parameters outside the route's row were refused before (pipeline.py ``_check_params``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gateway.crm.criteria import CriteriaError, criteria_fields, parse_criteria
from gateway.crm.request import CanonicalRequest
from gateway.crm.routes import Kind
from gateway.decision import Decision
from gateway.errors import InvalidData, InvalidQuery
from gateway.handlers import Context
from gateway.privacy import guards
from gateway.privacy.redact import Counts, redact_body
from gateway.rules import Rule
from gateway.types import Reply
from gateway.view import View

_SEARCH_PARAMS = frozenset({"criteria", "email", "phone", "word"})
_FIELD_NAME = re.compile(r"\$?[A-Za-z0-9_]{1,100}")
#: a custom view id: the CRM's ids are numeric
_CVID = re.compile(r"\d{1,25}")


async def read(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    module = req.module or ""
    if req.kind is Kind.RELATED:
        module = req.related_module or ""  # resolved by the view from the CRM's metadata
    params = req.params
    for name in ("fields", "sort_by"):
        value = req.param(name)
        if value is not None and any(
            not _FIELD_NAME.fullmatch(n.strip()) for n in value.split(",")
        ):
            # The record APIs take plain field names; a lookup path (Referrer.Email) would
            # come back under a key the redactor does not know.
            raise InvalidData(details={"reason": f"{name} must name fields of the module"})
    if req.kind is Kind.RELATED:
        await guard_related_link(ctx, req, view, decision)
    if any(name in _SEARCH_PARAMS for name, _ in params):
        await guard_search(ctx, view, module, params, decision)
    if req.param("sort_by") is not None:
        catalog = await ctx.views.catalog(view, module, decision)
        ctx.guard(decision, Rule.SORT, lambda _: guards.check_sort_params(catalog, params))
    cvid = req.param("cvid")
    if cvid is not None:
        await guard_custom_view(ctx, view, module, cvid, decision)
    plan = await ctx.views.plan(view, module, decision)
    include_private, kept = take_include_private(params)
    resp = await ctx.forward.send(req.with_params(kept), decision)

    def rewrite(body: Any, counts: Counts) -> None:
        redact_body(body, plan, counts, include_private=include_private)

    return await ctx.forward.json_reply(resp, rewrite, decision, req)


async def guard_related_link(
    ctx: Context, req: CanonicalRequest, view: View, decision: Decision
) -> None:
    """A related list's records are those whose lookup names the parent record: reading
    the list, or linking and delinking in it (which touches a related record only when the
    lookup names the parent), reads that lookup's value (``guards.check_related_link``)."""
    related = await ctx.views.catalog(view, req.related_module or "", decision)
    parent = req.module or ""
    ctx.guard(decision, Rule.CRITERIA, lambda _: guards.check_related_link(related, parent))


async def guard_search(
    ctx: Context, view: View, module: str, params: Sequence[tuple[str, str]], decision: Decision
) -> None:
    catalog = await ctx.views.catalog(view, module, decision)
    paths: list[tuple[str, ...]] = []
    criteria = dict(params).get("criteria")
    if criteria is not None:
        try:
            node = parse_criteria(criteria)
        except CriteriaError as exc:
            raise InvalidQuery(details={"reason": exc.reason}) from None
        paths = [tuple(name.split(".")) for name in criteria_fields(node)]
    allow_word = ctx.policy.allow_word_search
    paths += guards.word_lookups(catalog, params, allow_word=allow_word)
    ctx.guard(
        decision,
        Rule.CRITERIA,
        lambda _: guards.check_search_params(catalog, params, allow_word=allow_word),
    )
    # whole_values: a criterion on a lookup is matched by its target's name too
    catalogs = await ctx.views.catalogs_for_paths(
        view, module, paths, decision, whole_values=True
    )
    ctx.guard(
        decision, Rule.CRITERIA, lambda found: guards.check_paths(module, paths, catalogs, found)
    )


async def guard_custom_view(
    ctx: Context, view: View, module: str, cvid: object, decision: Decision
) -> None:
    """A read (or a bulk read) of custom view ``cvid``: the records the CRM returns are
    those its criteria select, so a view filtering on a restricted field tells which
    records hold a value, as a criterion on it would. Its definition is fetched through the
    metadata cache (fail closed: 503, or the CRM's own refusal of the id) and its fields
    are checked under the criteria rule, its sort field under the sort rule."""
    if isinstance(cvid, int) and not isinstance(cvid, bool):
        cvid = str(cvid)
    if not isinstance(cvid, str) or not _CVID.fullmatch(cvid):
        raise InvalidData(
            details={"reason": "cvid must be a custom view's numeric id", "param_name": "cvid"}
        )
    found = await ctx.views.custom_view(view, module, cvid, decision)
    if found.cross_filters:
        # Criteria on the fields of related records, whose module the view names by a
        # relation the gateway cannot resolve: it cannot be checked, so it is refused.
        raise InvalidQuery(details={"reason": "Cannot check the custom view's cross filters."})
    paths = list(found.paths)
    # whole_values: a criterion on a lookup is matched by its target's name too
    catalogs = await ctx.views.catalogs_for_paths(
        view, module, paths, decision, whole_values=True
    )
    # A field the metadata does not describe (added since it was fetched, maybe
    # restricted) is refused by check_paths itself, in every mode.
    ctx.guard(decision, Rule.CRITERIA, lambda hit: guards.check_paths(module, paths, catalogs, hit))
    sort_by = found.sort_by
    if sort_by is not None:
        catalog = await ctx.views.catalog(view, module, decision)
        sort = [("sort_by", sort_by)]
        ctx.guard(decision, Rule.SORT, lambda _: guards.check_sort_params(catalog, sort))


def take_include_private(
    params: Sequence[tuple[str, str]],
) -> tuple[bool, list[tuple[str, str]]]:
    """``include=private_fields`` is the gateway's; the rest of ``include`` goes on."""
    wanted = False
    kept: list[tuple[str, str]] = []
    for name, value in params:
        if name == "include":
            items = [i for i in value.split(",") if i]
            others = [i for i in items if i.strip().lower() != "private_fields"]
            wanted = len(others) != len(items)
            if others:
                kept.append((name, ",".join(others)))
            continue
        kept.append((name, value))
    return wanted, kept
