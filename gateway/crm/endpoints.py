"""Which CRM endpoint is this request? A pure function of method, path and one header.

The answer decides everything downstream: which responses carry records (and so must pass
the redactor), which requests must be guarded, and the route template the audit trail
writes (a template, never a path holding ids or values).

Fail closed: a path segment that is not one of the CRM's known non-record namespaces is
treated as a module, so its responses are redacted with that module's metadata; when the
CRM has no metadata for it, the request is refused rather than passed through unchecked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# kinds
PASS = "pass"  # no record data: org, settings, users, bulk job status
READ = "read"  # JSON with records of `module` in data[]
RELATED = "related"  # JSON with records of the related list's module
SEARCH = "search"
COQL = "coql"
BULK_READ_CREATE = "bulk_read_create"
BULK_READ_RESULT = "bulk_read_result"
INSERT = "insert"
UPDATE = "update"  # PUT /{module} with data[].id
UPSERT = "upsert"
CONVERT = "convert"
MASS_UPDATE = "mass_update"
RECORD_WRITE = "record_write"  # any other write naming one record: PUT /{id}, related writes
DELETE = "delete"
UPLOAD = "upload"
BULK_WRITE_CREATE = "bulk_write_create"
NOT_FOUND = "not_found"

WRITES = frozenset(
    {INSERT, UPDATE, UPSERT, CONVERT, MASS_UPDATE, RECORD_WRITE, UPLOAD, BULK_WRITE_CREATE}
)
RECORD_BEARING = frozenset({READ, RELATED, SEARCH, COQL, BULK_READ_RESULT})

_VERSION = re.compile(r"v\d{1,2}(\.\d{1,2})?")
# Namespaces that hold configuration, not records of GDPR modules.
_NON_RECORD = frozenset({"org", "users", "settings", "features", "__features"})
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_$.\-]{1,100}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: str
    route: str
    version: str | None = None
    module: str | None = None
    record_id: str | None = None
    related: str | None = None
    job_id: str | None = None


def classify(method: str, path: str) -> Endpoint:
    parts = path.split("/")[1:] if path.startswith("/") else []
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # one trailing slash
    # Every segment of the (percent-decoded) path must be a plain name: no empty segment,
    # no dot segment, no ';' parameters. The CRM or a proxy in front of it could otherwise
    # normalise a path the gateway passed as harmless ("/crm/v8/settings/../Leads",
    # "/crm/v8//Leads", "..;") into a record route that was never redacted.
    if not all(_SAFE_SEGMENT.fullmatch(p) and p.strip(".") for p in parts):
        return Endpoint(NOT_FOUND, "/{unknown}")
    if len(parts) < 2 or parts[0] != "crm":
        return Endpoint(NOT_FOUND, "/{unknown}")
    if parts[1] == "bulk":
        return _bulk(method, parts[2:])
    version = parts[1]
    if not _VERSION.fullmatch(version):
        return Endpoint(NOT_FOUND, "/crm/{unknown}")
    rest = parts[2:]
    if not rest or not rest[0]:
        return Endpoint(PASS, "/crm/{v}", version)
    head = rest[0]
    if head in _NON_RECORD:
        # settings/{name} is a fixed vocabulary; deeper segments are ids.
        tail = "/{name}" if len(rest) > 1 else ""
        return Endpoint(PASS, f"/crm/{{v}}/{head}{tail}", version)
    if head == "coql":
        return Endpoint(COQL if method == "POST" else NOT_FOUND, "/crm/{v}/coql", version)
    if head == "upload":
        return Endpoint(UPLOAD if method == "POST" else PASS, "/crm/{v}/upload", version)
    return _module(method, version, head, rest[1:])


def _module(method: str, v: str, module: str, rest: list[str]) -> Endpoint:
    base = "/crm/{v}/{module}"
    read = method in ("GET", "HEAD")
    if not rest:
        kind = {"GET": READ, "HEAD": READ, "POST": INSERT, "PUT": UPDATE, "DELETE": DELETE}
        return Endpoint(kind.get(method, NOT_FOUND), base, v, module)
    first = rest[0]
    if len(rest) == 1 and first in ("search", "deleted"):
        return Endpoint(
            (SEARCH if first == "search" else READ) if read else NOT_FOUND,
            f"{base}/{first}",
            v,
            module,
        )
    if len(rest) == 1 and first == "upsert":
        return Endpoint(UPSERT if method == "POST" else NOT_FOUND, f"{base}/upsert", v, module)
    if first == "actions":
        action = rest[1] if len(rest) > 1 else ""
        route = f"{base}/actions/{{action}}"
        if read:
            return Endpoint(READ, route, v, module)
        if action == "mass_update" and method == "POST":
            return Endpoint(MASS_UPDATE, f"{base}/actions/mass_update", v, module)
        # Other module-level actions (assign_territories, ...) process unknown targets.
        return Endpoint(RECORD_WRITE, route, v, module)
    record_id = first
    if len(rest) == 1:
        kind = {"GET": READ, "HEAD": READ, "PUT": RECORD_WRITE, "DELETE": DELETE}
        return Endpoint(kind.get(method, RECORD_WRITE), f"{base}/{{id}}", v, module, record_id)
    second = rest[1]
    if second == "actions":
        if len(rest) >= 3 and rest[2] == "convert" and method == "POST":
            return Endpoint(CONVERT, f"{base}/{{id}}/actions/convert", v, module, record_id)
        route = f"{base}/{{id}}/actions/{{action}}"
        return Endpoint(READ if read else RECORD_WRITE, route, v, module, record_id)
    route = f"{base}/{{id}}/{{related_list}}" + ("/{related_id}" if len(rest) > 2 else "")
    if read and (second == "photo" or (second == "Attachments" and len(rest) == 3)):
        # Files (a record's photo, an attachment's content) hold no field values.
        return Endpoint(PASS, route.replace("{related_list}", second.lower()), v, module, record_id)
    if read:
        return Endpoint(RELATED, route, v, module, record_id, related=second)
    if method == "DELETE":  # delink: erasure must stay possible
        return Endpoint(DELETE, route, v, module, record_id, related=second)
    return Endpoint(RECORD_WRITE, route, v, module, record_id, related=second)


def _bulk(method: str, rest: list[str]) -> Endpoint:
    if not rest or not _VERSION.fullmatch(rest[0]):
        return Endpoint(NOT_FOUND, "/crm/bulk/{unknown}")
    v, rest = rest[0], rest[1:]
    if rest[:1] == ["read"]:
        if len(rest) == 1:
            return Endpoint(
                BULK_READ_CREATE if method == "POST" else NOT_FOUND, "/crm/bulk/{v}/read", v
            )
        job = rest[1]
        if len(rest) == 2:
            return Endpoint(PASS, "/crm/bulk/{v}/read/{job_id}", v, job_id=job)
        if len(rest) == 3 and rest[2] == "result":
            return Endpoint(BULK_READ_RESULT, "/crm/bulk/{v}/read/{job_id}/result", v, job_id=job)
        return Endpoint(NOT_FOUND, "/crm/bulk/{v}/read/{unknown}", v)
    if rest[:1] == ["write"]:
        if len(rest) == 1 and method == "POST":
            # The file was checked at upload; the job decides how rows find their targets.
            return Endpoint(BULK_WRITE_CREATE, "/crm/bulk/{v}/write", v)
        return Endpoint(PASS, "/crm/bulk/{v}/write" + ("/{job_id}" if len(rest) > 1 else ""), v)
    return Endpoint(NOT_FOUND, "/crm/bulk/{v}/{unknown}", v)
