"""The route table: every forwarded route is a row; nothing else is matched."""

from __future__ import annotations

import pytest

from gateway.crm.routes import KEYWORDS, TABLE, Kind, NoRoute, match


def segs(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/"))


@pytest.mark.parametrize(
    ("method", "path", "kind", "canonical"),
    [
        ("GET", "/crm/v8/Leads", Kind.READ, "/crm/v8/Leads"),
        ("HEAD", "/crm/v8/Leads", Kind.READ, "/crm/v8/Leads"),
        ("GET", "/crm/v8/Leads/123", Kind.READ, "/crm/v8/Leads/123"),
        ("GET", "/crm/V2.1/Leads/deleted", Kind.READ, "/crm/v2.1/Leads/deleted"),
        ("GET", "/crm/v8/Leads/SEARCH", Kind.SEARCH, "/crm/v8/Leads/search"),
        ("GET", "/crm/v8/Leads/Actions/Count", Kind.COUNT, "/crm/v8/Leads/actions/count"),
        ("GET", "/crm/v8/Leads/123/Notes", Kind.RELATED, "/crm/v8/Leads/123/Notes"),
        ("GET", "/crm/v8/Leads/123/photo", Kind.BLOB, "/crm/v8/Leads/123/photo"),
        ("GET", "/crm/v8/Leads/1/attachments/2", Kind.BLOB, "/crm/v8/Leads/1/Attachments/2"),
        ("POST", "/crm/v8/COQL", Kind.COQL, "/crm/v8/coql"),
        ("POST", "/crm/v8/Leads", Kind.INSERT, "/crm/v8/Leads"),
        ("PUT", "/crm/v8/Leads", Kind.UPDATE, "/crm/v8/Leads"),
        ("PUT", "/crm/v8/Leads/123", Kind.RECORD_UPDATE, "/crm/v8/Leads/123"),
        ("POST", "/crm/v8/Leads/Upsert", Kind.UPSERT, "/crm/v8/Leads/upsert"),
        (
            "POST",
            "/crm/v8/Leads/1/actions/CONVERT",
            Kind.CONVERT,
            "/crm/v8/Leads/1/actions/convert",
        ),
        ("POST", "/crm/v8/Leads/actions/mass_update", Kind.MASS_UPDATE, None),
        ("GET", "/crm/v8/Leads/actions/mass_update", Kind.JOB_STATUS, None),
        ("PUT", "/crm/v8/Campaigns/1/Leads/2", Kind.RELATED_WRITE, None),
        ("DELETE", "/crm/v8/Campaigns/1/Leads/2", Kind.RELATED_WRITE, None),
        ("DELETE", "/crm/v8/Leads/1", Kind.DELETE, None),
        ("POST", "/crm/v8/upload", Kind.UPLOAD, None),
        ("POST", "/crm/v8/__composite_requests", Kind.COMPOSITE, None),
        ("POST", "/crm/bulk/v8/read", Kind.BULK_READ_CREATE, None),
        ("GET", "/crm/bulk/v8/read/77", Kind.JOB_STATUS, None),
        (
            "GET",
            "/crm/bulk/v8/read/77/Result",
            Kind.BULK_READ_RESULT,
            "/crm/bulk/v8/read/77/result",
        ),
        ("POST", "/crm/bulk/v8/write", Kind.BULK_WRITE_CREATE, None),
        ("GET", "/crm/v8/settings/fields", Kind.SETTINGS, None),
        ("GET", "/crm/v8/org", Kind.METADATA, None),
        ("GET", "/crm/v8/users/5", Kind.METADATA, None),
    ],
)
def test_known_routes_match_their_row_in_canonical_spelling(
    method: str, path: str, kind: Kind, canonical: str | None
) -> None:
    found = match(method, segs(path))
    assert found.kind is kind
    assert "/" + "/".join(found.segments) == (canonical or path)


@pytest.mark.parametrize(
    "path",
    [
        "/crm/v8",
        "/crm/v8/Leads/actions/assign_territories",  # an action whose targets are unknown
        "/crm/v8/Leads/123/actions/timeline",
        "/crm/v8/Leads/abc",  # a record id is numeric
        "/crm/v8/Leads/1/Notes/abc",
        "/crm/v8/Leads/1/2/3/4",
        "/crm/v9x/Leads",
        "/crm/bulk/v8/other",
        "/api/v8/Leads",
        "/crm/v8/settings/fields/x/y",
        "/crm/v8/coql/Leads",
    ],
)
def test_a_path_that_fits_no_row_is_not_found(path: str) -> None:
    with pytest.raises(NoRoute) as err:
        match("GET", segs(path))
    assert err.value.status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/crm/v8/coql"),
        ("PATCH", "/crm/v8/Leads"),
        ("OPTIONS", "/crm/v8/Leads"),
        ("DELETE", "/crm/v8/Leads/search"),
        ("POST", "/crm/v8/Leads/123"),  # the CRM's POST /{id} is not a route it documents
        ("PUT", "/crm/v8/settings/fields"),
    ],
)
def test_a_known_path_with_another_method_is_not_allowed(method: str, path: str) -> None:
    with pytest.raises(NoRoute) as err:
        match(method, segs(path))
    assert err.value.status == 405


def test_a_keyword_is_never_read_as_a_module() -> None:
    """``/crm/v8/Search`` is not the records of a module named Search."""
    for word in ("search", "COQL", "Upload", "org", "settings"):
        with pytest.raises(NoRoute):
            match("GET", segs(f"/crm/v8/{word}/123"))


def test_an_external_value_fits_the_record_route_only_under_x_external() -> None:
    with pytest.raises(NoRoute):
        match("GET", segs("/crm/v8/Leads/ext-42"))
    found = match("GET", segs("/crm/v8/Leads/ext-42"), external=True)
    assert found.kind is Kind.READ and found.params["id"] == "ext-42"
    # Only the record's own placeholder takes an external value.
    with pytest.raises(NoRoute):
        match("GET", segs("/crm/v8/Leads/1/Notes/ext-42"), external=True)


def test_every_route_name_is_a_template_without_values() -> None:
    for route in TABLE:
        for seg in route.segments:
            assert seg.startswith("{") or seg.lower() in KEYWORDS
        assert set(route.methods) <= {"GET", "HEAD", "POST", "PUT", "DELETE"}
