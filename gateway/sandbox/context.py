"""Per-request context and the pieces every record route shares: the org behind the token,
module resolution, JSON bodies, paging and the version-dependent ``info`` block."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request

from .responses import SandboxError, invalid_body, invalid_module, invalid_url
from .schema import SUBFORM_MODULES, TOKEN_INFO_VERSIONS
from .store import OrgStore, Sandbox

MAX_PER_PAGE = 200


@dataclass
class Ctx:
    request: Request
    sandbox: Sandbox
    org: OrgStore
    version: str


def token_of(request: Request) -> str:
    return request.headers.get("authorization", "").partition(" ")[2].strip()


def context(request: Request) -> Ctx:
    sandbox: Sandbox = request.app.state.sandbox
    org = sandbox.orgs[Sandbox.org_of_token(token_of(request))]
    return Ctx(request, sandbox, org, str(request.path_params.get("version", "v2")))


def record_module(ctx: Ctx, name: str) -> str:
    """A module reachable through the record APIs (subform modules are not)."""
    if name.lower() in ("settings", "bulk", "actions"):
        raise invalid_url()  # an unknown settings/bulk path, not a module
    module = ctx.org.resolve_module(name)
    if module is None or module in SUBFORM_MODULES:
        raise invalid_module()
    return module


async def json_body(request: Request) -> Any:
    """The body as JSON whatever the Content-Type: the SDKs send none on writes."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_body("the body is not valid JSON") from None


def data_list(body: Any, limit: int) -> list[Any]:
    if not isinstance(body, dict) or "data" not in body:
        raise SandboxError(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            {"param": "data"},
        )
    data = body["data"]
    if not isinstance(data, list) or not data:
        raise SandboxError(
            400,
            "INVALID_DATA",
            "invalid data",
            {"api_name": "data", "expected_data_type": "jsonarray"},
        )
    if len(data) > limit:
        raise SandboxError(
            400, "LIMIT_EXCEEDED", "the number of records exceeds the limit", {"limit": limit}
        )
    return data


def split_ids(raw: str | None) -> list[str]:
    return [x.strip() for x in (raw or "").split(",") if x.strip()]


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"param_name": name}) from None
    if value < 1:
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"param_name": name})
    return value


def encode_token(page: int, per_page: int) -> str:
    return f"{page}:{per_page}".encode().hex()


def page_params(ctx: Ctx) -> tuple[int, int]:
    request = ctx.request
    token = request.query_params.get("page_token")
    if token and ctx.version in TOKEN_INFO_VERSIONS:
        try:
            page_s, per_s = bytes.fromhex(token).decode().split(":")
            return int(page_s), int(per_s)
        except (ValueError, UnicodeDecodeError):
            raise SandboxError(
                400, "INVALID_DATA", "invalid data", {"param_name": "page_token"}
            ) from None
    per_page = min(_int_param(request, "per_page", MAX_PER_PAGE), MAX_PER_PAGE)
    return _int_param(request, "page", 1), per_page


def info_block(
    ctx: Ctx,
    page: int,
    per_page: int,
    count: int,
    more: bool,
    sort_by: str = "id",
    sort_order: str = "asc",
) -> dict[str, Any]:
    if ctx.version not in TOKEN_INFO_VERSIONS:
        return {"per_page": per_page, "count": count, "page": page, "more_records": more}
    token = encode_token(page + 1, per_page) if more else None
    # Truncated to the hour so that pre-rendered pages stay byte-stable for a while.
    expiry = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    return {
        "call": False,
        "per_page": per_page,
        "next_page_token": token,
        "count": count,
        "sort_by": sort_by,
        "page": page,
        "previous_page_token": encode_token(page - 1, per_page) if page > 1 else None,
        "page_token_expiry": expiry.isoformat() if token else None,
        "sort_order": sort_order,
        "email": False,
        "more_records": more,
    }
