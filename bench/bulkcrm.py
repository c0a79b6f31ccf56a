"""A CRM with one module (Leads: ``id`` and 19 fields, 5 of them private) whose bulk-read
jobs serve ZIPs generated on disk: for the bulk benchmark and the tests of large or broken
exports (the sandbox holds its exports in memory).

    make_zip(path, rows)              # a result ZIP of `rows` generated rows
    serve(jobs) -> ThreadedServer     # jobs: job id -> ZIP path
"""

from __future__ import annotations

import csv
import io
import time
import zipfile
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from gateway.serving import ThreadedServer

COLUMNS = ["id", *(f"Field_{i:02}" for i in range(1, 20))]
#: 5 of the 20 columns are private (restricted, exported blank)
PRIVATE = frozenset({"Field_02", "Field_04", "Field_08", "Field_12", "Field_16"})
_PRIVATE = {"restricted": True, "type": "High", "export": True}


def row(n: int) -> list[str]:
    """Row n: about 350 bytes of CSV that compress about 5:1, like a real export."""
    h = n * 2654435761 % 4294967296
    return [str(4_000_000_000 + n), *(f"value {i} of {h >> i:x}" for i in range(1, 20))]


def make_zip(path: Path, rows: int, *, extra: dict[int, list[str]] | None = None) -> Path:
    """A result ZIP of ``rows`` generated rows; ``extra`` replaces row n by another row
    (a row wider than the header, say)."""
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("1000.csv", "w", force_zip64=True) as raw,
        io.TextIOWrapper(io.BufferedWriter(raw, 1 << 16), encoding="utf-8", newline="") as text,
    ):
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for n in range(rows):
            writer.writerow((extra or {}).get(n) or row(n))
    return path


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def app(jobs: dict[str, Path], sent: list[float] | None = None) -> Starlette:
    """``sent`` gains the time (``perf_counter``) each result ZIP was sent in full."""

    async def org(_: Request) -> Response:
        return _json({"org": [{"id": "1", "privacy_settings": True}]})

    async def modules(_: Request) -> Response:
        return _json({"modules": [{"api_name": "Leads", "generated_type": "default"}]})

    async def fields(_: Request) -> Response:
        return _json(
            {
                "fields": [
                    {
                        "api_name": c,
                        "data_type": "text",
                        "private": _PRIVATE if c in PRIVATE else None,
                    }
                    for c in COLUMNS
                ]
            }
        )

    async def status(request: Request) -> Response:
        query = {"module": {"api_name": "Leads"}, "fields": COLUMNS}
        job = {"id": request.path_params["job"], "state": "COMPLETED", "query": query}
        return _json({"data": [job]})

    async def result(request: Request) -> Response:
        path = jobs.get(request.path_params["job"])
        if path is None:
            return Response(b'{"code":"INVALID_DATA"}', 400, media_type="application/json")
        done = None if sent is None else BackgroundTask(lambda: sent.append(time.perf_counter()))
        return FileResponse(path, media_type="application/zip", background=done)

    return Starlette(
        routes=[
            Route("/crm/{v}/org", org),
            Route("/crm/{v}/settings/modules", modules),
            Route("/crm/{v}/settings/fields", fields),
            Route("/crm/bulk/{v}/read/{job}", status),
            Route("/crm/bulk/{v}/read/{job}/result", result),
        ]
    )


def serve(jobs: dict[str, Path], sent: list[float] | None = None) -> ThreadedServer:
    return ThreadedServer(app(jobs, sent)).start()
