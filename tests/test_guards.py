"""Search, query and sort guards, end to end (contract §3).

A search, COQL query, bulk-read job or sort order that uses a restricted field is answered by the
gateway exactly as the CRM answers it (HTTP 400 ``INVALID_QUERY``, the field's api name in
``details``) and never reaches the CRM. What the gateway cannot parse is refused with a
reason and never forwarded. Allowed queries are forwarded and their results redacted.

Guards never change records, so this module resets the sandbox once and runs one gateway
per policy for all its tests (fast); the sandbox's request log is cleared before each test
and ``gw.requests()`` holds only the audit entries of the running test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.policy import policy_from_mapping
from gateway.settings import Settings
from tests.conftest import AUTH, ORG2_AUTH, Crm, GatewayHandle, MakeGateway
from tests.servers import ThreadedServer

RESTRICTED = "Cannot use the restricted field."


# -- fixtures: one sandbox reset and one gateway per policy for the whole module ---------


@pytest.fixture(scope="module")
def _sandbox(crm_server: ThreadedServer) -> Iterator[Crm]:
    with (
        httpx.Client(base_url=crm_server.url, timeout=30) as admin,
        httpx.Client(base_url=crm_server.url, headers=AUTH, timeout=30) as http,
    ):
        assert admin.post("/_sandbox/reset").status_code == 200
        yield Crm(crm_server.url, admin, http)


@pytest.fixture
def crm(_sandbox: Crm) -> Crm:
    _sandbox.clear()
    return _sandbox


@dataclass
class ScopedGateway(GatewayHandle):
    """A module-wide gateway seen from one test: its audit entries start at the test."""

    skip: int = 0

    def audit(self) -> list[dict[str, Any]]:
        return super().audit()[self.skip :]


@pytest.fixture(scope="module")
def _gateways(
    _sandbox: Crm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[dict[str, Any]], GatewayHandle]]:
    started: dict[bytes, GatewayHandle] = {}
    servers: list[ThreadedServer] = []
    folder = tmp_path_factory.mktemp("guards")

    def get(policy: dict[str, Any], http: str = "auto") -> GatewayHandle:
        key = orjson.dumps([policy, http], option=orjson.OPT_SORT_KEYS)
        if key not in started:
            log = Path(folder / f"audit{len(started)}.jsonl")
            settings = Settings.build(
                upstream=_sandbox.url,
                audit_log=str(log),
                policy=policy_from_mapping({"audit": {"fsync": "never"}, **policy}),
                env={"GATEWAY_SECRET": "test-secret"},
            )
            app = create_app(settings)
            server = ThreadedServer(app, http=http).start()
            servers.append(server)
            http = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
            started[key] = GatewayHandle(server.url, app, http, log)
        return started[key]

    yield get
    for handle in started.values():
        handle.http.close()
    for server in servers:
        server.stop()


def _scoped(handle: GatewayHandle) -> ScopedGateway:
    return ScopedGateway(
        handle.url, handle.app, handle.http, handle.audit_log, skip=len(handle.audit())
    )


@pytest.fixture
def gw(_gateways: Callable[[dict[str, Any]], GatewayHandle]) -> ScopedGateway:
    return _scoped(_gateways({}))


@pytest.fixture
def parser_gw(_gateways: Callable[..., GatewayHandle], parser: str) -> ScopedGateway:
    """The default gateway under one of uvicorn's two parsers."""
    return _scoped(_gateways({}, http=parser))


@pytest.fixture
def word_gw(_gateways: Callable[[dict[str, Any]], GatewayHandle]) -> ScopedGateway:
    return _scoped(_gateways({"search": {"allow_word_search": True}}))


# -- helpers ------------------------------------------------------------------------------


def _refused(r: httpx.Response, api_name: str) -> None:
    """The CRM's own refusal, byte for byte the same keys and values."""
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "code": "INVALID_QUERY",
        "details": {"reason": RESTRICTED, "api_name": api_name},
        "message": "invalid query formed",
        "status": "error",
    }


