"""What the CRM's field metadata says is private, read once per (org, version, module).

Pure: built from the parsed ``/settings/fields`` answer; no I/O. Field names are compared
case-insensitively everywhere a decision is made (the CRM treats api names that way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.jsonbody import member


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
    unique: bool = False  # the CRM refuses a second record with the same value


#: the "module" a multi-module lookup (Parent_Id, What_Id) names: each record's
#: ``$se_module`` says which module its value is of
SE_MODULE = "se_module"
#: fields that attach a record to a parent (notes, attachments, activities), of whichever
#: module: the metadata's target (Who_Id: Contacts) is not the only one they may name
PARENT_FIELDS = frozenset({"parent_id", "what_id", "who_id"})


def names_any_module(info: FieldInfo) -> bool:
    """A lookup whose value may be a record of any module (a parent field, or one whose
    metadata names ``se_module``)."""
    return info.api_name.lower() in PARENT_FIELDS or (info.target_module or "").lower() == SE_MODULE


class MetadataShapeError(ValueError):
    """The field metadata is not in a shape the gateway can trust."""


@dataclass(frozen=True, slots=True)
class ModuleCatalog:
    module: str
    fields: Mapping[str, FieldInfo]  # lower-case api_name -> info
    #: the modules of this module's subform fields (their rows are redacted with them)
    subform_modules: tuple[str, ...] = field(init=False, repr=False, compare=False)
    #: the modules this module's lookup fields point to
    lookup_modules: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        subforms = tuple(
            f.target_module
            for f in self.fields.values()
            if f.data_type == "subform" and f.target_module
        )
        lookups = tuple(
            dict.fromkeys(
                f.target_module
                for f in self.fields.values()
                if f.data_type in ("lookup", "multiselectlookup")
                and f.target_module
                # a multi-module lookup (Parent_Id, What_Id): its record names the module
                and f.target_module.lower() != SE_MODULE
            )
        )
        object.__setattr__(self, "subform_modules", subforms)
        object.__setattr__(self, "lookup_modules", lookups)

    def get(self, name: str) -> FieldInfo | None:
        return self.fields.get(name.lower())

    def unique_fields(self) -> list[str]:
        return [f.api_name for f in self.fields.values() if f.unique]

    def restricted(self) -> list[FieldInfo]:
        return [f for f in self.fields.values() if f.private is not None and f.private.restricted]

    def name_field(self, withheld: Callable[[FieldInfo], bool]) -> str:
        """The api name of the first of the module's record-name fields (``NAME_FIELDS``)
        that ``withheld`` says is withheld, or ""."""
        for key in NAME_FIELDS:
            info = self.fields.get(key)
            if info is not None and withheld(info):
                return info.api_name
        return ""


def with_overrides(catalog: ModuleCatalog, extra: Mapping[str, str]) -> ModuleCatalog:
    """The catalog with the policy's extra private fields (lower-case name -> "high", "low"
    or "restricted"): a field the CRM leaves public becomes private; one it marks private
    keeps its marking, or becomes restricted. Never fewer private fields than the CRM's."""
    fields = dict(catalog.fields)
    for name, sensitivity in extra.items():
        info = fields.get(name)
        if info is None:
            continue
        restricted = sensitivity == "restricted"
        private = info.private
        if private is None:
            # The CRM exports such a field's values; a masked column is blanked by the gateway.
            private = Private(restricted, "" if restricted else sensitivity, export=False)
        elif restricted:
            private = replace(private, restricted=True)
        fields[name] = replace(info, private=private)
    return ModuleCatalog(catalog.module, _with_derived(fields))


#: Fields the CRM composes from others (a Lead's or Contact's Full_Name is "First_Name
#: Last_Name"): the whole tells its parts, so it is at least as private as each of them.
DERIVED = {"Full_Name": ("First_Name", "Last_Name")}
#: the fields that hold a record's name, which a lookup's ``name`` into its module shows
NAME_FIELDS = ("full_name", "account_name", "deal_name", "vendor_name", "campaign_name", "name")


