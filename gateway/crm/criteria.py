"""Parser for Zoho CRM search ``criteria`` strings (pure, sans-I/O).

The gateway refuses a search that *uses* a restricted field before it reaches the
CRM (contract ``zoho-crm-api.md`` §3), so the output that matters most is the exact
set of field names in a criteria string. Anything this parser cannot read with
certainty is a :class:`CriteriaError` (the gateway answers ``INVALID_QUERY``);
it never guesses, because a field name that slips through is a privacy leak.

Grammar enforced (Zoho "Search Records" docs, research note §7; rule tags are
cited in the code as ``[R1]`` ...)::

    [R1] criteria  := criterion                 -- a single criterion may omit its parentheses
                    | sequence                  -- top level: outer parentheses optional
    [R2] sequence  := term (conj term)*         -- one conjunction kind per level
    [R3] term      := "(" sequence ")" | "(" criterion ")"
    [R4] criterion := field ":" operator ":" value
    [R5] conj      := "and" | "or"              -- case-insensitive
    [R6] field     := NAME after percent-decoding repeatedly until stable,
                      NAME = [A-Za-z0-9_]+ ("." [A-Za-z0-9_]+)?   (dot: lookup path, Owner.name)
    [R7] operator  := equals | not_equal | starts_with | in | greater_than
                    | greater_equal | less_than | less_equal | between    -- case-insensitive
    [R8] value     := (plain | "\\(" | "\\)" | "\\," | "\\\\")+
                      plain is any character but "\\", "(", ")" and ","; the value runs
                      to the first unescaped ")" (so ":" is allowed, e.g. datetimes);
                      a backslash before anything else, or at the end, is an error
    [R9] arity     := "in": one or more comma-separated values; "between": exactly two;
                      every other operator: exactly one (an unescaped "," is an error);
                      no value may be empty
    [R10] limits   := at most ``max_criteria`` criteria (10, as the CRM allows);
                      at most ``max_length`` characters; at most 32 nested parentheses
    [R11] no hidden criterion: a value that, after percent-decoding repeatedly,
                      holds a ``:``-delimited segment spelling an operator is an error

Decisions:

* Whitespace (space, tab, CR, LF) is tolerated around parentheses, field names,
  operators and conjunctions. It is *kept* inside values, because there it is data.
* Mixed ``and``/``or`` at one level (``(A)and(B)or(C)``) is **rejected**. The CRM's
  precedence for that form is undocumented and its documented examples always
  bracket; returning a tree would mean guessing what the CRM evaluates. (The field
  set would be certain either way; the tree would not.)
* [R11] exists because the input was percent-decoded once by the web framework
  and the upstream may decode again: ``x%29or%28Email%3Aequals%3Ay`` is an
  innocent value to us but ``x)or(Email:equals:y`` to a second decoder. Every
  criterion needs ``:operator:``, so a value that could spell one is refused.
* Error reasons say what was expected and where, never what the input held
  (values are personal data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn, TypeAlias
from urllib.parse import unquote

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "OPERATORS",
    "CriteriaError",
    "Criterion",
    "Group",
    "Node",
    "criteria_fields",
    "parse_criteria",
]

OPERATORS: frozenset[str] = frozenset(
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
MAX_LENGTH = 10_000
MAX_DEPTH = 32

# More rounds than any honest client needs (one framework decode, perhaps one
# upstream decode); deeper encodings are treated as hostile rather than unwrapped
# forever (each round is O(n), so an unbounded loop would be a CPU sink).
_MAX_DECODE_ROUNDS = 8
_FIELD_RE = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?")
_NOT_OPERATOR_CHARS = re.compile(r"[^A-Za-z_]")
_WS = " \t\r\n"
_ESCAPABLE = "()\\,"
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class Criterion:
    """One ``field:operator:value`` test."""

    field: str  # as written (after percent-decoding), original case
    operator: str  # lower-case
    values: tuple[str, ...]  # unescaped


@dataclass(frozen=True, slots=True)
class Group:
    """Two or more nodes joined by one conjunction."""

    operator: str  # "and" | "or"
    items: tuple[Node, ...]


Node: TypeAlias = Criterion | Group


class CriteriaError(ValueError):
    """The criteria string cannot be read with certainty; the gateway refuses it."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


