"""COQL execution over an org's records: resolve paths, filter, group, sort, page, project."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .coql import Column, Cond, CoqlError, Pred, Query, parse
from .schema import SUBFORM_MODULES
from .store import OrgStore
from .values import LOOKUPS, compare, equal, scalar, sort_key, to_number

DEFAULT_LIMIT = 200
MAX_LIMIT = 2000
MAX_HOPS = 2

Getter = Callable[[dict[str, Any]], Any]


def invalid(reason: str, **details: Any) -> CoqlError:
    return CoqlError("INVALID_QUERY", "invalid query formed", {"reason": reason, **details})


class _Resolver:
    """Turns ``Field`` / ``Lookup.Field`` paths into getters over base-module records."""

    def __init__(self, org: OrgStore, module: str) -> None:
        self.org = org
        self.module = module
        self.cache: dict[str, tuple[Getter, str]] = {}

    def __call__(self, path: str) -> tuple[Getter, str]:
        if path not in self.cache:
            self.cache[path] = self._resolve(path)
        return self.cache[path]

    def _resolve(self, path: str) -> tuple[Getter, str]:
        parts = path.split(".")
        if len(parts) > MAX_HOPS + 1:
            raise invalid("too many relations", column_name=path)
        getter, dtype = self._step(self.module, parts, path)
        return getter, dtype

    def _step(self, module: str, parts: list[str], path: str) -> tuple[Getter, str]:
        head, rest = parts[0], parts[1:]
        meta = self.org.field_map(module).get(head.lower())
        if meta is None:
            raise invalid("invalid column", column_name=path)
        key = str(meta["api_name"])
        dtype = str(meta.get("data_type", "text"))
        if dtype == "subform":
            raise invalid("subform fields cannot be queried", column_name=path)
        if not rest:
            return (lambda rec: rec.get(key)), dtype
        if dtype not in LOOKUPS:
            raise invalid("invalid column", column_name=path)
        target = self.org.lookup_target(meta)
        if target is None:
            # Owner-like lookups: the sub-field is read from the user (or the value itself).
            sub = rest[0]
            if len(rest) > 1:
                raise invalid("invalid column", column_name=path)
            return self._user_getter(key, sub), "bigint" if sub.lower() == "id" else "text"
        inner, inner_type = self._step(target, rest, path)
        org = self.org

        def hop(rec: dict[str, Any]) -> Any:
            ref = rec.get(key)
            rid = ref.get("id") if isinstance(ref, dict) else None
            target_rec = org.get(target, rid) if isinstance(rid, str) else None
            return inner(target_rec) if target_rec is not None else None

        return hop, inner_type

    def _user_getter(self, key: str, sub: str) -> Getter:
        org = self.org
        lower = sub.lower()

        def get(rec: dict[str, Any]) -> Any:
            ref = rec.get(key)
            if not isinstance(ref, dict):
                return None
            user = org.user_by_id(str(ref.get("id")))
            if lower in ("name", "full_name") and user is not None:
                return user["full_name"]
            if user is not None and lower in user:
                return user[lower]
            return next((v for k, v in ref.items() if k.lower() == lower), None)

        return get


def _like(pattern: str) -> re.Pattern[str]:
    parts = (re.escape(p) for p in pattern.split("%"))
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _empty(v: Any) -> bool:
    return v is None or v == "" or v == []


def _pred(resolve: _Resolver, p: Pred) -> Callable[[dict[str, Any]], bool]:
    get, dtype = resolve(p.path)
    if p.op == "null":
        return (lambda rec: not _empty(get(rec))) if p.negate else (lambda rec: _empty(get(rec)))
    if p.op == "like":
        rx = _like(str(p.values[0]))

        def like(rec: dict[str, Any]) -> bool:
            v = scalar(get(rec))
            return v is not None and bool(rx.match(str(v)))

        return (lambda rec: not like(rec)) if p.negate else like

    def eq(v: Any, operand: Any) -> bool:
        return (operand is None and _empty(v)) or equal(dtype, scalar(v), operand)

    if p.op == "in":
        vals = p.values
        if p.negate:
            return lambda rec: not any(eq(get(rec), x) for x in vals)
        return lambda rec: any(eq(get(rec), x) for x in vals)
    if p.op == "between":
        lo, hi = p.values

        def between(rec: dict[str, Any]) -> bool:
            v = scalar(get(rec))
            return compare(dtype, v, lo) in (0, 1) and compare(dtype, v, hi) in (-1, 0)

        return (lambda rec: not between(rec)) if p.negate else between
    operand = p.values[0]
    if p.op == "=":
        return lambda rec: eq(get(rec), operand)
    if p.op == "!=":
        return lambda rec: not eq(get(rec), operand)
    wanted = {">": (1,), ">=": (0, 1), "<": (-1,), "<=": (-1, 0)}[p.op]
    return lambda rec: compare(dtype, scalar(get(rec)), operand) in wanted


def _cond(resolve: _Resolver, c: Cond) -> Callable[[dict[str, Any]], bool]:
    if isinstance(c, Pred):
        return _pred(resolve, c)
    parts = [_cond(resolve, x) for x in c.children]
    if c.op == "and":
        return lambda rec: all(p(rec) for p in parts)
    return lambda rec: any(p(rec) for p in parts)


def _aggregate(func: str, values: list[Any]) -> Any:
    present = [v for v in values if not _empty(v)]
    if func == "count":
        return len(present)
    nums = [n for n in (to_number(scalar(v)) for v in present) if n is not None]
    if not nums:
        return None
    if func == "sum":
        return sum(nums)
    if func == "avg":
        return sum(nums) / len(nums)
    return min(nums) if func == "min" else max(nums)


def _grouped(q: Query, resolve: _Resolver, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    group_getters = [resolve(p)[0] for p in q.group_by]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in rows:
        key = tuple(repr(scalar(g(rec))) for g in group_getters)
        groups.setdefault(key, []).append(rec)
    out = []
    for members in groups.values():
        row: dict[str, Any] = {}
        for col in q.columns:
            if col.func:
                values = [resolve(col.path)[0](m) if col.path else 1 for m in members]
                row[col.key] = _aggregate(col.func, values)
            else:
                row[col.key] = resolve(col.path or "")[0](members[0])
        out.append(row)
    return out


def run_query(org: OrgStore, text: str) -> dict[str, Any] | None:
    """Run ``select_query``; None means no rows (the route answers 204)."""
    q = parse(text)
    module = org.resolve_module(q.module)
    if module is None or module in SUBFORM_MODULES:
        raise invalid("invalid module", module=q.module)
    resolve = _Resolver(org, module)
    has_agg = any(c.func for c in q.columns)
    for col in q.columns:
        if col.path:
            resolve(col.path)
        if has_agg and not col.func and col.path not in q.group_by:
            raise invalid("column must be grouped or aggregated", column_name=col.path)
    for path, _ in q.order_by:
        resolve(path)
    limit = DEFAULT_LIMIT if q.limit is None else q.limit
    if limit > MAX_LIMIT or limit < 1:
        raise CoqlError("LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_LIMIT})
    rows = org.active(module)
    if q.where is not None:
        keep = _cond(resolve, q.where)
        rows = [r for r in rows if keep(r)]
    # Default order is ascending id, as documented for COQL.
    rows.sort(key=lambda r: int(r["id"]) if str(r.get("id", "")).isdigit() else 0)
    if has_agg or q.group_by:
        out = _grouped(q, resolve, rows)
        for path, desc in reversed(q.order_by):
            out.sort(key=_row_key(path), reverse=desc)
    else:
        for path, desc in reversed(q.order_by):
            rows.sort(key=_record_key(*resolve(path)), reverse=desc)
        out = [_project(q.columns, resolve, r) for r in rows]
    page = out[q.offset : q.offset + limit]
    if not page:
        return None
    more = len(out) > q.offset + limit
    return {"data": page, "info": {"count": len(page), "more_records": more}}


def _row_key(key: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    return lambda row: sort_key("text", row.get(key))


def _record_key(get: Getter, dtype: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    return lambda rec: sort_key(dtype, get(rec))


def _project(columns: list[Column], resolve: _Resolver, rec: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for col in columns:
        value = resolve(col.path or "")[0](rec)
        row[col.key] = dict(value) if isinstance(value, dict) else value
    row["id"] = rec.get("id")
    return row
