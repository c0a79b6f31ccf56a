"""Admin controls, fault injection, wire-format config, determinism, app independence."""

from __future__ import annotations

import base64
import gzip
import time

import httpx
import pytest

from gateway.sandbox import create_app
from tests.servers import serve

from .conftest import TOKEN, envelope, leads, post_json

pytestmark = pytest.mark.usefixtures("fresh")


def test_request_log(client: httpx.Client) -> None:
    client.get("/crm/v2/Leads?per_page=2&fields=Email", headers={"X-Custom": "yes"})
    post_json(client, "/crm/v2/coql", {"select_query": "select id from Leads"})
    client.post(
        "/crm/v2/upload",
        headers={"feature": "bulk-write"},
        files={"file": ("a.zip", b"\xff\xfe\x00binary", "application/zip")},
    )
    log = client.get("/_sandbox/requests").json()["requests"]
    assert [(x["method"], x["path"]) for x in log] == [
        ("GET", "/crm/v2/Leads"),
        ("POST", "/crm/v2/coql"),
        ("POST", "/crm/v2/upload"),
    ]
    assert log[0]["query"] == "per_page=2&fields=Email"
    assert log[0]["headers"]["x-custom"] == "yes"
    assert log[0]["headers"]["authorization"] == TOKEN
    assert log[0]["body"] == ""
    assert log[1]["body"] == '{"select_query":"select id from Leads"}'
    assert "content-type" not in log[1]["headers"]
    assert log[2]["body_encoding"] == "base64"
    assert b"\xff\xfe\x00binary" in base64.b64decode(log[2]["body"])
    client.get("/_sandbox/config")  # admin calls are not logged
    assert len(client.get("/_sandbox/requests").json()["requests"]) == 3
    assert client.delete("/_sandbox/requests").status_code == 200
    assert client.get("/_sandbox/requests").json()["requests"] == []


def test_reset_restores_seed_state(client: httpx.Client) -> None:
    before = client.get("/crm/v2/Leads").content
    target = leads(client)[0]["id"]
    client.delete(f"/crm/v2/Leads/{target}")
    post_json(client, "/_sandbox/faults", {"path_contains": "/org", "status": 500})
    assert client.get("/crm/v2/Leads").content != before
    client.post("/_sandbox/reset")
    assert client.get("/crm/v2/Leads").content == before
    assert client.get("/crm/v2/org").status_code == 200
    assert client.get("/_sandbox/requests").json()["requests"][0]["path"] == "/crm/v2/Leads"


def test_privacy_switch(client: httpx.Client) -> None:
    post_json(client, "/_sandbox/privacy", {"org": 2, "privacy_settings": False})
    two = client.get("/crm/v2/org", headers={"Authorization": "Zoho-oauthtoken org2-x"})
    assert two.json()["org"][0]["privacy_settings"] is False
    assert client.get("/crm/v2/org").json()["org"][0]["privacy_settings"] is True
    envelope(
        post_json(client, "/_sandbox/privacy", {"org": 3, "privacy_settings": True}),
        400,
        "INVALID_DATA",
    )


def test_raw_record_edits(client: httpx.Client) -> None:
    lead = leads(client)[0]
    r = post_json(
        client,
        f"/_sandbox/records/1/Leads/{lead['id']}",
        {"$stop_processing": True, "Email": "MARKER-EMAIL", "Extra_Key": 1},
    )
    assert r.status_code == 200 and r.json()["Email"] == "MARKER-EMAIL"
    got = client.get(f"/crm/v2/Leads/{lead['id']}").json()["data"][0]
    assert got["$stop_processing"] is True and got["Email"] == "MARKER-EMAIL"
    assert got["Extra_Key"] == 1
    assert client.post("/_sandbox/records/1/Leads/1", json={}).status_code == 404
    assert client.post("/_sandbox/records/9/Leads/1", json={}).status_code == 404
    added = post_json(
        client, "/_sandbox/records/1/Patients", {"Name": "Raw", "Diagnosis": "MARKER-DIAGNOSIS"}
    ).json()
    assert added["id"].isdigit()
    fetched = client.get(f"/crm/v8/Patients/{added['id']}").json()["data"][0]
    assert fetched == {"Name": "Raw", "Diagnosis": "MARKER-DIAGNOSIS", "id": added["id"]}


