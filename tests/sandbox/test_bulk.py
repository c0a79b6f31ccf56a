"""Bulk read (job → status → ZIP/CSV) and bulk write (upload → job → applied rows)."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import httpx
import pytest

from .conftest import envelope, leads


def unzip_csv(content: bytes) -> tuple[list[str], list[list[str]]]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        names = zf.namelist()
        assert len(names) == 1 and names[0].endswith(".csv")
        rows = list(csv.reader(io.StringIO(zf.read(names[0]).decode("utf-8"))))
    return rows[0], rows[1:]


def make_zip(text: str, name: str = "rows.csv") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, text)
    return buf.getvalue()


def create_read(client: httpx.Client, version: str, query: dict[str, Any]) -> str:
    r = client.post(f"/crm/bulk/{version}/read", json={"query": query})
    assert r.status_code == 201, r.text
    entry = r.json()["data"][0]
    assert entry["code"] == "ADDED_SUCCESSFULLY" and entry["status"] == "success"
    assert entry["details"]["state"] == "ADDED" and entry["details"]["operation"] == "read"
    job_id: str = entry["details"]["id"]
    assert job_id.isdigit()
    return job_id


def test_bulk_read_round_trip_v2(client: httpx.Client) -> None:
    job = create_read(
        client,
        "v2",
        {
            "module": "Leads",
            "fields": ["Last_Name", "Email", "Referrer", "Mobile"],
            "criteria": {"api_name": "City", "comparator": "equal", "value": "Berlin"},
        },
    )
    status = client.get(f"/crm/bulk/v2/read/{job}").json()["data"][0]
    assert status["state"] == "COMPLETED" and status["operation"] == "read"
    assert status["query"]["module"] == "Leads"
    expected = [x for p in (1, 2, 3) for x in leads(client, page=p) if x["City"] == "Berlin"]
    assert status["result"] == {
        "page": 1,
        "per_page": 200000,
        "count": len(expected),
        "download_url": f"/crm/bulk/v2/read/{job}/result",
        "more_records": False,
    }
    r = client.get(status["result"]["download_url"])
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == f"attachment; filename={job}.zip"
    header, rows = unzip_csv(r.content)
    assert header == ["id", "Last_Name", "Email", "Referrer", "Mobile"]
    assert [row[0] for row in rows] == [x["id"] for x in expected]
    for row, rec in zip(rows, expected, strict=True):
        assert row[2] == rec["Email"]
        assert row[3] == (rec["Referrer"]["id"] if rec["Referrer"] else "")
        assert row[4] == (rec["Mobile"] or "")


def test_bulk_read_v8_group_criteria_and_all_fields(client: httpx.Client) -> None:
    crit = {
        "group_operator": "or",
        "group": [
            {"field": {"api_name": "Country"}, "comparator": "equal", "value": "Spain"},
            {
                "field": {"api_name": "Annual_Revenue"},
                "comparator": "greater_than",
                "value": 4900000,
            },
        ],
    }
    job = create_read(client, "v8", {"module": {"api_name": "Leads"}, "criteria": crit})
    status = client.get(f"/crm/bulk/v8/read/{job}").json()["data"][0]
    assert status["query"]["module"] == {"api_name": "Leads"}
    assert status["result"]["download_url"] == f"/crm/bulk/v8/read/{job}/result"
    header, rows = unzip_csv(client.get(f"/crm/bulk/v8/read/{job}/result").content)
    assert header[0] == "id" and "Email" in header and "Visits" not in header
    expected = [
        x
        for p in (1, 2, 3)
        for x in leads(client, page=p)
        if x["Country"] == "Spain" or x["Annual_Revenue"] > 4_900_000
    ]
    assert len(rows) == len(expected) == status["result"]["count"]


def test_bulk_read_errors(client: httpx.Client) -> None:
    envelope(
        client.post("/crm/bulk/v2/read", json={"query": {"module": "Nope"}}), 400, "INVALID_MODULE"
    )
    envelope(client.post("/crm/bulk/v2/read", json={}), 400, "REQUIRED_PARAM_MISSING")
    bad = {
        "query": {
            "module": "Leads",
            "criteria": {"api_name": "City", "comparator": "near", "value": "x"},
        }
    }
    envelope(client.post("/crm/bulk/v2/read", json=bad), 400, "INVALID_DATA")
    envelope(client.get("/crm/bulk/v2/read/123"), 400, "INVALID_DATA")


def upload(client: httpx.Client, content: bytes, feature: str = "bulk-write") -> httpx.Response:
    return client.post(
        "/crm/v2/upload",
        headers={"feature": feature, "X-CRM-ORG": "20061000001"},
        files={"file": ("rows.zip", content, "application/zip")},
    )


@pytest.mark.usefixtures("fresh")
def test_upload_and_bulk_write_update(client: httpx.Client) -> None:
    data = leads(client)
    text = f"id,City,Last_Name\n{data[0]['id']},Tromso,\n{data[1]['id']},Bergen,Fjord\n999,X,Y\n"
    r = upload(client, make_zip(text))
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["code"], body["message"]) == (
        "success",
        "FILE_UPLOAD_SUCCESS",
        "file uploaded.",
    )
    file_id = body["details"]["file_id"]
    assert file_id.isdigit() and body["details"]["created_time"]
    job = client.post(
        "/crm/bulk/v8/write",
        json={
            "operation": "update",
            "ignore_empty": True,
            "resource": [
                {
                    "type": "data",
                    "module": {"api_name": "Leads"},
                    "file_id": file_id,
                    "find_by": "id",
                }
            ],
        },
    )
    assert job.status_code == 201
    assert job.json()["code"] == "SUCCESS"
    job_id = job.json()["details"]["id"]
    status = client.get(f"/crm/bulk/v8/write/{job_id}").json()
    assert status["status"] == "COMPLETED" and status["operation"] == "update"
    res = status["resource"][0]
    assert res["module"] == {"api_name": "Leads"}
    assert res["file"]["updated_count"] == 2 and res["file"]["skipped_count"] == 1
    assert res["file"]["total_count"] == 3
    first = client.get(f"/crm/v2/Leads/{data[0]['id']}").json()["data"][0]
    assert first["City"] == "Tromso" and first["Last_Name"] == data[0]["Last_Name"]
    second = client.get(f"/crm/v2/Leads/{data[1]['id']}").json()["data"][0]
    assert second["Last_Name"] == "Fjord"
    header, rows = unzip_csv(client.get(status["result"]["download_url"]).content)
    assert header == ["id", "STATUS", "ERRORS"] and [r[1] for r in rows] == [
        "UPDATED",
        "UPDATED",
        "SKIPPED",
    ]


@pytest.mark.usefixtures("fresh")
def test_bulk_write_insert_with_mappings(client: httpx.Client) -> None:
    file_id = upload(client, make_zip("a,b\nBulk,bulk.one@example.com\n")).json()["details"][
        "file_id"
    ]
    job = client.post(
        "/crm/bulk/v2/write",
        json={
            "operation": "insert",
            "resource": [
                {
                    "type": "data",
                    "module": "Contacts",
                    "file_id": file_id,
                    "field_mappings": [
                        {"api_name": "Last_Name", "index": 0},
                        {"api_name": "Email", "index": 1},
                    ],
                }
            ],
        },
    )
    status = client.get(f"/crm/bulk/v2/write/{job.json()['details']['id']}").json()
    assert status["resource"][0]["module"] == "Contacts"
    assert status["resource"][0]["file"]["added_count"] == 1
    found = client.get("/crm/v2/Contacts/search", params={"email": "bulk.one@example.com"})
    assert found.json()["data"][0]["Last_Name"] == "Bulk"


def test_upload_errors(client: httpx.Client) -> None:
    envelope(upload(client, b"plain text, not a zip"), 400, "INVALID_FILE_FORMAT")
    envelope(upload(client, make_zip("x", "notes.txt")), 400, "INVALID_FILE_FORMAT")
    envelope(upload(client, make_zip("a\n1\n"), feature="other"), 400, "REQUIRED_PARAM_MISSING")
    envelope(
        client.post(
            "/crm/bulk/v2/write",
            json={
                "operation": "update",
                "resource": [{"type": "data", "module": "Leads", "file_id": "1"}],
            },
        ),
        400,
        "INVALID_DATA",
    )
    envelope(
        client.post("/crm/bulk/v2/write", json={"operation": "merge", "resource": []}),
        400,
        "INVALID_DATA",
    )
