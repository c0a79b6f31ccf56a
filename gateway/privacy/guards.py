"""Search and query guards: refuse a request that uses a restricted field before it leaves.

Pure: given the parsed query and the metadata of the modules it reaches, raise
``RestrictedField`` (the CRM's own ``INVALID_QUERY`` shape) or return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gateway.errors import InvalidQuery, RestrictedField
from gateway.privacy.catalog import (
    COMPLETE,
    NO_CATALOG,
    NOT_LOOKUP,
    UNKNOWN_FIELD,
    FieldInfo,
    ModuleCatalog,
    PathWalk,
    criteria_object_paths,
    names_any_module,
    walk_path,
)

# Field types a word= search looks into.
WORD_SEARCHABLE = frozenset(
    {
        "text",
        "textarea",
        "email",
        "phone",
        "website",
        "picklist",
        "multiselectpicklist",
        "autonumber",
        "lookup",
        "ownerlookup",
    }
)


def check_paths(
    module: str,
    paths: Iterable[Sequence[str]],
    catalogs: Mapping[str, ModuleCatalog],
    found: list[str] | None = None,
) -> None:
    """``catalogs`` maps lower-case module names to metadata; ``module``'s must be there.
    With ``found``, a restricted field is added to it instead of raised, and the paths
    that cannot be resolved are still refused (rules.py ``guard``)."""
    for path in paths:
        walk = walk_path(module, path, catalogs)
        for depth, info in enumerate(walk.infos):
            if info.private is not None and info.private.restricted:
                if found is None:
                    raise RestrictedField(walk.label(depth))
                found.append(walk.label(depth))
                break
        if walk.stop in (NO_CATALOG, NOT_LOOKUP):
            # A path through something that is not a known lookup cannot be checked.
            raise InvalidQuery(details={"reason": "Cannot resolve the field path."})
        if walk.stop == UNKNOWN_FIELD and not _is_record_id(path, len(walk.infos)):
            # Not in the cached metadata: either the CRM would refuse it too, or it is a
            # field created since the metadata was fetched, which may be restricted. The
            # gateway cannot tell, so it refuses (fail closed) as the CRM answers an
            # unknown field.
            raise InvalidQuery(details={"reason": "Cannot resolve the field path."})
        # OWNER: Owner.name, Owner.email are CRM users, not records of a GDPR module.
        name = _looked_up_name(walk, len(path), catalogs)
        if name is not None:
            # The CRM matches a criterion on a lookup by its target's name too: a
            # criterion on the lookup is one on that name field.
            if found is None:
                raise RestrictedField(f"{walk.label(len(path) - 1)}.{name}")
            found.append(f"{walk.label(len(path) - 1)}.{name}")


def path_withheld(
    module: str,
    path: Sequence[str],
    catalogs: Mapping[str, ModuleCatalog],
    withheld: Callable[[FieldInfo], bool],
) -> str | None:
    """Whether a criterion on ``path`` reads a value ``withheld`` says is withheld, judged
    as ``check_paths`` judges restricted fields: the label of the first such field on the
    way, or of a last lookup's target name field (the CRM matches a lookup by that name);
    "" when it reads none; None when the path cannot be judged (a field the metadata does
    not know, a path through what is not a known lookup)."""
    walk = walk_path(module, path, catalogs)
    for depth, info in enumerate(walk.infos):
        if withheld(info):
            return walk.label(depth)
    if walk.stop in (NO_CATALOG, NOT_LOOKUP) or (
        walk.stop == UNKNOWN_FIELD and not _is_record_id(path, len(walk.infos))
    ):
        return None
    name = _looked_up_name(walk, len(path), catalogs, withheld)
    return "" if name is None else f"{walk.label(len(path) - 1)}.{name}"


def _looked_up_name(
    walk: PathWalk,
    length: int,
    catalogs: Mapping[str, ModuleCatalog],
    withheld: Callable[[FieldInfo], bool] | None = None,
) -> str | None:
    """The restricted (or ``withheld``) name field of the module a path's last lookup
    points to, if any (its metadata is at hand: ``catalogs_for_paths(...,
    whole_values=True)``)."""
    if walk.stop != COMPLETE or len(walk.infos) != length:
        return None
    last = walk.infos[-1]
    if last.data_type not in ("lookup", "multiselectlookup") or not last.target_module:
        return None
    if names_any_module(last):
        # a parent field may name a record of any module: every module's name at hand
        # (catalogs_for_paths loads the GDPR modules' for it)
        targets = list(catalogs.values())
    else:
        target = catalogs.get(last.target_module.lower())
        targets = [target] if target is not None else []
    judge = withheld or _restricted
    return next((n for t in targets if (n := t.name_field(judge))), None)


def _restricted(info: FieldInfo) -> bool:
    return info.private is not None and info.private.restricted


def _is_record_id(path: Sequence[str], depth: int) -> bool:
    """``id`` (or ``Lookup.id``): the record's own id, which no field metadata lists."""
    return depth == len(path) - 1 and path[depth].lower() == "id"


