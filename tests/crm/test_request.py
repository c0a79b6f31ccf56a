"""The canonical request: parsed once; what the upstream receives is what was checked."""

from __future__ import annotations

from urllib.parse import unquote, unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.crm.request import CanonicalRequest, canonicalize
from gateway.crm.routes import Kind
from gateway.errors import GatewayError, InvalidData, InvalidUrl, MethodNotAllowed

AUTH = (b"authorization", b"Zoho-oauthtoken t")


def canon(
    path: str,
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "GET",
) -> CanonicalRequest:
    return canonicalize(method, path.encode(), query.encode(), headers or [AUTH], b"")


# -- methods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "PROPFIND", "TRACE", "CONNECT", "BREW", "GET "])
def test_a_method_outside_the_seven_is_not_allowed(method: str) -> None:
    with pytest.raises(MethodNotAllowed):
        canon("/crm/v8/Leads", method=method)


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/crm/v8//Leads",
        "/crm/v8/./Leads",
        "/crm/v8/settings/../Leads",
        "/crm/v8/settings/%2e%2e/Leads",
        "/crm/v8/Leads;x=1",
        "/crm/v8/Leads%3Bx",
        "/crm/v8/Leads%2F123",
        "/crm/v8/Le%2561ds",  # still decodes further
        "/crm/v8/Leads%00",
        "crm/v8/Leads",
    ],
)
def test_a_path_another_server_could_read_differently_is_refused(path: str) -> None:
    with pytest.raises(InvalidUrl):
        canon(path)


def test_keywords_are_forwarded_in_canonical_spelling() -> None:
    req = canon("/CRM/V8/Leads/SeArCh", "criteria=(A:equals:b)")
    assert req.kind is Kind.SEARCH
    assert req.path == "/crm/v8/Leads/search"


def test_a_percent_encoded_keyword_is_decoded_once_and_classified() -> None:
    req = canon("/crm/v8/Leads/%73earch")
    assert req.kind is Kind.SEARCH and req.path == "/crm/v8/Leads/search"


# -- query parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "criteria=a&criteria=b",
        "criteria=a&CRITERIA=b",
        "criteria=a&crit%65ria=b",
        "fields=Email&Fields=Last_Name",
    ],
)
def test_a_parameter_given_twice_in_any_spelling_is_refused(query: str) -> None:
    with pytest.raises(InvalidData) as err:
        canon("/crm/v8/Leads/search", query)
    assert err.value.details == {"reason": "a query parameter is given twice"}


@pytest.mark.parametrize(
    "query", ["sort_by=Em%2561il", "fields=Last_Name,%2545mail", "fields=%252C"]
)
def test_a_field_name_that_still_decodes_is_refused(query: str) -> None:
    with pytest.raises(InvalidData):
        canon("/crm/v8/Leads", query)


@pytest.mark.parametrize("query", ["crit%2565ria=x", "a%20b=1", "a.b=1", "%ff=1"])
def test_a_parameter_name_that_is_no_plain_word_is_refused(query: str) -> None:
    with pytest.raises(InvalidData):
        canon("/crm/v8/Leads", query)


def test_parameter_names_are_lower_cased_and_values_decoded_once() -> None:
    req = canon("/crm/v8/Leads/search", "Criteria=%28Email%3Aequals%3Aa%2Bb%40x%29&Per_Page=2")
    assert req.params == (("criteria", "(Email:equals:a+b@x)"), ("per_page", "2"))
    # The upstream's single decoding yields exactly the checked value.
    name, _, value = req.query.split("&")[0].partition("=")
    assert (name, unquote(value)) == ("criteria", "(Email:equals:a+b@x)")


# -- headers ---------------------------------------------------------------------------------


def test_a_header_named_in_connection_is_gone_before_anything_reads_it() -> None:
    req = canon(
        "/crm/v8/Leads",
        headers=[AUTH, (b"Connection", b"close, X-CRM-ORG"), (b"X-CRM-ORG", b"prod")],
    )
    assert req.header("x-crm-org") is None
    assert all(n not in ("connection", "x-crm-org") for n, _ in req.headers)