def _invalid_query(r: httpx.Response) -> str:
    """An INVALID_QUERY refusal that gives a reason (not a restricted field); the reason."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "INVALID_QUERY" and body["status"] == "error", body
    assert body["message"] == "invalid query formed"
    reason: str = body["details"]["reason"]
    assert reason and reason != RESTRICTED
    assert "api_name" not in body["details"]
    return reason


def _none_reached(crm: Crm, path: str) -> None:
    assert crm.received(path) == []


def _search(gw: GatewayHandle, module: str = "Leads", **params: str) -> httpx.Response:
    return gw.http.get(f"/crm/v8/{module}/search", params=params)


def _coql(gw: GatewayHandle, query: Any) -> httpx.Response:
    # The SDKs send COQL with no Content-Type header.
    return gw.http.post("/crm/v8/coql", content=orjson.dumps({"select_query": query}))


def _bulk_read(gw: GatewayHandle, version: str, query: Any) -> httpx.Response:
    return gw.http.post(f"/crm/bulk/{version}/read", json={"query": query})


# -- search criteria ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "criteria", "api_name"),
    [
        ("Leads", "(Email:equals:ann.lee@example.com)", "Email"),
        ("Leads", "Email:equals:ann.lee@example.com", "Email"),
        ("Leads", "((Last_Name:equals:Lee)and(Email:starts_with:ann))", "Email"),
        (
            "Leads",
            "((Company:equals:Zylker)or((City:equals:Paris)and(Mobile:equals:5550100)))",
            "Mobile",
        ),
        ("Leads", "(email:equals:ann.lee@example.com)", "Email"),
        ("Leads", "(EMAIL:equals:ann.lee@example.com)", "Email"),
        ("Leads", "(Date_of_Birth:between:1990-01-01,1991-01-01)", "Date_of_Birth"),
        ("Leads", "(Referrer.Email:equals:ann.lee@example.com)", "Referrer.Email"),
        ("Leads", "(referrer.email:equals:ann.lee@example.com)", "Referrer.Email"),
        ("Leads", "(Visits.Notes:starts_with:Asked)", "Visits.Notes"),
        ("Contacts", "(Email:equals:ann.lee@example.com)", "Email"),
        ("Patients", "((Name:equals:Ann Lee)and(Diagnosis:equals:Asthma))", "Diagnosis"),
        ("Leads", "( Email :equals:ann.lee@example.com )", "Email"),
        ("Leads", "((((Email:equals:ann.lee@example.com))))", "Email"),
        ("Leads", "((Last_Name:equals:Lee)or(Email:equals:ann.lee@example.com))", "Email"),
    ],
)
def test_c15_criteria_naming_a_restricted_field_are_refused_before_the_crm(
    crm: Crm, parser_gw: ScopedGateway, module: str, criteria: str, api_name: str
) -> None:
    """In every spelling (letter case, spaces, nested or redundant parentheses, OR'd with
    an allowed field), under both parsers; percent-encodings follow."""
    _refused(_search(parser_gw, module, criteria=criteria), api_name)
    _none_reached(crm, "/search")


def test_c15_criteria_percent_encoded_as_the_sdk_sends_them_are_refused(
    crm: Crm, gw: ScopedGateway
) -> None:
    r = gw.http.get("/crm/v2/Leads/search?criteria=%28Email%3Aequals%3Aann.lee%40example.com%29")
    _refused(r, "Email")
    _none_reached(crm, "/search")


@pytest.mark.parametrize(
    "query",
    [
        "criteria=%28Em%2561il%3Aequals%3Ax%29",  # the gateway reads Em%61il
        "criteria=%28Em%252561il%3Aequals%3Ax%29",  # the gateway reads Em%2561il
    ],
)
def test_c15_a_field_name_encoded_twice_is_judged_by_what_it_decodes_to(
    crm: Crm, gw: ScopedGateway, query: str
) -> None:
    _refused(gw.http.get(f"/crm/v8/Leads/search?{query}"), "Email")
    _none_reached(crm, "/search")


@pytest.mark.parametrize(
    "query",
    [
        "criteria=(Last_Name:equals:Lee)&criteria=(Email:equals:x)",
        "criteria=(Last_Name:equals:Lee)&crit%65ria=(Email:equals:x)",
        "criteria=(Last_Name:equals:Lee)&CRITERIA=(Email:equals:x)",
    ],
)
def test_c17_a_parameter_given_twice_in_any_spelling_is_refused(
    crm: Crm, parser_gw: ScopedGateway, query: str
) -> None:
    """Which of the two the CRM reads is not documented: the request is ambiguous."""
    r = parser_gw.http.get(f"/crm/v8/Leads/search?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "INVALID_DATA"
    assert r.json()["details"] == {"reason": "a query parameter is given twice"}
    _none_reached(crm, "/search")


# -- email= / phone= / word= --------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "param", "api_name"),
    [
        ("Leads", "email", "Email"),  # Secondary_Email is not restricted, Email is
        ("Contacts", "email", "Email"),
        ("Patients", "email", "Email"),
        ("Leads", "phone", "Mobile"),  # Phone is private but not restricted, Mobile is
        ("Leads", "word", "Email"),
    ],
)
def test_c18_type_wide_searches_are_refused_when_a_field_of_that_type_is_restricted(
    crm: Crm, gw: ScopedGateway, module: str, param: str, api_name: str
) -> None:
    _refused(_search(gw, module, **{param: "ann.lee@example.com"}), api_name)
    _none_reached(crm, "/search")


def test_word_search_is_allowed_by_policy_and_its_results_are_redacted(
    crm: Crm, word_gw: ScopedGateway
) -> None:
    lead = crm.records("Leads")[0]
    r = _search(word_gw, word=lead["Last_Name"])
    assert r.status_code == 200, r.text
    records = r.json()["data"]
    assert lead["id"] in {rec["id"] for rec in records}
    assert all(rec["Email"] is None and rec["Mobile"] is None for rec in records)
    assert all(rec["Last_Name"] for rec in records)
    (sent,) = crm.received("/crm/v8/Leads/search")
    assert sent["query"] == f"word={lead['Last_Name']}"
    (entry,) = word_gw.requests()
    assert entry["outcome"] == "redacted" and "Email" in entry["fields_withheld"]["names"]


# -- COQL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "api_name"),
    [
        ("select Last_Name from Leads where Email = 'ann.lee@example.com'", "Email"),
        ("select Last_Name from Leads where (Last_Name = 'Lee' or Mobile like '%0100')", "Mobile"),
        (
            "select Last_Name from Leads where Last_Name is not null order by Date_of_Birth desc",
            "Date_of_Birth",
        ),
        ("select COUNT(id) from Leads where Last_Name is not null group by Email", "Email"),
        ("select Last_Name from Leads where Referrer.Email = 'x@example.com'", "Referrer.Email"),
        (
            "select Last_Name from Leads where Last_Name is not null order by Referrer.Email",
            "Referrer.Email",
        ),
        ("select COUNT(Email) from Leads where Last_Name is not null", "Email"),
        ("SELECT Last_Name FROM Leads WHERE email = 'a'", "Email"),
        ("select Last_Name from Leads where Last_Name = Email", "Email"),
        ("select Diagnosis from Patients where Diagnosis like 'Asth%'", "Diagnosis"),
    ],
)
def test_c18_coql_using_a_restricted_field_is_refused_before_the_crm(
    crm: Crm, gw: ScopedGateway, query: str, api_name: str
) -> None:
    _refused(_coql(gw, query), api_name)
    _none_reached(crm, "/coql")


def test_coql_selecting_a_restricted_field_is_answered_with_nulls(
    crm: Crm, gw: ScopedGateway
) -> None:
    r = _coql(gw, "select Last_Name, Email, Mobile from Leads where Last_Name is not null limit 5")
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    assert len(rows) == 5
    assert all(row["Email"] is None and row["Mobile"] is None and row["Last_Name"] for row in rows)
    assert len(crm.received("/crm/v8/coql")) == 1
    (entry,) = gw.requests()
    assert entry["outcome"] == "redacted"
    assert {"Email", "Mobile"} <= set(entry["fields_withheld"]["names"])


# -- bulk read ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "query", "api_name"),
    [
        (
            "v2",
            {
                "module": "Leads",
                "criteria": {"api_name": "Email", "comparator": "equal", "value": "x"},
            },
            "Email",
        ),
        (
            "v8",
            {
                "module": {"api_name": "Leads"},
                "criteria": {"field": {"api_name": "Email"}, "comparator": "equal", "value": "x"},
            },
            "Email",
        ),
        (
            "v2.1",
            {
                "module": {"api_name": "Leads"},
                "criteria": {
                    "group_operator": "and",
                    "group": [
                        {"field": {"api_name": "Last_Name"}, "comparator": "equal", "value": "L"},
                        {
                            "group_operator": "or",
                            "group": [
                                {
                                    "field": {"api_name": "City"},
                                    "comparator": "equal",
                                    "value": "P",
                                },
                                {
                                    "field": {"api_name": "Mobile"},
                                    "comparator": "equal",
                                    "value": 1,
                                },
                            ],
                        },
                        {"field": {"api_name": "Email"}, "comparator": "equal", "value": "x"},
                    ],
                },
            },
            "Mobile",  # the first restricted field as written
        ),
        (
            "v2",
            {
                "module": "Leads",
                "criteria": {"api_name": "Referrer.Email", "comparator": "equal", "value": "x"},
            },
            "Referrer.Email",
        ),
        (
            # A criterion with both spellings: whichever the CRM reads, it is checked.
            "v2.1",
            {
                "module": {"api_name": "Leads"},
                "criteria": {
                    "api_name": "Last_Name",
                    "field": {"api_name": "Email"},
                    "comparator": "equal",
                    "value": "x",
                },
            },
            "Email",
        ),
    ],
)
def test_c18_bulk_read_jobs_with_criteria_on_a_restricted_field_are_refused(
    crm: Crm, gw: ScopedGateway, version: str, query: dict[str, Any], api_name: str
) -> None:
    _refused(_bulk_read(gw, version, query), api_name)
    _none_reached(crm, "/crm/bulk")


def test_bulk_read_jobs_with_allowed_criteria_are_forwarded(crm: Crm, gw: ScopedGateway) -> None:
    query = {
        "module": {"api_name": "Leads"},
        "fields": ["Last_Name", "Email"],
        "criteria": {"field": {"api_name": "Last_Name"}, "comparator": "equal", "value": "Lee"},
    }
    r = _bulk_read(gw, "v8", query)
    assert r.status_code == 201, r.text
    assert r.json()["data"][0]["code"] == "ADDED_SUCCESSFULLY"
    (sent,) = crm.received("/crm/bulk/v8/read")
    assert orjson.loads(sent["body"]) == {"query": query}


@pytest.mark.parametrize(
    "criteria",
    [
        "(Email:equals:x)",  # a string, not a criteria object
        {"comparator": "equal", "value": "x"},  # names no field
        {"group_operator": "and", "group": {"api_name": "Email"}},  # group is not a list
    ],
)
def test_c16_bulk_read_criteria_that_cannot_be_read_are_refused_with_a_reason(
    crm: Crm, gw: ScopedGateway, criteria: Any
) -> None:
    _invalid_query(_bulk_read(gw, "v8", {"module": {"api_name": "Leads"}, "criteria": criteria}))
    _none_reached(crm, "/crm/bulk")


# -- what cannot be parsed is refused, never forwarded ------------------------------------


@pytest.mark.parametrize(
    "criteria",
    [
        "((Last_Name:equals:Lee)",
        "(Last_Name:equals:Lee\\",
        "(Last_Name:contains:Lee)",
        "()",
        "(Last_Name:equals:Lee)and",
        "(Last_Name:equals:A) (Last_Name:equals:A)",  # two conditions and no operator
        "((Last_Name:equals:A)and(City:equals:B)or(Company:equals:C))",
        "and".join(f"(Last_Name:equals:{i})" for i in range(11)),
        "(Last_Name:equals:x%29or%28Email%3Aequals%3Ay)",
    ],
)
def test_c16_unparsable_criteria_are_refused_with_a_reason_and_not_forwarded(
    crm: Crm, parser_gw: ScopedGateway, criteria: str
) -> None:
    _invalid_query(_search(parser_gw, criteria=criteria))
    _none_reached(crm, "/search")


@pytest.mark.parametrize(
    "query",
    [
        "select Last_Name from Leads where (Email = 'x'",
        "select * from Leads",
        "select Last_Name from Leads where Last_Name = 'a' or City = 'b' and Company = 'c'",
        "select Last_Name from Leads where Last_Name = 'a\\' or Email = 'b'",
        "select Last_Name from Leads; drop table Leads",
        42,
    ],
)
def test_c16_unparsable_coql_is_refused_with_a_reason_and_not_forwarded(
    crm: Crm, gw: ScopedGateway, query: Any
) -> None:
    _invalid_query(_coql(gw, query))
    _none_reached(crm, "/coql")


def test_a_coql_body_without_select_query_is_refused_and_not_forwarded(
    crm: Crm, gw: ScopedGateway
) -> None:
    r = gw.http.post("/crm/v8/coql", content=orjson.dumps({"query": "select Last_Name from Leads"}))
    assert r.status_code == 400 and r.json()["code"] == "INVALID_QUERY"
    _none_reached(crm, "/coql")


# -- allowed queries go through, redacted -------------------------------------------------


def test_allowed_criteria_are_forwarded_and_their_results_redacted(
    crm: Crm, gw: ScopedGateway
) -> None:
    lead = crm.records("Leads")[0]
    criteria = f"(Last_Name:equals:{lead['Last_Name']})"
    r = _search(gw, criteria=criteria)
    assert r.status_code == 200, r.text
    records = r.json()["data"]
    mine = next(rec for rec in records if rec["id"] == lead["id"])
    assert mine["Last_Name"] == lead["Last_Name"] and mine["Company"] == lead["Company"]
    for name in ("Email", "Mobile", "Date_of_Birth", "Phone"):  # restricted, or private High
        assert all(rec[name] is None for rec in records), name
    (sent,) = crm.received("/crm/v8/Leads/search")
    assert httpx.QueryParams(sent["query"])["criteria"] == criteria
    (entry,) = gw.requests()
    assert entry["outcome"] == "redacted" and entry["upstream_status"] == 200


def test_a_module_without_restricted_fields_is_searched_freely(crm: Crm, gw: ScopedGateway) -> None:
    deal = crm.records("Deals")[0]
    word = deal["Deal_Name"].split()[0]
    by_word = _search(gw, "Deals", word=word)
    by_criteria = _search(gw, "Deals", criteria=f"(Stage:equals:{deal['Stage']})")
    assert by_word.status_code == 200 and by_criteria.status_code == 200
    assert deal["id"] in {rec["id"] for rec in by_word.json()["data"]}
    assert deal["id"] in {rec["id"] for rec in by_criteria.json()["data"]}
    assert len(crm.received("/crm/v8/Deals/search")) == 2


def test_owner_paths_are_allowed_and_answered(crm: Crm, gw: ScopedGateway) -> None:
    owner = crm.records("Leads")[0]["Owner"]["name"]
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": f"(Owner.name:equals:{owner})"})
    assert r.status_code in (200, 204), r.text
    coql = _coql(gw, "select Last_Name, Owner.name from Leads where Owner.name is not null limit 3")
    assert coql.status_code == 200, coql.text
    assert all(row["Owner.name"] for row in coql.json()["data"])


def test_criteria_on_a_multi_module_lookup_are_forwarded(crm: Crm, gw: ScopedGateway) -> None:
    """What_Id names no one module (``$se_module`` says which, per record): a criterion on
    it needs no target metadata, and the gateway asks for none."""
    task = next(t for t in crm.records("Tasks") if t.get("What_Id"))
    crit = f"(What_Id:equals:{task['What_Id']['id']})"
    r = gw.http.get("/crm/v8/Tasks/search", params={"criteria": crit})
    assert r.status_code == 200, r.text
    assert task["id"] in {t["id"] for t in r.json()["data"]}
    where = f"select Subject from Tasks where What_Id = {task['What_Id']['id']}"
    coql = _coql(gw, where)
    assert coql.status_code == 200, coql.text
    fetched = [str(x.get("query")).lower() for x in crm.received("/settings/fields")]
    assert fetched and not [q for q in fetched if "se_module" in q]


def test_what_is_restricted_follows_each_orgs_own_metadata(crm: Crm, gw: ScopedGateway) -> None:
    # Org 2: Leads.Email is not private at all, Company is restricted.
    lead = crm.http.get("/crm/v2/Leads", headers=ORG2_AUTH).json()["data"][0]
    r = gw.http.get(
        "/crm/v8/Leads/search",
        params={"criteria": f"(Email:equals:{lead['Email']})"},
        headers=ORG2_AUTH,
    )
    assert r.status_code == 200, r.text
    assert [rec["Email"] for rec in r.json()["data"]] == [lead["Email"]]
    org2_company = gw.http.get(
        "/crm/v8/Leads/search", params={"criteria": "(Company:equals:Zylker)"}, headers=ORG2_AUTH
    )
    _refused(org2_company, "Company")
    org1_company = _search(gw, criteria="(Company:equals:Zylker)")
    assert org1_company.status_code in (200, 204)
    assert len(crm.received("/crm/v8/Leads/search")) == 2


def test_an_org_with_gdpr_off_is_not_guarded(crm: Crm, make_gateway: MakeGateway) -> None:
    gw = make_gateway()  # a gateway of its own: the shared one keeps org 1's switch cached
    lead = crm.records("Leads")[0]
    crm.privacy(False)
    try:
        r = _search(gw, criteria=f"(Email:equals:{lead['Email']})")
    finally:
        crm.privacy(True)
    assert r.status_code == 200, r.text
    assert [rec["Email"] for rec in r.json()["data"]] == [lead["Email"]]
    assert len(crm.received("/crm/v8/Leads/search")) == 1
    (entry,) = gw.requests()
    assert entry["outcome"] == "forwarded" and entry["reasons"] == ["privacy_settings_off"]


# -- sorting ------------------------------------------------------------------------------


def test_c18_sorting_by_a_restricted_field_is_refused_on_every_read(
    crm: Crm, gw: ScopedGateway
) -> None:
    """The order of records sorted by a withheld value would disclose it."""
    contact_id = crm.http.get("/crm/v2/Contacts", params={"per_page": 1}).json()["data"][0]["id"]
    crm.clear()
    _refused(gw.http.get("/crm/v8/Leads", params={"sort_by": "Email"}), "Email")
    _refused(gw.http.get("/crm/v8/leads", params={"SORT_BY": "mobile"}), "Mobile")
    _refused(
        gw.http.get(
            "/crm/v8/Leads/search",
            params={"criteria": "(Last_Name:starts_with:S)", "sort_by": "Email"},
        ),
        "Email",
    )
    # a related list is sorted by the related module's fields
    _refused(
        gw.http.get(f"/crm/v8/Contacts/{contact_id}/Leads", params={"sort_by": "Email"}),
        "Email",
    )
    _none_reached(crm, "/crm/v8/Leads")
    _none_reached(crm, "/crm/v8/Contacts")
    ok = gw.http.get(
        "/crm/v8/Leads",
        params={"sort_by": "Modified_Time", "per_page": 2, "fields": "Last_Name,Email"},
    )
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2


# -- what the refusal tells, and what it never tells --------------------------------------


def test_refusals_never_echo_the_searched_value(crm: Crm, gw: ScopedGateway) -> None:
    value = "needle-4711@example.com"
    answers = [
        _search(gw, criteria=f"(Email:equals:{value})"),
        _search(gw, criteria=f"((Email:equals:{value}"),
        _search(gw, criteria=f"(Last_Name:contains:{value})"),
        _search(gw, email=value),
        _search(gw, phone=value),
        _search(gw, word=value),
        _coql(gw, f"select Last_Name from Leads where Email = '{value}'"),
        _coql(gw, f"select Last_Name from Leads where (Last_Name = '{value}'"),
        _bulk_read(
            gw,
            "v8",
            {
                "module": {"api_name": "Leads"},
                "criteria": {"field": {"api_name": "Email"}, "comparator": "equal", "value": value},
            },
        ),
    ]
    assert [r.status_code for r in answers] == [400] * len(answers)
    for r in answers:
        assert value not in r.text and "needle" not in r.text
    assert len(gw.requests()) == len(answers)
    assert "needle" not in gw.audit_text()
    assert crm.received() == []


def test_a_refusal_is_audited_with_the_field_name_and_no_upstream_call(
    crm: Crm, gw: ScopedGateway
) -> None:
    _search(gw, criteria="((Last_Name:equals:Lee)and(Mobile:equals:5550100))")
    (entry,) = gw.requests()
    assert entry["outcome"] == "refused"
    assert entry["reasons"] == ["restricted_criteria"] and entry["fields_refused"] == ["Mobile"]
    assert entry["status"] == 400 and entry["upstream_status"] is None
    assert entry["route"] == "/crm/{v}/{module}/search" and entry["module"] == "Leads"
    assert crm.received("/search") == []