def parse_criteria(text: str, *, max_criteria: int = 10, max_length: int = MAX_LENGTH) -> Node:
    """Parse a search ``criteria`` value (already percent-decoded once)."""
    if max_criteria < 1:
        raise ValueError("max_criteria must be at least 1")
    if not isinstance(text, str):
        raise CriteriaError("criteria must be text", 0)
    # [R10] Checked before any scanning so a huge input costs O(1).
    if len(text) > max_length:
        raise CriteriaError(f"criteria longer than {max_length} characters", max_length)
    return _Parser(text, max_criteria).parse()


def criteria_fields(node: Node) -> list[str]:
    """Every field used, in order of appearance, de-duplicated case-insensitively.

    Field names are compared case-insensitively everywhere the gateway decides
    (contract §1), so ``email`` and ``Email`` are one field; the first spelling wins.
    """
    seen: set[str] = set()
    fields: list[str] = []
    # Explicit stack: the parser bounds depth, but this must not depend on that.
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Criterion):
            key = current.field.lower()
            if key not in seen:
                seen.add(key)
                fields.append(current.field)
        else:
            stack.extend(reversed(current.items))
    return fields


def _decode_until_stable(text: str, *, strict: bool) -> str | None:
    """Percent-decode until nothing changes; ``None`` if that cannot be done safely."""
    current = text
    for _ in range(_MAX_DECODE_ROUNDS):
        try:
            decoded = unquote(current, errors="strict" if strict else "replace")
        except UnicodeDecodeError:
            return None
        if decoded == current:
            return current
        current = decoded
    return None


def _decode_field_name(raw: str) -> str | None:
    # [R6] Decode repeatedly: a name that is still encoded after the framework's
    # decode (``Em%2561il``) may be decoded again upstream, so it is judged by what
    # it finally becomes. Invalid UTF-8 or an over-deep encoding is not a name.
    decoded = _decode_until_stable(raw, strict=True)
    if decoded is None or _FIELD_RE.fullmatch(decoded) is None:
        return None
    return decoded


def _spells_operator(text: str) -> bool:
    segments = text.split(":")
    if len(segments) < 2:
        return False
    # Every segment is checked, also the first and last: the text around the value
    # supplies colons too. Non-letters are dropped so padding cannot disguise one.
    return any(_NOT_OPERATOR_CHARS.sub("", s).lower() in OPERATORS for s in segments)


def _hides_criterion(raw_value: str) -> bool:
    # [R11] Judge the value at every decoding depth, not only the last one.
    current = raw_value
    for _ in range(_MAX_DECODE_ROUNDS):
        if _spells_operator(current):
            return True
        decoded = unquote(current, errors="replace")
        if decoded == current:
            return False
        current = decoded
    return True  # encoded deeper than any honest client: refuse