def test_gateway_headers_never_reach_the_upstream() -> None:
    req = canon(
        "/crm/v8/Leads",
        headers=[
            AUTH,
            (b"X-Gateway-Key", b"k"),
            (b"X-Gateway-Debug", b"1"),
            (b"X-HTTP-Method-Override", b"DELETE"),
            (b"Accept-Encoding", b"br"),
            (b"X-Request-ID", b"abc"),
        ],
    )
    assert req.gateway_key == "k"
    assert [n for n, _ in req.headers] == ["authorization"]


@pytest.mark.parametrize(
    "name", [b"authorization", b"x-crm-org", b"x-external", b"content-type", b"x-gateway-key"]
)
def test_a_decision_header_given_twice_is_refused(name: bytes) -> None:
    with pytest.raises(InvalidData):
        canon("/crm/v8/Leads", headers=[AUTH, (name, b"a"), (name, b"b")])


def test_an_encoded_request_body_is_refused() -> None:
    with pytest.raises(InvalidData):
        canon("/crm/v8/Leads", headers=[AUTH, (b"content-encoding", b"gzip")], method="PUT")


# -- the property: what is forwarded is what was checked -------------------------------------

_segment = st.one_of(
    st.sampled_from(
        ["crm", "CRM", "v8", "V2.1", "bulk", "Leads", "leads", "search", "SEARCH", "coql",
         "actions", "count", "upsert", "123", "5725767000000524157", "Notes", "..", ".", "",
         "settings", "fields", "%2e", "%2F", "%25", "read", "result", "__composite_requests"]
    ),
    st.text(alphabet="abcXYZ09_.%;/-", max_size=6),
)  # fmt: skip
_param_name = st.sampled_from(
    ["criteria", "Criteria", "fields", "sort_by", "per_page", "email", "word", "include", "x%20y"]
)
_param_value = st.text(alphabet="abcE:()%+&=,@ 2", max_size=12)


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "get"]),
    segments=st.lists(_segment, min_size=1, max_size=7),
    params=st.lists(st.tuples(_param_name, _param_value), max_size=4),
    connection=st.sampled_from([b"", b"x-crm-org", b"X-External, keep-alive"]),
)
def test_the_upstream_receives_exactly_the_canonical_request(
    method: str,
    segments: list[str],
    params: list[tuple[str, str]],
    connection: bytes,
) -> None:
    path = "/" + "/".join(segments)
    query = "&".join(f"{n}={v}" for n, v in params)
    headers = [AUTH, (b"x-crm-org", b"1"), (b"x-external", b"Leads.Ext"), (b"x-gateway-key", b"k")]
    if connection:
        headers.append((b"connection", connection))
    try:
        req = canonicalize(method, path.encode(), query.encode(), headers, b"")
    except GatewayError:
        return  # refused: nothing is forwarded
    # What a server upstream reads from what the gateway sends ...
    sent_segments = tuple(unquote_to_bytes(s).decode() for s in req.path[1:].split("/"))
    sent_params = tuple(
        (unquote(n), unquote_to_bytes(v.replace("+", "%2B")).decode())
        for n, _, v in (p.partition("=") for p in req.query.split("&") if p)
    )
    # ... is the request the guards read,
    assert sent_segments == req.segments
    assert sent_params == req.params
    assert "x-gateway-key" not in dict(req.headers)
    named = {t.strip().lower() for t in connection.decode().split(",") if t.strip()}
    assert not named & set(dict(req.headers))
    # and sending it again changes nothing (the canonical form is a fixed point).
    again = canonicalize(
        req.method,
        req.path.encode(),
        req.query.encode(),
        [(n.encode(), v.encode()) for n, v in req.headers],
        b"",
    )
    assert (again.segments, again.params, again.kind) == (req.segments, req.params, req.kind)
