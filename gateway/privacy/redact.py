"""Null the values of private fields in records, keeping every key (the shape is preserved).

Pure functions over parsed JSON. A ``MaskPlan`` is computed once per (module metadata,
sensitivities shown) and reused for every record of every response. Every key of a record
is compared case-insensitively with the metadata, but only once per *shape* of record (its
tuple of keys, which the records of one answer share): the per-record work is then one
tuple hash and the assignments themselves.

Rules (shared/zoho-crm-api.md §2): restricted fields are always nulled; other private
fields are nulled unless their sensitivity is shown to the client; a private lookup is
nulled whole; subform rows are redacted with the subform module's own metadata.

Counts name every private field *present* in an answer, whatever its value: whether a
withheld value was empty is a fact about it too, so ``X-Privacy-Withheld`` must not tell.

Nested shapes: a lookup value (``{"name", "id", ...}``) may carry fields of its target, so
it is redacted with the target module's plan, and its ``name`` is withheld when the
target's name field is (a multi-module lookup, whose target is not known, keeps only
``name`` and ``id``; a parent field, which may name any module, withholds its ``name``
when any GDPR module's name field is withheld: ``ID_ONLY``); an object or a list of
objects under a key that is no field of the module (``$``-keys, embedded records) is
redacted with the record's own plan, at any depth.
Keys no field describes are withheld from a record of ``data``, a subform's row and a
lookup's object (``NESTED``/``RECORD``/``LOOKUP``). Redacting twice gives the same result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import UnreadableUpstream
from gateway.privacy.catalog import (
    COMPLETE,
    OWNER,
    UNKNOWN_FIELD,
    FieldInfo,
    ModuleCatalog,
    names_any_module,
    walk_path,
)

Counts = dict[str, int]

#: Every name is lowered by Python's own ``str.lower``, as the metadata's were (catalog.py):
#: compiled, ``name.lower()`` would be mypyc's, which maps each character alone, so a
#: capital sigma at a word's end (Python: a final sigma) would lower to a plain one, and a
#: field of such a name would not be recognised. Called through this name, it stays Python's.
_lower: Callable[[str], str] = str.lower


class Tally(dict[str, int]):
    """``Counts`` that also keep ``unchecked``: how many of the values withheld no metadata
    describes (a key that is no field, a lookup's members beyond its name and id, a subform
    or COQL column without metadata). Those are not a rule's to pass on: the gateway could
    not judge them, so a rule in shadow or off still withholds them (rules.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.unchecked = 0  # set here: compiled, a class attribute would be no default


def _unchecked(counts: Counts, n: int) -> None:
    if n and isinstance(counts, Tally):
        counts.unchecked += n


def count_unjudged(counts: Counts, n: int = 1) -> None:
    """``n`` values withheld that no metadata judged: counted as ``unknown`` and withheld
    in every mode (``Tally.unchecked``)."""
    counts["unknown"] = counts.get("unknown", 0) + n
    _unchecked(counts, n)


_MEMO_LIMIT = 256
#: nesting past which an answer is not read (no CRM answer comes near; without a bound the
#: walk's depth would be Python's recursion limit, which compiled code does not have)
MAX_DEPTH = 64


def is_masked(info: FieldInfo | None, shown: frozenset[str]) -> bool:
    if info is None or info.private is None:
        return False
    return info.private.restricted or info.private.sensitivity not in shown


@dataclass(slots=True)
class MaskPlan:
    module: str
    masked: tuple[str, ...]  # exact api names whose values are nulled
    subforms: dict[str, MaskPlan]  # exact api name -> plan of the subform's module
    by_lower: dict[str, tuple[str, MaskPlan | None] | None]  # for keys of another case
    private_fields: dict[str, dict[str, Any]]  # exact api name -> include=private_fields entry
    known: frozenset[str] = frozenset()  # lower-case names of the module's fields
    #: exact api names nulled because their metadata is missing (a subform's), not private
    unjudged: frozenset[str] = frozenset()
    #: the module's record-name field when it is withheld: then a lookup's ``name`` into
    #: this module (that field's value) is withheld too, counted under it
    name_field: str = ""
    _shapes: dict[tuple[str, ...], Steps] = field(default_factory=dict)

    def steps(self, record: dict[str, Any]) -> Steps:
        """What to do to a record with these keys. Records of one answer share their keys,
        so the decision is made once per shape of record and memoised: (keys to null with
        the name to count them under, keys whose objects another plan redacts, keys that
        are no field, whose objects this plan redacts, and of those the ones that are not
        ``$``-keys or ``id``: in a top-level record, a value the metadata does not describe
        cannot be judged, so it is withheld, as COQL and bulk do)."""
        shape = tuple(record)
        found = self._shapes.get(shape)
        if found is None:
            nulls: list[tuple[str, str]] = []
            nested: list[Step] = []
            deep: list[str] = []
            for key in shape:
                lower = _lower(key)
                act = self.by_lower.get(lower)
                if act is None:
                    if lower not in self.known:
                        deep.append(key)  # no field: look inside, with this plan
                elif act[1] is None:
                    nulls.append((key, act[0]))
                else:
                    nested.append((key, act[0], act[1]))
            strange = tuple(k for k in deep if not k.startswith("$") and _lower(k) != "id")
            names = tuple(k for k in strange if _lower(k) == "name")
            in_lookup = tuple(k for k in strange if _lower(k) != "name")
            found = Steps(tuple(nulls), tuple(nested), tuple(deep), strange, in_lookup, names)
            if len(self._shapes) < _MEMO_LIMIT:
                self._shapes[shape] = found
        return found


#: (key as the record spells it, api name to count it under, the plan for its objects:
#: a lookup's or subform's, or NAME_AND_ID)
Step = tuple[str, str, "MaskPlan"]


@dataclass(slots=True, eq=False)
class Steps:
    """What ``MaskPlan.steps`` decided for one shape of record. An object, not a tuple: its
    identity keys the per-shape counts (compiled, a tuple is no object until boxed, so an
    ``id()`` of it would name a temporary)."""

    nulls: tuple[tuple[str, str], ...]  # (key, api name to count it under)
    nested: tuple[Step, ...]  # keys whose objects another plan redacts
    deep: tuple[str, ...]  # keys that are no field: their objects this plan redacts
    strange: tuple[str, ...]  # of ``deep``, those withheld in a record (``RECORD``)
    in_lookup: tuple[str, ...]  # of ``strange``, those withheld in a lookup's object
    names: tuple[str, ...]  # of ``strange``, a lookup's ``name`` (see ``name_field``)


#: "a lookup into a module the gateway has no metadata for (a multi-module lookup such as
#: What_Id): keep its ``name`` and ``id``, withhold the rest"
NAME_AND_ID = MaskPlan("", (), {}, {}, {})
_LOOKUP_KEEPS = frozenset({"name", "id"})
#: the same, when the record it names may be of a module whose name field is withheld: its
#: ``name`` is withheld too
ID_ONLY = MaskPlan("", (), {}, {}, {}, name_field="name")
_ID_KEEPS = frozenset({"id"})


def _any_name_withheld(catalogs: Iterable[ModuleCatalog], shown: frozenset[str]) -> str:
    """The first withheld name field of any of ``catalogs`` (the modules a parent field may
    name, as far as their metadata is at hand), or ""."""
    for catalog in catalogs:
        name = catalog.name_field(lambda info: is_masked(info, shown))
        if name:
            return name
    return ""


def build_plan(
    catalog: ModuleCatalog,
    shown: frozenset[str],
    subform_catalogs: Mapping[str, ModuleCatalog],
    lookup_catalogs: Mapping[str, ModuleCatalog] | None = None,
) -> MaskPlan:
    """``subform_catalogs`` maps a subform module's name (any case) to its metadata; a
    subform whose metadata is missing cannot be checked, so the whole value is nulled.
    ``lookup_catalogs`` likewise for the targets of lookup fields (their values are
    redacted with the target's plan); without them a lookup value is redacted with this
    module's own plan."""
    sub_by_lower = {_lower(k): v for k, v in subform_catalogs.items()}
    look_by_lower = {_lower(k): v for k, v in (lookup_catalogs or {}).items()}
    masked: list[str] = []
    unjudged: list[str] = []
    subforms: dict[str, MaskPlan] = {}
    by_lower: dict[str, tuple[str, MaskPlan | None] | None] = {}
    private_fields: dict[str, dict[str, Any]] = {}
    any_name: str | None = None  # see names_any_module, below
    for lower, info in catalog.fields.items():
        if info.private is not None:
            private_fields[info.api_name] = {
                "api_name": info.api_name,
                "type": info.private.sensitivity.title() or None,
                "restricted": info.private.restricted,
            }
        if is_masked(info, shown):
            masked.append(info.api_name)
            by_lower[lower] = (info.api_name, None)
        elif info.data_type == "subform":
            sub = sub_by_lower.get(_lower(info.target_module or ""))
            if sub is None:
                masked.append(info.api_name)
                unjudged.append(info.api_name)
                by_lower[lower] = (info.api_name, None)
            else:
                # a row's Parent_Id looks up this module: its name is this module's
                parent = {**(lookup_catalogs or {}), catalog.module: catalog}
                plan = build_plan(sub, shown, {}, parent)
                subforms[info.api_name] = plan
                by_lower[lower] = (info.api_name, plan)
        elif info.data_type in LOOKUPS:
            target = look_by_lower.get(_lower(info.target_module or ""))
            nested = build_plan(target, shown, {}) if target else NAME_AND_ID
            if names_any_module(info) and any_name is None:
                any_name = _any_name_withheld(look_by_lower.values(), shown)
            if names_any_module(info) and any_name:
                # its value may be a record of any module: of one whose name is withheld
                if target:
                    nested.name_field = any_name  # a plan of its own, built just above
                else:
                    nested = ID_ONLY
            by_lower[lower] = (info.api_name, nested)
    return MaskPlan(
        catalog.module,
        tuple(masked),
        subforms,
        by_lower,
        private_fields,
        known=frozenset(catalog.fields),
        unjudged=frozenset(unjudged),
        name_field=_any_name_withheld((catalog,), shown),
    )


LOOKUPS = frozenset({"lookup", "multiselectlookup"})


def _null(record: dict[str, Any], key: str, api_name: str, counts: Counts) -> None:
    record[key] = None
    label = count_label(api_name)
    counts[label] = counts.get(label, 0) + 1


#: What an object withholds of its keys that no field of its plan's module describes
#: (besides ``$``-keys and ``id``): a record of the module (of the answer's ``data``, or a
#: subform's row) all of them, since a field created at the CRM since the metadata was
#: fetched may be private; a lookup's object all but its ``name``; any other object
#: (under a ``$``-key, or a key that is no field) none, as it is no record of the module.
NESTED = 0
RECORD = 1
LOOKUP = 2


def _unknown(found: Steps, level: int) -> tuple[str, ...]:
    if level == RECORD:
        return found.strange
    if level == LOOKUP:
        return found.in_lookup
    return ()


def redact_record(
    record: dict[str, Any],
    plan: MaskPlan,
    counts: Counts,
    *,
    level: int = NESTED,
    depth: int = 0,
) -> None:
    """``level``: what ``record`` is (``RECORD``, ``LOOKUP`` or ``NESTED``, above), which
    says which of its keys that are no field are withheld. ``depth``: how many objects and
    lists of the answer hold ``record``."""
    found = _withhold(record, plan, level)
    _count(found, plan, 1, counts, level)
    if found.nested or found.deep:
        _redact_inside(record, plan, found.nested, found.deep, counts, depth)


def _withhold(record: dict[str, Any], plan: MaskPlan, level: int) -> Steps:
    """Null what ``record``'s own level withholds (uncounted); return its steps."""
    found = plan.steps(record)
    for key in _unknown(found, level):
        record[key] = None
    if level == LOOKUP and plan.name_field:
        for key in found.names:
            record[key] = None
    for key, _ in found.nulls:
        record[key] = None
    return found


def _count(found: Steps, plan: MaskPlan, times: int, counts: Counts, level: int) -> None:
    """What ``times`` records of one shape had withheld, counted at once."""
    unknown = _unknown(found, level)
    for key in unknown:
        label = count_label(key)
        counts[label] = counts.get(label, 0) + times
    _unchecked(counts, times * len(unknown))
    if level == LOOKUP and plan.name_field and found.names:
        label = count_label(plan.name_field)
        counts[label] = counts.get(label, 0) + times * len(found.names)
    for _, api_name in found.nulls:
        label = count_label(api_name)
        counts[label] = counts.get(label, 0) + times
        if api_name in plan.unjudged:
            _unchecked(counts, times)


def _redact_inside(
    record: dict[str, Any],
    plan: MaskPlan,
    nested: tuple[Step, ...],
    deep: tuple[str, ...],
    counts: Counts,
    depth: int,
) -> None:
    """The objects under a record's lookups, subforms and keys that are no field."""
    if depth > MAX_DEPTH:
        raise UnreadableUpstream()
    inner_depth = depth + 1
    for key, api_name, rows_plan in nested:
        if rows_plan is NAME_AND_ID or rows_plan is ID_ONLY:
            keeps = _LOOKUP_KEEPS if rows_plan is NAME_AND_ID else _ID_KEEPS
            _name_and_id(record[key], api_name, counts, inner_depth, keeps)
        elif api_name in plan.subforms:
            # a subform's rows, strictly: they are records of the subform's module
            redact_rows(record[key], rows_plan, counts, inner_depth, level=RECORD)
        else:  # a lookup's object (or a multi-select lookup's objects)
            _redact_lookups(record[key], rows_plan, counts, inner_depth)
    for key in deep:
        value = record[key]
        if isinstance(value, dict):
            inner = plan.steps(value)
            if inner.nulls or inner.nested:
                redact_record(value, plan, counts, depth=inner_depth)
            elif inner.deep:
                # Nothing to null at this level (``$approval``, ``$review_process``): only
                # objects further in can hold a value, and most such objects hold none.
                for name in inner.deep:
                    item = value[name]
                    if isinstance(item, dict) or isinstance(item, list):  # noqa: SIM101 (mypyc: two type checks)
                        _redact_inside(value, plan, (), inner.deep, counts, inner_depth)
                        break
        elif isinstance(value, list):  # scalars: nothing inside
            _redact_nested(value, plan, counts, inner_depth)


def _redact_lookups(value: Any, plan: MaskPlan, counts: Counts, depth: int) -> None:
    """A lookup's object, or a list of them at any depth, each redacted as a lookup's
    object (``LOOKUP``) with its target's ``plan``; scalars are left as they are."""
    if depth > MAX_DEPTH:
        raise UnreadableUpstream()
    if isinstance(value, dict):
        redact_record(value, plan, counts, level=LOOKUP, depth=depth)
    elif isinstance(value, list):
        for item in value:
            _redact_lookups(item, plan, counts, depth + 1)


def _name_and_id(
    value: Any, api_name: str, counts: Counts, depth: int, keeps: frozenset[str] = _LOOKUP_KEEPS
) -> None:
    """Keep a lookup object's ``name`` and ``id`` (``keeps``, scalars); withhold everything
    else in it, at any depth."""
    if depth > MAX_DEPTH:
        raise UnreadableUpstream()
    if isinstance(value, list):
        for item in value:
            _name_and_id(item, api_name, counts, depth + 1, keeps)
    elif isinstance(value, dict):
        for key, item in value.items():
            if _lower(key) not in keeps or isinstance(item, dict | list):
                value[key] = None
                named = f"{api_name}.{key}" if safe_label(key) else f"{api_name}.unknown"
                label = count_label(named)
                counts[label] = counts.get(label, 0) + 1
                _unchecked(counts, 1)


def _redact_nested(value: Any, plan: MaskPlan, counts: Counts, depth: int) -> None:
    """Objects in ``value`` (one, or a list of them) redacted with ``plan``; scalars are
    left as they are."""
    if depth > MAX_DEPTH:
        raise UnreadableUpstream()
    if isinstance(value, dict):
        redact_record(value, plan, counts, depth=depth)
    elif isinstance(value, list):
        for item in value:
            _redact_nested(item, plan, counts, depth + 1)


def redact_rows(
    rows: Any, plan: MaskPlan, counts: Counts, depth: int = 0, *, level: int = NESTED
) -> None:
    if rows is None:
        return
    if depth > MAX_DEPTH:
        raise UnreadableUpstream()
    if isinstance(rows, dict):
        rows = [rows]
    elif isinstance(rows, list):
        depth += 1
    else:
        raise UnreadableUpstream()
    for row in rows:
        if not isinstance(row, dict):
            raise UnreadableUpstream()
        redact_record(row, plan, counts, level=level, depth=depth)


def redact_records(
    records: Any, plan: MaskPlan, counts: Counts, *, include_private: bool = False
) -> None:
    """Redact ``data[]`` in place. Anything that is not a list of objects cannot be checked.

    The records of one answer share a few shapes: what each shape withholds is counted
    once per shape, times its records, after the loop."""
    if not isinstance(records, list):
        raise UnreadableUpstream()
    shapes: dict[Steps, int] = {}  # steps of a shape -> records of that shape
    memo = plan._shapes
    for record in records:
        if not isinstance(record, dict):
            raise UnreadableUpstream()
        # _withhold(record, plan, True), inlined: this loop runs once per record
        found = memo.get(tuple(record)) or plan.steps(record)
        for key in found.strange:
            record[key] = None
        for key, _ in found.nulls:
            record[key] = None
        shapes[found] = shapes.get(found, 0) + 1
        if found.nested or found.deep:
            _redact_inside(record, plan, found.nested, found.deep, counts, 2)  # body, data
        if include_private:
            present = {_lower(k) for k in record}
            record["private_fields"] = [
                entry for name, entry in plan.private_fields.items() if _lower(name) in present
            ]
    for found, times in shapes.items():
        _count(found, plan, times, counts, RECORD)


#: keys of a write's ``details`` that are no field and carry no value of a record
WRITE_DETAILS = frozenset({"job_id"})
#: the texts a write's answer or entry holds beside its details: the CRM's codes and words
WRITE_TOKENS = frozenset({"code", "status", "action", "duplicate_field"})
_WORD = re.compile(r"[A-Za-z0-9_.$\-]{1,100}")
_ID = re.compile(r"\d{1,25}")
#: the CRM's messages of a write that went through (lower case, without a final period)
WRITE_MESSAGES = frozenset(
    {
        "success", "record added", "record updated", "record deleted", "records deleted",
        "relation updated", "relation removed", "relation added",
        "photo uploaded successfully", "photo deleted", "attachment uploaded successfully",
        "mass update scheduled successfully", "added successfully",
        "the record has been converted successfully", "record converted",
    }
)  # fmt: skip


def redact_write_answer(
    body: Any, plan: MaskPlan | None, counts: Counts, kept: frozenset[str] = WRITE_DETAILS
) -> None:
    """A write's answer, ``{"data": [{"code", "details": {...}, ...}]}``: each entry's
    ``details`` is checked as a record of the module (``plan``; without one, a record of an
    unknown module: every value but ids withheld), and so is every other object in the
    answer, wherever it is (an entry's member, a member beside ``data``), a field's value
    beside them too. In a success's ``details``, as in a record, a key no field describes
    is withheld, but for ``kept`` (lower case: an id there, or for a convert's modules a
    record judged as a lookup); an error's details are the CRM's error vocabulary
    (``errors_body``). An answer without ``data`` is itself one entry (a photo's, a
    scheduled mass update's). An answer that is not an object cannot be checked."""
    if body is None:
        return
    if not isinstance(body, dict):
        raise UnreadableUpstream()
    check_data_key(body)
    entries: list[Any] = [body]
    depth = 0
    if "data" in body:
        _beside(body, "data", plan, counts, 0)
        if body.get("status") != "error":  # an error's are errors_body's (exactly "error")
            _write_texts(body, "data", plan, counts, kept)
        data = body["data"]
        entries = data if isinstance(data, list) else [data]
        depth = 2  # under the body, its data and an entry
    for entry in entries:
        if not isinstance(entry, dict):
            _redact_object(entry, "data", plan, counts, depth)
            continue
        _beside(entry, "details", plan, counts, depth)
        failed = entry.get("status") == "error"
        if not failed:
            _write_texts(entry, "details", plan, counts, kept)
        details = entry.get("details")
        if isinstance(details, dict) and plan is not None:
            strange: tuple[str, ...] = ()
            if not failed:
                strange = tuple(
                    k
                    for k in plan.steps(details).strange
                    if not (_lower(k) in kept and _kept_detail(_lower(k), details[k]))
                )
            redact_record(details, plan, counts, depth=depth + 1)
            for key in strange:
                details[key] = None
                label = count_label(key)
                counts[label] = counts.get(label, 0) + 1
            _unchecked(counts, len(strange))
        else:
            _redact_object(details, "details", plan, counts, depth + 1)


def _kept_detail(name: str, value: Any) -> bool:
    """A value under a name of ``kept`` that may stay: an id, or (for a convert's modules,
    not ``WRITE_DETAILS``) an object or list the caller judged as lookups."""
    if isinstance(value, str):
        return _ID.fullmatch(value) is not None
    return name not in WRITE_DETAILS and isinstance(value, dict | list)


def _write_texts(
    obj: dict[str, Any], skip: str, plan: MaskPlan | None, counts: Counts, ids: frozenset[str]
) -> None:
    """The members beside ``skip`` in a write's answer or entry that went through, but for
    the module's fields (``_beside`` judged them): a code, status or action that is a plain
    word, a message the CRM writes, a record id under a name in ``ids`` (a v2 convert's
    ``"Contacts": "<id>"``; an object there was judged as a lookup), a number or a truth
    value. Any other text, list or object may hold a value no field describes: withheld."""
    for key in list(obj):
        value = obj[key]
        if key == skip or value is None or isinstance(value, bool | int | float):
            continue
        name = _lower(key)
        if plan is not None and name in plan.by_lower:
            continue
        if not isinstance(value, str):
            kept = name in ids and _kept_detail(name, value)
        elif name == "message":
            kept = _lower(value).rstrip(".") in WRITE_MESSAGES
        elif name in ids:
            kept = _ID.fullmatch(value) is not None
        else:
            kept = name in WRITE_TOKENS and _WORD.fullmatch(value) is not None
        if not kept:
            obj[key] = None
            count_unjudged(counts)


def _redact_object(
    value: Any, name: str, plan: MaskPlan | None, counts: Counts, depth: int
) -> None:
    """Objects in ``value`` checked as records of ``plan``'s module, or without a plan as
    records of a module the gateway does not know (all but name and id withheld, counted
    under ``name``); scalars are left as they are."""
    if plan is not None:
        _redact_nested(value, plan, counts, depth)
    else:
        _name_and_id(value, name, counts, depth)


def _beside(
    obj: dict[str, Any], skip: str, plan: MaskPlan | None, counts: Counts, depth: int
) -> None:
    """Every member of ``obj`` but ``skip``, checked as the members of a nested object of
    the module are: a field's value withheld as the plan says, objects looked into at any
    depth. Without a plan, objects are checked as records of an unknown module and
    scalars (an entry's ``code``, ``status``) kept."""
    if plan is None:
        for key, value in obj.items():
            if key != skip:
                _redact_object(value, key, None, counts, depth + 1)
        return
    found = plan.steps(obj)
    rest = Steps(
        tuple(n for n in found.nulls if n[0] != skip),
        tuple(n for n in found.nested if n[0] != skip),
        tuple(k for k in found.deep if k != skip),
        (),
        (),
        (),
    )
    for key, _ in rest.nulls:
        obj[key] = None
    _count(rest, plan, 1, counts, NESTED)
    if rest.nested or rest.deep:
        _redact_inside(obj, plan, rest.nested, rest.deep, counts, depth)


def redact_body(
    body: Any, plan: MaskPlan, counts: Counts, *, include_private: bool = False
) -> None:
    """A record-bearing JSON answer: ``{"data": [...], "info": {...}}``. Any other object
    (``{"count": n}``, an action's answer) is checked as if it were one record, so a field
    value can never slip through in an unexpected shape."""
    if not isinstance(body, dict):
        raise UnreadableUpstream()
    check_data_key(body)
    if "data" in body:
        redact_records(body["data"], plan, counts, include_private=include_private)
    redact_beside_data(body, plan, counts)


def check_data_key(body: dict[str, Any]) -> None:
    """An answer's records are under ``data``: a member spelled so in another case
    (``Data``) would be read as its records by a client that matches names in any case,
    and could only be walked as a nested object here. It cannot be checked."""
    for key in body:
        if key != "data" and _lower(key) == "data":
            raise UnreadableUpstream()


def redact_beside_data(body: dict[str, Any], plan: MaskPlan, counts: Counts) -> None:
    """What an answer holds beside its ``data`` (its ``info``, records under a key the
    gateway does not know) is checked with the module's ``plan`` at any depth; an answer
    without ``data`` is checked whole, as if it were one record."""
    if "data" not in body:
        redact_record(body, plan, counts)
    else:
        _beside(body, "data", plan, counts, 0)


#: what a COQL column gets: kept (None), nulled (the name to count it under), or its
#: value (a whole lookup or subform) redacted with its own module's plan
ColumnAction = str | MaskPlan | None


@dataclass(frozen=True, slots=True)
class CoqlPlan:
    """Row key (lower-case) -> its ``ColumnAction``. A row key the plan does not know is
    nulled: COQL rows are keyed by the query's own columns, so an unexpected key is a value
    the gateway could not check."""

    actions: Mapping[str, ColumnAction]
    #: row key (lower-case) -> the level its objects are redacted at, for a column whose
    #: value is a whole lookup (``LOOKUP``) or subform (``RECORD``)
    levels: Mapping[str, int] = field(default_factory=dict)


def build_coql_plan(
    module: str,
    columns: Sequence[tuple[str, tuple[str, ...], bool]],
    catalogs: Mapping[str, ModuleCatalog],
    shown: frozenset[str],
) -> CoqlPlan:
    """``columns``: (row key, field path, is an aggregate) for each selected column;
    ``catalogs``: lower-case module name -> metadata for the module and lookup targets."""
    actions: dict[str, ColumnAction] = {"id": None}
    levels: dict[str, int] = {}
    for key, path, _aggregate in columns:
        actions[_lower(key)], levels[_lower(key)] = column_action(module, path, catalogs, shown)
    return CoqlPlan(actions, levels)


def path_mask(
    module: str,
    path: Sequence[str],
    catalogs: Mapping[str, ModuleCatalog],
    masked: Callable[[FieldInfo], bool],
) -> str | None:
    """The label to withhold a column under, or None to keep it: a column is withheld when
    any field on its path is ``masked``, or when the path cannot be resolved (a module
    without metadata, a name that is no field: a value the gateway cannot check). ``id``
    and the CRM user behind an ownerlookup (``Owner.email``) are kept."""
    walk = walk_path(module, path, catalogs)
    for depth, info in enumerate(walk.infos):
        if masked(info):
            return info.api_name if depth == 0 else walk.label(depth)
    if walk.stop in (COMPLETE, OWNER):
        return None
    if (
        walk.stop == UNKNOWN_FIELD
        and len(walk.infos) == len(path) - 1
        and _lower(path[-1]) == "id"
    ):
        return None
    return walk.label(len(path) - 1)


def column_action(
    module: str, path: Sequence[str], catalogs: Mapping[str, ModuleCatalog], shown: frozenset[str]
) -> tuple[ColumnAction, int]:
    """The column's action, and the level its objects are redacted at when the action is a
    plan (a whole lookup's: ``LOOKUP``; a whole subform's rows: ``RECORD``)."""
    label = path_mask(module, path, catalogs, lambda info: is_masked(info, shown))
    if label is not None:
        return label, NESTED
    walk = walk_path(module, path, catalogs)
    last = walk.infos[-1] if walk.stop == COMPLETE and walk.infos else None
    if last is None or last.data_type not in _NESTED:
        return None, NESTED
    # A whole lookup or subform: its value carries fields of another module.
    target = catalogs.get(_lower(last.target_module or ""))
    if target is None:
        return walk.label(len(path) - 1), NESTED
    return build_plan(target, shown, {}), RECORD if last.data_type == "subform" else LOOKUP


_NESTED = frozenset({"lookup", "multiselectlookup", "subform"})


def redact_coql_rows(rows: Any, plan: CoqlPlan, counts: Counts) -> None:
    if not isinstance(rows, list):
        raise UnreadableUpstream()
    for row in rows:
        if not isinstance(row, dict):
            raise UnreadableUpstream()
        for key in row:
            try:
                action = plan.actions[_lower(key)]
            except KeyError:
                action = count_label(key)
                _unchecked(counts, 1)
            if isinstance(action, MaskPlan):  # under the rows and a row
                redact_rows(row[key], action, counts, 3, level=plan.levels.get(_lower(key), LOOKUP))
            elif action is not None:
                _null(row, key, action, counts)


_LABELS: dict[str, str] = {}


def count_label(name: str) -> str:
    """The name a withheld value is counted under: ``name`` (the metadata's or the answer's
    own) when ``safe_label`` allows it, else "unknown", as for the answer's keys."""
    label = _LABELS.get(name)
    if label is None:
        label = name if safe_label(name) else "unknown"
        if len(_LABELS) < 4 * _MEMO_LIMIT:
            _LABELS[name] = label
    return label


def safe_label(key: str) -> bool:
    """Whether a name the CRM's answer chose may name a withheld value as it is (in the
    audit entry and ``X-Privacy-Withheld``, a header: ASCII only); any other is counted as
    "unknown"."""
    return len(key) <= 100 and key.isascii() and all(c.isalnum() or c in "_.$()" for c in key)