def _with_derived(fields: dict[str, FieldInfo]) -> dict[str, FieldInfo]:
    """``fields`` with each derived field as private as the most private of its parts:
    restricted if one is, or if they differ in sensitivity (no one sensitivity would keep
    the whole withheld whenever a part is), or if the metadata lists the whole and some of
    its parts but not all (a part it does not describe cannot be judged); exported blank if
    one is. A whole the metadata does not list, but whose parts are private, is added: the
    CRM's records carry it all the same, and a lookup's ``name`` shows it."""
    for whole, parts in DERIVED.items():
        info = fields.get(whole.lower())
        found = [fields.get(name.lower()) for name in parts]
        marks = [p.private for p in found if p is not None and p.private is not None]
        unjudged = info is not None and None in found and len(found) > found.count(None)
        if not marks and not unjudged:
            continue
        if info is None:
            info = FieldInfo(whole, "text", None)
        if info.private is not None:
            marks.append(info.private)
        sensitivities = {m.sensitivity for m in marks}
        private = Private(
            restricted=unjudged or any(m.restricted for m in marks) or len(sensitivities) > 1,
            sensitivity=sensitivities.pop() if len(sensitivities) == 1 else "",
            export=unjudged or any(m.export for m in marks),
        )
        fields[whole.lower()] = replace(info, private=private)
    return fields


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
    # Every module has fields (its id at least): none at all (a 204, an empty list) is no
    # metadata the gateway can judge a record by, and it fails closed as a bad answer does.
    if not isinstance(body, Mapping) or not isinstance(body.get("fields"), list):
        raise MetadataShapeError("field metadata has no 'fields' list")
    if not body["fields"]:
        raise MetadataShapeError("field metadata lists no field")
    fields: dict[str, FieldInfo] = {}
    for raw in body["fields"]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("api_name"), str):
            raise MetadataShapeError("a field has no api_name")
        name: str = raw["api_name"]
        if name.lower() in fields:
            # Keys are matched in any case: two entries for one name cannot both be right.
            raise MetadataShapeError("field metadata names a field twice")
        data_type = str(raw.get("data_type") or "").lower()
        target = None
        if data_type == "subform":
            target = _module_name(raw.get("associated_module")) or _module_name(raw.get("subform"))
        elif data_type in ("lookup", "multiselectlookup"):
            lookup = raw.get("lookup")
            target = _module_name(lookup.get("module")) if isinstance(lookup, Mapping) else None
        unique = raw.get("unique")
        fields[name.lower()] = FieldInfo(
            name,
            data_type,
            _private(raw.get("private"), name),
            target,
            unique=unique is True or (isinstance(unique, Mapping) and bool(unique)),
        )
    return ModuleCatalog(module, _with_derived(fields))


#: why a ``Lookup.Field`` walk stopped before its last name
COMPLETE = ""
UNKNOWN_FIELD = "unknown_field"  # the module has no field of that name
NO_CATALOG = "no_catalog"  # the metadata of a module on the way is not at hand
NOT_LOOKUP = "not_lookup"  # a name before the last is not a lookup
OWNER = "owner"  # an ownerlookup: what follows is a CRM user's, not a GDPR module's


@dataclass(frozen=True, slots=True)
class PathWalk:
    """The fields a path names, resolved from its module through each lookup."""

    path: tuple[str, ...]
    infos: tuple[FieldInfo, ...]  # resolved fields, in the CRM's spelling
    stop: str  # COMPLETE or why the walk stopped

    def label(self, depth: int) -> str:
        """The path up to ``depth``, in the CRM's spelling where it is known."""
        names = [info.api_name for info in self.infos[: depth + 1]]
        return ".".join([*names, *self.path[len(names) : depth + 1]])


def walk_path(module: str, path: Sequence[str], catalogs: Mapping[str, ModuleCatalog]) -> PathWalk:
    """The one resolution of a ``Lookup.Field`` path that every caller uses (search and COQL
    guards, COQL and bulk redaction, metadata prefetch). ``catalogs``: lower-case module
    name -> metadata."""
    catalog = catalogs.get(module.lower())
    infos: list[FieldInfo] = []
    for depth, name in enumerate(path):
        if catalog is None:
            return PathWalk(tuple(path), tuple(infos), NO_CATALOG)
        info = catalog.get(name)
        if info is None:
            return PathWalk(tuple(path), tuple(infos), UNKNOWN_FIELD)
        infos.append(info)
        if depth + 1 == len(path):
            break
        if info.data_type == "ownerlookup":
            return PathWalk(tuple(path), tuple(infos), OWNER)
        if not info.target_module:
            return PathWalk(tuple(path), tuple(infos), NOT_LOOKUP)
        catalog = catalogs.get(info.target_module.lower())
    return PathWalk(tuple(path), tuple(infos), COMPLETE)


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


def parse_related_lists(body: Any) -> dict[str, tuple[str, str]]:
    """related list api_name (lower-case) -> (its api_name, its module's api_name)."""
    if body is None:
        return {}
    if not isinstance(body, Mapping) or not isinstance(body.get("related_lists"), list):
        raise MetadataShapeError("related list metadata has no 'related_lists' list")
    out: dict[str, tuple[str, str]] = {}
    for raw in body["related_lists"]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("api_name"), str):
            continue
        target = _module_name(raw.get("module"))
        if target:
            out[raw["api_name"].lower()] = (raw["api_name"], target)
    return out


