"""COQL: tokenizer and parser for ``select ... from ... where ... order by ... limit ...``.

Covers what the CRM documents (research §8): select lists with ``Lookup.Field`` paths,
``as`` aliases and aggregate functions, ``where`` with ``= != < <= > >= like, not like,
in, not in, between, is [not] null`` joined by ``and``/``or`` with parentheses, ``group
by``, ``order by f [asc|desc]``, ``limit N [offset M]`` and ``limit M, N``. Keywords are
case-insensitive. Errors carry the CRM's codes: ``SYNTAX_ERROR`` for grammar,
``INVALID_QUERY`` for names (raised by ``coql_exec``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

KEYWORDS = frozenset(
    {
        "select",
        "from",
        "where",
        "and",
        "or",
        "not",
        "like",
        "in",
        "between",
        "is",
        "null",
        "order",
        "group",
        "by",
        "asc",
        "desc",
        "limit",
        "offset",
        "as",
        "true",
        "false",
    }
)
AGGREGATES = frozenset({"count", "sum", "min", "max", "avg"})

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<str>'(?:[^'\\]|\\.)*')
    |(?P<num>-?\d+(?:\.\d+)?(?![A-Za-z_]))
    |(?P<name>[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*)
    |(?P<op>!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),*])
    """,
    re.VERBOSE,
)


class CoqlError(ValueError):
    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def syntax_error(near: str, pos: int) -> CoqlError:
    return CoqlError(
        "SYNTAX_ERROR",
        "error occurred while parsing the query",
        {"near": near, "line": 1, "column": pos + 1},
    )


@dataclass(frozen=True)
class Tok:
    kind: str  # str, num, name, kw, op, punct, end
    text: str
    value: Any
    pos: int


@dataclass(frozen=True)
class Column:
    path: str | None  # None for count(*)
    func: str | None = None
    alias: str | None = None

    @property
    def key(self) -> str:
        if self.alias:
            return self.alias
        if self.func:
            return f"{self.func.upper()}({self.path or '*'})"
        return self.path or "*"


@dataclass(frozen=True)
class Pred:
    path: str
    op: str  # = != < <= > >= like in between null
    values: tuple[Any, ...] = ()
    negate: bool = False


@dataclass(frozen=True)
class BoolOp:
    op: str
    children: tuple[Pred | BoolOp, ...]


Cond = Pred | BoolOp


