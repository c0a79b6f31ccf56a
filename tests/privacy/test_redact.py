"""The redactor alone: pure functions over parsed JSON."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import UnreadableUpstream
from gateway.privacy.catalog import (
    MetadataShapeError,
    parse_fields,
    parse_org,
    parse_related_lists,
    with_overrides,
)
from gateway.privacy.redact import (
    MAX_DEPTH,
    build_coql_plan,
    build_plan,
    redact_body,
    redact_coql_rows,
)


def _field(
    name: str, private: dict[str, Any] | None = None, data_type: str = "text", **extra: Any
) -> dict[str, Any]:
    return {"api_name": name, "data_type": data_type, "private": private, **extra}


HIGH_R = {"restricted": True, "type": "High", "export": True}
LOW = {"restricted": False, "type": "Low", "export": False}
HIGH = {"restricted": False, "type": "high", "export": True}  # lower-case type, as v2 may send

LEADS = parse_fields(
    "Leads",
    {
        "fields": [
            _field("Last_Name"),
            _field("Email", HIGH_R, "email"),
            _field("City", LOW),
            _field("Phone", HIGH, "phone"),
            _field(
                "Referrer", HIGH, "lookup", lookup={"module": {"api_name": "Contacts", "id": "1"}}
            ),
            _field("Account", None, "lookup", lookup={"module": "Accounts"}),
            _field(
                "Visits", None, "subform", associated_module={"module": "Lead_Visits", "id": "2"}
            ),
        ]
    },
)
VISITS = parse_fields(
    "Lead_Visits",
    {
        "fields": [
            _field("Notes", HIGH_R, "textarea"),
            _field("Visit_Date", None, "date"),
        ]
    },
)
CONTACTS = parse_fields(
    "Contacts", {"fields": [_field("Email", HIGH_R, "email"), _field("Last_Name")]}
)


def test_restricted_and_unshown_private_fields_are_nulled_keys_kept() -> None:
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS})
    body = {
        "data": [
            {
                "Last_Name": "A",
                "Email": "a@x",
                "City": "Rome",
                "Phone": "1",
                "Referrer": {"name": "B", "id": "9"},
                "Account": {"name": "Co", "id": "8"},
                "$stop_processing": True,
            }
        ],
        "info": {"count": 1},
    }
    counts: dict[str, int] = {}
    redact_body(body, plan, counts)
    assert body["data"][0] == {
        "Last_Name": "A",
        "Email": None,
        "City": None,
        "Phone": None,
        "Referrer": None,
        "Account": {"name": "Co", "id": "8"},
        "$stop_processing": True,
    }
    assert body["info"] == {"count": 1}
    assert counts == {"Email": 1, "City": 1, "Phone": 1, "Referrer": 1}


def test_shown_sensitivities_never_reveal_restricted_fields() -> None:
    plan = build_plan(LEADS, frozenset({"low", "high"}), {"Lead_Visits": VISITS})
    rec = {"Email": "a@x", "City": "Rome", "Phone": "1"}
    redact_body({"data": [rec]}, plan, {})
    assert rec == {"Email": None, "City": "Rome", "Phone": "1"}


def test_empty_private_values_are_counted_like_any_other() -> None:
    """Counts name every private field present: an empty value must look like a full one."""
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS})
    empty: dict[str, int] = {}
    full: dict[str, int] = {}
    redact_body({"data": [{"Email": None, "City": "x"}]}, plan, empty)
    redact_body({"data": [{"Email": "a@x", "City": "x"}]}, plan, full)
    assert empty == full == {"Email": 1, "City": 1}


def test_keys_in_another_case_are_found() -> None:
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS})
    recs = [{"EMAIL": "a@x", "city": "Rome", "Last_Name": "A"}, {"eMaIl": "b@x"}]
    redact_body({"data": recs}, plan, {})
    assert recs == [{"EMAIL": None, "city": None, "Last_Name": "A"}, {"eMaIl": None}]


def test_records_of_different_shapes_in_one_answer_are_each_checked() -> None:
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS})
    recs = [{"Last_Name": "A"}, {"Last_Name": "B", "Email": "b@x"}, {"Email": "c@x", "x": 1}]
    redact_body({"data": recs}, plan, {})
    assert [r.get("Email") for r in recs] == [None, None, None]


def test_subform_rows_use_the_subform_modules_metadata() -> None:
    plan = build_plan(LEADS, frozenset(), {"lead_visits": VISITS})
    rec = {"Visits": [{"Notes": "secret", "Visit_Date": "2024-01-01"}], "visits_other": 1}
    redact_body({"data": [rec]}, plan, {})
    assert rec["Visits"] == [{"Notes": None, "Visit_Date": "2024-01-01"}]


def test_a_subform_without_metadata_is_nulled_whole() -> None:
    plan = build_plan(LEADS, frozenset(), {})
    rec = {"Visits": [{"Notes": "secret"}]}
    redact_body({"data": [rec]}, plan, {})
    assert rec["Visits"] is None


def test_shapes_that_cannot_be_checked_are_refused() -> None:
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS})
    for body in ({"data": "a@x"}, {"data": ["a@x"]}, ["a@x"], {"data": [{"Visits": "x"}]}):
        with pytest.raises(UnreadableUpstream):
            redact_body(body, plan, {})


def _nested(depth: int, kind: str) -> Any:
    """A private value ``depth`` objects (under a key that is no field) or lists deep."""
    value: Any = {"Email": "a@x"}
    for _ in range(depth):
        value = {"$x": value} if kind == "objects" else [value]
    return value


@pytest.mark.parametrize("kind", ["objects", "lists"])
def test_nesting_is_walked_to_the_bound_and_refused_past_it(kind: str) -> None:
    """The walk bounds its own depth (``MAX_DEPTH``): in range, a private value at the
    bottom is withheld; past it, the answer is refused rather than partly walked (the
    compiled build has no recursion limit to stop it, the source one has Python's)."""
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS})
    body = {"data": [{"Last_Name": "A", "$deep": _nested(MAX_DEPTH - 4, kind)}]}
    counts: dict[str, int] = {}
    redact_body(body, plan, counts)
    assert "a@x" not in orjson.dumps(body).decode() and counts == {"Email": 1}
    with pytest.raises(UnreadableUpstream):
        redact_body({"data": [{"$deep": _nested(MAX_DEPTH + 1, kind)}]}, plan, {})
    with pytest.raises(UnreadableUpstream):
        redact_body({"data": [], "more": _nested(1000, kind)}, plan, {})


