"""COQL: restricted fields may not be used in where / order by / group by or aggregates;
selected columns are redacted, a whole lookup or subform column with its own module's
metadata."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from gateway.crm.coql import Column, CoqlError, parse_coql
from gateway.crm.request import CanonicalRequest
from gateway.decision import Decision
from gateway.errors import InvalidQuery, UnreadableUpstream
from gateway.handlers import Context
from gateway.jsonbody import loads_request
from gateway.privacy import guards
from gateway.privacy.redact import (
    Counts,
    build_coql_plan,
    check_data_key,
    redact_beside_data,
    redact_coql_rows,
)
from gateway.rules import Rule
from gateway.types import Reply
from gateway.view import View


def _check_row_keys(columns: Sequence[Column], fields: Collection[str]) -> None:
    """Rows are redacted by their keys: a key must say which column it is whichever way the
    CRM keys rows (by alias or by field). An alias that names a field of the module or
    another column, or two columns with one key, would let a value pass under another
    column's rule."""
    keys = [c.key.lower() for c in columns]
    paths = {".".join(c.path).lower() for c in columns}
    if len(set(keys)) != len(keys):
        raise InvalidQuery(details={"reason": "two columns have one name"})
    for column in columns:
        alias = (column.alias or "").lower()
        if alias and (alias in fields or alias in paths):
            raise InvalidQuery(details={"reason": "an alias may not be the name of a field"})


async def coql(ctx: Context, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
    # The SDKs send COQL with no Content-Type: parse whatever it says.
    body = loads_request(req.body)
    text = body.get("select_query") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise InvalidQuery(details={"reason": "select_query is missing"})
    try:
        query = parse_coql(text)
    except CoqlError as exc:
        raise InvalidQuery(details={"reason": exc.reason}) from None
    module = await ctx.views.resolve_module(view, query.module)
    decision.module = module
    paths = [c.path for c in query.columns] + list(query.condition_fields)
    catalogs = await ctx.views.catalogs_for_paths(view, module, paths, decision, whole_values=True)
    # An aggregate over a field uses it too: COUNT(Email) tells which records have one.
    used = [*query.condition_fields, *(c.path for c in query.columns if c.function)]
    ctx.guard(
        decision, Rule.CRITERIA, lambda found: guards.check_paths(module, used, catalogs, found)
    )
    _check_row_keys(query.columns, catalogs[module.lower()].fields)
    columns = [(c.key, c.path, c.function is not None) for c in query.columns]
    plan = build_coql_plan(module, columns, catalogs, view.shown)
    # the rest of the answer (its info, anything else) is checked as a read's is
    records = await ctx.views.plan(view, module, decision)
    resp = await ctx.forward.send(req, decision)

    def rewrite(parsed: Any, counts: Counts) -> None:
        if not isinstance(parsed, dict):
            raise UnreadableUpstream()
        check_data_key(parsed)
        if "data" in parsed:
            redact_coql_rows(parsed["data"], plan, counts)
        redact_beside_data(parsed, records, counts)

    return await ctx.forward.json_reply(resp, rewrite, decision, req)
