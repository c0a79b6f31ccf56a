"""Search API criteria: ``((Field:operator:value)and(...))``, parsed and evaluated.

Grammar (research §7): groups joined by ``and``/``or`` with nested parentheses; a single
criterion may be unbracketed; inside a value ``\\(``, ``\\)``, ``\\,`` and ``\\\\`` are
escapes, an unescaped comma separates list values (``in``, ``between``). ``equals`` on
text means *contains*, as in the real CRM. Anything malformed raises ``CriteriaError``,
which the route answers with ``INVALID_QUERY``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .store import OrgStore
from .values import LOOKUPS, NUMERIC, TEXTUAL, compare, contains, equal, scalar, starts_with

OPERATORS = frozenset(
    {
        "equals",
        "not_equal",
        "starts_with",
        "in",
        "greater_than",
        "greater_equal",
        "less_than",
        "less_equal",
        "between",
    }
)
MAX_CRITERIA = 10
EMPTY = "${EMPTY}"
_ORDERED = frozenset({"greater_than", "greater_equal", "less_than", "less_equal", "between"})
_ORDERED_TYPES = NUMERIC | {"date", "datetime"}


class CriteriaError(ValueError):
    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


@dataclass(frozen=True)
class Leaf:
    field: str
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    op: str
    children: tuple[Leaf | Group, ...]


Node = Leaf | Group


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def parse(self) -> Node:
        self.ws()
        if self.i >= len(self.s):
            raise CriteriaError("criteria is empty")
        node = self.expr() if self.peek() == "(" else self.criterion(bracketed=False)
        self.ws()
        if self.i != len(self.s):
            raise CriteriaError(f"unexpected text at position {self.i}")
        return node

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def expect(self, ch: str) -> None:
        self.ws()
        if self.peek() != ch:
            found = self.peek() or "end of criteria"
            raise CriteriaError(f"expected '{ch}' at position {self.i}, found {found!r}")
        self.i += 1

    def joiner(self) -> str | None:
        self.ws()
        for word in ("and", "or"):
            end = self.i + len(word)
            if self.s[self.i : end].lower() == word:
                rest = self.s[end:].lstrip()
                if rest.startswith("("):
                    self.i = end
                    return word
        return None

    def expr(self) -> Node:
        terms: list[Node] = [self.term()]
        ops: list[str] = []
        while (op := self.joiner()) is not None:
            ops.append(op)
            terms.append(self.term())
        if not ops:
            return terms[0]
        # "and" binds tighter than "or", as in every boolean grammar the CRM documents.
        ors: list[Node] = []
        run: list[Node] = [terms[0]]
        for op, term in zip(ops, terms[1:], strict=True):
            if op == "and":
                run.append(term)
            else:
                ors.append(run[0] if len(run) == 1 else Group("and", tuple(run)))
                run = [term]
        ors.append(run[0] if len(run) == 1 else Group("and", tuple(run)))
        return ors[0] if len(ors) == 1 else Group("or", tuple(ors))

    def term(self) -> Node:
        self.expect("(")
        self.ws()
        node = self.expr() if self.peek() == "(" else self.criterion(bracketed=True)
        self.expect(")")
        return node

    def name(self, what: str) -> str:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in ":()":
            self.i += 1
        token = self.s[start : self.i].strip()
        if self.peek() != ":":
            raise CriteriaError(f"missing ':' after the {what} at position {self.i}")
        self.i += 1
        if not token:
            raise CriteriaError(f"empty {what} at position {start}")
        return token

    def criterion(self, *, bracketed: bool) -> Leaf:
        field = self.name("field name")
        if not all(c.isalnum() or c in "_.$" for c in field):
            raise CriteriaError("invalid field name", api_name=field)
        op = self.name("operator").lower()
        if op not in OPERATORS:
            raise CriteriaError("invalid operator", operator=op)
        values = self.value(bracketed=bracketed)
        if any(v == "" for v in values):
            raise CriteriaError("empty value", api_name=field)
        if op == "between" and len(values) != 2:
            raise CriteriaError("between needs exactly two values", api_name=field)
        if op not in ("in", "between"):
            values = (",".join(values),)
        return Leaf(field, op, values)

    def value(self, *, bracketed: bool) -> tuple[str, ...]:
        parts: list[str] = []
        cur: list[str] = []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == "\\" and self.i + 1 < len(self.s) and self.s[self.i + 1] in "(),\\":
                cur.append(self.s[self.i + 1])
                self.i += 2
                continue
            if ch == ")" and bracketed:
                break
            if ch in "()":
                raise CriteriaError(f"unescaped '{ch}' in a value at position {self.i}")
            if ch == ",":
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
            self.i += 1
        else:
            if bracketed:
                raise CriteriaError("unbalanced parentheses")
        parts.append("".join(cur))
        return tuple(parts)


def parse(text: str) -> Node:
    return _Parser(text).parse()


def leaves(node: Node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    return [leaf for child in node.children for leaf in leaves(child)]


Predicate = Callable[[dict[str, Any]], bool]


def compile_criteria(org: OrgStore, module: str, text: str) -> Predicate:
    """Parse, check against the module's fields, and return a record predicate."""
    node = parse(text)
    if len(leaves(node)) > MAX_CRITERIA:
        raise CriteriaError("too many criteria", limit=MAX_CRITERIA)
    return _compile(org, module, node)


