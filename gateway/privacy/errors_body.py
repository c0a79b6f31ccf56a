"""The CRM's error bodies, rewritten before they reach the client.

Pure. A CRM error (``{"code", "details", "message", "status": "error"}``, whole or as a
per-record entry of a write's answer) may echo what the request carried, a criteria value,
a duplicate e-mail address, or a record's values (``duplicate_record``). Codes, field names,
JSON paths and ids stay; any other value in ``details`` is withheld (null), and a message
that holds a value of the request, or an e-mail address, is replaced by a fixed one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: what a code, a field name, a JSON path or an id looks like
_TOKEN = re.compile(r"[A-Za-z0-9_.$\-\[\]:]{1,200}")
WITHHELD_MESSAGE = "The CRM refused the request (its message is withheld: it echoed a value)."


#: parameters and body keys whose values are field or module names, not data
_NAMES = frozenset(
    {"fields", "sort_by", "sort_order", "per_page", "page", "include", "type", "module",
     "duplicate_check_fields", "$se_module", "trigger", "api_name", "id", "ids", "cvid"}
)  # fmt: skip
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")
_CRITERION = re.compile(r"\(\s*[^():]+:\s*[a-z_]+\s*:(.*?)\)", re.IGNORECASE)


def request_values(params: Iterable[tuple[str, str]], body: Any) -> frozenset[str]:
    """Values the request carried (query values, criteria operands, body leaves), lower
    case, so that an error echoing one of them is caught. Field and module names (the
    ``fields`` parameter, ``duplicate_check_fields``, ...) are vocabulary, not values."""
    out: set[str] = set()
    for name, value in params:
        if name == "criteria":
            for operand in _CRITERION.findall(value):
                out.update(v.strip().lower() for v in [operand, *operand.split(",")])
        elif name not in _NAMES:
            out.add(value.lower())
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        key, node = stack.pop()
        if key.lower() in _NAMES:
            continue
        if isinstance(node, dict):
            stack.extend((str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((key, v) for v in node)
        elif isinstance(node, str | int | float) and not isinstance(node, bool):
            text = str(node).lower()
            out.add(text)
            out.update(_QUOTED.findall(text))  # the literals of a COQL query
    return frozenset(v for v in out if len(v) >= 2)


def scrub_answer(
    body: Any, echoed: frozenset[str], *, failed: bool = False, fields: bool = True
) -> Any:
    """``body`` with every error envelope in it (the answer itself when it says
    ``"status": "error"`` or the HTTP status said it ``failed``, or entries of its ``data``
    list) rewritten; anything else is returned as it is. ``fields``: the answer is about a
    module's fields, so a field name in its details is one; without (configuration), a
    name there could be any word, a value's too, and is withheld."""
    if isinstance(body, dict):
        if body.get("status") == "error" or (failed and "data" not in body):
            return scrub_error(body, echoed, fields=fields)
        data = body.get("data")
        if isinstance(data, list):
            body["data"] = [
                scrub_error(e, echoed, fields=fields)
                if isinstance(e, dict) and e.get("status") == "error"
                else e
                for e in data
            ]
    return body


def scrub_error(
    envelope: dict[str, Any], echoed: frozenset[str], *, fields: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in envelope.items():
        if key in ("code", "status"):
            out[key] = value if isinstance(value, str) and _TOKEN.fullmatch(value) else None
        elif key == "message":
            names = _names_in(envelope.get("details")) if fields else set()
            out[key] = value if _plain_sentence(value, echoed, names) else WITHHELD_MESSAGE
        else:
            vocabulary = DETAILS_VOCABULARY if fields else _NO_FIELDS
            out[key] = _scrub_value(key, value, echoed, vocabulary)
    return out


#: ``details`` keys whose values are the CRM's vocabulary (names, paths, ids, limits)
DETAILS_VOCABULARY = frozenset(
    {"api_name", "json_path", "param", "param_name", "id", "ids", "reason", "limit",
     "maximum_length", "minimum_length", "expected_data_type", "index", "module",
     "parent_api_name", "resource_path_index", "supported_values", "permissions",
     "data_type", "field", "fields", "header", "code", "status", "reason_code"}
)  # fmt: skip


#: the vocabulary of an error about no module's fields (configuration)
_NO_FIELDS = DETAILS_VOCABULARY - {"api_name", "field", "fields", "parent_api_name"}


def _scrub_value(
    key: str, value: Any, echoed: frozenset[str], vocabulary: frozenset[str] = DETAILS_VOCABULARY
) -> Any:
    """Keys outside the vocabulary keep their shape but not their values; inside it, a
    value must look like a name, a path or an id, and not be one the request carried."""
    if isinstance(value, dict):
        return {k: _scrub_value(str(k), v, echoed, vocabulary) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_value(key, v, echoed, vocabulary) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if key.lower() not in vocabulary:
        return None
    text = str(value)
    if isinstance(value, str) and not _TOKEN.fullmatch(text):
        return text if key == "reason" and _plain_sentence(text, echoed, set()) else None
    return None if text.lower() in echoed else value


def _names_in(details: Any) -> set[str]:
    out: set[str] = set()
    stack = [details]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "api_name" and isinstance(v, str):
                    out.add(v.lower())
                else:
                    stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)
    return out


_WORD = re.compile(r"[A-Za-z0-9_$.]+")


def _plain_sentence(value: Any, echoed: frozenset[str], names: set[str]) -> bool:
    """A CRM message ("the id given seems to be invalid", "Cannot use the restricted
    field."): words in lower case (the first may be capitalised), short upper-case
    abbreviations (URL, API), and the field names its details name. Anything else (a
    name, a number, an e-mail address, a value the request carried) may be data."""
    if not isinstance(value, str) or "@" in value:
        return False
    words = _WORD.findall(value)
    for i, word in enumerate(words):
        lowered = word.lower()
        plain = word.isalpha() and (word.islower() or (i == 0 and word[1:].islower()))
        abbreviation = word.isalpha() and word.isupper() and len(word) <= 5
        if not (plain or abbreviation or lowered in names):
            return False
        if len(lowered) >= 3 and lowered in echoed:
            return False
    return True
