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


def scrub_answer(body: Any, echoed: frozenset[str]) -> Any:
    """``body`` with every error envelope in it (the answer itself, or entries of its
    ``data`` list) rewritten; anything else is returned as it is."""
    if isinstance(body, dict):
        if body.get("status") == "error" or ("code" in body and "data" not in body):
            return scrub_error(body, echoed)
        data = body.get("data")
        if isinstance(data, list):
            body["data"] = [
                scrub_error(e, echoed) if isinstance(e, dict) and e.get("status") == "error" else e
                for e in data
            ]
    return body


def scrub_error(envelope: dict[str, Any], echoed: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in envelope.items():
        if key == "message":
            out[key] = value if _plain_message(value, echoed) else WITHHELD_MESSAGE
        elif key in ("code", "status"):
            out[key] = value if isinstance(value, str) and _TOKEN.fullmatch(value) else None
        else:
            out[key] = _scrub_value(value, echoed)
    return out


def _scrub_value(value: Any, echoed: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _scrub_value(v, echoed) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_value(v, echoed) for v in value]
    if value is None or isinstance(value, bool):
        return value
    text = str(value)
    if isinstance(value, str) and not _TOKEN.fullmatch(text):
        return None
    return None if text.lower() in echoed else value


def _plain_message(value: Any, echoed: frozenset[str]) -> bool:
    if not isinstance(value, str):
        return False
    lowered = value.lower()
    if "@" in lowered:
        return False
    return not any(len(v) >= 3 and v in lowered for v in echoed)
