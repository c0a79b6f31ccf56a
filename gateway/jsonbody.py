"""Request bodies the gateway inspects (writes, COQL, bulk jobs), parsed so that the CRM
cannot read them differently: a JSON object that repeats a key, in any letter case, is
refused. Parsers disagree on which of two ``"id"`` or ``"select_query"`` members wins, and
the gateway must check exactly what the CRM will act on."""

from __future__ import annotations

import json
from typing import Any

import orjson

from gateway.errors import InvalidData


class _RepeatedKey(ValueError):
    pass


def _no_repeats(pairs: list[tuple[str, Any]]) -> None:
    seen = {key.lower() for key, _ in pairs}
    if len(seen) != len(pairs):
        raise _RepeatedKey()


def loads_request(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidData(details={"reason": "the body is not valid JSON"}) from None
    if isinstance(value, dict | list):
        try:
            json.loads(raw, object_pairs_hook=_no_repeats)
        except _RepeatedKey:
            raise InvalidData(
                details={"reason": "a JSON object in the body repeats a key"}
            ) from None
    return value


def record_id(record: dict[str, Any]) -> str | None:
    """The record's ``id`` member, whatever its letter case (repeats were refused), as the
    CRM reads it (``normal_id``)."""
    for key, value in record.items():
        if key.lower() == "id":
            return normal_id(value)
    return None


def normal_id(value: Any) -> str | None:
    """An id as the CRM compares ids: a JSON number or a string, surrounding whitespace
    dropped, a numeric id without its leading zeros (``" 00123"`` and ``123`` name one
    record). Anything else (an object, a list, a boolean, an empty string) names none."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        return text.lstrip("0") or "0"
    return text or None