def test_an_object_without_data_is_checked_as_one_record() -> None:
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS})
    body = {"Email": "a@x", "count": 3}
    redact_body(body, plan, {})
    assert body == {"Email": None, "count": 3}


def test_include_private_fields_lists_present_private_fields_only() -> None:
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS})
    rec: dict[str, Any] = {"Email": "a@x", "city": "Rome", "Last_Name": "A"}
    redact_body({"data": [rec]}, plan, {}, include_private=True)
    assert rec["private_fields"] == [
        {"api_name": "Email", "type": "High", "restricted": True},
        {"api_name": "City", "type": "Low", "restricted": False},
    ]
    assert rec["Email"] is None and rec["city"] is None


def test_coql_rows_by_column_alias_and_lookup_path() -> None:
    catalogs = {"leads": LEADS, "contacts": CONTACTS}
    plan = build_coql_plan(
        "Leads",
        [
            ("Last_Name", ("Last_Name",), False),
            ("e", ("Email",), False),
            ("Account.name", ("Account", "name"), False),
            ("Referrer.Last_Name", ("Referrer", "Last_Name"), False),
            ("MAX(City)", ("City",), True),
        ],
        catalogs,
        frozenset(),
    )
    row = {
        "Last_Name": "A",
        "e": "a@x",
        "Account.name": "Co",
        "Referrer.Last_Name": "B",
        "MAX(City)": "Rome",
        "id": "1",
        "unexpected": "leak",
    }
    counts: dict[str, int] = {}
    redact_coql_rows([row], plan, counts)
    # Account's target (Accounts) has no metadata here: withheld rather than guessed.
    assert row == {
        "Last_Name": "A",
        "e": None,
        "Account.name": None,
        "Referrer.Last_Name": None,
        "MAX(City)": None,
        "id": "1",
        "unexpected": None,
    }
    assert counts["Email"] == 1 and counts["unexpected"] == 1


def test_a_coql_column_that_is_a_whole_subform_or_lookup_gets_its_modules_mask() -> None:
    """A whole subform column carries the subform's rows; a whole lookup may carry fields of
    its target: each is redacted with its own module's metadata."""
    account = parse_fields("Accounts", {"fields": [_field("Name"), _field("Email", HIGH_R)]})
    catalogs = {"leads": LEADS, "lead_visits": VISITS, "accounts": account}
    plan = build_coql_plan(
        "Leads",
        [("Visits", ("Visits",), False), ("Account", ("Account",), False)],
        catalogs,
        frozenset(),
    )
    row = {
        "Visits": [{"Notes": "secret note", "Visit_Date": "2026-01-01"}],
        "Account": {"name": "Co", "id": "9", "Email": "acc@x"},
        "id": "1",
    }
    counts: dict[str, int] = {}
    redact_coql_rows([row], plan, counts)
    assert row["Visits"] == [{"Notes": None, "Visit_Date": "2026-01-01"}]
    assert row["Account"] == {"name": "Co", "id": "9", "Email": None}
    assert counts == {"Notes": 1, "Email": 1}
    # Without the target's metadata the whole column is withheld.
    blind = build_coql_plan(
        "Leads", [("Account", ("Account",), False)], {"leads": LEADS}, frozenset()
    )
    row = {"Account": {"name": "Co", "id": "9"}}
    redact_coql_rows([row], blind, {})
    assert row == {"Account": None}


