"""Tests for gateway.crm.coql: the COQL guard's parser.

The property that matters: every field path a query uses in where / order by /
group by is reported, or the query is refused with CoqlError. Text inside string
literals is never a field.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.crm.coql import MAX_DEPTH, Column, CoqlError, CoqlQuery, parse_coql

SECRET = "Zelda7Secret"  # stands in for personal data; must never appear in a reason


def fails(text: str, **kwargs: int) -> CoqlError:
    with pytest.raises(CoqlError) as info:
        parse_coql(text, **kwargs)
    return info.value


# -- select / from / limit -----------------------------------------------------------


def test_documented_example() -> None:
    q = parse_coql("select Last_Name, First_Name from Contacts where Last_Name = 'Boyle' limit 2")
    assert q == CoqlQuery(
        module="Contacts",
        columns=(Column(("Last_Name",), None, None), Column(("First_Name",), None, None)),
        where_fields=(("Last_Name",),),
        order_by_fields=(),
        group_by_fields=(),
        limit=2,
        offset=None,
    )


def test_minimal_query_has_no_condition_fields() -> None:
    q = parse_coql("select id from Leads")
    assert q.module == "Leads" and q.condition_fields == () and q.limit is None


@pytest.mark.parametrize(
    ("tail", "limit", "offset"),
    [
        ("", None, None),
        (" limit 5", 5, None),
        (" LIMIT 200 OFFSET 9800", 200, 9800),
        (" limit 10, 5", 5, 10),  # LIMIT offset, count
        (" limit 0", 0, None),
        (" limit 5;", 5, None),
        (";", None, None),
        (" limit 2000 offset 0 ;", 2000, 0),
    ],
)
def test_limit_and_offset_forms(tail: str, limit: int | None, offset: int | None) -> None:
    q = parse_coql("select Last_Name from Leads" + tail)
    assert (q.limit, q.offset) == (limit, offset)


def test_lookup_paths_and_aliases() -> None:
    q = parse_coql(
        "select Referrer.Email as ref_email, Account_Name.Owner.name, Last_Name from Contacts"
    )
    assert q.columns == (
        Column(("Referrer", "Email"), "ref_email", None),
        Column(("Account_Name", "Owner", "name"), None, None),
        Column(("Last_Name",), None, None),
    )
    assert [c.key for c in q.columns] == ["ref_email", "Account_Name.Owner.name", "Last_Name"]


def test_aggregates_with_and_without_alias() -> None:
    q = parse_coql(
        "select Lead_Source, COUNT(id), max(Annual_Revenue) as top, Avg(Owner.id), "
        "SUM(Annual_Revenue), MIN(Created_Time) from Leads group by Lead_Source"
    )
    assert [(c.function, c.path) for c in q.columns] == [
        (None, ("Lead_Source",)),
        ("count", ("id",)),
        ("max", ("Annual_Revenue",)),
        ("avg", ("Owner", "id")),
        ("sum", ("Annual_Revenue",)),
        ("min", ("Created_Time",)),
    ]
    assert [c.key for c in q.columns] == [
        "Lead_Source",
        "COUNT(id)",
        "top",
        "AVG(Owner.id)",
        "SUM(Annual_Revenue)",
        "MIN(Created_Time)",
    ]
    assert q.group_by_fields == (("Lead_Source",),)


def test_keywords_are_case_insensitive() -> None:
    q = parse_coql(
        "SeLeCt Last_Name AS n FrOm Leads WhErE (Email Is NoT nUlL AnD Phone NOT LIKE '9%') "
        "GrOuP bY Last_Name OrDeR By Last_Name DeSc LiMiT 3 oFfSeT 1"
    )
    assert q.where_fields == (("Email",), ("Phone",))
    assert (q.limit, q.offset) == (3, 1)


# -- where ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        "F = 'x'",
        "F != 'x'",
        "F <> 'x'",
        "F < 5",
        "F <= 5.5",
        "F > -5",
        "F >= 0",
        "F like '%abc%'",
        "F not like 'a%'",
        "F in ('a', 'b', 3)",
        "F not in ('a')",
        "F between 1 and 10",
        "F not between '2024-01-01' and '2024-12-31'",
        "F is null",
        "F is not null",
        "F = true",
        "F = FALSE",
        "F = null",
        "F = '${EMPTY}'",
        "F = ''",
        "F='x'",
    ],
)
def test_every_comparator(condition: str) -> None:
    assert parse_coql(f"select id from Leads where {condition}").where_fields == (("F",),)


def test_strings_holding_keywords_and_field_names_are_not_fields() -> None:
    q = parse_coql("select Last_Name from Leads where Last_Name = 'Email from Leads where'")
    assert q.where_fields == (("Last_Name",),)
    q = parse_coql(
        "select Last_Name from Leads where (Last_Name = 'a'' or Email = ''b' "
        "and First_Name in ('Phone)', ' order by Email', 'x''y'))"
    )
    assert q.where_fields == (("Last_Name",), ("First_Name",))
    assert q.condition_fields == (("Last_Name",), ("First_Name",))


def test_field_to_field_comparison_records_both_sides() -> None:
    q = parse_coql(
        "select id from Leads where ((Last_Name = First_Name and Phone in (Mobile, '1')) "
        "and (Created_Time between Modified_Time and Referrer.Created_Time))"
    )
    assert q.where_fields == (
        ("Last_Name",),
        ("First_Name",),
        ("Phone",),
        ("Mobile",),
        ("Created_Time",),
        ("Modified_Time",),
        ("Referrer", "Created_Time"),
    )


def test_lookup_fields_in_where() -> None:
    q = parse_coql("select id from Contacts where Referrer.Email like '%@example.com'")
    assert q.where_fields == (("Referrer", "Email"),)


def test_nested_parentheses_and_one_conjunction_chains() -> None:
    q = parse_coql(
        "select id from Leads where ((A = 1 and (B = 2 or (C = 3 or D = 4))) and E = 5 and F = 6)"
    )
    assert [p[0] for p in q.where_fields] == ["A", "B", "C", "D", "E", "F"]


def test_mixed_conjunctions_at_one_level_are_refused() -> None:
    err = fails("select id from Leads where A = 1 and B = 2 or Email = 3")
    assert err.reason.startswith("mixed 'and' and 'or'") and err.position == 43  # the "or"


def test_between_and_does_not_confuse_the_conjunction() -> None:
    q = parse_coql("select id from Leads where (A between 1 and 2) or (Email between 3 and 4)")
    assert q.where_fields == (("A",), ("Email",))
    q = parse_coql("select id from Leads where A between 1 and 2 and Email = 1")
    assert q.where_fields == (("A",), ("Email",))


# -- order by / group by / aliases ---------------------------------------------------


def test_order_and_group_fields_and_condition_fields() -> None:
    q = parse_coql(
        "select Lead_Source, COUNT(id) from Leads where Email is not null "
        "group by Lead_Source, Owner.name order by COUNT(Phone) desc, email asc, Lead_Source"
    )
    assert q.group_by_fields == (("Lead_Source",), ("Owner", "name"))
    assert q.order_by_fields == (("Phone",), ("email",), ("Lead_Source",))
    # email (order by) repeats Email (where) case-insensitively: the first spelling stays.
    assert q.condition_fields == (
        ("Email",),
        ("Phone",),
        ("Lead_Source",),
        ("Owner", "name"),
    )


def test_order_by_before_group_by_is_accepted() -> None:
    q = parse_coql("select Lead_Source from Leads order by Lead_Source group by Lead_Source")
    assert q.order_by_fields == q.group_by_fields == (("Lead_Source",),)


def test_alias_in_order_by_resolves_to_the_aliased_field() -> None:
    q = parse_coql("select Email as e, COUNT(Phone) as c from Leads order by e, c group by e")
    assert q.order_by_fields == (("e",), ("Email",), ("c",), ("Phone",))
    assert q.group_by_fields == (("e",), ("Email",))
    assert ("Email",) in q.condition_fields and ("Phone",) in q.condition_fields


def test_where_fields_dedupe_case_insensitively() -> None:
    q = parse_coql(
        "select id from Leads where (EMAIL = 'a' or email = 'b' or Owner.Name = Owner.name)"
    )
    assert q.where_fields == (("EMAIL",), ("Owner", "Name"))


# -- hostile inputs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason_start"),
    [
        ("", "expected 'SELECT'"),
        ("update Leads set Email = 'x'", "expected 'SELECT'"),
        ("select * from Leads", "'select *' is not allowed"),
        ("select Last_Name, * from Leads", "'select *' is not allowed"),
        ("select COUNT(*) from Leads", "COUNT(*) is not valid COQL"),
        ("select Last_Name Leads", "expected ',' or 'FROM'"),
        ("select Last_Name", "expected ',' or 'FROM'"),
        ("select Last_Name from", "expected a module name"),
        ("select from Leads", "keyword where a field name was expected"),
        ("select Last_Name, from Leads", "keyword where a field name was expected"),
        ("select Last_Name from Leads where", "expected a field name"),
        ("select id from Leads where Last_Name = 'abc", "unterminated string"),
        ("select id from Leads where Last_Name = 'abc''", "unterminated string"),
        ("select id from Leads where (Last_Name = 'a'", "unbalanced parenthesis"),
        ("select id from Leads where Last_Name = 'a')", "unexpected text after the query"),
        ("select id from Leads where Last_Name = 'a\\' or Email = 'b'", "backslash before"),
        ('select id from Leads where Last_Name = "x"', "unexpected character"),
        ("select id from Leads where Last_Name = 'x' -- or Email = 'y'", "unexpected character"),
        ("select id from Leads /* c */", "unexpected character"),
        ("select `Email` from Leads", "unexpected character"),
        ("select id from Leads where !Leads.Email = 'x'", "unexpected character"),
        ("select Ünvan from Leads", "unexpected character"),
        ("select 'What_Id->Leads.Email' from Tasks", "quoted field name is not supported"),
        ("select id from Tasks where 'What_Id->Leads.Email' = 'x'", "quoted field name"),
        ("select id from Tasks where Subject = 'What_Id->Leads.Email'", "string value shaped"),
        ("select id from 'Leads'", "quoted module name"),
        ("select lower(Email) from Leads", "unsupported function"),
        ("select id from Leads where lower(Email) = 'x'", "expected a comparison operator"),
        ("select id from Leads where 1 = 1", "expected a field name"),
        ("select id from Leads where Last_Name", "expected a comparison operator"),
        ("select id from Leads where Last_Name == 'x'", "expected a value"),
        ("select id from Leads where Last_Name = (select Email from Leads)", "expected a value"),
        ("select id from Leads where Last_Name in ()", "expected a value"),
        ("select id from Leads where Last_Name in ('a' 'b')", "expected ',' or ')'"),
        ("select id from Leads where Last_Name between 1", "expected 'AND'"),
        ("select id from Leads where Last_Name not is null", "expected a comparison operator"),
        ("select id from Leads where Last_Name is 'x'", "expected 'NULL'"),
        ("select id from Leads where not Last_Name = 'x'", "keyword where a field name"),
        ("select A.B.C.D from Leads", "field path longer than 3 segments"),
        ("select A. from Leads", "keyword where a field name"),
        ("select A.'B' from Leads", "quoted field name"),
        ("select A.. from Leads", "expected a field name"),
        ("select Email as e, Phone as E from Leads", "two columns share one result key"),
        ("select Email as Last_Name, Last_Name from Leads", "two columns share one result key"),
        ("select Email as id from Leads", "alias 'id' is reserved"),
        ("select Email as from from Leads", "keyword where a column alias"),
        ("select id from Leads limit", "expected a whole number"),
        ("select id from Leads limit -1", "expected a whole number"),
        ("select id from Leads limit 1.5", "expected a whole number"),
        ("select id from Leads limit 1234567890", "expected a whole number"),
        ("select id from Leads limit " + "9" * 5000, "expected a whole number"),
        ("select id from Leads limit 5 offset", "expected a whole number"),
        ("select id from Leads; select Email from Leads", "unexpected text after the query"),
        ("select id from Leads order by Email group by Phone order by Mobile", "unexpected text"),
        ("select id from Leads group by COUNT(id)", "functions are not allowed in GROUP BY"),
        ("select id from Leads where 1abc = 1 and", "expected a field name"),
    ],
)
def test_malformed_queries_are_refused(text: str, reason_start: str) -> None:
    err = fails(text)
    assert err.reason.startswith(reason_start), err.reason
    assert 0 <= err.position <= len(text)
    assert f"at position {err.position}" in err.reason


def test_error_positions_point_at_the_problem() -> None:
    assert fails("select * from Leads").position == 7
    assert fails("select id from Leads where A = 'x").position == 31
    assert fails("select id from Leads where (A = 1").position == 27


def test_huge_query_is_refused_fast() -> None:
    text = "select Last_Name from Leads where Last_Name = '" + "x" * 1_000_000 + "'"
    started = time.perf_counter()
    err = fails(text)
    assert time.perf_counter() - started < 0.05
    assert err.reason == "query longer than 20000 characters" and err.position == 20_000


def test_deep_nesting_does_not_recurse() -> None:
    err = fails(
        "select id from Leads where " + "(" * 10_000 + "A = 1" + ")" * 10_000, max_length=10**6
    )
    assert err.reason.startswith(f"parentheses nested deeper than {MAX_DEPTH}")
    assert fails("select id from Leads where " + "(" * 10_000).reason.startswith(
        "parentheses nested deeper"
    )
    ok = "select id from Leads where " + "(" * MAX_DEPTH + "Email = 1" + ")" * MAX_DEPTH
    assert parse_coql(ok).where_fields == (("Email",),)


@pytest.mark.parametrize(
    "text",
    [
        f"select id from Leads where Last_Name = '{SECRET}",
        f"select id from Leads where Last_Name = '{SECRET}\\' or Email = 'x'",
        f"select id from Leads where Last_Name = '{SECRET}' {SECRET}",
        f"select id from Leads where Last_Name = {SECRET}(1)",
        f"select id from Leads where Last_Name = '{SECRET}->x'",
        f"select id from Leads where Last_Name = '{SECRET}' and A = 1 or B = 2",
        f"select {SECRET} as x, Email as x from Leads",
        f"select id from Leads limit {SECRET}",
    ],
)
def test_reasons_never_echo_the_query(text: str) -> None:
    err = fails(text)
    assert SECRET not in err.reason and SECRET not in str(err)


def test_non_text_input_is_an_error() -> None:
    with pytest.raises(CoqlError):
        parse_coql(None)  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------

FIELDS = [("Email",), ("Referrer", "Email"), ("Last_Name",), ("Phone",), ("Owner", "name"), ("id",)]
WORDS = [
    "Email",
    "Referrer.Email",
    "from",
    "where",
    "and",
    "or",
    "(",
    ")",
    "'",
    ",",
    "=",
    "é",
    "😀",
    "-",
    ">",
]
# Any text, with the quote doubled as COQL requires. No backslash (a backslash before a
# quote is refused on purpose; its own tests are above) and no "->" (likewise: "-" and
# ">" come only as separate words, so a space always parts them).
STRING_TEXT = st.lists(
    st.one_of(st.sampled_from(WORDS), st.text(alphabet="ab xyZ%_;-'()", max_size=4)),
    max_size=4,
).map(" ".join)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@st.composite
def operand(draw: st.DrawFn, used: list[tuple[str, ...]]) -> str:
    kind = draw(st.sampled_from(["string", "number", "word", "field"]))
    if kind == "string":
        return _literal(draw(STRING_TEXT))
    if kind == "number":
        return draw(st.sampled_from(["0", "42", "-7", "3.25"]))
    if kind == "word":
        return draw(st.sampled_from(["true", "FALSE", "null"]))
    path = draw(st.sampled_from(FIELDS))
    used.append(path)
    return ".".join(path)


@st.composite
def predicate(draw: st.DrawFn, used: list[tuple[str, ...]]) -> str:
    path = draw(st.sampled_from(FIELDS))
    used.append(path)
    left = ".".join(path)
    kind = draw(st.sampled_from(["cmp", "like", "in", "between", "is"]))
    negate = draw(st.sampled_from(["", "not ", "NOT "]))
    if kind == "cmp":
        op = draw(st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="]))
        return f"{left} {op} {draw(operand(used))}"
    if kind == "like":
        return f"{left} {negate}like {draw(operand(used))}"
    if kind == "in":
        items = [draw(operand(used)) for _ in range(draw(st.integers(1, 3)))]
        return f"{left} {negate}IN ({', '.join(items)})"
    if kind == "between":
        return f"{left} {negate}between {draw(operand(used))} AND {draw(operand(used))}"
    return f"{left} is {negate}null"


@st.composite
def where_tree(draw: st.DrawFn, used: list[tuple[str, ...]], depth: int = 0) -> str:
    if depth >= 3 or draw(st.integers(0, 2)) == 0:
        return draw(predicate(used))
    conj = draw(st.sampled_from(["and", "or", "AND", "Or"]))
    children = [draw(where_tree(used, depth + 1)) for _ in range(draw(st.integers(2, 3)))]
    return "(" + f" {conj} ".join(children) + ")"


@st.composite
def query_with_fields(draw: st.DrawFn) -> tuple[str, set[tuple[str, ...]]]:
    used: list[tuple[str, ...]] = []
    where = draw(where_tree(used))
    select = draw(st.sampled_from(["Last_Name", "Referrer.Email as r, COUNT(id)", "id"]))
    tail = draw(st.sampled_from(["", " limit 5", " limit 3, 4", " LIMIT 1 OFFSET 2;"]))
    query = f"select {select} from Leads where {where}{tail}"
    return query, {tuple(s.lower() for s in p) for p in used}


@settings(max_examples=200, deadline=None)
@given(query_with_fields())
def test_property_every_where_field_is_found(case: tuple[str, set[tuple[str, ...]]]) -> None:
    query, expected = case
    q = parse_coql(query)
    assert {tuple(s.lower() for s in p) for p in q.where_fields} == expected
    assert {tuple(s.lower() for s in p) for p in q.condition_fields} == expected


HOSTILE_ALPHABET = "selct fromwhand'()*,.;=<>!-0123456789\\\"`EmailLds_ é😀\x00\n"


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet=HOSTILE_ALPHABET, max_size=80),
        st.text(alphabet=HOSTILE_ALPHABET, max_size=60).map(
            lambda s: "select Email from Leads where " + s
        ),
    )
)
def test_property_arbitrary_text_parses_or_raises_coql_error(text: str) -> None:
    try:
        q = parse_coql(text)
    except CoqlError as err:
        assert 0 <= err.position <= len(text)
    else:
        assert q.columns and q.module
