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


def _mapped_job(
    gw: GatewayHandle, operation: str, module: str, file_id: object, mappings: list[object]
) -> tuple[int, dict[str, object]]:
    resource = {"type": "data", "module": {"api_name": module}, "file_id": file_id,
                "find_by": "id", "field_mappings": mappings}  # fmt: skip
    job = {"operation": operation, "resource": [resource]}
    r = gw.http.post("/crm/bulk/v8/write", content=orjson.dumps(job))
    return r.status_code, r.json()


def test_a_column_a_field_mapping_makes_the_key_must_name_known_records(
    crm: Crm, gw: GatewayHandle
) -> None:
    """``field_mappings`` can make any column the ``id`` a job finds records by: its values
    must then be records whose state the gateway knows, as an ``id`` column's are."""
    free = next(r for r in crm.records("Leads") if not r["$stop_processing"])
    unknown = "5725767000099999999"  # a record of no module: its state cannot be known
    assert unknown not in {r["id"] for r in crm.records("Leads")}
    mappings = [{"api_name": "id", "index": 0}, {"api_name": "City", "index": 1}]
    for key, allowed in ((free["id"], True), (unknown, False)):
        status, up = _upload(gw, f"Ref,City\n{key},Mapped-Town\n")
        assert status == 200, up  # no cell of it is a record in stop processing
        crm.clear()
        status, body = _mapped_job(gw, "update", "Leads", up["details"]["file_id"], mappings)  # type: ignore[index]
        if allowed:
            assert status == 201 and crm.received("/crm/bulk/v8/write"), body
        else:
            assert status == 400 and body["details"] == {
                "ids": [unknown],
                "reason": "state_unknown",
            }
            assert not crm.received("/crm/bulk/v8/write")


def test_a_field_mappings_default_value_naming_a_stopped_parent_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    stopped = next(r for r in crm.records("Leads") if r["$stop_processing"])
    status, up = _upload(gw, "Note_Content\nmapped\n")
    assert status == 200, up
    file_id = up["details"]["file_id"]  # type: ignore[index]
    parent = {"api_name": "Parent_Id", "default_value": {"value": stopped["id"]}}
    crm.clear()
    status, body = _mapped_job(gw, "insert", "Notes", file_id, [parent])
    assert status == 400 and body["details"] == {
        "ids": [stopped["id"]],
        "reason": "stop_processing",
    }
    assert not crm.received("/crm/bulk/v8/write")


def test_a_mapping_finding_a_gdpr_record_by_another_field_is_refused(
    crm: Crm, gw: GatewayHandle
) -> None:
    """A lookup or parent mapped with ``find_by`` another field (a note's parent found by
    the lead's Email) names records by values the gateway never sees; into a module
    without stop processing (a Contact's Account found by its name) it names no target."""
    status, up = _upload(gw, "Parent,Name\nsomeone@example.com,Acme\n")
    assert status == 200, up
    file_id = up["details"]["file_id"]  # type: ignore[index]
    crm.clear()
    by_email = {"api_name": "Parent_Id", "index": 0, "find_by": "Email"}
    status, body = _mapped_job(gw, "insert", "Notes", file_id, [by_email])
    assert status == 400 and body["details"] == {"reason": "unknown_targets"}
    assert not crm.received("/crm/bulk/v8/write")
    by_name = {"api_name": "Account_Name", "index": 1, "find_by": "Account_Name"}
    status, body = _mapped_job(gw, "insert", "Contacts", file_id, [by_name])
    assert status == 201 and crm.received("/crm/bulk/v8/write"), body


def test_the_crms_job_statuses_and_upload_receipt_pass_whole(crm: Crm, gw: GatewayHandle) -> None:
    """These answers carry no record and are checked by what they may hold
    (privacy/status_body.py): the CRM's own, for a bulk write, its upload, a bulk read and
    a mass update, reach the client whole, with nothing withheld."""
    lead = next(r for r in crm.records("Leads") if not r["$stop_processing"])
    up = gw.http.post(
        "/crm/v8/upload",
        files={"file": ("Leads.zip", _zip_csv(f"id,City\n{lead['id']},Bulk-Town\n"))},
        headers={"feature": "bulk-write"},
    )
    file_id = up.json()["details"]["file_id"]
    resource = {"type": "data", "module": {"api_name": "Leads"}, "file_id": file_id,
                "find_by": "id", "field_mappings": [{"api_name": "City", "index": 1}]}  # fmt: skip
    job = gw.http.post(
        "/crm/bulk/v8/write",
        content=orjson.dumps({"operation": "update", "resource": [resource]}),
    )
    read = gw.http.post("/crm/bulk/v8/read", json={"query": {"module": {"api_name": "Leads"}}})
    # a scheduled mass update (by custom view, which the gateway refuses) made at the CRM
    mass = crm.http.post(
        "/crm/v8/Leads/actions/mass_update",
        content=orjson.dumps({"data": [{"City": "Mass-Town"}], "cvid": "1"}),
    )
    paths = [
        f"/crm/bulk/v8/write/{job.json()['details']['id']}",
        f"/crm/bulk/v8/read/{read.json()['data'][0]['details']['id']}",
        f"/crm/v8/Leads/actions/mass_update?job_id={mass.json()['data'][0]['details']['job_id']}",
    ]
    answers = [(up, crm.received("/crm/v8/upload")[-1]["path"])]
    for path in paths:
        answers.append((gw.http.get(path), path))
    for r, path in answers:
        assert r.status_code == 200, (path, r.text)
        assert r.headers["x-privacy-withheld"] == "0", (path, r.text)
        if r is not up:
            assert r.json() == crm.http.get(path).json()
    assert up.json()["code"] == "FILE_UPLOAD_SUCCESS" and up.json()["message"]
    assert "unknown" not in gw.audit_text()
