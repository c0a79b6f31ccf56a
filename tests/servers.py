"""Real servers for tests: the gateway's own threaded uvicorn runner, on 127.0.0.1, and the
metadata routes of the small fake CRMs some tests put behind it."""

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.serving import ThreadedServer, free_port, serve

__all__ = ["ThreadedServer", "free_port", "metadata_routes", "serve"]


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def metadata_routes(fields: list[dict[str, Any]]) -> list[Route]:
    """A fake CRM's org (privacy settings on), modules (Leads, Contacts) and fields:
    ``fields`` in every module, and in Leads a ``Referrer`` lookup into Contacts."""

    async def org(_: Request) -> Response:
        return _json({"org": [{"id": "1", "privacy_settings": True}]})

    async def modules(_: Request) -> Response:
        names = ("Leads", "Contacts")
        return _json({"modules": [{"api_name": n, "generated_type": "default"} for n in names]})

    async def fields_of(request: Request) -> Response:
        rows = list(fields)
        if request.query_params.get("module", "").lower() == "leads":
            rows.append(
                {
                    "api_name": "Referrer",
                    "data_type": "lookup",
                    "private": None,
                    "lookup": {"module": {"api_name": "Contacts"}},
                }
            )
        return _json({"fields": rows})

    return [
        Route("/crm/{v}/org", org),
        Route("/crm/{v}/settings/modules", modules),
        Route("/crm/{v}/settings/fields", fields_of),
    ]
