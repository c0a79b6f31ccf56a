"""Errors the gateway itself answers with.

Every error leaves the gateway in the CRM's own envelope
``{"code", "details", "message", "status": "error"}`` with an honest HTTP status:

    GatewayError              500     GATEWAY_INTERNAL_ERROR
    ├── UpstreamUnreachable   502     GATEWAY_UPSTREAM_UNREACHABLE
    ├── UpstreamTimeout       504     GATEWAY_UPSTREAM_TIMEOUT
    ├── UnreadableUpstream    502     GATEWAY_UNREADABLE_UPSTREAM
    ├── MetadataUnavailable   503     GATEWAY_METADATA_UNAVAILABLE
    ├── AuditUnavailable      503     GATEWAY_AUDIT_UNAVAILABLE
    ├── Overloaded            503     GATEWAY_OVERLOADED
    ├── UpstreamRefused       4xx     (the CRM's own answer to a metadata call)
    ├── BodyTooLarge          413     GATEWAY_BODY_TOO_LARGE
    ├── HeadersTooLarge       431     GATEWAY_HEADERS_TOO_LARGE
    ├── BodyTimeout           408     GATEWAY_BODY_TIMEOUT
    ├── UnknownGatewayKey     403     GATEWAY_UNKNOWN_KEY
    ├── InvalidUrl            404     INVALID_URL_PATTERN
    ├── MethodNotAllowed      405     INVALID_REQUEST_METHOD
    ├── NotSupported          400     NOT_SUPPORTED
    ├── InvalidModule         400     INVALID_MODULE
    ├── NotAllowed            400     NOT_ALLOWED
    ├── TooManyRecords        400     LIMIT_EXCEEDED
    ├── InvalidData           400     INVALID_DATA
    └── InvalidQuery          400     INVALID_QUERY
        └── RestrictedField   400     INVALID_QUERY

``HeadersTooLarge`` and ``BodyTimeout`` are defined beside the request-head checks that
raise them, in ``gateway.serving``.

Foreign exceptions (aiohttp, httpx, orjson, zlib) are translated into these at exactly one
boundary each (``raise UpstreamTimeout() from exc``). Messages never echo request values
or record values: they are fixed strings, and ``details`` carries only field names, ids
and reasons. ``reason`` is the audit trail's code for the error, from ``Reason``.
"""

from __future__ import annotations

import enum
from typing import Any

import orjson


class Reason(enum.StrEnum):
    """The closed vocabulary of the audit trail's ``reasons``: no value ever enters it."""

    ERROR = "error"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UNREADABLE_UPSTREAM = "unreadable_upstream"
    METADATA_UNAVAILABLE = "metadata_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    UPSTREAM_REFUSED = "upstream_refused"
    BODY_TOO_LARGE = "body_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_SUPPORTED = "not_supported"
    INVALID_MODULE = "invalid_module"
    INVALID_DATA = "invalid_data"
    INVALID_QUERY = "invalid_query"
    UNKNOWN_PARAMETER = "unknown_parameter"
    RESTRICTED_CRITERIA = "restricted_criteria"
    RESTRICTED_EXTERNAL = "restricted_external"
    STOP_PROCESSING = "stop_processing"
    STATE_UNKNOWN = "state_unknown"
    MISSING_CONSENT = "missing_consent"
    UNKNOWN_TARGETS = "unknown_targets"
    TOO_MANY_RECORDS = "too_many_records"
    UPLOAD_REFUSED = "upload_refused"
    PRIVACY_SETTINGS_OFF = "privacy_settings_off"
    CLIENT_RULE = "client_rule"
    MASS_UPDATE_UNCHECKED = "mass_update_unchecked"
    CLIENT_DISCONNECTED = "client_disconnected"
    HEADERS_TOO_LARGE = "headers_too_large"
    BODY_TIMEOUT = "body_timeout"
    MALFORMED_HTTP = "malformed_http"
    CANCELLED = "cancelled"
    UNKNOWN_GATEWAY_KEY = "unknown_gateway_key"
    EXCEPTION_EXPIRED = "exception_expired"
    POLICY_RELOADED = "policy_reloaded"
    POLICY_INVALID = "policy_invalid"


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CRM's error envelope, keys in the CRM's order."""
    return {"code": code, "details": details or {}, "message": message, "status": "error"}


class GatewayError(Exception):
    status_code = 500
    code = "GATEWAY_INTERNAL_ERROR"
    message = "The gateway could not complete the request."
    reason = Reason.ERROR

    def __init__(
        self,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        reason: Reason | None = None,
    ) -> None:
        if message is not None:
            self.message = message
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
    reason = Reason.UPSTREAM_UNREACHABLE


class UpstreamTimeout(GatewayError):
    status_code = 504
    code = "GATEWAY_UPSTREAM_TIMEOUT"
    message = "The CRM did not answer in time."
    reason = Reason.UPSTREAM_TIMEOUT


class UnreadableUpstream(GatewayError):
    """A body the gateway could not check: never passed on."""

    status_code = 502
    code = "GATEWAY_UNREADABLE_UPSTREAM"
    message = "The CRM's answer could not be checked for private data, so it was withheld."
    reason = Reason.UNREADABLE_UPSTREAM


class MetadataUnavailable(GatewayError):
    """Fail closed: without metadata no record data is forwarded."""

    status_code = 503
    code = "GATEWAY_METADATA_UNAVAILABLE"
    message = "Field privacy metadata is unavailable; record data is withheld."
    reason = Reason.METADATA_UNAVAILABLE


class AuditUnavailable(GatewayError):
    status_code = 503
    code = "GATEWAY_AUDIT_UNAVAILABLE"
    message = "The audit trail cannot record this request, so it was not served."
    reason = Reason.AUDIT_UNAVAILABLE


class Overloaded(GatewayError):
    """Refused at once, never queued: too many requests in flight, no free connection to
    the CRM within the pool timeout, or the CRM's circuit open. ``retry_after`` (seconds)
    is sent as ``Retry-After``; ``code`` may name which of these it was."""

    status_code = 503
    code = "GATEWAY_OVERLOADED"
    message = "The gateway is at capacity; retry later."

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int = 1,
        code: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = max(1, retry_after)
        if code is not None:
            self.code = code


class UpstreamRefused(GatewayError):
    """The CRM refused the gateway's metadata call with a client error (401 invalid token,
    403, 400 invalid module): the client gets the CRM's own answer, which holds no records."""

    reason = Reason.UPSTREAM_REFUSED

    def __init__(self, status: int, raw: bytes) -> None:
        super().__init__()
        self.status_code = status
        self.raw = raw

    def body(self) -> bytes:
        return self.raw


