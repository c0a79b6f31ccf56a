"""The answers defining custom views: ``GET /settings/custom_views[/{id}]?module=``.

Pure. A view is the CRM's configuration, yet its ``criteria`` hold the values records are
selected by: an admin's view "Email equals x@y" names a record's restricted value. Each
criterion's ``value`` (at any depth of groups; text, number, list or object) is withheld
(null) when a field the criterion names (``api_name``, ``field.api_name``, a value that is
a field: each of them) is withheld from this client as in a record (restricted always,
private unless the policy shows its sensitivity), judged as the guards judge a criterion
on it (``guards.path_withheld``: ``Lookup.Field`` paths, a lookup by its target's name).
A value whose field cannot be judged (none named, or one the metadata does not know) is
withheld too, as ``unknown`` in every mode, like values no metadata describes. Criteria
anywhere else in the answer (cross filters, on related modules' fields), criteria of a
shape the gateway cannot read (every value of them, the whole ``criteria`` withheld) and
the criteria of a module the gateway does not know (``module`` "") have no field to be
judged by. Of a withheld criterion only the members naming what it compares stay
(``_STRUCTURE``, as plain tokens); a value under any other member goes with it. Everything
else passes as the CRM sent it. Other settings' criteria (``withhold_settings_criteria``:
members named ``criteria`` or ``*_criteria``) are judged by no field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.privacy.catalog import FieldInfo, ModuleCatalog, criteria_nodes
from gateway.privacy.guards import path_withheld
from gateway.privacy.redact import Counts, Tally, is_masked

UNKNOWN = "unknown"
#: a criterion's members that name, not hold, what it compares: the rest of a withheld
#: criterion (``value``, and any other member a value could hide under) is withheld
_STRUCTURE = frozenset({"api_name", "comparator", "field", "group", "group_operator", "type"})
#: what a name there may be: a token (a value such as an email, a phone number or words
#: is not one)
_TOKEN = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$]*")
#: of a criterion's ``field`` object
_FIELD_NAMES = frozenset({"api_name", "id"})


def withhold_settings_criteria(body: dict[str, Any]) -> int:
    """Withhold (in place) every criterion's value in a settings answer (territories'
    rules, record-locking rules, lookup filters): no field there is judged, so none is
    shown. The number of values withheld."""
    counts = Tally()
    withhold_criteria_values(body, "", {}, frozenset(), counts)
    return sum(counts.values())


def withhold_criteria_values(
    body: dict[str, Any],
    module: str,
    catalogs: Mapping[str, ModuleCatalog],
    shown: frozenset[str],
    counts: Counts,
) -> None:
    """Withhold in ``body`` (in place) the criteria values this client may not read.
    ``catalogs``: lower-case module -> metadata, ``module``'s and those its lookups reach."""

    def withheld(info: FieldInfo) -> bool:
        return is_masked(info, shown)

    # (a value, the module its criteria are judged by): only a view of the answer's own
    # ``custom_views`` is the module's; criteria anywhere else are judged by none
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        value, judged_by = stack.pop()
        if isinstance(value, list):
            stack.extend((inner, judged_by) for inner in value)
            continue
        if not isinstance(value, dict):
            continue
        for key, inner in value.items():
            name = key.lower() if isinstance(key, str) else ""
            if name == "criteria" or name.endswith("_criteria"):
                _withhold(value, key, judged_by, catalogs, withheld, counts)
            else:
                views = value is body and name == "custom_views"
                stack.append((inner, module if views else ""))


def _withhold(
    view: dict[str, Any],
    key: str,
    module: str,
    catalogs: Mapping[str, ModuleCatalog],
    withheld: Callable[[FieldInfo], bool],
    counts: Counts,
) -> None:
    criteria: list[tuple[dict[str, Any], list[Any]]] = []
    for node, group, given in criteria_nodes(view[key]):
        if node is None:
            continue
        if not isinstance(node, dict) or (group is not None and not isinstance(group, list)):
            view[key] = None  # a shape the gateway cannot read: no value of it is judged
            _count(counts, UNKNOWN, 1)
            return
        criteria.append((node, given))
    for node, given in criteria:
        label = _field_withheld(module, given, catalogs, withheld) if module else None
        if label == "":
            continue
        held = _values(node, _STRUCTURE)
        field = next((v for k, v in node.items() if str(k).lower() == "field"), None)
        if isinstance(field, dict):
            held += _values(field, _FIELD_NAMES)
        if held:
            _count(counts, label or UNKNOWN, held)


def _values(node: dict[Any, Any], kept: frozenset[str]) -> int:
    """Withhold the members of ``node`` but those ``kept`` names (any case) holding what a
    name can be (a text; a group's list of criteria, a ``field`` object, each walked on
    its own); how many."""
    held = 0
    for key, value in node.items():
        name = key.lower() if isinstance(key, str) else ""
        if value is None or (
            name in kept
            and (
                (isinstance(value, str) and _TOKEN.fullmatch(value) is not None)
                or (name == "id" and isinstance(value, str | int) and str(value).isdigit())
                or (name == "group" and isinstance(value, list))
                or (name == "field" and isinstance(value, dict))
            )
        ):
            continue
        node[key] = None
        held += 1
    return held


def _field_withheld(
    module: str,
    given: list[Any],
    catalogs: Mapping[str, ModuleCatalog],
    withheld: Callable[[FieldInfo], bool],
) -> str | None:
    """The first field of ``given`` withheld from this client, "" when none is, None when
    one cannot be judged (or none is named)."""
    found = ""
    for name in given or [None]:
        if not isinstance(name, str) or not all(parts := name.split(".")):
            return None
        label = path_withheld(module, parts, catalogs, withheld)
        if label is None:
            return None
        found = found or label
    return found


def _count(counts: Counts, name: str, n: int) -> None:
    counts[name] = counts.get(name, 0) + n
    if name == UNKNOWN and isinstance(counts, Tally):
        counts.unchecked += n  # not a rule's to pass: withheld in every mode
