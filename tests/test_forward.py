"""Answers the gateway does not rewrite are still checked (checklist 27, 29-31, 52, 60).

A JSON answer passed on (metadata, job status, a write's answer) is read whole, decoded
and parsed before a byte goes out; bytes (a photo, an attachment) stream with a known
encoding, a bounded decoded size and a complete gzip stream. The CRM's error bodies are
scrubbed of values the request carried.
"""

from __future__ import annotations

import gzip
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import AUTH, Crm, GatewayHandle, MakeGateway, envelope
from tests.servers import serve

_ORG = {"org": [{"id": "1", "privacy_settings": True}]}
_MODULES = {"modules": [{"api_name": "Leads", "generated_type": "default"}]}
_FIELDS = {
    "fields": [
        {"api_name": "Last_Name", "data_type": "text", "private": None},
        {"api_name": "Email", "data_type": "email",
         "private": {"restricted": True, "type": "High", "export": True}},
    ]
}  # fmt: skip


class FakeCrm:
    """A CRM whose answers on /settings/layouts and a lead's photo the test sets, byte for
    byte (the sandbox speaks only well-formed HTTP bodies)."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes, dict[str, str]] = (200, b"{}", {})

    def app(self) -> Starlette:
        async def fixed(body: Any) -> Response:
            return Response(orjson.dumps(body), media_type="application/json")

        async def org(_: Request) -> Response:
            return await fixed(_ORG)

        async def modules(_: Request) -> Response:
            return await fixed(_MODULES)

        async def fields(_: Request) -> Response:
            return await fixed(_FIELDS)

        async def set_answer(_: Request) -> Response:
            status, body, headers = self.answer
            return Response(body, status_code=status, headers=headers)

        return Starlette(
            routes=[
                Route("/crm/v8/org", org),
                Route("/crm/v8/settings/modules", modules),
                Route("/crm/v8/settings/fields", fields),
                Route("/crm/v8/settings/layouts", set_answer),
                Route("/crm/v8/Leads/{id}/photo", set_answer),
                Route("/crm/v8/Leads/search", set_answer),
            ]
        )


@pytest.fixture
def fake(make_gateway: MakeGateway) -> Iterator[tuple[FakeCrm, GatewayHandle]]:
    crm = FakeCrm()
    with serve(crm.app()) as upstream:
        yield crm, make_gateway(upstream=upstream.url)


_JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("coding", ["br", "compress", "x-unknown", "gzip, gzip"])
def test_c29_an_unknown_encoding_on_a_passed_on_answer_is_refused(
    fake: tuple[FakeCrm, GatewayHandle], coding: str
) -> None:
    crm, gw = fake
    crm.answer = (200, b'{"layouts": []}', {**_JSON, "content-encoding": coding})
    envelope(gw.http.get("/crm/v8/settings/layouts"), 502, "GATEWAY_UNREADABLE_UPSTREAM")


def test_c30_a_gzip_bomb_on_a_passed_on_answer_is_refused_not_expanded(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    fake = FakeCrm()
    bomb = gzip.compress(b'{"layouts": "' + b"a" * (8 * 1024 * 1024) + b'"}')
    fake.answer = (200, bomb, {**_JSON, "content-encoding": "gzip"})
    with serve(fake.app()) as upstream:
        gw = make_gateway(
            {"limits": {"max_response_body_bytes": 1024 * 1024}}, upstream=upstream.url
        )
        envelope(gw.http.get("/crm/v8/settings/layouts"), 413, "GATEWAY_BODY_TOO_LARGE")


def test_c31_a_truncated_gzip_answer_is_refused(fake: tuple[FakeCrm, GatewayHandle]) -> None:
    crm, gw = fake
    whole = gzip.compress(b'{"layouts": [{"id": "1"}]}' * 50)
    crm.answer = (200, whole[: len(whole) // 2], {**_JSON, "content-encoding": "gzip"})
    envelope(gw.http.get("/crm/v8/settings/layouts"), 502, "GATEWAY_UNREADABLE_UPSTREAM")


def test_c31_a_truncated_gzip_photo_never_arrives_complete_looking(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """Bytes stream: a gzip stream that ends early cuts the connection, so the client
    never holds a body that looks whole."""
    crm, gw = fake
    whole = gzip.compress(bytes(range(256)) * 4000)
    crm.answer = (200, whole[: len(whole) // 2], {"content-type": "image/png",
                                                  "content-encoding": "gzip"})  # fmt: skip
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"GET /crm/v8/Leads/5725767000000000001/photo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"
            b"Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
        )
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"chunked" in head.lower()
    assert not body.endswith(b"0\r\n\r\n")  # the final chunk never came


def test_c31_a_complete_gzip_photo_streams_to_a_client_that_accepts_gzip(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    image = bytes(range(256)) * 4000
    crm.answer = (200, gzip.compress(image), {"content-type": "image/png",
                                              "content-encoding": "gzip"})  # fmt: skip
    r = gw.http.get("/crm/v8/Leads/5725767000000000001/photo", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.content == image


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/csv", b"Email\nsomeone@example.com\n"), ("application/octet-stream", b"\x00\x01")],
)
def test_c60_a_non_json_answer_on_a_json_route_is_refused(
    fake: tuple[FakeCrm, GatewayHandle], content_type: str, body: bytes
) -> None:
    crm, gw = fake
    crm.answer = (200, body, {"content-type": content_type})
    r = gw.http.get("/crm/v8/settings/layouts")
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    assert b"someone@example.com" not in r.content


def test_c28_malformed_json_on_a_passed_on_route_is_refused(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    crm, gw = fake
    crm.answer = (200, b'{"layouts": [{"Email": "leak@example.com"', _JSON)
    r = gw.http.get("/crm/v8/settings/layouts")
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    assert b"leak@example.com" not in r.content


def test_c52_a_crm_error_echoing_values_reaches_the_client_scrubbed(
    fake: tuple[FakeCrm, GatewayHandle],
) -> None:
    """Codes, field names and JSON paths stay; echoed criteria values, e-mail addresses
    and record values go."""
    crm, gw = fake
    error = {
        "code": "INVALID_DATA",
        "details": {
            "api_name": "Last_Name",
            "json_path": "$.criteria",
            "value": "Smithers",
            "contact": "someone@example.com",
            "duplicate_record": {"id": "5725767000000000001", "Owner": {"name": "Pat Boyle"}},
        },
        "message": "no lead named Smithers",
        "status": "error",
    }
    crm.answer = (400, orjson.dumps(error), _JSON)
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": "(Last_Name:equals:Smithers)"})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "INVALID_DATA" and body["status"] == "error"
    assert body["details"]["api_name"] == "Last_Name"
    assert body["details"]["json_path"] == "$.criteria"
    assert body["details"]["duplicate_record"]["id"] == "5725767000000000001"
    assert b"Smithers" not in r.content and b"someone@example.com" not in r.content
    assert b"Pat Boyle" not in r.content


def test_c52_a_write_answers_crm_errors_are_scrubbed_per_record(
    crm: Crm, gw: GatewayHandle
) -> None:
    """A per-record error of a write (the CRM's DUPLICATE_DATA echoing the value) is
    scrubbed; the gateway's own refusals and the CRM's successes are untouched."""
    value = "unique-value-7731"
    crm.fault(
        path_contains="/crm/v8/Leads",
        method="POST",
        status=202,
        json={"data": [{"code": "DUPLICATE_DATA", "status": "error",
                        "message": f"duplicate value {value}",
                        "details": {"api_name": "External_Ref", "value": value}}]},
    )  # fmt: skip
    r = gw.http.post(
        "/crm/v8/Leads",
        content=orjson.dumps({"data": [{"Last_Name": "X", "External_Ref": value}]}),
    )
    (entry,) = r.json()["data"]
    assert entry["code"] == "DUPLICATE_DATA" and entry["details"]["api_name"] == "External_Ref"
    assert value.encode() not in r.content