def test_metadata_parsing_fails_closed_on_odd_shapes() -> None:
    with pytest.raises(MetadataShapeError):
        parse_fields("Leads", {"fields": [{"api_name": "Email", "private": "yes"}]})
    with pytest.raises(MetadataShapeError):
        parse_fields("Leads", {"nothing": []})
    odd = parse_fields("Leads", {"fields": [_field("Email", {"type": "High"})]})
    info = odd.get("email")
    assert info is not None and info.private is not None and info.private.restricted


def test_only_an_explicit_false_turns_privacy_off() -> None:
    assert parse_org({"org": [{"id": "1", "privacy_settings": False}]}).privacy_settings is False
    assert parse_org({"org": [{"id": "1"}]}).privacy_settings is True
    assert parse_org({"org": [{"id": "1", "privacy_settings": "false"}]}).privacy_settings is True
    with pytest.raises(MetadataShapeError):
        parse_org({"org": []})


def test_related_list_module_in_both_version_shapes() -> None:
    assert parse_related_lists(
        {
            "related_lists": [
                {"api_name": "Deals", "module": "Deals"},
                {"api_name": "Leads_Ref", "module": {"api_name": "Leads", "id": "1"}},
            ]
        }
    ) == {"deals": ("Deals", "Deals"), "leads_ref": ("Leads_Ref", "Leads")}


# -- nested shapes (checklist 50) ------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SECRET = "secret-marker"
_private_key = st.sampled_from(["Email", "EMAIL", "City", "Phone", "Notes"])
# Keys that may hold objects: no field of Leads ($-keys, embedded records) and a lookup
# (Account: its target's metadata is not at hand, so the Leads plan applies). A scalar
# field such as Last_Name holding an object is no shape the CRM sends; subform rows follow
# their own module's metadata (tested above).
_plain_key = st.sampled_from(["name", "id", "$approved", "$meta", "Other", "Account"])
_scalar = st.one_of(st.none(), st.integers(-(2**53), 2**53), st.sampled_from(["a", "b", ""]))