@dataclass
class Query:
    columns: list[Column]
    module: str
    where: Cond | None = None
    group_by: list[str] = field(default_factory=list)
    order_by: list[tuple[str, bool]] = field(default_factory=list)  # (path, descending)
    limit: int | None = None
    offset: int = 0


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise syntax_error(text[pos : pos + 20], pos)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "str":
            inner = raw[1:-1]
            toks.append(Tok("str", raw, re.sub(r"\\(.)", r"\1", inner), pos))
        elif kind == "num":
            toks.append(Tok("num", raw, float(raw) if "." in raw else int(raw), pos))
        elif kind == "name":
            if raw.lower() in KEYWORDS:
                toks.append(Tok("kw", raw, raw.lower(), pos))
            else:
                toks.append(Tok("name", raw, raw, pos))
        elif kind != "ws":
            toks.append(Tok(kind, raw, "!=" if raw == "<>" else raw, pos))
        pos = m.end()
    toks.append(Tok("end", "", None, len(text)))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def fail(self) -> CoqlError:
        return syntax_error(self.tok.text or "end of query", self.tok.pos)

    def take(self) -> Tok:
        t = self.tok
        self.i += 1
        return t

    def at_kw(self, *words: str) -> bool:
        return self.tok.kind == "kw" and self.tok.value in words

    def kw(self, word: str) -> None:
        if not self.at_kw(word):
            raise self.fail()
        self.i += 1

    def punct(self, ch: str) -> bool:
        if self.tok.kind == "punct" and self.tok.value == ch:
            self.i += 1
            return True
        return False

    def need(self, ch: str) -> None:
        if not self.punct(ch):
            raise self.fail()

    def name(self) -> str:
        if self.tok.kind != "name":
            raise self.fail()
        return str(self.take().value)

    def integer(self) -> int:
        if self.tok.kind != "num" or not isinstance(self.tok.value, int) or self.tok.value < 0:
            raise self.fail()
        return int(self.take().value)

    def query(self) -> Query:
        self.kw("select")
        columns = [self.column()]
        while self.punct(","):
            columns.append(self.column())
        self.kw("from")
        q = Query(columns=columns, module=self.name())
        if self.at_kw("where"):
            self.i += 1
            q.where = self.cond()
        if self.at_kw("group"):
            self.i += 1
            self.kw("by")
            q.group_by = [self.name()]
            while self.punct(","):
                q.group_by.append(self.name())
        if self.at_kw("order"):
            self.i += 1
            self.kw("by")
            q.order_by = [self.order_item()]
            while self.punct(","):
                q.order_by.append(self.order_item())
        if self.at_kw("limit"):
            self.i += 1
            first = self.integer()
            if self.punct(","):
                q.offset, q.limit = first, self.integer()
            else:
                q.limit = first
        if self.at_kw("offset"):
            self.i += 1
            q.offset = self.integer()
        if self.tok.kind != "end":
            raise self.fail()
        return q

    def column(self) -> Column:
        if self.tok.kind == "punct" and self.tok.value == "*":
            raise self.fail()  # the CRM has no "select *"
        path = self.name()
        func = None
        if path.lower() in AGGREGATES and self.punct("("):
            func = path.lower()
            arg: str | None = None
            if not self.punct("*"):
                arg = self.name()
            elif func != "count":
                raise self.fail()
            self.need(")")
            path = arg or ""
        alias = None
        if self.at_kw("as"):
            self.i += 1
            alias = str(self.take().value) if self.tok.kind in ("name", "str") else None
            if alias is None:
                raise self.fail()
        return Column(path or None, func, alias)

    def order_item(self) -> tuple[str, bool]:
        path = self.name()
        desc = False
        if self.at_kw("asc", "desc"):
            desc = self.take().value == "desc"
        return path, desc

    def cond(self) -> Cond:
        parts = [self.conj()]
        while self.at_kw("or"):
            self.i += 1
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def conj(self) -> Cond:
        parts = [self.atom()]
        while self.at_kw("and"):
            self.i += 1
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def atom(self) -> Cond:
        if self.punct("("):
            inner = self.cond()
            self.need(")")
            return inner
        return self.predicate()

    def literal(self) -> Any:
        t = self.tok
        if t.kind in ("str", "num"):
            self.i += 1
            return t.value
        if self.at_kw("true", "false"):
            self.i += 1
            return t.value == "true"
        if self.at_kw("null"):
            self.i += 1
            return None
        raise self.fail()

    def predicate(self) -> Pred:
        path = self.name()
        if self.tok.kind == "op":
            return Pred(path, str(self.take().value), (self.literal(),))
        negate = False
        if self.at_kw("is"):
            self.i += 1
            if self.at_kw("not"):
                self.i += 1
                negate = True
            self.kw("null")
            return Pred(path, "null", (), negate)
        if self.at_kw("not"):
            self.i += 1
            negate = True
        if self.at_kw("like"):
            self.i += 1
            if self.tok.kind != "str":
                raise self.fail()
            return Pred(path, "like", (self.take().value,), negate)
        if self.at_kw("in"):
            self.i += 1
            self.need("(")
            values = [self.literal()]
            while self.punct(","):
                values.append(self.literal())
            self.need(")")
            return Pred(path, "in", tuple(values), negate)
        if self.at_kw("between"):
            self.i += 1
            lo = self.literal()
            self.kw("and")
            return Pred(path, "between", (lo, self.literal()), negate)
        raise self.fail()


def parse(text: str) -> Query:
    return _Parser(text).query()
