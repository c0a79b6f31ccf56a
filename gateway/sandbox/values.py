"""Typed comparison of stored values with query operands (search, COQL, bulk criteria).

Zoho compares by the field's data type: numbers numerically, dates and date-times as
instants, text case-insensitively. Operands arrive as strings (search, bulk) or literals
(COQL); both go through the same functions so that the three query languages agree.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

NUMERIC = frozenset({"currency", "double", "integer", "bigint", "percent", "decimal", "long"})
TEXTUAL = frozenset(
    {
        "text",
        "email",
        "phone",
        "textarea",
        "website",
        "picklist",
        "autonumber",
        "multiselectpicklist",
    }
)
LOOKUPS = frozenset({"lookup", "ownerlookup", "userlookup", "consent_lookup"})


def to_number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x.strip())
        except ValueError:
            return None
    return None


def to_int(x: Any) -> int | None:
    """An exact integer (ids are 19 digits: a float would merge neighbours), or None."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, str):
        text = x.strip()
        digits = text[1:] if text[:1] in ("-", "+") else text
        if digits.isascii() and digits.isdigit():
            return int(text)
    return None


def to_instant(x: Any) -> datetime | None:
    """Parse an ISO date or date-time; naive values are compared as naive."""
    if not isinstance(x, str) or not x:
        return None
    text = x.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time())
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _instant_cmp(a: Any, b: Any) -> int | None:
    da, db = to_instant(a), to_instant(b)
    if da is None or db is None:
        return None
    if (da.tzinfo is None) != (db.tzinfo is None):
        # A date operand against a date-time value: compare calendar days.
        da, db = (
            datetime.combine(da.date(), datetime.min.time()),
            datetime.combine(db.date(), datetime.min.time()),
        )
    return (da > db) - (da < db)


def scalar(value: Any) -> Any:
    """The comparable part of a stored value: a lookup's id, a tag list's names."""
    if isinstance(value, dict):
        return value.get("id")
    if isinstance(value, list):
        return [scalar_name(v) for v in value]
    return value


def scalar_name(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("name", value.get("id"))
    return value


def compare(data_type: str, a: Any, b: Any) -> int | None:
    """-1/0/1 comparing a stored scalar with an operand, or None when incomparable."""
    if a is None or b is None:
        return None
    if data_type in NUMERIC or (isinstance(a, int | float) and not isinstance(a, bool)):
        ia, ib = to_int(a), to_int(b)
        if ia is not None and ib is not None:
            return (ia > ib) - (ia < ib)
        na, nb = to_number(a), to_number(b)
        if na is None or nb is None:
            return None
        return (na > nb) - (na < nb)
    if data_type in ("date", "datetime"):
        return _instant_cmp(a, b)
    if isinstance(a, bool) or data_type == "boolean":
        sa, sb = str(a).lower(), str(b).lower()
        return 0 if sa == sb else None
    sa, sb = str(a).casefold(), str(b).casefold()
    return (sa > sb) - (sa < sb)


def equal(data_type: str, a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return any(equal(data_type, x, b) for x in a)
    return compare(data_type, a, b) == 0


def contains(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return any(contains(x, b) for x in a)
    return a is not None and str(b).casefold() in str(a).casefold()


def starts_with(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return any(starts_with(x, b) for x in a)
    return a is not None and str(a).casefold().startswith(str(b).casefold())


def sort_key(data_type: str, value: Any) -> tuple[int, Any]:
    """A key that sorts nulls first and otherwise by the type's natural order."""
    v = scalar(value)
    if isinstance(v, list):
        v = ",".join(str(x) for x in v)
    if v is None or v == "":
        return (0, 0)
    if data_type in NUMERIC or (isinstance(v, int | float) and not isinstance(v, bool)):
        n = to_number(v)
        return (1, n) if n is not None else (2, str(v).casefold())
    if data_type in ("date", "datetime"):
        inst = to_instant(v)
        if inst is not None:
            return (1, inst.timestamp())
    return (2, str(v).casefold())
