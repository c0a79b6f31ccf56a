"""Tenth red team: bulk-read results, searches, and metadata that fails or changes.

Every test drives the real gateway over HTTP, against the sandbox CRM or against a CRM
that is the sandbox in front of which one answer (a bulk-read job's status or result) is
whatever the test sets, byte for byte (``HostileCrm``).

Part (A): FINDINGS, each failing against 4bd953f, fixed in the commit that added this file.
Part (B): attacks that HELD, kept as coverage.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.adversarial.conftest import Marked, field_metadata, no_mark, send, set_field_metadata
from tests.conftest import AUTH, Crm, GatewayHandle, MakeGateway, envelope
from tests.edge.conftest import wait_for
from tests.servers import serve

MARK = "rt10-mark-3f9a@example.com"
JOB = "5725767000009990001"
RESULT = f"/crm/bulk/v8/read/{JOB}/result"


# -- a CRM that is the sandbox but for one bulk-read job ------------------------------------


@dataclass
class HostileCrm:
    """The sandbox, except for bulk-read job ``JOB``: its status names ``module`` and
    ``fields``, its result is ``result`` byte for byte."""

    sandbox: str
    result: bytes = b""
    module: str = "Leads"
    fields: list[str] = field(default_factory=lambda: ["Last_Name", "Email"])
    headers: dict[str, str] = field(default_factory=dict)
    #: lower-case module -> the body its field metadata is answered with instead
    fields_answer: dict[str, bytes] = field(default_factory=dict)

    def app(self) -> Starlette:
        client = httpx.AsyncClient(base_url=self.sandbox, timeout=30)

        async def status(request: Request) -> Response:
            query = {"module": {"api_name": self.module}, "fields": self.fields}
            job = {"id": JOB, "operation": "read", "state": "COMPLETED", "query": query}
            return Response(orjson.dumps({"data": [job]}), media_type="application/json")

        async def result(_: Request) -> Response:
            return Response(self.result, media_type="application/zip", headers=self.headers)

        async def proxy(request: Request) -> Response:
            wanted = request.query_params.get("module", "").lower()
            if request.url.path.endswith("/settings/fields") and wanted in self.fields_answer:
                return Response(self.fields_answer[wanted], media_type="application/json")
            keep = ("authorization", "x-crm-org", "content-type")
            r = await client.request(
                request.method,
                request.url.path,
                params=request.url.query,
                headers={k: v for k, v in request.headers.items() if k in keep},
                content=await request.body(),
            )
            hdrs = {"content-type": r.headers.get("content-type", "application/json")}
            return Response(r.content, r.status_code, headers=hdrs)

        return Starlette(
            routes=[
                Route(f"/crm/bulk/{{v}}/read/{JOB}", status),
                Route(f"/crm/bulk/{{v}}/read/{JOB}/result", result),
                Route("/{path:path}", proxy, methods=["GET", "POST", "PUT", "DELETE"]),
            ]
        )


@pytest.fixture
def hostile(crm: Crm) -> Iterator[tuple[HostileCrm, str]]:
    fake = HostileCrm(crm.url)
    with serve(fake.app()) as upstream:
        yield fake, upstream.url


def _zip(*members: tuple[str, str], comment: bytes = b"") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members:
            zf.writestr(name, text.encode())
        zf.comment = comment
    return out.getvalue()


def _csvs(answer: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(answer)) as zf:
        return {n: zf.read(n).decode("utf-8-sig") for n in zf.namelist()}


def _fetch(gw: GatewayHandle) -> tuple[int, bytes]:
    """The export as the client gets it; a cut-short one ends in RemoteProtocolError."""
    body = b""
    try:
        with gw.http.stream("GET", RESULT) as r:
            for chunk in r.iter_bytes():
                body += chunk
    except httpx.RemoteProtocolError:
        return -1, body
    return r.status_code, body


def _result_entry(gw: GatewayHandle) -> dict[str, Any]:
    found: list[dict[str, Any]] = wait_for(
        lambda: [e for e in gw.requests() if e["route"].endswith("/result")]
    )
    return found[-1]


def _patched(data: bytes, local_at: int, central_at: int, value: int) -> bytes:
    """``data`` with one 2-byte field of the first member's local and central headers set."""
    out = bytearray(data)
    struct.pack_into("<H", out, out.find(b"PK\x03\x04") + local_at, value)
    struct.pack_into("<H", out, out.find(b"PK\x01\x02") + central_at, value)
    return bytes(out)