def _node(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object whose private keys hold the marker, and whose other keys hold plain values
    or further objects / lists of objects (lookups, $-keys, embedded records)."""
    return st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.one_of(_private_key, _plain_key),
            st.one_of(_scalar, children),
            max_size=5,
        ).map(lambda d: {k: (_SECRET if k.lower() in PRIVATE_LOWER else v) for k, v in d.items()}),
    )


PRIVATE_LOWER = {"email", "city", "phone"}
_tree = st.recursive(_scalar, _node, max_leaves=25)


@given(records=st.lists(st.dictionaries(st.one_of(_private_key, _plain_key), _tree, max_size=6)))
def test_c50_private_values_are_withheld_at_any_depth_and_twice_is_once(
    records: list[dict[str, Any]],
) -> None:
    from copy import deepcopy

    import orjson

    for rec in records:  # a private key at the top holds the marker too
        for k in list(rec):
            if k.lower() in PRIVATE_LOWER:
                rec[k] = _SECRET
    plan = build_plan(LEADS, frozenset(), {"Lead_Visits": VISITS}, {"Contacts": CONTACTS})
    body = {"data": records}
    try:
        redact_body(body, plan, {})
    except UnreadableUpstream:
        return  # a shape the gateway cannot check is refused, never passed on
    assert _SECRET.encode() not in orjson.dumps(body)
    again = deepcopy(body)
    redact_body(again, plan, {})
    assert again == body


def test_a_lookup_carrying_its_targets_fields_is_redacted_by_the_target() -> None:
    accounts = parse_fields(
        "Accounts", {"fields": [_field("Email", HIGH_R, "email"), _field("Phone")]}
    )
    plan = build_plan(LEADS, frozenset(), {}, {"Accounts": accounts})
    rec = {
        "Account": {"name": "Co", "id": "1", "Email": "acc@x", "Phone": "555"},
        "$embedded": [{"Email": "e@x", "Last_Name": "Kept"}],
    }
    counts: dict[str, int] = {}
    redact_body({"data": [rec]}, plan, counts)
    assert rec["Account"] == {"name": "Co", "id": "1", "Email": None, "Phone": "555"}
    assert rec["$embedded"] == [{"Email": None, "Last_Name": "Kept"}]
    assert counts == {"Email": 2}


def test_a_lookup_into_an_unknown_module_keeps_only_name_and_id() -> None:
    """A multi-module lookup (What_Id, Parent_Id) names no module in the metadata: what
    else its value carries cannot be checked."""
    plan = build_plan(LEADS, frozenset(), {})
    rec = {"Account": {"name": "Co", "id": "1", "Email": "acc@x", "Phone": "555"}}
    counts: dict[str, int] = {}
    redact_body({"data": [rec]}, plan, counts)
    assert rec["Account"] == {"name": "Co", "id": "1", "Email": None, "Phone": None}
    assert counts == {"Account.Email": 1, "Account.Phone": 1}


def test_a_derived_field_is_as_private_as_the_most_private_of_its_parts() -> None:
    """Full_Name is "First_Name Last_Name": it tells a private part, so it is withheld
    whenever a part would be (catalog.py ``DERIVED``), from the metadata and from a
    policy's extra private fields alike."""

    def full(first: dict[str, Any] | None, last: dict[str, Any] | None) -> Any:
        fields = [_field("First_Name", first), _field("Last_Name", last), _field("Full_Name")]
        return parse_fields("Leads", {"fields": fields}).get("full_name").private

    assert full(None, None) is None
    low = full(LOW, None)
    assert (low.restricted, low.sensitivity, low.export) == (False, "low", False)
    assert full(LOW, HIGH_R).restricted  # a restricted part: the whole is restricted
    mixed = full(LOW, HIGH)  # no one sensitivity keeps it withheld whenever a part is
    assert mixed.restricted and mixed.export
    public = parse_fields(
        "Leads", {"fields": [_field("First_Name"), _field("Last_Name"), _field("Full_Name")]}
    )
    made_private = with_overrides(public, {"first_name": "high"}).get("full_name")
    assert made_private is not None and made_private.private is not None
    assert made_private.private.sensitivity == "high"


def test_a_lookups_name_is_withheld_when_its_targets_name_field_is() -> None:
    """A lookup's ``name`` is the target record's name field (a Contact's Full_Name): when
    that is withheld, so is the lookup's name; keys no field of the target describes are
    withheld from a lookup's object, its name and id kept."""
    contacts = parse_fields(
        "Contacts",
        {"fields": [_field("First_Name", LOW), _field("Last_Name"), _field("Full_Name")]},
    )
    # Referrer (private, High) is shown here; the Contact's First_Name (Low) is not, then is
    for shown, want_name in (({"high"}, None), ({"high", "low"}, "Ann Lee")):
        rec = {"Referrer": {"name": "Ann Lee", "id": "7", "Unlisted": "x"}}
        counts: dict[str, int] = {}
        plan = build_plan(LEADS, frozenset(shown), {}, {"Contacts": contacts})
        redact_body({"data": [rec]}, plan, counts)
        assert rec["Referrer"] == {"name": want_name, "id": "7", "Unlisted": None}
        assert counts.get("Full_Name", 0) == (0 if want_name else 1)
        assert counts["Unlisted"] == 1


def test_a_parent_fields_name_is_withheld_when_any_modules_name_may_be() -> None:
    """A note's Parent_Id names a record of whichever module ``$se_module`` says: its
    ``name`` is withheld when the name field of any module at hand (the GDPR modules'
    metadata is loaded for it) is, and kept with its id otherwise."""
    notes = parse_fields(
        "Notes", {"fields": [_field("Note_Title"), _field("Parent_Id", None, "lookup",
                                                            lookup={"module": "se_module"})]}
    )  # fmt: skip
    private_first = parse_fields(
        "Leads", {"fields": [_field("First_Name", LOW), _field("Last_Name"), _field("Full_Name")]}
    )
    public = parse_fields("Accounts", {"fields": [_field("Account_Name")]})
    for looks, want in (({"Accounts": public}, "Ann Lee"), ({"Leads": private_first}, None)):
        rec = {"Note_Title": "t", "Parent_Id": {"name": "Ann Lee", "id": "7", "x": "y"}}
        counts: dict[str, int] = {}
        redact_body({"data": [rec]}, build_plan(notes, frozenset(), {}, looks), counts)
        assert rec["Parent_Id"] == {"name": want, "id": "7", "x": None}
        assert counts["Parent_Id.x"] == 1
        assert counts.get("Parent_Id.name", 0) == (0 if want else 1)
