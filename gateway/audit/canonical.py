"""The bytes the chain is computed over, and the functions that hash and sign them.

Canonical JSON is orjson with sorted keys and no whitespace. orjson prints floats in their
shortest round-trip form, so ``dumps(loads(line))`` gives back the same bytes: a verifier
re-serialises what it parsed and never depends on how a line was laid out on disk.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

#: prev_hash of the very first entry of a log
GENESIS_HASH = "0" * 64


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """``sha256(prev_hash ‖ canonical_json(entry without "hash"))``.

    prev_hash is hashed twice (as the prefix and inside the JSON) on purpose: the prefix
    makes the chaining explicit and independent of the JSON layout.
    """
    body = {k: v for k, v in entry.items() if k != "hash"}
    prev = str(entry.get("prev_hash", ""))
    return sha256_hex(prev.encode("ascii", "replace") + canonical_json(body))


def hmac_sha256_hex(secret: bytes, data: bytes) -> str:
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339, UTC, microseconds, ``Z``: sortable as text and unambiguous."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    # isoformat's C path, four times strftime's speed: "...T12:00:00.000000+00:00" -> "...Z"
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_HEX = frozenset("0123456789abcdef")


def is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)
