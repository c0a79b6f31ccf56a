"""Input records → stored values, checked against the module's field metadata.

Zoho ignores keys it does not know, rejects values of the wrong type with ``INVALID_DATA``
(``details.api_name``) and missing mandatory fields with ``MANDATORY_NOT_FOUND``. The
sandbox does the same, per record, so that batch answers mix successes and errors the way
the real CRM's do. ``$``-keys (``$stop_processing`` among them) are read-only and dropped.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from .schema import EXTRA_LOOKUP_TARGETS, SE_PARENTS, SUBFORM_MODULES
from .store import OrgStore, canon_id

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NUMBER_TYPES = frozenset({"currency", "double", "decimal", "percent"})
_INT_TYPES = frozenset({"integer", "bigint", "long"})
_STRING_TYPES = frozenset({"text", "textarea", "picklist", "website", "phone", "autonumber"})
_SKIP = frozenset({"id", "created_time", "modified_time", "created_by", "modified_by"})


class FieldError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def entry(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "details": self.details,
            "message": self.message,
            "status": "error",
        }


def invalid(api_name: str, expected: str | None = None) -> FieldError:
    details: dict[str, Any] = {"api_name": api_name}
    if expected:
        details["expected_data_type"] = expected
    return FieldError("INVALID_DATA", "invalid data", details)


def mandatory(api_name: str) -> FieldError:
    return FieldError("MANDATORY_NOT_FOUND", "required field not found", {"api_name": api_name})


def _is_blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def coerce_record(
    org: OrgStore,
    module: str,
    data: Any,
    existing: dict[str, Any] | None,
    *,
    creating: bool,
) -> dict[str, Any]:
    """Validated stored values for the keys ``data`` sets; raises ``FieldError``."""
    if not isinstance(data, dict):
        raise FieldError("INVALID_DATA", "invalid data", {"expected_data_type": "jsonobject"})
    fmap = org.field_map(module)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or key.startswith("$") or key.lower() in _SKIP:
            continue
        meta = fmap.get(key.lower())
        if meta is None or meta.get("read_only"):
            continue  # unknown and read-only keys are ignored, as the CRM does
        api = str(meta["api_name"])
        out[api] = _value(org, module, meta, value, existing, data.get("$se_module"))
    for meta in fmap.values():
        if not meta.get("system_mandatory"):
            continue
        api = str(meta["api_name"])
        if (creating and _is_blank(out.get(api))) or (api in out and _is_blank(out[api])):
            raise mandatory(api)
    return out


def _value(
    org: OrgStore,
    module: str,
    meta: dict[str, Any],
    value: Any,
    existing: dict[str, Any] | None,
    se_module: Any = None,
) -> Any:
    api = str(meta["api_name"])
    dtype = str(meta.get("data_type", "text"))
    if value is None:
        return [] if dtype in ("subform", "jsonarray") else None
    if dtype in _STRING_TYPES:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise invalid(api, dtype)
        return str(value)
    if dtype == "email":
        if not isinstance(value, str) or (value and not _EMAIL.match(value)):
            raise invalid(api, "email")
        return value
    if dtype == "date":
        try:
            return date.fromisoformat(value).isoformat() if len(value) == 10 else _bad(api, dtype)
        except (TypeError, ValueError):
            raise invalid(api, dtype) from None
    if dtype == "datetime":
        try:
            return (
                datetime.fromisoformat(str(value).replace("Z", "+00:00")).isoformat()
                if isinstance(value, str)
                else _bad(api, dtype)
            )
        except ValueError:
            raise invalid(api, dtype) from None
    if dtype in _NUMBER_TYPES or dtype in _INT_TYPES:
        return _number(api, dtype, value)
    if dtype == "boolean":
        if not isinstance(value, bool):
            raise invalid(api, dtype)
        return value
    if dtype == "lookup":
        return _lookup(org, meta, value, se_module)
    if dtype in ("ownerlookup", "userlookup"):
        uid = value.get("id") if isinstance(value, dict) else value
        user = org.user_by_id(str(uid))
        if user is None:
            raise invalid(api)
        return org.user_ref(user)
    if dtype == "consent_lookup":
        return _consent(org, value, existing.get(api) if existing else None, api)
    if dtype == "subform":
        return _subform(org, meta, value, existing, api)
    if dtype in ("jsonarray", "multiselectpicklist"):
        if not isinstance(value, list):
            raise invalid(api, dtype)
        return list(value)
    return value


def _bad(api: str, dtype: str) -> Any:
    raise invalid(api, dtype)


def _number(api: str, dtype: str, value: Any) -> float | int:
    if isinstance(value, bool):
        raise invalid(api, dtype)
    try:
        num = float(value) if isinstance(value, str | int | float) else _bad(api, dtype)
    except ValueError:
        raise invalid(api, dtype) from None
    if dtype in _INT_TYPES:
        if not float(num).is_integer():
            raise invalid(api, dtype)
        return int(num)
    return float(num)


def _lookup(org: OrgStore, meta: dict[str, Any], value: Any, se_module: Any) -> dict[str, Any]:
    """``{"id"}`` or a bare id. A multi-module lookup (``Parent_Id``, ``What_Id``) takes its
    module from ``$se_module`` (v8: ``{"module": {"api_name"}, "id"}``), else from the id."""
    api = str(meta["api_name"])
    rid = canon_id(value.get("id") if isinstance(value, dict) else value)
    if rid is None:
        raise invalid(api)
    found = org.module_of(rid)
    if org.is_se_lookup(meta):
        named = value.get("module") if isinstance(value, dict) else None
        named = named.get("api_name") if isinstance(named, dict) else se_module
        if named is not None and org.resolve_module(str(named)) != found:
            raise invalid(api)
        allowed: set[str | None] = set(SE_PARENTS)
    else:
        target = org.lookup_target(meta) or found
        allowed = {target, *EXTRA_LOOKUP_TARGETS.get(api, ())}
    rec = org.get(found, rid) if found in allowed and found is not None else None
    if rec is None or found is None:
        raise invalid(api)
    return org.ref(found, rec)


def _consent(org: OrgStore, value: Any, old: Any, api: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(api, "jsonobject")
    consent = dict(old) if isinstance(old, dict) else {}
    consent.update(value)
    consent["id"] = consent.get("id") or org.new_id()
    consent.setdefault("Owner", org.user_ref())
    return consent


def _subform(
    org: OrgStore, meta: dict[str, Any], value: Any, existing: dict[str, Any] | None, api: str
) -> list[dict[str, Any]]:
    """Zoho semantics: the rows sent replace the list; a row with a known id is updated."""
    if not isinstance(value, list):
        raise invalid(api, "jsonarray")
    sub_module = org.subform_target(meta)
    old_rows = {r.get("id"): r for r in (existing or {}).get(api) or [] if isinstance(r, dict)}
    rows = []
    for row in value:
        if not isinstance(row, dict):
            raise invalid(api, "jsonobject")
        base = dict(old_rows.get(str(row.get("id")), {}))
        if sub_module in SUBFORM_MODULES:
            base.update(coerce_record(org, sub_module, row, base or None, creating=False))
            base.pop("Parent_Id", None)
        else:
            base.update({k: v for k, v in row.items() if k != "id"})
        base["id"] = base.get("id") or org.new_id()
        rows.append(base)
    return rows
