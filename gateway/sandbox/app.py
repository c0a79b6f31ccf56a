"""Routing: the CRM's URL space and the admin controls, on one Starlette app per sandbox.

Specific routes come before the generic ``/{module}/{id}`` ones so that ``settings``,
``search``, ``deleted``, ``upsert`` and ``actions`` are never read as record ids. The
middleware spells path keywords canonically first, so routing is case-insensitive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import (
    admin,
    bulk_read,
    bulk_write,
    composite,
    convert,
    custom_views,
    meta_routes,
    reads,
    related,
    upsert,
    writes,
)
from .middleware import SandboxMiddleware
from .responses import SandboxError, error_response, invalid_url
from .store import Sandbox

Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(table: dict[str, Endpoint]) -> Endpoint:
    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return dispatch


def _route(path: str, table: dict[str, Endpoint]) -> Route:
    return Route(path, by_method(table), methods=list(table))


async def _sandbox_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SandboxError)
    return error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err = SandboxError(
            400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one"
        )
    elif exc.status_code == 404:
        err = invalid_url()
    else:
        err = SandboxError(exc.status_code, "INVALID_REQUEST", str(exc.detail))
    return error_response(request, err)


def routes() -> list[BaseRoute]:
    crm = "/crm/{version}"
    bulk = "/crm/bulk/{version}"
    rec = crm + "/{module}"
    return [
        _route("/_sandbox/reset", {"POST": admin.reset}),
        _route("/_sandbox/requests", {"GET": admin.requests_log, "DELETE": admin.requests_log}),
        _route("/_sandbox/privacy", {"POST": admin.privacy}),
        _route("/_sandbox/config", {"GET": admin.config, "POST": admin.config}),
        _route(
            "/_sandbox/faults", {"GET": admin.faults, "POST": admin.faults, "DELETE": admin.faults}
        ),
        _route("/_sandbox/metadata/{org}/{module}", {"POST": admin.metadata}),
        _route("/_sandbox/records/{org}/{module}", {"POST": admin.add_record}),
        _route("/_sandbox/custom_views/{org}/{module}", {"POST": admin.add_custom_view}),
        _route(
            "/_sandbox/records/{org}/{module}/{id}", {"GET": admin.record, "POST": admin.record}
        ),
        _route(bulk + "/read", {"POST": bulk_read.create_read}),
        _route(bulk + "/read/{job_id}", {"GET": bulk_read.read_status}),
        _route(bulk + "/read/{job_id}/result", {"GET": bulk_read.read_result}),
        _route(bulk + "/write", {"POST": bulk_write.create_write}),
        _route(bulk + "/write/{job_id}", {"GET": bulk_write.write_status}),
        _route(bulk + "/write/{job_id}/result", {"GET": bulk_write.write_result}),
        _route(crm + "/org", {"GET": meta_routes.org_details}),
        _route(crm + "/users", {"GET": meta_routes.users}),
        _route(crm + "/settings/modules", {"GET": meta_routes.modules}),
        _route(crm + "/settings/fields", {"GET": meta_routes.fields}),
        _route(crm + "/settings/related_lists", {"GET": meta_routes.related_lists}),
        _route(crm + "/settings/custom_views", {"GET": custom_views.list_views}),
        _route(crm + "/settings/custom_views/{id}", {"GET": custom_views.get_view}),
        _route(crm + "/coql", {"POST": reads.coql}),
        _route(crm + "/upload", {"POST": bulk_write.upload}),
        _route(crm + "/__composite_requests", {"POST": composite.composite_requests}),
        _route(
            rec,
            {
                "GET": reads.list_records,
                "POST": writes.insert_records,
                "PUT": writes.update_records,
                "DELETE": writes.delete_records,
            },
        ),
        _route(rec + "/search", {"GET": reads.search_records}),
        _route(rec + "/deleted", {"GET": reads.deleted_records}),
        _route(rec + "/upsert", {"POST": upsert.upsert_records}),
        _route(rec + "/actions/count", {"GET": reads.count_records}),
        _route(
            rec + "/actions/mass_update",
            {"POST": writes.mass_update, "GET": writes.mass_update_status},
        ),
        _route(
            rec + "/{id}",
            {
                "GET": reads.get_record,
                "PUT": writes.update_records,
                "DELETE": writes.delete_records,
            },
        ),
        _route(rec + "/{id}/actions/convert", {"POST": convert.convert_lead}),
        _route(
            rec + "/{id}/{related}",
            {"GET": related.related_records, "PUT": related.relate, "DELETE": related.relate},
        ),
        _route(
            rec + "/{id}/{related}/{related_id}",
            {"PUT": related.relate, "DELETE": related.relate},
        ),
    ]


def build_app(seed: int = 42, *, gzip: bool = False) -> Starlette:
    sandbox = Sandbox(seed=seed, initial_gzip=gzip)
    app = Starlette(
        routes=routes(),
        middleware=[Middleware(SandboxMiddleware, sandbox=sandbox)],
        exception_handlers={SandboxError: _sandbox_error, HTTPException: _http_error},
    )
    app.state.sandbox = sandbox
    return app
