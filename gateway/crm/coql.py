"""Parser for Zoho CRM COQL ``select_query`` strings (pure, sans-I/O).

The gateway refuses a COQL query whose ``where`` / ``order by`` / ``group by``
names a restricted field, including ``Lookup.Field`` paths (contract
``zoho-crm-api.md`` §3), and rewrites result rows by column (§2). So this parser
reports every field path a query uses, and the result-row key of every column.
Anything it cannot read with certainty is a :class:`CoqlError` (the gateway
refuses the query); it never guesses, because a field that slips through is a
privacy leak.

Grammar enforced (COQL overview / limitations pages and the v7 COQL page, research
note §8; rule tags are cited in the code as ``[Q1]`` ...). Keywords are
case-insensitive::

    [Q1]  query     := SELECT columns FROM module [WHERE cond]
                       [GROUP BY paths] [ORDER BY orders]     -- either order, each once
                       [LIMIT n [OFFSET m] | LIMIT m "," n] [";"]
    [Q2]  columns   := column ("," column)* ; column := (path | FUNC "(" path ")") [AS name]
                       FUNC := COUNT | SUM | MAX | MIN | AVG ; "*" anywhere is an error
    [Q3]  path      := name ("." name){0,2}     name := [A-Za-z0-9_$]+, not a keyword,
                       not all digits (that is a number)
    [Q4]  cond      := term (conj term)*        -- one conjunction kind per level
          term      := "(" cond ")" | predicate
    [Q5]  predicate := path ( cmp rhs | [NOT] LIKE rhs | [NOT] IN "(" rhs ("," rhs)* ")"
                            | [NOT] BETWEEN rhs AND rhs | IS [NOT] NULL )
          cmp       := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    [Q6]  rhs       := string | number | TRUE | FALSE | NULL | path   -- a path is a field
                                                                       -- compared to a field
    [Q7]  string    := "'" ( char | "''" )* "'"  -- "''" is a quote; a backslash directly
                       before a quote is an error (see decisions); no string may hold "->"
                       in a value position
    [Q8]  orders    := (path | FUNC "(" path ")") [ASC | DESC] ("," ...)*
          paths     := path ("," path)*
    [Q9]  limits    := at most ``max_length`` characters, 32 nested parentheses,
                       whole numbers of at most 9 digits
    [Q10] names     := a where / order by / group by name equal to a column alias also
                       counts as the aliased column's path (both are recorded)
    [Q11] keys      := no two columns share a result-row key (case-insensitively), and
                       no alias is "id" unless the column is ``id`` (rows always carry id)

Decisions:

* Quote escapes: ``''`` is the only quote escape. A backslash directly before a
  quote is refused: under backslash-escaping ``'a\\' or Email = '...'`` is one
  string, under SQL quoting it ends after ``a\\`` and ``Email`` is code. The two
  readings of ``''`` cannot disagree that way (the other reading puts two literals
  side by side, which no COQL grammar accepts), so ``''`` is safe. Other backslash
  sequences (``\\\\``, ``\\n``) are plain string content: they end the string at the
  same place under both readings.
* Quoted field references (``'What_Id->Leads.Last_Name'``, seen in the CRM's own
  examples for polymorphic lookups) are refused, both as columns and in conditions,
  and a string value holding ``->`` is refused too, so a quoted text can never be
  a field we did not see. Backquoted identifiers are refused.
* Mixed ``and``/``or`` at one level is refused: the CRM requires bracketed criteria,
  and a guess at precedence is not "read with certainty". Chains of one conjunction
  are accepted.
* ``limit m, n`` means offset ``m``, limit ``n`` (the MySQL form the CRM follows).
* Aggregate row key: research §8 is silent on it; the parser uses the function in
  upper case around the dotted path as written, e.g. ``COUNT(id)``,
  ``MAX(Owner.name)``. An alias always wins. Dotted columns use the path as
  written, ``Referrer.Email`` (the CRM's own examples key lookup columns that way).
* Comments (``--``, ``/* */``), double-quoted strings, functions other than the five
  aggregates, subqueries and anything else unlisted are errors.
* Error reasons say what was expected and where, never what the query held.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Column",
    "CoqlError",
    "CoqlQuery",
    "parse_coql",
]

FUNCTIONS: frozenset[str] = frozenset({"count", "sum", "max", "min", "avg"})
MAX_LENGTH = 20_000
MAX_DEPTH = 32
_MAX_PATH_SEGMENTS = 3
_MAX_NUMBER_DIGITS = 9

_KEYWORDS = frozenset(
    {
        "select", "from", "where", "and", "or", "not", "in", "like", "between", "is",
        "null", "true", "false", "as", "order", "group", "by", "limit", "offset",
        "asc", "desc",
    }
)  # fmt: skip
_LITERAL_WORDS = frozenset({"true", "false", "null"})
_WS = " \t\r\n"
# A number must not run on into a name (``1abc`` is a name, never ``1`` + ``abc``).
_NUMBER_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?![A-Za-z0-9_$])")
_NAME_RE = re.compile(r"[A-Za-z0-9_$]+")
_COMPARATORS = ("!=", "<>", "<=", ">=", "=", "<", ">")
_PUNCT = "(),.;*"

# Token kinds
_NAME = "name"
_NUMBER = "number"
_STRING = "string"
_CMP = "cmp"
_PUNCTUATION = "punct"
_EOF = "eof"

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Column:
    """One select column."""

    path: Path  # ("Referrer", "Email") for Referrer.Email; ("Last_Name",)
    alias: str | None  # "ref_email" for ``Referrer.Email as ref_email``
    function: str | None  # "count" | "sum" | "max" | "min" | "avg" | None

    @property
    def key(self) -> str:
        """The key this column has in a result row (see module doc, decisions)."""
        if self.alias is not None:
            return self.alias
        dotted = ".".join(self.path)
        if self.function is not None:
            return f"{self.function.upper()}({dotted})"
        return dotted


@dataclass(frozen=True, slots=True)
class CoqlQuery:
    module: str
    columns: tuple[Column, ...]
    where_fields: tuple[Path, ...]  # every field path used in where, in order, de-duplicated
    order_by_fields: tuple[Path, ...]
    group_by_fields: tuple[Path, ...]
    limit: int | None
    offset: int | None

    @property
    def condition_fields(self) -> tuple[Path, ...]:
        """where + order by + group by, de-duplicated case-insensitively."""
        return _dedupe((*self.where_fields, *self.order_by_fields, *self.group_by_fields))


class CoqlError(ValueError):
    """The query cannot be read with certainty; the gateway refuses it."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


