"""What the official Zoho Python SDKs need from a server (contract §8)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.sandbox.middleware import SandboxMiddleware
from gateway.sandbox.store import Sandbox
from tests.servers import serve

from .conftest import TOKEN, leads

MODULES = (
    "Leads",
    "Lead_Visits",
    "Contacts",
    "Accounts",
    "Deals",
    "Vendors",
    "Patients",
    "Campaigns",
    "Notes",
    "Tasks",
    "Events",
    "Calls",
)
#: every field of every module, for v3+ list calls (``fields`` is required there)
ALL = (
    "Email,Last_Name,Deal_Name,Contact_Name,Account_Name,Referring_Lead,Owner,Parent_Id,"
    "What_Id,Who_Id,Data_Processing_Basis_Details,Campaign_Name,Subject,Referrer,Tag"
)


def ids_in(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every value stored under a key named ``id`` anywhere in a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "id":
                yield key, v
            yield from ids_in(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from ids_in(v, key)


@pytest.mark.parametrize("version", ["v2", "v8"])
def test_every_id_is_a_numeric_string(client: httpx.Client, version: str) -> None:
    docs = [
        client.get(f"/crm/{version}/settings/modules").json(),
        client.get(f"/crm/{version}/users", params={"type": "CurrentUser"}).json(),
        client.get(f"/crm/{version}/Leads", params={"per_page": 200, "fields": ALL}).json(),
        client.get(f"/crm/{version}/Deals", params={"fields": ALL}).json(),
        client.get(f"/crm/{version}/Patients", params={"fields": ALL}).json(),
        client.get(f"/crm/{version}/settings/related_lists", params={"module": "Accounts"}).json(),
    ]
    for module in MODULES:
        docs.append(client.get(f"/crm/{version}/settings/fields", params={"module": module}).json())
        if module != "Lead_Visits":
            docs.append(client.get(f"/crm/{version}/{module}", params={"fields": ALL}).json())
    for lead in leads(client)[:60]:
        docs.append(client.get(f"/crm/{version}/Leads/{lead['id']}").json())
    seen = 0
    for doc in docs:
        for where, value in ids_in(doc):
            if where == "lookup" and value is None:
                continue  # a lookup's own (unused) layout id is null, as in the CRM
            assert isinstance(value, str) and value.isdigit(), (where, value)
            seen += 1
    assert seen > 1000


def test_modules_carry_generated_type_and_api_supported(client: httpx.Client) -> None:
    for version in ("v2", "v2.1", "v8"):
        for m in client.get(f"/crm/{version}/settings/modules").json()["modules"]:
            assert m["generated_type"] in ("default", "web", "custom", "linking", "subform")
            assert m["api_supported"] is True


def test_every_lookup_and_subform_target_has_fields(client: httpx.Client) -> None:
    for version, expect_object in (("v2", False), ("v8", True)):
        mods = [
            m["api_name"] for m in client.get(f"/crm/{version}/settings/modules").json()["modules"]
        ]
        for module in mods:
            fields = client.get(f"/crm/{version}/settings/fields", params={"module": module})
            for f in fields.json()["fields"]:
                target = None
                if f["data_type"] == "lookup":
                    target = f["lookup"]["module"]
                    assert isinstance(target, dict) == expect_object
                    target = target["api_name"] if expect_object else target
                    if target == "se_module":  # multi-module lookup: the SDK skips it
                        assert f["api_name"] in ("Parent_Id", "What_Id")
                        continue
                elif f["data_type"] == "subform":
                    target = f["subform"]["module"]
                    assert f["associated_module"]["module"] == target
                if target:
                    assert target in mods
                    r = client.get(f"/crm/{version}/settings/fields", params={"module": target})
                    assert r.status_code == 200


def test_errors_are_json_never_html(client: httpx.Client) -> None:
    for r in (
        client.get("/crm/v2/Unknown"),
        client.get("/crm/v2/Leads/1/2/3/4/5"),
        client.get("/favicon.ico"),
        client.patch("/crm/v2/Leads"),
        client.get("/crm/v2/org", headers={"Authorization": "Zoho-oauthtoken invalid"}),
        client.post("/crm/v2/Leads", content=b"<xml/>"),
    ):
        assert r.headers["content-type"] == "application/json;charset=UTF-8"
        assert set(r.json()) == {"code", "details", "message", "status"}


def test_unexpected_exception_becomes_internal_error_envelope() -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("handler bug with a secret value")

    # Wired as build_app wires the real sandbox: the middleware inside Starlette's own stack.
    app = Starlette(
        routes=[Route("/crm/v2/org", boom)],
        middleware=[Middleware(SandboxMiddleware, sandbox=Sandbox())],
    )
    with serve(app) as srv:
        r = httpx.get(f"{srv.url}/crm/v2/org", headers={"Authorization": TOKEN})
    assert r.status_code == 500
    assert r.json() == {
        "code": "INTERNAL_ERROR",
        "details": {},
        "message": "Internal server error occurred.",
        "status": "error",
    }
    assert "secret" not in r.text


def test_writes_and_coql_need_no_content_type(fresh: httpx.Client) -> None:
    r = fresh.post("/crm/v8/Leads", content=b'{"data": [{"Last_Name": "NoCT"}]}')
    assert "content-type" not in r.request.headers
    assert r.status_code == 201
    q = fresh.post("/crm/v8/coql", content=b'{"select_query": "select id from Leads limit 1"}')
    assert q.status_code == 200