@dataclass(frozen=True, slots=True)
class CustomView:
    """What a custom view's definition says about the records it selects
    (``GET /settings/custom_views/{id}?module=``)."""

    #: the field paths its criteria name (``Lookup.Field`` split at the dot), in order
    paths: tuple[tuple[str, ...], ...]
    #: the field it orders records by, or None
    sort_by: str | None
    #: whether it filters by related records (``cross_filters``)
    cross_filters: bool


def parse_custom_view(cvid: str, body: Any) -> CustomView:
    """The view ``cvid`` from the CRM's answer. Anything the gateway cannot read with
    certainty (no such view, a criterion without a field name, an unknown shape) raises
    ``MetadataShapeError``: a view that cannot be read is never taken to have no criteria."""
    views = body.get("custom_views") if isinstance(body, Mapping) else None
    if not isinstance(views, list) or len(views) != 1 or not isinstance(views[0], Mapping):
        raise MetadataShapeError("custom view answer has no single 'custom_views' entry")
    found = views[0]
    if str(found.get("id")).lstrip("0") != cvid.lstrip("0"):
        raise MetadataShapeError("custom view answer names another view")
    paths = criteria_object_paths(found.get("criteria"), MetadataShapeError, empty_is_none=True)
    cross = found.get("cross_filters")
    if cross is not None and not isinstance(cross, list):
        raise MetadataShapeError("custom view cross_filters is not a list")
    return CustomView(tuple(paths), _sort_field(found.get("sort_by")), bool(cross))


def parse_custom_view_ids(body: Any) -> frozenset[str]:
    """The ids (leading zeros dropped) of the views a module's list names; none for an
    empty answer. A list that cannot be read raises ``MetadataShapeError``."""
    if body is None:
        return frozenset()
    views = body.get("custom_views") if isinstance(body, Mapping) else None
    if not isinstance(views, list) or not all(isinstance(v, Mapping) for v in views):
        raise MetadataShapeError("custom views answer has no 'custom_views' list")
    return frozenset(str(v.get("id")).lstrip("0") for v in views)


def criteria_nodes(criteria: Any) -> Iterator[tuple[Any, Any, list[Any]]]:
    """Every node of a criteria object, at any depth, in the order written: ``{"comparator",
    "field": {"api_name"}, "value"}`` or ``{"group_operator", "group": [...]}`` (a bulk
    read's ``query.criteria``, a custom view's ``criteria``), each as (node, its ``group``,
    the field names it gives). Member names are read in any letter case. v2 names the field
    in ``api_name``, v2.1+ in ``field.api_name``: both are given (which one the CRM reads is
    not documented), and so is a value that is itself a field (a field-to-field
    comparison). A group's members follow it when it is a list; a node that is not an
    object comes as it is, with no group and no names: the caller judges the shape."""
    stack: list[Any] = [criteria]
    while stack:
        node = stack.pop()
        if not isinstance(node, Mapping):
            yield node, None, []
            continue
        group = member(node, "group")
        field = member(node, "field")
        inner = member(field, "api_name") if isinstance(field, Mapping) else None
        given = [n for n in (member(node, "api_name"), inner) if n is not None]
        value = member(node, "value")
        if isinstance(value, Mapping) and any(str(k).lower() == "api_name" for k in value):
            given.append(member(value, "api_name"))
        if isinstance(group, list):
            stack.extend(reversed(group))  # popped in the order written
        yield node, group, given


def criteria_object_paths(
    criteria: Any, fail: Callable[[str], Exception], *, empty_is_none: bool = False
) -> list[tuple[str, ...]]:
    """Every field path a criteria object names (``criteria_nodes``), in the order written.
    A node that is both a group and a criterion is refused. What cannot be read raises
    ``fail(reason)``. ``empty_is_none``: an empty object means no criteria (a view's)."""
    out: list[tuple[str, ...]] = []
    for node, group, given in criteria_nodes(criteria):
        if node is None or (empty_is_none and isinstance(node, Mapping) and not node):
            continue
        if not isinstance(node, Mapping):
            raise fail("criteria must be an object")
        if group is not None:
            criterion = member(node, "value"), member(node, "comparator")
            if given or criterion != (None, None):
                # A CRM that reads member names exactly may take it for either.
                raise fail("a criteria node is both a group and a criterion")
            if not isinstance(group, list):
                raise fail("criteria group must be a list")
            continue
        if not given or not all(isinstance(n, str) and n for n in given):
            raise fail("a criterion names no field")
        for name in given:
            parts = tuple(name.split("."))
            if not all(parts):
                raise fail("a criterion names an empty field")
            out.append(parts)
    return out


def _sort_field(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get("api_name")
    if not isinstance(value, str) or not value:
        raise MetadataShapeError("custom view sort_by names no field")
    return value