def _encrypted(data: bytes) -> bytes:
    return _patched(data, 6, 8, 0x0001)  # general purpose flag: bit 0, encrypted


def _deflate64(data: bytes) -> bytes:
    return _patched(data, 8, 10, 9)  # compression method 9: Deflate64, which zipfile lacks


def _corrupt_deflate(data: bytes) -> bytes:
    out = bytearray(data)
    at = out.find(b"PK\x03\x04")
    names, extra = struct.unpack_from("<HH", out, at + 26)
    start = at + 30 + names + extra
    out[start : start + 3] = b"\xff\xff\xff"  # an invalid deflate block type
    return bytes(out)


def _with_member_comment(text: str, comment: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(f"{JOB}.csv", (2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.comment = comment
        zf.writestr(info, text.encode())
    return out.getvalue()


def _with_extra_field(text: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(f"{JOB}.csv", (2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.extra = struct.pack("<HH", 0xCAFE, len(data)) + data  # a vendor's extra field
        zf.writestr(info, text.encode())
    return out.getvalue()


# =========================================================================================
# (A) FINDINGS: these fail against 4bd953f
# =========================================================================================


def test_a_bulk_criteria_node_that_is_a_group_and_a_criterion_is_checked_as_both(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """LEAK (a refused criterion reaches the CRM). catalog.py ``criteria_object_paths``
    (catalog.py:358-363): a node with a ``group`` member, read in any letter case, is taken
    as a group and ``continue``s, so its own ``api_name``/``field`` is never checked. The
    sandbox (like any CRM that reads member names exactly) sees no ``group`` in ``Group``
    and runs the node as the criterion ``Email equal <value>``: the job's ``result.count``
    tells whether a lead holds that e-mail. A correct gateway checks every field a node
    names, whichever way the CRM reads it (or refuses a node that is both)."""
    email = marked.lead["Email"]
    body = {"query": {"module": {"api_name": "Leads"}, "fields": ["Last_Name"], "criteria": {
        "Group": [{"api_name": "Last_Name", "comparator": "not_equal", "value": "zzz"}],
        "group_operator": "and",
        "api_name": "Email", "comparator": "equal", "value": email}}}  # fmt: skip
    # setup: the same criterion alone is refused
    alone = {"query": {"module": {"api_name": "Leads"}, "criteria": {
        "api_name": "Email", "comparator": "equal", "value": email}}}  # fmt: skip
    envelope(send(gw, "POST", "/crm/bulk/v8/read", alone), 400, "INVALID_QUERY")
    crm.clear()
    r = send(gw, "POST", "/crm/bulk/v8/read", body)
    reached = [x for x in crm.received("/crm/bulk/") if email in x["body"]]
    assert r.status_code == 400 and not reached, (r.status_code, r.text[:300])
    marked.assert_audit_clean(gw)


@pytest.mark.parametrize("route", ["search", "actions/count"])
def test_a_word_search_is_refused_where_a_lookups_name_is_restricted(
    crm: Crm, make_gateway: MakeGateway, route: str
) -> None:
    """LEAK (a refused criterion reaches the CRM). The gateway holds that the CRM matches a
    lookup by its target's name (a ``criteria`` on ``Contact_Name`` is refused as
    ``Contact_Name.Full_Name`` when Contacts' name field is restricted, guards.py
    ``_looked_up_name``) and that ``word=`` looks into lookups (guards.py
    ``WORD_SEARCHABLE`` has ``lookup``). Yet ``check_search_params`` (guards.py:125-128)
    only refuses ``word=`` for the module's *own* restricted fields: a word search on
    Deals, whose Contact_Name names contacts whose Full_Name is restricted, goes to the CRM,
    an oracle on the restricted name. A correct gateway refuses ``word=`` there as it
    refuses the criterion (unless ``search.allow_word_search``)."""
    gw = make_gateway({"modules": {"Contacts": {"private": {"Last_Name": "restricted"}}}})
    contact = crm.records("Contacts")[0]
    name = contact["Last_Name"]
    # setup: the criterion on the lookup is refused, as the name field is restricted
    on_lookup = {"criteria": f"(Contact_Name:equals:{name})"}
    refused = gw.http.get("/crm/v8/Deals/search", params=on_lookup)
    assert envelope(refused, 400, "INVALID_QUERY")["api_name"] == "Contact_Name.Full_Name"
    crm.clear()
    r = gw.http.get(f"/crm/v8/Deals/{route}", params={"word": name})
    assert r.status_code == 400 and not crm.received("/Deals/"), (r.status_code, r.text[:200])
    assert name not in gw.audit_text()


def test_a_subform_column_in_a_bulk_export_is_not_passed_on_unchecked(
    hostile: tuple[HostileCrm, str], make_gateway: MakeGateway
) -> None:
    """LEAK (enforce). A CSV column named after a subform field (``Visits``) is kept:
    ``path_mask`` resolves ``Visits`` to a field that is not itself private and returns
    None (redact.py:583, via handlers/bulk.py:230 ``_blanker``). A subform's value is rows of
    another module (Lead_Visits, whose Notes are restricted): no cell of it is a value of a
    Leads field the gateway could judge. The JSON path nulls a subform whose rows cannot be
    checked and redacts the rows otherwise; the export hands the cells out as the CRM wrote
    them. A correct gateway empties (or refuses) a column whose cells it cannot judge, as
    it does for a header it cannot resolve."""
    fake, url = hostile
    fake.fields = ["Last_Name", "Visits"]
    fake.result = _zip((f"{JOB}.csv", f"id,Last_Name,Visits\r\n1,Doe,{MARK}\r\n"))
    gw = make_gateway(upstream=url)
    status, body = _fetch(gw)
    assert MARK.encode() not in body
    if status == 200:
        assert MARK not in "".join(_csvs(body).values())
    assert MARK not in gw.audit_text()


def test_a_bulk_exports_member_name_is_not_the_crms_text_passed_on(
    hostile: tuple[HostileCrm, str], make_gateway: MakeGateway
) -> None:
    """LEAK (enforce). The rewritten ZIP names its member ``member.filename`` as the CRM's
    ZIP did (bulk.py:296 ``zipfile.ZipInfo(member.filename, ...)``): text no check looks
    at, in front of every byte the gateway did check. The CRM names its CSV
    ``<job id>.csv``; a correct gateway names the member itself (or refuses a name that
    is not that), so nothing unverified passes."""
    fake, url = hostile
    fake.result = _zip((f"{MARK}.csv", f"id,Last_Name,Email\r\n1,Doe,{MARK}\r\n"))
    gw = make_gateway(upstream=url)
    status, body = _fetch(gw)
    assert status in (200, 502), status
    assert MARK.encode() not in body


@pytest.mark.parametrize("where", ["archive-comment", "member-comment", "extra-field"])
@pytest.mark.parametrize("mode", ["shadow", "off"])
def test_bytes_of_a_zip_no_check_reads_are_not_passed_on_in_shadow_or_off(
    hostile: tuple[HostileCrm, str], make_gateway: MakeGateway, mode: str, where: str
) -> None:
    """LEAK (shadow and off). Those modes pass the CRM's file on byte for byte
    (handlers/bulk.py:172 sends the copy) once bulk.py:87 ``every_byte_listed`` and a dry
    rewrite have passed it, which check the entries' data and the CSV but not the ZIP's
    comment, a member's comment or its extra field (all read by ordinary unzippers:
    ``unzip -z``, ``ZipFile.comment``). README
    "unreadable_upstream ... fails closed in every mode" and red teams 4 and 8 (hidden
    entries, an unjudged repeated ``data``): what the gateway could not check is withheld
    in every mode. A correct gateway refuses (502) a file carrying such bytes, or sends
    the rewritten ZIP."""
    fake, url = hostile
    text = "id,Last_Name\r\n1,Doe\r\n"
    fake.result = {
        "archive-comment": _zip((f"{JOB}.csv", text), comment=MARK.encode()),
        "member-comment": _with_member_comment(text, MARK.encode()),
        "extra-field": _with_extra_field(text, MARK.encode()),
    }[where]
    gw = make_gateway({"rules": {"redact": mode}}, upstream=url)
    status, body = _fetch(gw)
    assert status in (200, 502), status
    assert MARK.encode() not in body


@pytest.mark.parametrize("damage", ["encrypted", "deflate64", "corrupt-deflate"])
def test_a_result_zip_the_gateway_cannot_read_is_502_unreadable_not_500(
    hostile: tuple[HostileCrm, str], make_gateway: MakeGateway, damage: str
) -> None:
    """500 for the CRM's fault. A member that is encrypted (``RuntimeError``), packed with
    a method zipfile lacks (``NotImplementedError``) or whose deflate data is corrupt
    (``zlib.error``) escapes bulk.py ``_UNREADABLE`` (bulk.py:51, which lists BadZipFile,
    csv.Error, ... only): the client gets 500 GATEWAY_INTERNAL_ERROR and the audit
    ``error``, blaming the gateway. Contract §2/§6 and README "unreadable_upstream": an
    answer that cannot be read is 502 GATEWAY_UNREADABLE_UPSTREAM."""
    fake, url = hostile
    good = _zip((f"{JOB}.csv", f"id,Last_Name,Email\r\n1,Doe,{MARK}\r\n"))
    fake.result = {"encrypted": _encrypted, "deflate64": _deflate64,
                   "corrupt-deflate": _corrupt_deflate}[damage](good)  # fmt: skip
    gw = make_gateway(upstream=url)
    r = gw.http.get(RESULT)
    assert MARK.encode() not in r.content
    envelope(r, 502, "GATEWAY_UNREADABLE_UPSTREAM")
    assert "unreadable_upstream" in _result_entry(gw)["reasons"]


# =========================================================================================
# (B) HELD: attacks that did not get through, kept as coverage
# =========================================================================================


class _Stream:
    """A write-only file object: zipfile writes data descriptors to it."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)

    def flush(self) -> None:
        pass


def _stored(text: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{JOB}.csv", text.encode())
    return out.getvalue()


def _streamed(text: str) -> bytes:
    """Written to a stream that cannot seek: sizes follow the data in a descriptor."""
    out = _Stream()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:  # type: ignore[arg-type]
        zf.writestr(f"{JOB}.csv", text.encode())
    return bytes(out.data)


def _zip_form(form: str, text: str) -> bytes:
    if form == "two-members":
        return _zip((f"{JOB}.csv", text), ("more.CSV", f"\ufeffLast_Name, Email \r\nX,{MARK}\r\n"))
    if form == "same-name-twice":
        return _zip((f"{JOB}.csv", "id,Last_Name\r\n1,Doe\r\n"), (f"{JOB}.csv", text))
    return {"stored": _stored, "data-descriptor": _streamed, "zip64": _zip64}[form](text)


def _zip64(text: str) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open(f"{JOB}.csv", "w", force_zip64=True) as member,
    ):
        member.write(text.encode())
    return out.getvalue()


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    "form", ["two-members", "same-name-twice", "stored", "data-descriptor", "zip64"]
)
def test_held_every_member_of_every_zip_form_is_blanked(
    hostile: tuple[HostileCrm, str], make_gateway: MakeGateway, form: str
) -> None:
    fake, url = hostile
    fake.result = _zip_form(form, f"id,Last_Name,Email\r\n1,Doe,{MARK}\r\n")
    with zipfile.ZipFile(io.BytesIO(fake.result)) as zf:  # setup: the value is in the file
        assert any(MARK in zf.read(i).decode("utf-8-sig") for i in zf.infolist())
    gw = make_gateway(upstream=url)
    status, body = _fetch(gw)
    assert status == 200, (status, body[:200])
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        texts = [zf.read(i).decode() for i in zf.infolist()]
    assert texts and all(t.startswith(("id,", "\ufeffLast_Name", "Last_Name")) for t in texts)
    assert not any(MARK in t for t in texts)
    assert _result_entry(gw)["fields_withheld"]["names"] == ["Email"]


def test_held_a_zip_inside_a_member_named_csv_is_refused(
    hostile: tuple[HostileCrm, str], make_gateway: MakeGateway
) -> None:
    fake, url = hostile
    inner = _zip((f"{JOB}.csv", f"id,Email\r\n1,{MARK}\r\n"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{JOB}.csv", inner)  # stored: the inner ZIP's name bytes are in clear
    fake.result = out.getvalue()
    assert MARK.encode() in zipfile.ZipFile(io.BytesIO(inner)).read(f"{JOB}.csv")
    gw = make_gateway(upstream=url)
    status, body = _fetch(gw)
    assert status in (-1, 502), status
    assert MARK.encode() not in body


def test_held_a_deleted_records_display_name_is_withheld(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """The recycle bin names a deleted lead by its Full_Name (First_Name is private)."""
    lead = marked.lead
    assert gw.http.delete(f"/crm/v8/Leads/{lead['id']}").status_code == 200
    direct = crm.http.get("/crm/v8/Leads/deleted").json()["data"]
    (row,) = [d for d in direct if d["id"] == lead["id"]]
    assert row["display_name"] and lead["First_Name"] in row["display_name"]  # setup
    r = gw.http.get("/crm/v8/Leads/deleted", params={"type": "recycle"})
    assert r.status_code == 200, r.text
    (got,) = [d for d in r.json()["data"] if d["id"] == lead["id"]]
    assert got["display_name"] is None
    no_mark(r, row["display_name"])


@pytest.mark.parametrize(
    "criteria",
    [
        "((((((((((((Email:equals:x))))))))))))",
        "(Last_Name:equals:a\\)or\\(Email:equals:b)",
        "(Last_Name:equals:a)OR(eMaIl:EQUALS:b)",
        "(Visits.Notes:starts_with:m)",
        "(Referrer.Email:equals:x)",
        "(Em%2561il:equals:x)",
        "($stop_processing:equals:true)",
        "(Email\\:x:equals:y)",
    ],
    ids=[
        "deep-parens",
        "escaped-or",
        "odd-case",
        "subform-path",
        "lookup-path",
        "double-encoded",
        "dollar-field",
        "escaped-colon",
    ],
)
def test_held_odd_criteria_on_restricted_fields_never_reach_the_crm(
    crm: Crm, gw: GatewayHandle, criteria: str
) -> None:
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search", params={"criteria": criteria})
    envelope(r, 400, "INVALID_QUERY")
    assert not crm.received("/search")


def test_held_a_field_made_restricted_is_guarded_once_the_metadata_ttl_has_passed(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """policies/README ``metadata.ttl_seconds``: the CRM's metadata is trusted that long.
    Within it a criterion on a field made restricted since is forwarded (documented); once
    it has passed, the next request reads the new metadata and refuses it."""
    gw = make_gateway({"metadata": {"ttl_seconds": 1, "max_stale_seconds": 1}})
    search = {"criteria": "(Company:equals:Acme)", "fields": "Last_Name"}
    crm.clear()
    first = gw.http.get("/crm/v8/Leads/search", params=search)
    assert first.status_code in (200, 204) and crm.received("/search")  # setup: public
    fields = field_metadata(crm, "Leads")
    for f in fields:
        if f["api_name"] == "Company":
            f["private"] = {"restricted": True, "type": "High", "export": True}
    set_field_metadata(crm, "Leads", fields)
    wait_for(lambda: gw.http.get("/crm/v8/Leads/search", params=search).status_code == 400)
    crm.clear()
    r = gw.http.get("/crm/v8/Leads/search", params=search)
    assert envelope(r, 400, "INVALID_QUERY")["api_name"] == "Company"
    assert not crm.received("/search")


def test_held_metadata_that_fails_for_one_module_fails_only_what_needs_it(
    hostile: tuple[HostileCrm, str], make_gateway: MakeGateway, crm: Crm, marked: Marked
) -> None:
    """Contacts' field metadata is malformed: a Leads read (its Referrer looks Contacts up)
    is 503 and never fetched; Accounts, which needs no Contacts metadata, is served."""
    fake, url = hostile
    fake.fields_answer["contacts"] = orjson.dumps(
        {"fields": [{"api_name": "Email", "data_type": "email", "private": "yes"}]}
    )
    gw = make_gateway(upstream=url)
    crm.clear()
    r = gw.http.get(f"/crm/v8/Leads/{marked.lead['id']}", params={"fields": "Last_Name,Email"})
    envelope(r, 503, "GATEWAY_METADATA_UNAVAILABLE")
    marked.assert_clean(r)
    assert not crm.received("/crm/v8/Leads")
    ok = gw.http.get("/crm/v8/Accounts", params={"fields": "Account_Name"})
    assert ok.status_code == 200 and ok.json()["data"], ok.text[:200]


def test_held_concurrent_cold_requests_share_one_metadata_fetch_and_are_all_redacted(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    import concurrent.futures

    crm.fault(path_contains="/settings/fields", method="GET", delay=0.5)
    crm.clear()
    url = f"{gw.url}/crm/v8/Leads/{marked.lead['id']}"

    def one(_: int) -> httpx.Response:
        return httpx.get(url, params={"fields": "Last_Name,Email,Mobile"}, headers=AUTH, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(6)))
    for r in answers:
        assert r.status_code == 200, r.text[:200]
        assert r.json()["data"][0]["Email"] is None
        marked.assert_clean(r)
    fetched = [x for x in crm.received("/settings/fields") if "module=Leads" in x["query"]]
    assert len(fetched) == 1, fetched