def parse_coql(text: str, *, max_length: int = MAX_LENGTH) -> CoqlQuery:
    """Parse a COQL ``select_query``."""
    if not isinstance(text, str):
        raise CoqlError("query must be text", 0)
    # [Q9] Checked before lexing so a huge input costs O(1).
    if len(text) > max_length:
        raise CoqlError(f"query longer than {max_length} characters", max_length)
    return _Parser(_lex(text), len(text)).parse()


def _path_key(path: Path) -> Path:
    # Field names are compared case-insensitively everywhere the gateway decides.
    return tuple(segment.lower() for segment in path)


def _dedupe(paths: tuple[Path, ...] | list[Path]) -> tuple[Path, ...]:
    seen: set[Path] = set()
    out: list[Path] = []
    for path in paths:
        key = _path_key(path)
        if key not in seen:
            seen.add(key)
            out.append(path)
    return tuple(out)


def _fail(what: str, position: int) -> NoReturn:
    raise CoqlError(f"{what} at position {position}", position)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    pos: int

    def is_kw(self, *words: str) -> bool:
        return self.kind == _NAME and self.text.lower() in words

    def is_punct(self, char: str) -> bool:
        return self.kind == _PUNCTUATION and self.text == char


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c in _WS:
            i += 1
            continue
        if c == "'":
            end = _string_end(text, i)
            tokens.append(_Token(_STRING, text[i:end], i))
            i = end
            continue
        match = _NUMBER_RE.match(text, i)
        if match is not None:
            tokens.append(_Token(_NUMBER, match.group(), i))
            i = match.end()
            continue
        match = _NAME_RE.match(text, i)
        if match is not None:
            tokens.append(_Token(_NAME, match.group(), i))
            i = match.end()
            continue
        for cmp in _COMPARATORS:
            if text.startswith(cmp, i):
                tokens.append(_Token(_CMP, cmp, i))
                i += len(cmp)
                break
        else:
            if c in _PUNCT:
                tokens.append(_Token(_PUNCTUATION, c, i))
                i += 1
                continue
            # Covers comments, double quotes, backquotes, '!' prefixes, non-ASCII.
            _fail("unexpected character", i)
    tokens.append(_Token(_EOF, "", n))
    return tokens


