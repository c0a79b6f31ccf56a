"""The allow-list every audit entry passes before it is hashed.

The audit trail is read by people who must not see personal data, and it is kept for a
long time, so it holds names, ids, counts and reasons only. The gateway builds entries
from a ``Decision`` that already follows that rule; this processor is the second line of
defence and does not trust its input: a key it does not know is dropped, and a value that
does not have the shape of a name, an id or a template is dropped. When it drops a value
of a known key it adds ``scrubbed:<key>`` to ``reasons``, so a gateway bug shows up in the
trail instead of hiding in it. The dropped value itself never does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from structlog.typing import EventDict, WrappedLogger

from gateway.errors import Reason
from gateway.rules import Rule

MAX_STRING = 200  # any string longer than this is cut before it is checked
MAX_LIST = 1000  # more ids or names than this is not an audit fact but a data dump

#: ``schema`` of the entries written now: 2 added ``instance``, ``gateway_version`` and
#: ``schema`` itself (entries without ``schema`` are version 1)
SCHEMA_VERSION = 2

OUTCOMES = frozenset({"forwarded", "redacted", "refused", "error", "cancelled"})
EVENTS = frozenset({"request", "segment_start", "policy_reload"})

_RECORD_ID = re.compile(r"\d{1,25}")
# Reasons are codes from a closed vocabulary (gateway.errors.Reason, and the trail's own),
# never a value; ``scrubbed:<key>`` is added here.
_TRAIL_REASONS = frozenset(
    {"previous_tail_unreadable", "sink_recovered", "resumed_from_checkpoint"}
)
REASONS = frozenset(r.value for r in Reason) | _TRAIL_REASONS
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.$]+")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_CLIENT = _HEX32
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]+")
#: a client's X-Request-Id the gateway keeps (app.py) and the trail accepts
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_API_VERSION = re.compile(r"v?\d{1,3}(\.\d{1,3})?")
_MODULE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: a policy's ``version`` and a client rule's ``name``: the policy refuses any other
#: (policy.py), so what the author wrote is what the entry keeps
POLICY_VERSION = re.compile(r"[A-Za-z0-9_.:#+\-]+")
CLIENT_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_POLICY_VERSION = POLICY_VERSION
_INSTANCE = re.compile(r"[A-Za-z0-9._:/\-]{1,100}")
_VERSION = re.compile(r"[0-9A-Za-z.+\-]{1,40}")
_DIGEST = re.compile(r"[0-9a-f]{7,64}")
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
# A route is a template the gateway chose: literal segments are lower-case API words
# (``search``, ``settings``, ``coql``) and everything that varies is a ``{placeholder}``.
# That rejects record ids, module names, emails and query strings in the path.
_ROUTE_SEGMENT = re.compile(r"_{0,2}[a-z][a-z0-9_]{0,39}|\{[a-z_]{1,32}\}")
_ROUTE_ROOTS = ("crm", "_gateway")
# What a credential looks like where a name was expected: Zoho's ``1000.<hex>.<hex>``
# tokens, JWTs, the words that label secrets, and any long unbroken alphanumeric run.
_TOKENISH = re.compile(
    r"(?i:oauthtoken|bearer|authorization|access_token|refresh_token|password|secret)"
    r"|\d{4}\.[0-9a-f]{16,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}"
    r"|[A-Za-z0-9]{40,}"
)

Check = Callable[[object], Any]  # returns the kept value, or None to drop it
_MEMO_SIZE = 4096
_NUMBER = (int, float)


def looks_like_token(value: str) -> bool:
    return _TOKENISH.search(value) is not None


def _name(pattern: re.Pattern[str], *, memo: bool = True) -> Callable[[object], str | None]:
    """A string that matches ``pattern`` whole (after the cut) and does not look secret.

    ``memo``: the values that passed are remembered (at most ``_MEMO_SIZE``), since most
    repeat on every entry (method, route, module, field names, the policy's version); a
    value that was dropped is never kept. Not for values unique to an entry (its ids)."""
    passed: set[str] = set()

    def check(value: object) -> str | None:
        if not isinstance(value, str):
            return None
        value = value[:MAX_STRING]
        if value in passed:
            return value
        if not pattern.fullmatch(value) or looks_like_token(value):
            return None
        if memo:
            if len(passed) >= _MEMO_SIZE:
                passed.clear()
            passed.add(value)
        return value

    return check


_any_request_id = _name(_REQUEST_ID, memo=False)


def _request_id(value: object) -> str | None:
    # The gateway's own ids are uuid4 hex: 32 lower-case hex digits pass the pattern and
    # cannot look like a token (no 40-character run, no dot, no letter past f), so they
    # skip the token search (tested against looks_like_token on every such string).
    if type(value) is str and _HEX32.fullmatch(value):  # type(): __class__ can be a property
        return value
    return _any_request_id(value)


def _int_in(low: int, high: int) -> Check:
    def check(value: object) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return None
        return value

    return check


def _amount(value: object) -> float | None:
    # a NaN or an infinity would not survive JSON honestly; bool is an int but not a number
    # the usual case, one test; a float subclass (its own __round__, its own comparisons, a
    # __class__ that says float) takes the next, which rounds float(value)
    if type(value) is float:
        return round(value, 3) if 0 <= value < 1e12 else None  # NaN fails the range
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        return None
    if not math.isfinite(value) or not 0 <= value < 1e12:
        return None
    return round(float(value), 3)


def _client(value: object) -> str | None:
    # the keyed fingerprint from gateway.keys.fingerprint, never anything else
    return value if isinstance(value, str) and _CLIENT.fullmatch(value) else None


_policy_name = _name(_POLICY_VERSION)


def _policy_version(value: object) -> str | None:
    # a content digest is a fine version name even though it is a long hex run
    if isinstance(value, str) and _DIGEST.fullmatch(value):
        return value
    return _policy_name(value)


_routes_passed: set[str] = set()  # routes are templates: a few dozen, each checked once


def _route(value: object) -> str | None:
    if value == "unknown":  # Decision's default before classification
        return "unknown"
    if not isinstance(value, str) or not value.startswith("/"):
        return None
    # Only a plain str is looked up or remembered (type(), since a subclass can make its
    # __class__ say str): a subclass's own __hash__ and __eq__ could make it equal a
    # remembered route (or, remembered, make a later route equal it) whatever its text; its
    # text is checked, and a plain copy of it is what the entry keeps.
    plain = type(value) is str
    if plain and value in _routes_passed:
        return value
    segments = value[1:].split("/")
    if segments[0] not in _ROUTE_ROOTS:
        return None
    if not all(_ROUTE_SEGMENT.fullmatch(s) for s in segments[1:]):
        return None
    if not plain or len(value) > MAX_STRING:
        return value[:MAX_STRING]
    if len(_routes_passed) >= _MEMO_SIZE:
        _routes_passed.clear()
    _routes_passed.add(value)
    return value


def _reason(value: object) -> str | None:
    return value if isinstance(value, str) and value in REASONS else None


_field_name = _name(_FIELD_NAME)


def _outcome(value: object) -> str | None:
    return value if isinstance(value, str) and value in OUTCOMES else None


def _kept_items(value: object, check: Check) -> tuple[list[Any], bool]:
    """The items that pass ``check``, and whether anything was dropped."""
    if value is None:
        return [], False
    if not isinstance(value, list | tuple):
        return [], True
    if not value:
        return [], False
    kept = [v for v in (check(item) for item in value[:MAX_LIST]) if v is not None]
    return kept, len(kept) != len(value)


_SCALARS: dict[str, Check] = {
    "request_id": _request_id,
    "client": _client,
    "method": _name(_METHOD),
    "route": _route,
    "api_version": _name(_API_VERSION),
    "module": _name(_MODULE),
    "outcome": _outcome,
    "upstream_status": _int_in(100, 599),
    "status": _int_in(0, 599),
    "duration_ms": _amount,
    "policy_version": _policy_version,
    "policy_hash": _name(_DIGEST),
    "metadata_age_s": _amount,
    "client_rule": _name(CLIENT_RULE),
    "client_request_id": _name(CLIENT_REQUEST_ID, memo=False),
    "instance": _name(_INSTANCE),
    "gateway_version": _name(_VERSION),
    "schema": _int_in(1, 1000),
}
_RULES = frozenset(r.value for r in Rule)
_LISTS: dict[str, Check] = {
    "record_ids": _name(_RECORD_ID),
    "reasons": _reason,
    "fields_refused": _name(_FIELD_NAME),
    "would_refuse": _reason,
    "would_refuse_fields": _name(_FIELD_NAME),
    "shadowed_rules": lambda v: v if isinstance(v, str) and v in _RULES else None,
}
#: {"names": [...], "count": n} values
_COUNTED = ("fields_withheld", "would_redact")
_count = _int_in(0, 2**53)

#: every key an entry may have once it is written (the chain step adds the last two)
ENTRY_KEYS = frozenset({"event", "ts", "seq", *_SCALARS, *_LISTS, *_COUNTED, "prev_hash", "hash"})


def _fields_withheld(value: object) -> tuple[dict[str, Any], bool]:
    if value is None:
        return {"names": [], "count": 0}, False
    if not isinstance(value, dict):
        return {"names": [], "count": 0}, True
    names, dropped = _kept_items(value.get("names"), _field_name)
    count = _count(value.get("count"))
    return {"names": sorted(set(names)), "count": count or 0}, dropped or count is None


def scrub(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Rebuild the entry from allowed keys and well-shaped values only.

    ``event``, ``ts`` and ``seq`` come from the trail itself; ``prev_hash`` and ``hash`` are
    added after this step, so input that carries them is ignored.
    """
    scrubbed: list[str] = []
    out: dict[str, Any] = {}

    event = event_dict.get("event")
    out["event"] = event if isinstance(event, str) and event in EVENTS else "request"
    ts = event_dict.get("ts")
    out["ts"] = ts if isinstance(ts, str) and _TS.fullmatch(ts) else None
    seq = event_dict.get("seq")
    out["seq"] = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None

    for key, check in _SCALARS.items():
        raw = event_dict.get(key)
        if raw is None:  # every check drops None, and nothing was dropped
            out[key] = None
            continue
        out[key] = check(raw)
        if out[key] is None:
            scrubbed.append(key)

    for key, check in _LISTS.items():
        out[key], dropped = _kept_items(event_dict.get(key), check)
        if dropped:
            scrubbed.append(key)

    for key in _COUNTED:
        out[key], dropped = _fields_withheld(event_dict.get(key))
        if dropped:
            scrubbed.append(key)

    out["reasons"].extend(f"scrubbed:{key}" for key in scrubbed)
    return out