def test_raw_subform_row_edit(client: httpx.Client) -> None:
    lead = leads(client)[0]
    post_json(
        client,
        f"/_sandbox/records/1/Leads/{lead['id']}",
        {
            "Visits": [
                {
                    "id": "5725767000000999001",
                    "Notes": "old",
                    "Visit_Date": None,
                    "Visitor_IP": None,
                    "Parent_Id": {"name": "x", "id": lead["id"]},
                }
            ]
        },
    )
    r = post_json(
        client, "/_sandbox/records/1/Lead_Visits/5725767000000999001", {"Notes": "MARKER-NOTE"}
    )
    assert r.status_code == 200
    got = client.get(f"/crm/v2/Leads/{lead['id']}").json()["data"][0]
    assert got["Visits"][0]["Notes"] == "MARKER-NOTE"


def test_metadata_override_is_served_verbatim(client: httpx.Client) -> None:
    fields = [
        {
            "api_name": "Email",
            "data_type": "email",
            "private": {"restricted": False, "type": "low"},
            "id": "1",
        }
    ]
    post_json(client, "/_sandbox/metadata/1/Leads", {"fields": fields})
    assert client.get("/crm/v2/settings/fields?module=Leads").json() == {"fields": fields}
    org2 = client.get(
        "/crm/v2/settings/fields?module=Leads", headers={"Authorization": "Zoho-oauthtoken org2-a"}
    ).json()
    assert len(org2["fields"]) > 1


def test_config_private_type_case_and_gzip(client: httpx.Client) -> None:
    post_json(client, "/_sandbox/config", {"private_type_case": "lower"})
    fields = client.get("/crm/v2/settings/fields?module=Leads").json()["fields"]
    assert {f["private"]["type"] for f in fields if f["private"]} == {"high", "low"}
    plain = client.get("/crm/v2/Leads?per_page=5")
    assert "content-encoding" not in plain.headers
    post_json(client, "/_sandbox/config", {"gzip": True})
    raw = httpx.get(
        str(client.base_url) + "/crm/v2/Leads?per_page=5",
        headers={"Authorization": TOKEN, "Accept-Encoding": "gzip"},
    )
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.json() == plain.json()  # httpx decodes transparently
    ident = httpx.get(
        str(client.base_url) + "/crm/v2/Leads?per_page=5",
        headers={"Authorization": TOKEN, "Accept-Encoding": "identity"},
    )
    assert "content-encoding" not in ident.headers
    envelope(
        post_json(client, "/_sandbox/config", {"private_type_case": "upper"}), 400, "INVALID_DATA"
    )


def test_fault_status_json_and_times(client: httpx.Client) -> None:
    post_json(
        client,
        "/_sandbox/faults",
        {
            "path_contains": "/settings/fields",
            "status": 500,
            "json": {"code": "INTERNAL_ERROR"},
            "times": 2,
        },
    )
    for _ in range(2):
        r = client.get("/crm/v2/settings/fields?module=Leads")
        assert r.status_code == 500 and r.json() == {"code": "INTERNAL_ERROR"}
    assert client.get("/crm/v2/settings/fields?module=Leads").status_code == 200
    assert client.get("/_sandbox/faults").json()["faults"] == []
    bad = post_json(
        client, "/_sandbox/faults", {"path_contains": "/org", "status": 500, "times": 0}
    )
    envelope(bad, 400, "INVALID_DATA")
    assert len(client.get("/_sandbox/requests").json()["requests"]) == 3  # faulted ones logged


