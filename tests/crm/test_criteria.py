"""Tests for gateway.crm.criteria: the search-criteria guard's parser.

The property that matters: every field a criteria string uses is reported, or the
string is refused with CriteriaError. Nothing else may come out.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.crm.criteria import (
    MAX_DEPTH,
    OPERATORS,
    CriteriaError,
    Criterion,
    Group,
    Node,
    criteria_fields,
    parse_criteria,
)

SECRET = "Zelda7Secret"  # stands in for personal data; must never appear in a reason


def fails(text: str, **kwargs: int) -> CriteriaError:
    with pytest.raises(CriteriaError) as info:
        parse_criteria(text, **kwargs)
    return info.value


# -- the CRM's documented examples (research note §7) ---------------------------------


def test_doc_example_escaped_comma_and_group() -> None:
    node = parse_criteria(r"((Last_Name:equals:Burns\,B)and(First_Name:starts_with:M))")
    assert node == Group(
        "and",
        (
            Criterion("Last_Name", "equals", ("Burns,B",)),
            Criterion("First_Name", "starts_with", ("M",)),
        ),
    )
    assert criteria_fields(node) == ["Last_Name", "First_Name"]


def test_doc_example_between_datetimes_with_colons() -> None:
    node = parse_criteria(
        "(Created_Time:between:2019-01-01T10:00:00+05:30,2019-01-31T10:00:00+05:30)"
    )
    assert node == Criterion(
        "Created_Time", "between", ("2019-01-01T10:00:00+05:30", "2019-01-31T10:00:00+05:30")
    )


def test_doc_example_in_list() -> None:
    assert parse_criteria("(Lead_Source:in:Web,Email)") == Criterion(
        "Lead_Source", "in", ("Web", "Email")
    )
    assert parse_criteria("(Full_Name:in:Patricia,Boyle,Kate)") == Criterion(
        "Full_Name", "in", ("Patricia", "Boyle", "Kate")
    )


def test_doc_example_bare_single_criterion() -> None:
    assert parse_criteria("Last_Name:equals:Boyle") == Criterion("Last_Name", "equals", ("Boyle",))
    assert parse_criteria("Campaign_Name:equals:CRM") == Criterion(
        "Campaign_Name", "equals", ("CRM",)
    )


def test_doc_example_trailing_backslash_doubled() -> None:
    assert parse_criteria(r"(Last_Name:equals:K\\)") == Criterion("Last_Name", "equals", ("K\\",))


# -- values --------------------------------------------------------------------------


def test_all_escapes_in_one_value() -> None:
    node = parse_criteria(r"(Description:equals:a\(b\)c\,d\\e)")
    assert node == Criterion("Description", "equals", ("a(b)c,d\\e",))


def test_escaped_comma_stays_inside_an_in_value() -> None:
    node = parse_criteria(r"(Last_Name:in:Burns\,B,Smith)")
    assert node == Criterion("Last_Name", "in", ("Burns,B", "Smith"))


def test_unicode_values() -> None:
    node = parse_criteria("((Last_Name:equals:Müller-Lüdenscheidt)or(City:in:東京,😀 ok))")
    assert isinstance(node, Group)
    assert node.items[0] == Criterion("Last_Name", "equals", ("Müller-Lüdenscheidt",))
    assert node.items[1] == Criterion("City", "in", ("東京", "😀 ok"))


def test_whitespace_inside_a_value_is_kept_and_around_tokens_tolerated() -> None:
    node = parse_criteria("  ( ( Last_Name : EQUALS :Van Dyke) \n AND\t(Phone :in:1, 2) )  ")
    assert node == Group(
        "and",
        (
            Criterion("Last_Name", "equals", ("Van Dyke",)),
            Criterion("Phone", "in", ("1", " 2")),
        ),
    )


def test_bare_form_value_runs_to_the_end_of_the_input() -> None:
    # Whitespace is value data, as inside parentheses; only leading blanks are skipped.
    assert parse_criteria("  Last_Name:equals:Van Dyke ") == Criterion(
        "Last_Name", "equals", ("Van Dyke ",)
    )


def test_lookup_path_field() -> None:
    assert criteria_fields(parse_criteria("(Owner.name:equals:Pat)")) == ["Owner.name"]


# -- structure -----------------------------------------------------------------------


def test_nesting_and_case_insensitive_conjunctions() -> None:
    node = parse_criteria(
        "((A:equals:1)OR((B:Greater_Than:2)And(C:in:3,4)And((D:less_equal:5)or(Email:equals:x))))"
    )
    assert criteria_fields(node) == ["A", "B", "C", "D", "Email"]
    assert isinstance(node, Group) and node.operator == "or"
    inner = node.items[1]
    assert isinstance(inner, Group) and inner.operator == "and" and len(inner.items) == 3
    assert inner.items[0] == Criterion("B", "greater_than", ("2",))


def test_top_level_sequence_without_outer_parentheses() -> None:
    node = parse_criteria("(A:equals:1)and(Email:equals:2)")
    assert criteria_fields(node) == ["A", "Email"]


def test_redundant_parentheses_collapse() -> None:
    assert parse_criteria("(((A:equals:1)))") == Criterion("A", "equals", ("1",))


def test_every_operator_accepted() -> None:
    for op in sorted(OPERATORS):
        value = "1,2" if op == "between" else "1"
        node = parse_criteria(f"(F:{op.upper()}:{value})")
        assert isinstance(node, Criterion) and node.operator == op


def test_criteria_fields_dedupes_case_insensitively_keeping_first_spelling() -> None:
    node = parse_criteria("((email:equals:a)or(Phone:equals:b)or(EMAIL:equals:c))")
    assert criteria_fields(node) == ["email", "Phone"]


def test_ten_criteria_allowed_eleventh_refused() -> None:
    ten = "and".join(f"(F{i}:equals:{i})" for i in range(10))
    assert len(criteria_fields(parse_criteria(ten))) == 10
    eleven = "and".join(f"(F{i}:equals:{i})" for i in range(11))
    err = fails(eleven)
    assert "more than 10 criteria" in err.reason
    assert err.position == eleven.index("(F10:") + 1


def test_max_criteria_is_configurable() -> None:
    assert "more than 1 criteria" in fails("(A:equals:1)or(B:equals:2)", max_criteria=1).reason
    parse_criteria("(A:equals:1)or(B:equals:2)", max_criteria=2)


def test_mixed_conjunctions_at_one_level_are_refused() -> None:
    err = fails("((A:equals:1)and(B:equals:2)or(Email:equals:3))")
    assert "mixed" in err.reason and err.position == 28  # the "or"
    # The same with explicit grouping is fine.
    node = parse_criteria("(((A:equals:1)and(B:equals:2))or(Email:equals:3))")
    assert criteria_fields(node) == ["A", "B", "Email"]


# -- field names and percent-encoding ------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("Em%2561il", "Email"),
        ("%2545mail", "Email"),
        ("Em%61il", "Email"),
        ("%252545mail", "Email"),
    ],
)
def test_encoded_field_names_are_judged_by_what_they_decode_to(raw: str, decoded: str) -> None:
    assert criteria_fields(parse_criteria(f"({raw}:equals:x)")) == [decoded]


@pytest.mark.parametrize(
    "field",
    [
        "Last Name",
        "Last%20Name",
        "'Email'",
        '"Email"',
        "Em%il",
        "Em%25il",
        "Em\x00ail",
        "Em%00ail",
        "Émail",
        "Em%C3%A9il",
        "%FF",
        "Owner.name.first",
        ".Email",
        "Email.",
        "Ema-il",
        "Email%2529or%2528Phone",
        "%25" * 9 + "45mail",  # encoded deeper than the decoder unwraps
    ],
)
def test_bad_field_names_are_refused(field: str) -> None:
    text = f"({field}:equals:x)"
    err = fails(text)
    assert err.reason.startswith(("invalid field name", "expected ':'"))


def test_empty_field_name() -> None:
    err = fails("( :equals:x)")
    assert err.reason == "empty field name at position 2" and err.position == 2


# -- hostile inputs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason_start", "position"),
    [
        ("", "empty criteria", 0),
        ("   ", "empty criteria", 3),
        ("()", "empty parentheses", 1),
        ("(A:equals:x", "unbalanced parenthesis: missing ')'", 0),
        ("((A:equals:x)", "unbalanced parenthesis: missing ')'", 0),
        ("(A:equals:x))", "unbalanced parenthesis: unexpected ')'", 12),
        ("A:equals:x)", "unbalanced parenthesis: unexpected ')'", 10),
        ("A:equals:x\\", "backslash at the end of a value", 10),
        (r"(A:equals:x\n)", "invalid escape", 11),
        ("(A:equals:a(b)", "unescaped '(' in a value", 11),
        ("(A:contains:x)", "unknown operator", 3),
        ("(A:equals_to:x)", "unknown operator", 3),
        ("(A:equals:)", "empty value", 10),
        ("(A:in:a,,b)", "empty value", 8),
        ("(A:between:1)", "'between' needs exactly two", 11),
        ("(A:between:1,2,3)", "'between' needs exactly two", 11),
        ("(A:equals:a,b)", "unescaped ',' in a single value", 11),
        ("(A)", "expected ':' after field name", 2),
        ("(A:equals)", "expected ':' after operator", 9),
        ("(A:equals:1)(B:equals:2)", "expected 'and' or 'or'", 12),
        ("(A:equals:1)and", "expected '('", 15),
        ("(A:equals:1)and B:equals:2", "expected '('", 16),
        ("(A:equals:1)xor(B:equals:2)", "expected 'and' or 'or'", 12),
        ("(A:equals:1)%20and%20(B:equals:2)", "expected 'and' or 'or'", 12),
        ("(A:equals:1) garbage", "expected 'and' or 'or'", 13),
    ],
)
def test_malformed_input_is_refused_with_a_position(
    text: str, reason_start: str, position: int
) -> None:
    err = fails(text)
    assert err.reason.startswith(reason_start)
    assert err.position == position
    assert f"at position {position}" in err.reason


@pytest.mark.parametrize(
    "text",
    [
        # A second decoder upstream would turn these values into an Email criterion.
        "(Last_Name:equals:x%29or%28Email%3Aequals%3Ay)",
        "(Last_Name:equals:x%2529or%2528Email%253Aequals%253Ay)",
        "(Last_Name:equals:x and Email:equals:y)",
        "Last_Name:equals:x and Email:equals:y",
        "(Last_Name:in:a,b or Email: IN :c)",
        "(Last_Name:equals:x%29or%28Email%3Anot%5Fequal%3Ay)",
    ],
)
def test_values_that_read_as_another_criterion_are_refused(text: str) -> None:
    assert fails(text).reason.startswith("value reads as another criterion")


def test_huge_input_is_refused_fast() -> None:
    text = "(Last_Name:equals:" + "x" * 1_000_000 + ")"
    started = time.perf_counter()
    err = fails(text)
    assert time.perf_counter() - started < 0.05
    assert err.reason == "criteria longer than 10000 characters" and err.position == 10_000


def test_input_at_the_length_cap_is_parsed() -> None:
    text = "(Last_Name:equals:" + "x" * (10_000 - 19) + ")"
    assert len(text) == 10_000
    assert criteria_fields(parse_criteria(text)) == ["Last_Name"]


def test_ten_thousand_open_parentheses_do_not_recurse() -> None:
    err = fails("(" * 10_000)
    assert err.reason.startswith(f"parentheses nested deeper than {MAX_DEPTH}")
    deep = "(" * 10_000 + "A:equals:1" + ")" * 10_000
    assert fails(deep, max_length=10**6).reason.startswith("parentheses nested deeper")


def test_nesting_up_to_the_cap_is_fine() -> None:
    text = "(" * MAX_DEPTH + "Email:equals:1" + ")" * MAX_DEPTH
    assert criteria_fields(parse_criteria(text)) == ["Email"]
    text = "(" * (MAX_DEPTH + 1) + "Email:equals:1" + ")" * (MAX_DEPTH + 1)
    assert fails(text).reason.startswith("parentheses nested deeper")


@pytest.mark.parametrize(
    "text",
    [
        f"(Last_Name:equals:{SECRET}",
        f"(Last_Name:equals:{SECRET}))",
        f"(Last_Name:contains:{SECRET})",
        f"(Last_Name:equals:{SECRET},{SECRET})",
        f"(Last_Name:equals:{SECRET}\\x)",
        f"(Last_Name:equals:{SECRET}:in:{SECRET})",
        f"({SECRET} x:equals:1)",
        f"(A:equals:1)and{SECRET}",
        f"(A:equals:1)or(B:equals:1)and(C:equals:{SECRET})",
    ],
)
def test_reasons_never_echo_the_input(text: str) -> None:
    err = fails(text)
    assert SECRET not in err.reason and SECRET not in str(err)


def test_non_text_input_is_an_error() -> None:
    with pytest.raises(CriteriaError):
        parse_criteria(b"(A:equals:1)")  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------

FIELDS = ["Email", "Last_Name", "First_Name", "Phone", "Owner.name", "Lead_Source", "email"]
# No 'e'/'i' (either case) and no '%': every operator name needs one of those letters,
# so a generated value can never spell a hidden criterion (that refusal has its own
# tests above). Everything structural is in: ( ) \ , : and spaces, plus non-ASCII.
VALUE_ALPHABET = "abcdfgXYZQ019 ()\\,:-+._/éü東😀\t"
VALUES = st.text(alphabet=VALUE_ALPHABET, min_size=1, max_size=12)


def _escape(value: str) -> str:
    return "".join("\\" + c if c in "()\\," else c for c in value)


@st.composite
def criteria_leaf(draw: st.DrawFn) -> Criterion:
    operator = draw(st.sampled_from(sorted(OPERATORS)))
    if operator == "in":
        values = tuple(draw(st.lists(VALUES, min_size=1, max_size=4)))
    elif operator == "between":
        values = (draw(VALUES), draw(VALUES))
    else:
        values = (draw(VALUES),)
    return Criterion(draw(st.sampled_from(FIELDS)), operator, values)


CRITERIA_TREES: st.SearchStrategy[Node] = st.recursive(
    criteria_leaf(),
    lambda children: st.builds(
        Group,
        st.sampled_from(["and", "or"]),
        st.lists(children, min_size=2, max_size=4).map(tuple),
    ),
    max_leaves=10,
)


@st.composite
def rendered(draw: st.DrawFn) -> tuple[Node, str]:
    tree = draw(CRITERIA_TREES)

    def ws() -> str:
        return draw(st.sampled_from(["", "", " ", "  ", "\t", "\n"]))

    def case(word: str) -> str:
        return draw(st.sampled_from([word, word.upper(), word.title()]))

    def render(node: Node) -> str:
        if isinstance(node, Criterion):
            values = ",".join(_escape(v) for v in node.values)
            return f"({ws()}{node.field}{ws()}:{ws()}{case(node.operator)}{ws()}:{values})"
        joiner = f"{ws()}{case(node.operator)}{ws()}"
        return "(" + ws() + joiner.join(render(item) for item in node.items) + ws() + ")"

    text = ws() + render(tree) + ws()
    if isinstance(tree, Criterion) and draw(st.booleans()):
        # The bare form of a single criterion: its value runs to the end of the
        # input, so nothing may follow it (trailing whitespace would be value).
        text = ws() + render(tree)[1:-1]
    return tree, text


def _tree_fields(node: Node) -> set[str]:
    if isinstance(node, Criterion):
        return {node.field.lower()}
    return set().union(*(_tree_fields(item) for item in node.items))


@settings(max_examples=300, deadline=None)
@given(rendered())
def test_property_every_field_is_found_and_values_round_trip(case: tuple[Node, str]) -> None:
    tree, text = case
    parsed = parse_criteria(text)
    fields = criteria_fields(parsed)
    assert {f.lower() for f in fields} == _tree_fields(tree)
    assert len(fields) == len({f.lower() for f in fields})
    assert parsed == tree


HOSTILE_ALPHABET = "()\\,:% aAndorOREmailequalsin_2.\t'\"é😀\x00"


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=HOSTILE_ALPHABET, max_size=60)))
def test_c16_property_arbitrary_text_parses_or_raises_criteria_error(text: str) -> None:
    try:
        node = parse_criteria(text)
    except CriteriaError as err:
        assert 0 <= err.position <= len(text)
    else:
        for field in criteria_fields(node):
            assert field.replace(".", "").replace("_", "").isalnum() and field.isascii()