def _string_end(text: str, start: int) -> int:
    # [Q7] Returns the index just past the closing quote.
    n = len(text)
    i = start + 1
    while i < n:
        c = text[i]
        if c == "'":
            if i + 1 < n and text[i + 1] == "'":
                i += 2  # '' is a quote inside the string
                continue
            return i + 1
        if c == "\\":
            if i + 1 < n and text[i + 1] == "'":
                # The string's end would depend on the escaping convention.
                _fail("backslash before a quote in a string; write '' for a quote", i)
            i += 2  # a backslash pair ends the string at the same place either way
            continue
        i += 1
    _fail("unterminated string", start)


class _Parser:
    __slots__ = ("_group", "_i", "_n", "_order", "_tokens", "_where")

    def __init__(self, tokens: list[_Token], length: int) -> None:
        self._tokens = tokens
        self._i = 0
        self._n = length
        self._where: list[Path] = []
        self._order: list[Path] = []
        self._group: list[Path] = []

    # -- token helpers ----------------------------------------------------------
    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._i + ahead, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        if token.kind != _EOF:
            self._i += 1
        return token

    def _accept_kw(self, word: str) -> bool:
        if self._peek().is_kw(word):
            self._i += 1
            return True
        return False

    def _expect_kw(self, word: str) -> None:
        if not self._accept_kw(word):
            _fail(f"expected '{word.upper()}'", self._peek().pos)

    def _accept_punct(self, char: str) -> bool:
        if self._peek().is_punct(char):
            self._i += 1
            return True
        return False

    def _expect_punct(self, char: str, what: str) -> None:
        if not self._accept_punct(char):
            _fail(what, self._peek().pos)

    # -- grammar ----------------------------------------------------------------
    def parse(self) -> CoqlQuery:
        self._expect_kw("select")  # [Q1] only SELECT exists in COQL
        columns = self._columns()
        self._expect_kw("from")
        module = self._name("module name")
        if self._accept_kw("where"):
            self._condition(0)
        seen_group = seen_order = False
        while True:
            token = self._peek()
            if token.is_kw("group") and not seen_group:
                seen_group = True
                self._next()
                self._expect_kw("by")
                self._group_by()
            elif token.is_kw("order") and not seen_order:
                seen_order = True
                self._next()
                self._expect_kw("by")
                self._order_by()
            else:
                break
        limit, offset = self._limit()
        self._accept_punct(";")
        if self._peek().kind != _EOF:
            _fail("unexpected text after the query", self._peek().pos)

        aliases = {c.alias.lower(): c.path for c in columns if c.alias is not None}
        return CoqlQuery(
            module=module,
            columns=columns,
            where_fields=_dedupe(_resolve_aliases(self._where, aliases)),
            order_by_fields=_dedupe(_resolve_aliases(self._order, aliases)),
            group_by_fields=_dedupe(_resolve_aliases(self._group, aliases)),
            limit=limit,
            offset=offset,
        )

    def _name(self, what: str) -> str:
        token = self._peek()
        if token.kind == _STRING:
            # See decisions: a quoted field reference could name any field.
            _fail(f"quoted {what} is not supported", token.pos)
        if token.kind != _NAME:
            _fail(f"expected a {what}", token.pos)
        if token.text.lower() in _KEYWORDS:  # [Q3]
            _fail(f"keyword where a {what} was expected", token.pos)
        self._i += 1
        return token.text

    def _path(self) -> Path:
        # [Q3] name ("." name){0,2}
        segments = [self._name("field name")]
        while self._peek().is_punct("."):
            dot = self._next()
            if len(segments) == _MAX_PATH_SEGMENTS:
                _fail(f"field path longer than {_MAX_PATH_SEGMENTS} segments", dot.pos)
            segments.append(self._name("field name"))
        return tuple(segments)

    def _function_call(self) -> tuple[str, Path] | None:
        # FUNC "(" path ")" when the next tokens are a name followed by "(".
        token = self._peek()
        if token.kind != _NAME or not self._peek(1).is_punct("("):
            return None
        function = token.text.lower()
        if function not in FUNCTIONS:
            _fail("unsupported function", token.pos)
        self._i += 2
        if self._peek().is_punct("*"):
            _fail(f"{function.upper()}(*) is not valid COQL; name a field such as id", token.pos)
        path = self._path()
        self._expect_punct(")", "expected ')' after the function argument")
        return function, path

    def _columns(self) -> tuple[Column, ...]:
        # [Q2]
        columns: list[Column] = []
        keys: set[str] = set()
        while True:
            start = self._peek()
            if start.is_punct("*"):
                _fail("'select *' is not allowed; name the columns", start.pos)
            call = self._function_call()
            if call is not None:
                function: str | None = call[0]
                path = call[1]
            else:
                function = None
                path = self._path()
            alias = self._name("column alias") if self._accept_kw("as") else None
            column = Column(path=path, alias=alias, function=function)
            key = column.key.lower()
            # [Q11] A row key must map back to exactly one column, or the response
            # rewriter could not tell which field a value came from.
            if key in keys:
                _fail("two columns share one result key", start.pos)
            if key == "id" and (function is not None or _path_key(path) != ("id",)):
                _fail("alias 'id' is reserved for the record id", start.pos)
            keys.add(key)
            columns.append(column)
            if not self._accept_punct(","):
                break
        if not self._peek().is_kw("from"):
            _fail("expected ',' or 'FROM'", self._peek().pos)
        return tuple(columns)

    def _condition(self, depth: int) -> None:
        # [Q4] term (conj term)*, one conjunction kind per level.
        self._term(depth)
        conj: str | None = None
        while self._peek().is_kw("and", "or"):
            token = self._next()
            word = token.text.lower()
            if conj is None:
                conj = word
            elif conj != word:
                _fail("mixed 'and' and 'or' at one level; add parentheses", token.pos)
            self._term(depth)

    def _term(self, depth: int) -> None:
        token = self._peek()
        if token.is_punct("("):
            if depth >= MAX_DEPTH:  # [Q9] bounds recursion; 10,000 '(' stop here
                _fail(f"parentheses nested deeper than {MAX_DEPTH}", token.pos)
            self._next()
            self._condition(depth + 1)
            if not self._accept_punct(")"):
                _fail("unbalanced parenthesis: missing ')'", token.pos)
            return
        self._predicate()

    def _predicate(self) -> None:
        # [Q5] The left side is always a field.
        self._where.append(self._path())
        token = self._next()
        if token.kind == _CMP:
            self._rhs()
            return
        negated = token.is_kw("not")
        if negated:
            token = self._next()
        if token.is_kw("like"):
            self._rhs()
        elif token.is_kw("in"):
            self._expect_punct("(", "expected '(' after IN")
            self._rhs()
            while self._accept_punct(","):
                self._rhs()
            self._expect_punct(")", "expected ',' or ')' in the IN list")
        elif token.is_kw("between"):
            self._rhs()
            self._expect_kw("and")
            self._rhs()
        elif token.is_kw("is") and not negated:
            self._accept_kw("not")
            self._expect_kw("null")
        else:
            _fail("expected a comparison operator", token.pos)

    def _rhs(self) -> None:
        # [Q6]
        token = self._peek()
        if token.kind == _STRING:
            if "->" in token.text:  # [Q7] could be read as a polymorphic field reference
                _fail("string value shaped like a field reference", token.pos)
            self._next()
        elif token.kind == _NUMBER or token.is_kw(*_LITERAL_WORDS):
            self._next()
        elif token.kind == _NAME:
            # A field compared to a field: the right side is a used field too.
            self._where.append(self._path())
        else:
            _fail("expected a value", token.pos)

    def _group_by(self) -> None:
        # [Q8]
        while True:
            if self._function_call() is not None:
                _fail("functions are not allowed in GROUP BY", self._peek().pos)
            self._group.append(self._path())
            if not self._accept_punct(","):
                return

    def _order_by(self) -> None:
        # [Q8] An aggregate in ORDER BY sorts by its argument, so the argument is used.
        while True:
            call = self._function_call()
            self._order.append(call[1] if call is not None else self._path())
            if not self._accept_kw("asc"):
                self._accept_kw("desc")
            if not self._accept_punct(","):
                return

    def _number(self) -> int:
        token = self._next()
        # [Q9] Bounded digits: also keeps int() clear of its huge-string guard.
        if (
            token.kind != _NUMBER
            or not token.text.isdigit()
            or len(token.text) > _MAX_NUMBER_DIGITS
        ):
            _fail("expected a whole number of at most 9 digits", token.pos)
        return int(token.text)

    def _limit(self) -> tuple[int | None, int | None]:
        if not self._accept_kw("limit"):
            return None, None
        first = self._number()
        if self._accept_punct(","):
            return self._number(), first  # LIMIT offset, count
        if self._accept_kw("offset"):
            return first, self._number()
        return first, None


def _resolve_aliases(paths: list[Path], aliases: dict[str, Path]) -> list[Path]:
    # [Q10] A bare name equal to an alias may mean the aliased column (``order by e``
    # after ``Email as e`` sorts by Email) or a real field of that name; record both.
    out: list[Path] = []
    for path in paths:
        out.append(path)
        if len(path) == 1:
            target = aliases.get(path[0].lower())
            if target is not None:
                out.append(target)
    return out