def _compile(org: OrgStore, module: str, node: Node) -> Predicate:
    if isinstance(node, Group):
        parts = [_compile(org, module, c) for c in node.children]
        if node.op == "and":
            return lambda rec: all(p(rec) for p in parts)
        return lambda rec: any(p(rec) for p in parts)
    return _leaf(org, module, node)


def _leaf(org: OrgStore, module: str, leaf: Leaf) -> Predicate:
    fields = org.field_map(module)
    head, _, sub = leaf.field.partition(".")
    meta = fields.get(head.lower())
    if meta is None:
        raise CriteriaError("invalid field", api_name=leaf.field)
    key = str(meta["api_name"])
    dtype = str(meta.get("data_type", "text"))
    if sub and dtype not in LOOKUPS:
        raise CriteriaError("invalid field", api_name=leaf.field)
    if sub:
        dtype = "bigint" if sub.lower() == "id" else "text"
    if leaf.op in _ORDERED and dtype not in _ORDERED_TYPES:
        raise CriteriaError("operator not supported for the field", api_name=key, operator=leaf.op)
    if leaf.op == "starts_with" and dtype not in TEXTUAL | LOOKUPS:
        raise CriteriaError("operator not supported for the field", api_name=key, operator=leaf.op)

    def get(rec: dict[str, Any]) -> Any:
        v = rec.get(key)
        if sub:
            return v.get(sub) if isinstance(v, dict) else None
        return v

    return _operator(leaf, dtype, get)


def _is_empty(v: Any) -> bool:
    return v is None or v == "" or v == []


def _operator(leaf: Leaf, dtype: str, get: Callable[[dict[str, Any]], Any]) -> Predicate:
    vals = leaf.values
    first = vals[0]
    lookup = dtype in LOOKUPS

    def eq(v: Any, operand: str, fuzzy: bool) -> bool:
        if operand == EMPTY:
            return _is_empty(v)
        if lookup and isinstance(v, dict):
            # A lookup matches by id, or by (part of) its display name.
            name = v.get("name")
            return v.get("id") == operand or (
                contains(name, operand) if fuzzy else equal("text", name, operand)
            )
        s = scalar(v)
        if fuzzy and dtype in TEXTUAL and dtype != "picklist":
            return contains(s, operand)
        return equal(dtype, s, operand)

    op = leaf.op
    if op == "equals":
        return lambda rec: eq(get(rec), first, True)
    if op == "not_equal":
        return lambda rec: not eq(get(rec), first, False)
    if op == "in":
        return lambda rec: any(eq(get(rec), x, False) for x in vals)
    if op == "starts_with":
        return lambda rec: starts_with(
            scalar(get(rec)) if not lookup else (get(rec) or {}).get("name"), first
        )
    if op == "between":
        lo, hi = vals
        return lambda rec: (
            _cmp(dtype, get(rec), lo) in (0, 1) and _cmp(dtype, get(rec), hi) in (-1, 0)
        )
    wanted = {
        "greater_than": (1,),
        "greater_equal": (0, 1),
        "less_than": (-1,),
        "less_equal": (-1, 0),
    }[op]
    return lambda rec: _cmp(dtype, get(rec), first) in wanted


def _cmp(dtype: str, v: Any, operand: str) -> int | None:
    return compare(dtype, scalar(v), operand)
