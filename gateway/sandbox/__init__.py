"""A Zoho CRM sandbox: the raw upstream the gateway protects, played faithfully.

It answers the CRM's REST API (``/crm/{v}/...``, v2 to v8) over seeded in-memory data for
two orgs, with the CRM's shapes, paging, errors and per-record write answers. It does not
enforce privacy: that is the gateway's job. ``/_sandbox/...`` holds test controls.
"""

from __future__ import annotations

from starlette.applications import Starlette

from .app import build_app

__all__ = ["create_app", "run"]


def create_app(seed: int = 42, *, gzip: bool = False) -> Starlette:
    """A new sandbox app with its own freshly seeded state."""
    return build_app(seed, gzip=gzip)


def run(host: str = "127.0.0.1", port: int = 8081, seed: int = 42) -> None:
    """Serve the sandbox with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(seed), host=host, port=port, access_log=False)
