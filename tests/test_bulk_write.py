"""Bulk writes: the uploaded file's records, and how the job finds its targets."""

from __future__ import annotations

import io
import zipfile

import orjson
import pytest

from tests.conftest import Crm, GatewayHandle, envelope


def _zip_csv(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("rows.csv", text)
    return buf.getvalue()


def _upload(gw: GatewayHandle, text: str) -> tuple[int, dict[str, object]]:
    r = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("rows.zip", _zip_csv(text))},
        headers={"feature": "bulk-write"},
    )
    return r.status_code, r.json()


def test_a_stopped_id_hidden_in_another_column_is_found(crm: Crm, gw: GatewayHandle) -> None:
    stopped = next(r for r in crm.records("Leads") if r["$stop_processing"])
    crm.clear()
    status, body = _upload(gw, f"Record_Key,Lead_Status\n{stopped['id']},Lost\n")
    assert status == 400 and body["code"] == "CANNOT_PROCESS"
    assert body["details"] == {"ids": [stopped["id"]], "reason": "stop_processing"}
    assert not crm.received("/upload")


def test_numbers_that_are_no_records_do_not_block_an_upload(crm: Crm, gw: GatewayHandle) -> None:
    normal = next(r for r in crm.records("Leads") if not r["$stop_processing"])
    status, body = _upload(gw, f"id,Annual_Revenue\n{normal['id']},1234567890123456\n")
    assert status == 200 and body["code"] == "FILE_UPLOAD_SUCCESS"


def test_a_bulk_update_that_finds_records_by_another_field_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    crm.clear()
    job = {
        "operation": "update",
        "resource": [
            {"type": "data", "module": {"api_name": "Leads"}, "file_id": "1", "find_by": "Email"}
        ],
    }
    r = gw.http.post("/crm/bulk/v8/write", content=orjson.dumps(job))
    assert envelope(r, 400, "NOT_ALLOWED") == {"reason": "unknown_targets"}
    assert not crm.received("/crm/bulk/v8/write")


def test_bulk_insert_and_update_by_id_jobs_are_forwarded(crm: Crm, gw: GatewayHandle) -> None:
    lead = crm.records("Leads")[0]
    assert lead["$stop_processing"] is False
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Leads.csv", f"id,City\n{lead['id']},Bulk-Town\n")
    up = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", buf.getvalue(), "application/zip")},
        headers={"feature": "bulk-write"},
    )
    assert up.status_code == 200, up.text
    file_id = up.json()["details"]["file_id"]
    crm.clear()
    # an insert's find_by means nothing (it finds no records): only its file is checked
    for operation, find_by, fid in (("insert", "Email", file_id), ("update", "id", file_id)):
        job = {
            "operation": operation,
            "resource": [
                {
                    "type": "data",
                    "module": {"api_name": "Leads"},
                    "file_id": fid,
                    "find_by": find_by,
                }
            ],
        }
        gw.http.post("/crm/bulk/v8/write", content=orjson.dumps(job))
    assert len([x for x in crm.received("/crm/bulk/v8/write") if x["method"] == "POST"]) == 2


@pytest.mark.parametrize("operation", ["update", "insert"])
def test_a_job_running_a_file_not_uploaded_through_the_gateway_is_refused(
    crm: Crm, gw: GatewayHandle, operation: str
) -> None:
    """The gateway checks a job's records in the file it saw uploaded; a file it never saw
    (uploaded straight to the CRM) names records it cannot check (an insert's too: the
    parents its notes or activities are attached to)."""
    job = {
        "operation": operation,
        "resource": [{"type": "data", "module": {"api_name": "Leads"}, "file_id": "1",
                      "find_by": "id"}],
    }  # fmt: skip
    crm.clear()
    r = gw.http.post("/crm/bulk/v8/write", content=orjson.dumps(job))
    assert envelope(r, 400, "NOT_ALLOWED") == {"reason": "unknown_targets"}
    assert not crm.received("/crm/bulk/v8/write")