class _Parser:
    __slots__ = ("_count", "_max_criteria", "_n", "_pos", "_text")

    def __init__(self, text: str, max_criteria: int) -> None:
        self._text = text
        self._n = len(text)
        self._pos = 0
        self._count = 0
        self._max_criteria = max_criteria

    def _fail(self, what: str, position: int) -> NoReturn:
        raise CriteriaError(f"{what} at position {position}", position)

    def _skip_ws(self) -> None:
        while self._pos < self._n and self._text[self._pos] in _WS:
            self._pos += 1

    def parse(self) -> Node:
        self._skip_ws()
        if self._pos == self._n:
            self._fail("empty criteria", self._pos)
        # [R1] Without a leading '(' the input can only be one bare criterion.
        node: Node = (
            self._sequence(0) if self._text[self._pos] == "(" else self._criterion(open_at=None)
        )
        self._skip_ws()
        if self._pos != self._n:
            if self._text[self._pos] == ")":
                self._fail("unbalanced parenthesis: unexpected ')'", self._pos)
            self._fail("unexpected text after the criteria", self._pos)
        return node

    def _sequence(self, depth: int) -> Node:
        # [R2] term (conj term)*, ending at ')' or the end of the input.
        items = [self._term(depth)]
        conj: str | None = None
        while True:
            self._skip_ws()
            if self._pos == self._n or self._text[self._pos] == ")":
                break
            start = self._pos
            while self._pos < self._n and self._text[self._pos] in _ASCII_LETTERS:
                self._pos += 1
            word = self._text[start : self._pos].lower()
            if word not in ("and", "or"):  # [R5]
                self._fail("expected 'and' or 'or'", start)
            if conj is None:
                conj = word
            elif conj != word:
                # Decision: mixed conjunctions at one level are refused (module doc).
                self._fail("mixed 'and' and 'or' at one level; add parentheses", start)
            self._skip_ws()
            items.append(self._term(depth))
        if conj is None:
            # Redundant parentheses, e.g. ((A)): the single item is the node.
            return items[0]
        return Group(conj, tuple(items))

    def _term(self, depth: int) -> Node:
        # [R3] "(" sequence ")" | "(" criterion ")"
        open_at = self._pos
        if open_at == self._n or self._text[open_at] != "(":
            self._fail("expected '('", open_at)
        if depth >= MAX_DEPTH:  # [R10] bounds recursion; 10,000 '(' stop here
            self._fail(f"parentheses nested deeper than {MAX_DEPTH}", open_at)
        self._pos += 1
        self._skip_ws()
        node: Node
        if self._pos < self._n and self._text[self._pos] == "(":
            node = self._sequence(depth + 1)
            self._skip_ws()
        else:
            node = self._criterion(open_at=open_at)
        if self._pos == self._n:
            self._fail("unbalanced parenthesis: missing ')'", open_at)
        # Both branches stop only at ')' or the end.
        self._pos += 1
        return node

    def _scan_to_colon(self, what: str) -> int:
        i = self._pos
        while i < self._n:
            c = self._text[i]
            if c == ":":
                return i
            if c in "()\\":
                break
            i += 1
        self._fail(f"expected ':' after {what}", i)

    def _criterion(self, open_at: int | None) -> Criterion:
        # [R4] field ":" operator ":" value; open_at is None for the bare form [R1].
        start = self._pos
        if start < self._n and self._text[start] == ")":
            self._fail("empty parentheses", start)
        self._count += 1
        if self._count > self._max_criteria:  # [R10]
            self._fail(f"more than {self._max_criteria} criteria", start)

        colon = self._scan_to_colon("field name")
        raw_field = self._text[start:colon]
        field_text = raw_field.strip(_WS)
        field_at = start + (len(raw_field) - len(raw_field.lstrip(_WS)))
        if not field_text:
            self._fail("empty field name", start)
        field = _decode_field_name(field_text)
        if field is None:
            self._fail("invalid field name", field_at)

        self._pos = colon + 1
        op_start = self._pos
        colon = self._scan_to_colon("operator")
        raw_op = self._text[op_start:colon]
        op_at = op_start + (len(raw_op) - len(raw_op.lstrip(_WS)))
        operator = raw_op.strip(_WS).lower()
        if operator not in OPERATORS:  # [R7]
            self._fail("unknown operator", op_at)

        self._pos = colon + 1
        values = self._values(operator, open_at)
        return Criterion(field, operator, values)

    def _values(self, operator: str, open_at: int | None) -> tuple[str, ...]:
        # [R8] scan the value with its escapes; [R9] split on unescaped commas.
        text, n = self._text, self._n
        value_start = self._pos
        pieces: list[str] = []
        piece_starts = [value_start]
        commas: list[int] = []
        buf: list[str] = []
        i = value_start
        while True:
            if i == n:
                if open_at is not None:
                    self._fail("unbalanced parenthesis: missing ')'", open_at)
                break
            c = text[i]
            if c == "\\":
                if i + 1 == n:
                    self._fail("backslash at the end of a value", i)
                if text[i + 1] not in _ESCAPABLE:
                    self._fail("invalid escape: '\\' must precede '(', ')', ',' or '\\'", i)
                buf.append(text[i + 1])
                i += 2
                continue
            if c == ")":
                if open_at is None:
                    self._fail("unbalanced parenthesis: unexpected ')'", i)
                break
            if c == "(":
                self._fail("unescaped '(' in a value", i)
            if c == ",":
                pieces.append("".join(buf))
                buf = []
                commas.append(i)
                piece_starts.append(i + 1)
            else:
                buf.append(c)
            i += 1
        pieces.append("".join(buf))
        self._pos = i

        for piece, piece_start in zip(pieces, piece_starts, strict=True):
            if not piece:
                self._fail("empty value", piece_start)
        if operator == "between" and len(pieces) != 2:
            self._fail("'between' needs exactly two comma-separated values", value_start)
        if operator not in ("in", "between") and commas:
            self._fail("unescaped ',' in a single value", commas[0])
        if _hides_criterion(text[value_start:i]):  # [R11]
            self._fail("value reads as another criterion", value_start)
        return tuple(pieces)
