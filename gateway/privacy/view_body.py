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
judged by. Of a withheld criterion only the CRM's words for how it compares stay
(``_WORDS``), and its field names when the metadata knows them; a value under any other
member goes with it. A criterion naming a member twice in two cases is withheld whole.
Everything else passes as the CRM sent it. Criteria are found by name (``criteria``,
``*_criteria``) or by shape (a ``comparator`` or ``group_operator``); those of other
configuration answers (``withhold_settings_criteria``: org, users, settings) are judged
by no field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.privacy.catalog import FieldInfo, ModuleCatalog, criteria_nodes
from gateway.privacy.guards import path_withheld
from gateway.privacy.redact import Counts, Tally, count_unjudged, is_masked

#: what a withheld criterion keeps, by member (any case): the CRM's words for how it
#: compares. Its field names stay only when the metadata knows them; everything else
#: (``value``, any member a value could hide under, a field's ``id``) is withheld.
_WORDS = {
    "comparator": frozenset(
        {"equal", "equals", "not_equal", "in", "not_in", "less_than", "less_equal",
         "greater_than", "greater_equal", "contains", "not_contains", "starts_with",
         "ends_with", "between", "not_between", "like", "not_like", "is_empty",
         "is_not_empty"}
    ),
    "type": frozenset({"value", "field"}),
    "group_operator": frozenset({"and", "or"}),
}  # fmt: skip
_NAMES = frozenset({"api_name"})


def withhold_settings_criteria(body: dict[str, Any]) -> int:
    """Withhold (in place) every criterion's value in a configuration answer (settings:
    territories' rules, record-locking rules, lookup filters; users; the org): no field
    there is judged, so none is shown. The number of values withheld."""
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
    ``catalogs``: lower-case module -> metadata, ``module``'s and those its lookups reach.
    Criteria are known by name (a member ``criteria`` or ``*_criteria``) or by shape (an
    object with a ``comparator`` or a ``group_operator``), wherever they are."""

    def withheld(info: FieldInfo) -> bool:
        return is_masked(info, shown)

    # (a value, the module its criteria are judged by): only a view of the answer's own
    # ``custom_views`` is the module's; criteria anywhere else are judged by none
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        value, judged_by = stack.pop()
        if isinstance(value, list):
            for pos, inner in enumerate(value):
                if _criterion_shaped(inner):
                    _withhold(value, pos, "", catalogs, withheld, counts)
                else:
                    stack.append((inner, judged_by))
            continue
        if not isinstance(value, dict):
            continue
        for key, inner in value.items():
            name = key.lower() if isinstance(key, str) else ""
            if name == "criteria" or name.endswith("_criteria"):
                _withhold(value, key, judged_by, catalogs, withheld, counts)
            elif _criterion_shaped(inner):
                _withhold(value, key, "", catalogs, withheld, counts)
            else:
                views = value is body and name == "custom_views"
                stack.append((inner, module if views else ""))


def _criterion_shaped(value: Any) -> bool:
    return isinstance(value, dict) and any(
        isinstance(k, str) and k.lower() in ("comparator", "group_operator") for k in value
    )


def _withhold(
    holder: Any,
    key: Any,
    module: str,
    catalogs: Mapping[str, ModuleCatalog],
    withheld: Callable[[FieldInfo], bool],
    counts: Counts,
) -> None:
    """Judge the criteria at ``holder[key]`` (an object's member or a list's item)."""
    criteria: list[tuple[dict[str, Any], list[Any]]] = []
    for node, group, given in criteria_nodes(holder[key]):
        if node is None:
            continue
        if (
            not isinstance(node, dict)
            or (group is not None and not isinstance(group, list))
            or _repeats(node)
        ):
            # a shape the gateway cannot read (a member given twice in two cases is read
            # by the gateway once, by a client perhaps the other way): none of it judged
            holder[key] = None
            _count(counts, None)
            return
        criteria.append((node, given))
    for node, given in criteria:
        label = _field_withheld(module, given, catalogs, withheld) if module else None
        if label == "":
            continue
        # field names stay when the metadata knows them (the criterion was judged)
        names = _NAMES if label is not None else frozenset()
        held = _values(node, names)
        for k, field in node.items():
            if isinstance(field, dict) and str(k).lower() == "field":
                held += _values(field, names)
        if held:
            _count(counts, label)


def _repeats(node: dict[Any, Any]) -> bool:
    """Whether ``node`` or an object in it names a member twice, in two letter cases."""
    for obj in (node, *(v for v in node.values() if isinstance(v, dict))):
        names = [str(k).lower() for k in obj]
        if len(set(names)) != len(names):
            return True
    return False


def _values(node: dict[Any, Any], names: frozenset[str]) -> int:
    """Withhold the members of ``node`` but the CRM's words (``_WORDS``), ``names`` given
    as text, a group's list of criteria and a ``field`` object (each judged on its own);
    how many."""
    held = 0
    for key, value in node.items():
        name = key.lower() if isinstance(key, str) else ""
        words = _WORDS.get(name)
        if value is None or (
            (words is not None and isinstance(value, str) and value.lower() in words)
            or (name in names and isinstance(value, str))
            or (name == "group" and isinstance(value, list))
            or (name == "field" and isinstance(value, dict))
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


def _count(counts: Counts, name: str | None) -> None:
    """One criterion's value withheld, however many members held it: under its field's
    label, or as a value no field judged (withheld in every mode)."""
    if name is None:
        count_unjudged(counts)
    else:
        counts[name] = counts.get(name, 0) + 1
