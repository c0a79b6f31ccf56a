"""Fixtures: one real sandbox server per test module, reached over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.sandbox import create_app
from tests.servers import ThreadedServer, serve

TOKEN = "Zoho-oauthtoken test-token"
ORG2_TOKEN = "Zoho-oauthtoken org2-token"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with serve(create_app()) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": TOKEN}, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def org2(server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": ORG2_TOKEN}, timeout=10) as c:
        yield c


@pytest.fixture
def fresh(client: httpx.Client) -> httpx.Client:
    """The module's client, after a reset: for tests that write."""
    assert client.post("/_sandbox/reset").status_code == 200
    return client


def post_json(client: httpx.Client, url: str, payload: Any, **kw: Any) -> httpx.Response:
    """Send JSON with no Content-Type header, as the official SDKs do on writes and COQL."""
    return client.post(url, content=orjson.dumps(payload), **kw)


def put_json(client: httpx.Client, url: str, payload: Any, **kw: Any) -> httpx.Response:
    return client.put(url, content=orjson.dumps(payload), **kw)


def leads(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/crm/v2/Leads", params={"per_page": 200, **params})
    assert r.status_code == 200
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def envelope(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an error envelope and return its details."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"code", "details", "message", "status"}
    assert body["code"] == code
    assert body["status"] == "error"
    details: dict[str, Any] = body["details"]
    return details