def test_fault_raw_body_content_type_encoding_and_method(client: httpx.Client) -> None:
    post_json(
        client,
        "/_sandbox/faults",
        {
            "path_contains": "/Leads",
            "method": "POST",
            "status": 502,
            "body": "<html>bad gateway</html>",
            "content_type": "text/html",
        },
    )
    post_json(
        client,
        "/_sandbox/faults",
        {
            "path_contains": "/Contacts",
            "status": 200,
            "body": "garbage",
            "content_encoding": "br-unknown",
        },
    )
    assert client.get("/crm/v2/Leads?per_page=1").status_code == 200  # method filter
    r = post_json(client, "/crm/v2/Leads", {"data": [{"Last_Name": "x"}]})
    assert r.status_code == 502 and r.text == "<html>bad gateway</html>"
    assert r.headers["content-type"].startswith("text/html")
    raw = httpx.get(str(client.base_url) + "/crm/v2/Contacts", headers={"Authorization": TOKEN})
    assert raw.headers["content-encoding"] == "br-unknown"
    client.delete("/_sandbox/faults")
    assert client.get("/crm/v2/Contacts").status_code == 200


def test_fault_applies_before_auth_and_delay(client: httpx.Client) -> None:
    post_json(
        client,
        "/_sandbox/faults",
        {"path_contains": "/org", "status": 503, "body": "down", "delay": 0.3, "times": 1},
    )
    started = time.monotonic()
    r = httpx.get(str(client.base_url) + "/crm/v2/org")  # no token at all
    assert r.status_code == 503 and r.text == "down"
    assert time.monotonic() - started >= 0.3
    # Delay without a response: the request is slowed, then answered normally.
    post_json(client, "/_sandbox/faults", {"path_contains": "/org", "delay": 0.3, "times": 1})
    started = time.monotonic()
    assert client.get("/crm/v2/org").json()["org"][0]["zgid"] == "20061000001"
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        post_json(client, "/_sandbox/faults", {"path_contains": "/users", "delay": 1, "times": 1})
        client.get("/crm/v8/users", timeout=0.2)


def test_determinism_and_independence() -> None:
    with serve(create_app(42)) as a, serve(create_app(42)) as b, serve(create_app(7)) as c:
        h = {"Authorization": TOKEN}
        pages = [
            [
                httpx.get(f"{s.url}/crm/v2/{m}?page=2&per_page=100", headers=h).content
                for m in ("Leads", "Contacts")
            ]
            for s in (a, b, c)
        ]
        assert pages[0] == pages[1]
        assert pages[0] != pages[2]
        one = httpx.get(f"{a.url}/crm/v2/Leads/{leads_first(a.url)}", headers=h).content
        assert one == httpx.get(f"{b.url}/crm/v2/Leads/{leads_first(b.url)}", headers=h).content
        # Writes to one app do not leak into another.
        httpx.delete(f"{a.url}/crm/v2/Leads/{leads_first(a.url)}", headers=h)
        assert leads_first(a.url) != leads_first(b.url)


def leads_first(url: str) -> str:
    r = httpx.get(f"{url}/crm/v2/Leads?per_page=1", headers={"Authorization": TOKEN})
    rid: str = r.json()["data"][0]["id"]
    return rid


def test_create_app_gzip_flag() -> None:
    with serve(create_app(gzip=True)) as srv:
        assert gzip.decompress(_raw_org(srv.url)).startswith(b'{"org"')
        httpx.post(f"{srv.url}/_sandbox/reset")
        assert gzip.decompress(_raw_org(srv.url)).startswith(b'{"org"')  # reset keeps it


def _raw_org(url: str) -> bytes:
    """The undecoded body, to prove the bytes on the wire are gzip."""
    headers = {"Authorization": TOKEN, "Accept-Encoding": "gzip"}
    with httpx.stream("GET", f"{url}/crm/v2/org", headers=headers) as r:
        assert r.headers["content-encoding"] == "gzip"
        return b"".join(r.iter_raw())
