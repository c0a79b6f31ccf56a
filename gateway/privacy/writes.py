"""Writes against stop-processing records: which inputs to refuse, and the merged answer.

Pure. The pipeline looks up each target's current ``$stop_processing`` upstream (a cached
``false`` is never trusted for a write), then:

- ``refusal(id, reason)`` is the per-record entry for a refused input;
- ``merge`` puts the CRM's entries for the forwarded inputs back in input order between
  the refusals (shared/zoho-crm-api.md §4, decision);
- ``batch_status``: 400 when every input was refused, the CRM's status when none was,
  207 when mixed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.jsonbody import member, normal_id
from gateway.privacy.catalog import PARENT_FIELDS as PARENT_FIELDS  # re-exported

STOP_PROCESSING = "stop_processing"
STATE_UNKNOWN = "state_unknown"

# The CRM's system-defined duplicate-check fields for upsert, per module (contract §4); the
# CRM checks them first, then every field its metadata marks unique.
SYSTEM_DUPLICATE_CHECK = {
    "leads": ("Email",),
    "contacts": ("Email",),
    "vendors": ("Vendor_Name",),
    "accounts": ("Account_Name",),
    "deals": ("Deal_Name",),
    "campaigns": ("Campaign_Name",),
}
CUSTOM_DUPLICATE_CHECK = ("Name",)


def refusal(record_id: str | None, reason: str, cause: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"id": record_id, "reason": reason}
    if cause is not None:
        details["cause"] = cause
    return {
        "code": "CANNOT_PROCESS",
        "details": details,
        "message": "The record is in stop processing"
        if reason == STOP_PROCESSING
        else "The record's processing state could not be determined",
        "status": "error",
    }


def missing_consent(index: int) -> dict[str, Any]:
    return {
        "code": "MANDATORY_NOT_FOUND",
        "details": {"api_name": "Data_Processing_Basis_Details", "index": index},
        "message": "required field not found",
        "status": "error",
    }


def parent_ids(
    record: Mapping[str, Any], names: Collection[str] = PARENT_FIELDS
) -> list[str | None]:
    """The records ``record`` links to through the fields ``names`` (lower case; by default
    the parent of a note or activity: ``Parent_Id``, ``What_Id``, ``Who_Id``), in any
    letter case; a value is an id, ``{"id": ...}`` or a list of them. None stands for one
    the gateway cannot read. Modules are not taken from ``$se_module``: the gateway finds
    each id itself."""
    out: list[str | None] = []
    for key, value in record.items():
        if str(key).lower() not in names or value in (None, "", {}, []):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Mapping):
                item = member(item, "id")
            out.append(normal_id(item))
    return out


def verdict(state: bool | None) -> str | None:
    """A target's reason to refuse: None to allow."""
    if state is None:
        return STATE_UNKNOWN
    return STOP_PROCESSING if state else None


def states_from_records(records: Any) -> dict[str, bool]:
    """id -> $stop_processing from a record list answer. A record whose flag is missing or
    not a boolean is left out, so it counts as unknown."""
    out: dict[str, bool] = {}
    if not isinstance(records, list):
        return out
    for rec in records:
        rid = normal_id(rec.get("id")) if isinstance(rec, dict) else None
        if rid is not None:
            flag = rec.get("$stop_processing")
            if isinstance(flag, bool):
                out[rid] = flag
    return out


@dataclass(frozen=True, slots=True)
class Split:
    forward: list[int]  # input positions sent on, in order
    refused: dict[int, dict[str, Any]]  # input position -> entry


def merge(total: int, split: Split, upstream_entries: Any, upstream_body: Any) -> list[Any]:
    """Entries in input order. If the CRM's answer is not one entry per forwarded input, each
    forwarded position gets the CRM's whole answer (e.g. its error envelope)."""
    usable = isinstance(upstream_entries, list) and len(upstream_entries) == len(split.forward)
    fallback = (
        upstream_body
        if isinstance(upstream_body, dict)
        else {
            "code": "INTERNAL_ERROR",
            "details": {},
            "message": "no entry from the CRM",
            "status": "error",
        }
    )
    by_pos = {
        pos: (upstream_entries[i] if usable else fallback) for i, pos in enumerate(split.forward)
    }
    return [split.refused[i] if i in split.refused else by_pos.get(i) for i in range(total)]


def batch_status(split: Split, upstream_status: int | None) -> int:
    if not split.forward:
        return 400
    if not split.refused:
        return upstream_status or 200
    return 207


def duplicate_values(record: Mapping[str, Any], fields: Sequence[str]) -> list[tuple[str, str]]:
    """(field, value) pairs an upsert would match on, in the order the CRM checks them."""
    lowered = {k.lower(): v for k, v in record.items()}
    out = []
    for name in fields:
        value = lowered.get(name.lower())
        if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
            out.append((name, str(value)))
    return out


def _same_value(stored: Any, wanted: str) -> bool:
    """The CRM's comparison for a duplicate check: numbers numerically, text
    case-insensitively. Anything else (null, lookups, lists) is no match."""
    if isinstance(stored, bool) or not isinstance(stored, str | int | float):
        return False
    if isinstance(stored, int | float):
        try:
            return float(stored) == float(wanted)
        except ValueError:
            return False
    return stored.casefold() == wanted.casefold()


def matches_duplicate(record: Mapping[str, Any], pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether ``record`` (a search hit) holds one of the (field, value) pairs an upsert
    matches on. Field names are compared case-insensitively, as the CRM does: a client may
    name ``email`` in ``duplicate_check_fields`` while the record says ``Email``."""
    lowered = {str(k).lower(): v for k, v in record.items()}
    return any(_same_value(lowered.get(name.lower()), value) for name, value in pairs)


def hides_duplicate(record: Mapping[str, Any], pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether a search hit withholds a duplicate-check field (null or absent, as a CRM that
    hides restricted values answers): it may be the upsert's target, and cannot be ruled out."""
    lowered = {str(k).lower(): v for k, v in record.items()}
    return any(lowered.get(name.lower()) is None for name, _ in pairs)


def escape_criteria_value(value: str) -> str:
    """Search criteria escapes: ``\\(``, ``\\)``, ``\\,`` and ``\\\\`` (shared contract §3)."""
    return value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").replace(",", "\\,")