class BodyTooLarge(GatewayError):
    status_code = 413
    code = "GATEWAY_BODY_TOO_LARGE"
    message = "The body is larger than the gateway accepts."
    reason = Reason.BODY_TOO_LARGE


class UnknownGatewayKey(GatewayError):
    """An ``X-Gateway-Key`` that matches no client, when the policy says
    ``unknown_keys = "refuse"``."""

    status_code = 403
    code = "GATEWAY_UNKNOWN_KEY"
    message = "The X-Gateway-Key matches no client of the gateway's policy."
    reason = Reason.UNKNOWN_GATEWAY_KEY


class InvalidUrl(GatewayError):
    """No row of the route table fits the path (default deny)."""

    status_code = 404
    code = "INVALID_URL_PATTERN"
    message = "Please check if the URL trying to access is a correct one"
    reason = Reason.NOT_FOUND


class MethodNotAllowed(GatewayError):
    status_code = 405
    code = "INVALID_REQUEST_METHOD"
    message = "The http request method type is not a valid one"
    reason = Reason.METHOD_NOT_ALLOWED


class NotSupported(GatewayError):
    """A route the CRM has but the gateway cannot check yet."""

    status_code = 400
    code = "NOT_SUPPORTED"
    message = "The gateway does not support this request."
    reason = Reason.NOT_SUPPORTED


class InvalidModule(GatewayError):
    status_code = 400
    code = "INVALID_MODULE"
    message = "the module name given seems to be invalid"
    reason = Reason.INVALID_MODULE


class NotAllowed(GatewayError):
    """A write whose targets the gateway cannot check for stop processing."""

    status_code = 400
    code = "NOT_ALLOWED"
    message = "The gateway cannot check this request's records for stop processing."
    reason = Reason.UNKNOWN_TARGETS


class TooManyRecords(GatewayError):
    """More records in one insert, update or upsert than the CRM takes (100)."""

    status_code = 400
    code = "LIMIT_EXCEEDED"
    message = "the number of records exceeds the limit"
    reason = Reason.TOO_MANY_RECORDS


class HeadersTooLarge(GatewayError):
    """RFC 6585 §5: "the server is unwilling to process the request because its header
    fields are too large"."""

    status_code = 431
    code = "GATEWAY_HEADERS_TOO_LARGE"
    message = "The request headers are larger than the gateway accepts."
    reason = Reason.HEADERS_TOO_LARGE


class BodyTimeout(GatewayError):
    """The client did not deliver its body within ``body_read_timeout_seconds`` (a slow
    drip holds a connection and a slot of ``max_concurrent_requests``)."""

    status_code = 408
    code = "GATEWAY_BODY_TIMEOUT"
    message = "The request body did not arrive in time."
    reason = Reason.BODY_TIMEOUT


class InvalidData(GatewayError):
    status_code = 400
    code = "INVALID_DATA"
    message = "invalid data"
    reason = Reason.INVALID_DATA


class InvalidQuery(GatewayError):
    status_code = 400
    code = "INVALID_QUERY"
    message = "invalid query formed"
    reason = Reason.INVALID_QUERY


class RestrictedField(InvalidQuery):
    """A search or query names a restricted field: refused exactly as the CRM does."""

    reason = Reason.RESTRICTED_CRITERIA

    def __init__(self, api_name: str) -> None:
        super().__init__(
            details={"reason": "Cannot use the restricted field.", "api_name": api_name}
        )
        self.api_name = api_name