def check_search_params(
    catalog: ModuleCatalog, params: Iterable[tuple[str, str]], *, allow_word: bool
) -> None:
    """``email=`` / ``phone=`` / ``word=`` searches look into every field of a type."""
    kinds = {k.lower() for k, _ in params}
    restricted = catalog.restricted()
    for kind, data_types in (("email", {"email"}), ("phone", {"phone"})):
        if kind in kinds:
            for info in restricted:
                if info.data_type in data_types:
                    raise RestrictedField(info.api_name)
            if not any(info.data_type in data_types for info in catalog.fields.values()):
                # The metadata lists no field such a search reads: the CRM's would (one
                # created since the fetch, which may be restricted). Fail closed.
                raise InvalidQuery(
                    details={"reason": f"The module has no {kind} field the gateway knows of."}
                )
    if "word" in kinds and not allow_word:
        for info in restricted:
            if info.data_type in WORD_SEARCHABLE:
                raise RestrictedField(info.api_name)


def check_related_link(related: ModuleCatalog, parent: str) -> None:
    """A related list of ``parent`` records lists the records of ``related`` whose lookup
    names the parent: it reads that lookup's value, as a criterion on it would. The
    metadata does not say which lookup defines the list, so one restricted lookup that
    could (pointing at ``parent``, or a parent field, which names any module) refuses it."""
    for info in related.fields.values():
        if info.data_type not in ("lookup", "multiselectlookup") or not _restricted(info):
            continue
        target = (info.target_module or "").lower()
        if target == parent.lower() or names_any_module(info):
            raise RestrictedField(info.api_name)


def word_lookups(
    catalog: ModuleCatalog, params: Iterable[tuple[str, str]], *, allow_word: bool
) -> list[tuple[str, ...]]:
    """A ``word=`` search looks into lookups too, where the CRM matches their targets'
    names: the module's lookup fields, to be checked as criteria on them are
    (``check_paths``, their targets' metadata at hand)."""
    if allow_word or not any(k.lower() == "word" for k, _ in params):
        return []
    kinds = ("lookup", "multiselectlookup")
    return [(i.api_name,) for i in catalog.fields.values() if i.data_type in kinds]


def check_sort_params(catalog: ModuleCatalog, params: Iterable[tuple[str, str]]) -> None:
    """``sort_by`` on a restricted field orders records by its withheld values: refused
    like a criterion on it (the CRM itself only sorts lists by id and times). A field the
    metadata does not know is refused as a criterion on it is (``check_paths``): it may be
    a restricted field created since the metadata was fetched."""
    for key, value in params:
        if key.lower() == "sort_by":
            for name in value.split(","):
                info = catalog.get(name.strip())
                if info is None and name.strip().lower() != "id":
                    raise InvalidQuery(details={"reason": "Cannot resolve the field path."})
                if info is not None and info.private is not None and info.private.restricted:
                    raise RestrictedField(info.api_name)


def bulk_criteria_fields(criteria: Any) -> list[tuple[str, ...]]:
    """Field paths named in a bulk-read ``query.criteria`` object (single or grouped), in
    the order written, so a refusal names the first restricted one."""
    return criteria_object_paths(criteria, lambda reason: InvalidQuery(details={"reason": reason}))
