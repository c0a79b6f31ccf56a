"""Errors the gateway itself answers with.

Every error leaves the gateway in the CRM's own envelope
``{"code", "details", "message", "status": "error"}`` with an honest HTTP status:

    GatewayError                      any refusal or failure the gateway reports itself
    ├── UpstreamUnreachable   502     GATEWAY_UPSTREAM_UNREACHABLE
    ├── UpstreamTimeout       504     GATEWAY_UPSTREAM_TIMEOUT
    ├── UnreadableUpstream    502     GATEWAY_UNREADABLE_UPSTREAM (a body we could not check)
    ├── MetadataUnavailable   503     GATEWAY_METADATA_UNAVAILABLE (fail closed)
    ├── BodyTooLarge          413     GATEWAY_BODY_TOO_LARGE
    ├── InvalidQuery          400     INVALID_QUERY (criteria, COQL)
    └── InvalidData           400     INVALID_DATA (a malformed request)

Foreign exceptions (aiohttp, httpx, orjson, zlib) are translated into these at exactly one
boundary each (``raise UpstreamTimeout() from exc``). Messages never echo request values
or record values: they are fixed strings, and ``details`` carries only field names, ids
and reasons.
"""

from __future__ import annotations

from typing import Any

import orjson


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CRM's error envelope, keys in the CRM's order."""
    return {"code": code, "details": details or {}, "message": message, "status": "error"}


class GatewayError(Exception):
    status_code = 500
    code = "GATEWAY_INTERNAL_ERROR"
    message = "The gateway could not complete the request."
    #: A short machine-readable reason for the audit trail (never a value from the request).
    reason = "error"

    def __init__(
        self,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        status_code: int | None = None,
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        if message is not None:
            self.message = message
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        if reason is not None:
            self.reason = reason
        self.details: dict[str, Any] = details or {}
        super().__init__(self.message)

    def body(self) -> bytes:
        return orjson.dumps(envelope(self.code, self.message, self.details))


class UpstreamUnreachable(GatewayError):
    status_code = 502
    code = "GATEWAY_UPSTREAM_UNREACHABLE"
    message = "The CRM could not be reached."
    reason = "upstream_unreachable"


class UpstreamTimeout(GatewayError):
    status_code = 504
    code = "GATEWAY_UPSTREAM_TIMEOUT"
    message = "The CRM did not answer in time."
    reason = "upstream_timeout"


class UnreadableUpstream(GatewayError):
    status_code = 502
    code = "GATEWAY_UNREADABLE_UPSTREAM"
    message = "The CRM's answer could not be checked for private data, so it was withheld."
    reason = "unreadable_upstream"


class MetadataUnavailable(GatewayError):
    status_code = 503
    code = "GATEWAY_METADATA_UNAVAILABLE"
    message = "Field privacy metadata is unavailable; record data is withheld."
    reason = "metadata_unavailable"


class BodyTooLarge(GatewayError):
    status_code = 413
    code = "GATEWAY_BODY_TOO_LARGE"
    message = "The body is larger than the gateway accepts."
    reason = "body_too_large"


class InvalidQuery(GatewayError):
    status_code = 400
    code = "INVALID_QUERY"
    message = "invalid query formed"
    reason = "invalid_query"


class InvalidData(GatewayError):
    status_code = 400
    code = "INVALID_DATA"
    message = "invalid data"
    reason = "invalid_data"


class RestrictedField(InvalidQuery):
    """A search or query names a restricted field: refused exactly as the CRM does."""

    reason = "restricted_criteria"

    def __init__(self, api_name: str) -> None:
        super().__init__(
            details={"reason": "Cannot use the restricted field.", "api_name": api_name}
        )
        self.api_name = api_name
