"""Request bodies the gateway inspects (writes, COQL, bulk jobs), parsed so that the CRM
cannot read them differently: a JSON object that repeats a key, in any letter case, is
refused. Parsers disagree on which of two ``"id"`` or ``"select_query"`` members wins, and
the gateway must check exactly what the CRM will act on. Nesting deeper than
``MAX_DEPTH`` or an object with more than ``MAX_MEMBERS`` members is refused too: no CRM
body comes near either, and the checks that walk a body must stay cheap."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import InvalidData

#: a record inside ``data`` inside a composite sub-request, with subform rows and
#: lookups, is about 10 levels deep
MAX_DEPTH = 64
#: a module has at most a few hundred fields
MAX_MEMBERS = 5_000


class _RepeatedKey(ValueError):
    pass


class _TooMany(ValueError):
    pass


def _no_repeats(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > MAX_MEMBERS:
        raise _TooMany()
    seen = {key.lower() for key, _ in pairs}
    if len(seen) != len(pairs):
        raise _RepeatedKey()


def _too_deep(value: Any) -> bool:
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def loads_request(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidData(details={"reason": "the body is not valid JSON"}) from None
    if isinstance(value, dict | list):
        if _too_deep(value):
            raise InvalidData(details={"reason": "the body is nested too deeply"})
        try:
            json.loads(raw, object_pairs_hook=_no_repeats)
        except _RepeatedKey:
            raise InvalidData(
                details={"reason": "a JSON object in the body repeats a key"}
            ) from None
        except _TooMany:
            raise InvalidData(
                details={"reason": "a JSON object in the body is too large"}
            ) from None
    return value


UNREADABLE = "?"  # an id given in a shape the gateway cannot read: its target is unknown


def member(obj: Mapping[Any, Any], name: str) -> Any:
    """The value of ``obj``'s member ``name`` (lower case) in any letter case, or None: the
    CRM compares member names that way, and a body repeating one in two cases was refused."""
    return next((v for k, v in obj.items() if str(k).lower() == name), None)


def record_id(record: dict[str, Any]) -> str | None:
    """The record's ``id`` member, whatever its letter case (repeats were refused), as the
    CRM reads it (``normal_id``); ``UNREADABLE`` when it has one the gateway cannot read
    (a float, an object, a list): such a target is unknown, never "no target"."""
    for key, value in record.items():
        if key.lower() == "id":
            if value is None or value == "":
                return None
            return normal_id(value) or UNREADABLE
    return None


_NUMERIC = re.compile(r"\+?\d+")


def normal_id(value: Any) -> str | None:
    """An id as the CRM compares ids: a JSON integer or a string, surrounding whitespace
    dropped, a numeric id as its number (``" 00123"``, ``"+123"``, ``123``, and the same in
    full-width digits name one record). A non-numeric string is kept as it is (an external
    value); anything else (a float, an object, a list, a boolean, "") names none."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if _NUMERIC.fullmatch(text):
        return str(int(text))
    return text or None


def is_record_id(value: str) -> bool:
    """A canonical numeric id: only such an id can be known to be in no module."""
    return value.isascii() and value.isdigit()
