"""Classifying requests: which answers carry records, which requests are guarded."""

from __future__ import annotations

import pytest

from gateway.crm import endpoints as k
from gateway.crm.endpoints import classify


@pytest.mark.parametrize(
    ("method", "path", "kind", "route"),
    [
        ("GET", "/crm/v2/Leads", k.READ, "/crm/{v}/{module}"),
        ("GET", "/crm/v8/Leads/123", k.READ, "/crm/{v}/{module}/{id}"),
        ("GET", "/crm/v2.1/Leads/search", k.SEARCH, "/crm/{v}/{module}/search"),
        ("GET", "/crm/v8/Leads/deleted", k.READ, "/crm/{v}/{module}/deleted"),
        ("GET", "/crm/v8/Contacts/1/Deals", k.RELATED, "/crm/{v}/{module}/{id}/{related_list}"),
        ("GET", "/crm/v8/Leads/actions/count", k.READ, "/crm/{v}/{module}/actions/{action}"),
        ("POST", "/crm/v8/coql", k.COQL, "/crm/{v}/coql"),
        ("POST", "/crm/bulk/v2/read", k.BULK_READ_CREATE, "/crm/bulk/{v}/read"),
        (
            "GET",
            "/crm/bulk/v2/read/5/result",
            k.BULK_READ_RESULT,
            "/crm/bulk/{v}/read/{job_id}/result",
        ),
        ("GET", "/crm/bulk/v2/read/5", k.PASS, "/crm/bulk/{v}/read/{job_id}"),
        ("POST", "/crm/v8/Leads", k.INSERT, "/crm/{v}/{module}"),
        ("PUT", "/crm/v8/Leads", k.UPDATE, "/crm/{v}/{module}"),
        ("PUT", "/crm/v8/Leads/1", k.RECORD_WRITE, "/crm/{v}/{module}/{id}"),
        ("POST", "/crm/v8/Leads/upsert", k.UPSERT, "/crm/{v}/{module}/upsert"),
        (
            "POST",
            "/crm/v8/Leads/1/actions/convert",
            k.CONVERT,
            "/crm/{v}/{module}/{id}/actions/convert",
        ),
        (
            "POST",
            "/crm/v8/Leads/actions/mass_update",
            k.MASS_UPDATE,
            "/crm/{v}/{module}/actions/mass_update",
        ),
        (
            "POST",
            "/crm/v8/Leads/actions/assign_territories",
            k.RECORD_WRITE,
            "/crm/{v}/{module}/actions/{action}",
        ),
        (
            "PUT",
            "/crm/v8/Leads/1/Patients/2",
            k.RECORD_WRITE,
            "/crm/{v}/{module}/{id}/{related_list}/{related_id}",
        ),
        (
            "DELETE",
            "/crm/v8/Leads/1/Patients/2",
            k.DELETE,
            "/crm/{v}/{module}/{id}/{related_list}/{related_id}",
        ),
        ("DELETE", "/crm/v8/Leads/1", k.DELETE, "/crm/{v}/{module}/{id}"),
        ("GET", "/crm/v8/Leads/1/photo", k.PASS, "/crm/{v}/{module}/{id}/photo"),
        (
            "GET",
            "/crm/v8/Leads/1/Attachments/2",
            k.PASS,
            "/crm/{v}/{module}/{id}/attachments/{related_id}",
        ),
        ("GET", "/crm/v8/Leads/1/Attachments", k.RELATED, "/crm/{v}/{module}/{id}/{related_list}"),
        ("POST", "/crm/v8/upload", k.UPLOAD, "/crm/{v}/upload"),
        ("GET", "/crm/v8/org", k.PASS, "/crm/{v}/org"),
        ("GET", "/crm/v8/settings/fields", k.PASS, "/crm/{v}/settings/{name}"),
        ("GET", "/crm/v8/__composite_requests", k.READ, "/crm/{v}/{module}"),
        ("GET", "/crm/v99x/Leads", k.NOT_FOUND, "/crm/{unknown}"),
        ("GET", "/crm/v8/Leads/../org", k.NOT_FOUND, "/{unknown}"),
        ("GET", "/crm/v8/Leads/", k.READ, "/crm/{v}/{module}"),  # one trailing slash
        ("GET", "/other", k.NOT_FOUND, "/{unknown}"),
    ],
)
def test_classify(method: str, path: str, kind: str, route: str) -> None:
    ep = classify(method, path)
    assert (ep.kind, ep.route) == (kind, route)


@pytest.mark.parametrize(
    "path",
    [
        "/crm/v8/settings/../Leads",  # the CRM could normalise it to /crm/v8/Leads
        "/crm/v8/org/../Leads",
        "/crm/v8/users/./../Leads",
        "/crm/v8/upload/../Leads",
        "/crm/v8/settings/.../Leads",
        "/crm/v8//Leads",  # merged slashes
        "//crm/v8/Leads",
        "/crm/v8/Leads//",
        "/crm/v8/settings/..;/Leads",  # a path parameter that Java servers strip
        "/crm/v8/Leads;x=1",
        "/crm/bulk/v8/read/../../v8/Leads",
        "/crm/v8/settings/fields\\..\\..\\Leads",
        "crm/v8/Leads",
        "",
    ],
)
def test_paths_another_server_could_normalise_are_refused(path: str) -> None:
    ep = classify("GET", path)
    assert (ep.kind, ep.route) == (k.NOT_FOUND, "/{unknown}")


def test_unknown_namespaces_are_treated_as_modules_so_they_are_checked() -> None:
    # A namespace the gateway does not know could return records: it gets a module's checks.
    assert classify("GET", "/crm/v8/functions/f/actions/execute").kind == k.READ
    assert classify("POST", "/crm/v8/functions/f/actions/execute").kind == k.RECORD_WRITE


def test_routes_never_hold_ids_or_values() -> None:
    ep = classify("GET", "/crm/v8/Leads/5725767000000524157/Deals")
    assert "5725767000000524157" not in ep.route and "Leads" not in ep.route
    assert ep.record_id == "5725767000000524157" and ep.module == "Leads"
