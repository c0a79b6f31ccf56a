"""What the CRM's field metadata says is private, read once per (org, version, module).

Pure: built from the parsed ``/settings/fields`` answer; no I/O. Field names are compared
case-insensitively everywhere a decision is made (the CRM treats api names that way).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Private:
    restricted: bool
    sensitivity: str  # "high" | "low" | "" (protected without a chosen sensitivity)
    export: bool


@dataclass(frozen=True, slots=True)
class FieldInfo:
    api_name: str
    data_type: str
    private: Private | None
    target_module: str | None = None  # lookup target, or a subform's own module


class MetadataShapeError(ValueError):
    """The field metadata is not in a shape the gateway can trust."""


@dataclass(frozen=True, slots=True)
class ModuleCatalog:
    module: str
    fields: Mapping[str, FieldInfo]  # lower-case api_name -> info
    #: the modules of this module's subform fields (their rows are redacted with them)
    subform_modules: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        subforms = tuple(
            f.target_module
            for f in self.fields.values()
            if f.data_type == "subform" and f.target_module
        )
        object.__setattr__(self, "subform_modules", subforms)

    def get(self, name: str) -> FieldInfo | None:
        return self.fields.get(name.lower())

    def restricted(self) -> list[FieldInfo]:
        return [f for f in self.fields.values() if f.private is not None and f.private.restricted]

    def is_restricted(self, name: str) -> bool:
        info = self.get(name)
        return info is not None and info.private is not None and info.private.restricted


def _module_name(value: Any) -> str | None:
    # v2: "Accounts"; v3+: {"api_name": "Accounts", "id": "..."}; subforms: {"module": "X"}
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        for key in ("api_name", "module"):
            inner = value.get(key)
            if isinstance(inner, str) and inner:
                return inner
            if isinstance(inner, Mapping):
                return _module_name(inner)
    return None


def _private(raw: Any, api_name: str) -> Private | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise MetadataShapeError(f"field {api_name}: 'private' is neither null nor an object")
    kind = raw.get("type")
    sensitivity = kind.lower() if isinstance(kind, str) else ""
    # Anything the gateway cannot read with certainty counts as restricted.
    restricted = raw.get("restricted")
    export = raw.get("export")
    return Private(
        restricted=restricted is not False,
        sensitivity=sensitivity if sensitivity in ("high", "low") else "",
        export=export is not False,
    )


def parse_fields(module: str, body: Any) -> ModuleCatalog:
    """Build a catalog from the JSON of ``GET /settings/fields?module=...``."""
    if body is None:  # 204: a module without fields
        return ModuleCatalog(module, {})
    if not isinstance(body, Mapping) or not isinstance(body.get("fields"), list):
        raise MetadataShapeError("field metadata has no 'fields' list")
    fields: dict[str, FieldInfo] = {}
    for raw in body["fields"]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("api_name"), str):
            raise MetadataShapeError("a field has no api_name")
        name: str = raw["api_name"]
        data_type = str(raw.get("data_type") or "").lower()
        target = None
        if data_type == "subform":
            target = _module_name(raw.get("associated_module")) or _module_name(raw.get("subform"))
        elif data_type in ("lookup", "multiselectlookup"):
            lookup = raw.get("lookup")
            target = _module_name(lookup.get("module")) if isinstance(lookup, Mapping) else None
        fields[name.lower()] = FieldInfo(
            name, data_type, _private(raw.get("private"), name), target
        )
    return ModuleCatalog(module, fields)


@dataclass(frozen=True, slots=True)
class OrgInfo:
    org_id: str
    privacy_settings: bool


def parse_org(body: Any) -> OrgInfo:
    try:
        org = body["org"][0]
        org_id = org["id"]
        privacy = org.get("privacy_settings")
    except (KeyError, IndexError, TypeError) as exc:
        raise MetadataShapeError("org answer has no org[0].id") from exc
    if not isinstance(org_id, str | int) or isinstance(org_id, bool):
        raise MetadataShapeError("org id is not a string")
    # Only an explicit false turns enforcement off; anything unclear keeps it on.
    return OrgInfo(str(org_id), privacy is not False)


def parse_modules(body: Any) -> dict[str, tuple[str, str]]:
    """lower-case api_name -> (api_name, generated_type) from ``/settings/modules``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("modules"), list):
        raise MetadataShapeError("module metadata has no 'modules' list")
    out: dict[str, tuple[str, str]] = {}
    for raw in body["modules"]:
        name = raw.get("api_name") if isinstance(raw, Mapping) else None
        if isinstance(name, str) and name:
            out[name.lower()] = (name, str(raw.get("generated_type") or ""))
    return out


def parse_related_lists(body: Any) -> dict[str, str]:
    """related list api_name (lower-case) -> module api_name."""
    if body is None:
        return {}
    if not isinstance(body, Mapping) or not isinstance(body.get("related_lists"), list):
        raise MetadataShapeError("related list metadata has no 'related_lists' list")
    out: dict[str, str] = {}
    for raw in body["related_lists"]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("api_name"), str):
            continue
        target = _module_name(raw.get("module"))
        if target:
            out[raw["api_name"].lower()] = target
    return out
