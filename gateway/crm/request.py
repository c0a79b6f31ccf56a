"""The canonical request: what the client sent, parsed once, in the form the CRM receives.

Pure. ``canonicalize`` turns the raw method, path, query, headers and body into one
immutable ``CanonicalRequest``. Every guard, look-up, cache key and audit entry reads this
object, and the upstream request is built from it (``path``, ``query``, ``headers``), never
from the raw one: the gateway checks exactly what it forwards.

Refused here, because the CRM (or a server in front of it) could read them differently:

- a method other than GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (405). RFC 9110 §9.1:
  "The method token is case-sensitive";
- a path segment that is empty, a dot segment, holds ``;`` or still decodes further
  (``%252e``), or a path matching no row of the route table (404, ``routes.py``);
- a query parameter given twice in any letter case, a parameter name that is not a plain
  word, or a field-naming value (``fields``, ``sort_by``) that still decodes further (400);
- a GET or HEAD with a body (no guard reads it; a server upstream might);
- a request header the gateway decides on (``Authorization``, ``X-CRM-ORG``,
  ``X-EXTERNAL``, ...) given twice, or a request body with a ``Content-Encoding``: the CRM
  could decode a body the gateway read as it came (400).

Headers: RFC 9110 §7.6.1, a proxy "MUST remove any header or trailer fields" named in
``Connection`` and the hop-by-hop fields themselves. They are removed *before* anything
reads them, so a header the CRM will not receive can never steer a decision.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from gateway.crm.routes import Kind, Match, NoRoute, Route, match
from gateway.errors import InvalidData, InvalidUrl, MethodNotAllowed

Headers = list[tuple[str, str]]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# RFC 9110 §7.6.1 hop-by-hop fields; Host and Content-Length are recomputed per hop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "trailers",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "host",
        "content-length",
    }
)
# Headers that stop at the gateway: those it sets itself, and method overrides (a server
# upstream that honoured one would run another method than the one checked).
_GATEWAY_ONLY = frozenset(
    {
        "accept-encoding",
        "x-request-id",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
_GATEWAY_PREFIX = "x-gateway-"
#: read by the gateway, never forwarded
_KEPT_BACK = _GATEWAY_ONLY | {"content-encoding"}
# Headers a decision reads: one value each, or the CRM and the gateway could read two.
_SINGLE = frozenset(
    {
        "authorization",
        "x-crm-org",
        "x-external",
        "content-type",
        "content-encoding",
        "feature",
        "if-modified-since",
        "x-gateway-key",
    }
)
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_$.@+\-]{1,255}")
_PARAM_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_STILL_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
#: needs no percent-encoding in a path segment, a query name or a query value
_PLAIN = re.compile(r"[A-Za-z0-9_.\-~]*")
_NOT_ASCII = re.compile(rb"[\x7f-\xff]")
#: parameters whose value is a list of field names
FIELD_LISTS = frozenset({"fields", "sort_by"})
# RFC 3986 §3.4: what may stay unencoded in a query value; "&", "=", "+", "#", ";", "%"
# and space are always encoded, so the CRM's single decoding yields the checked value.
_QUERY_SAFE = "-._~!$'()*,:@/"
_PATH_SAFE = "-._~$@+"


@dataclass(frozen=True, slots=True)
class CanonicalRequest:
    method: str
    route: Route
    kind: Kind
    segments: tuple[str, ...]  # the path the upstream receives, decoded, canonical spelling
    params: tuple[tuple[str, str], ...]  # decoded once; names lower case; none repeated
    headers: tuple[tuple[str, str], ...]  # end-to-end; names lower case; gateway's removed
    body: bytes
    gateway_key: str | None = None  # X-Gateway-Key: the gateway's, never forwarded
    accepts_gzip: bool = False  # the client's Accept-Encoding (the gateway sets its own)
    version: str | None = None
    module: str | None = None  # as sent until the view resolves it against the org's list
    record_id: str | None = None  # the path's {id}; an external value under X-EXTERNAL
    related_list: str | None = None
    related_module: str | None = None  # the related list's module, once the view knows it
    related_id: str | None = None
    job_id: str | None = None

    @property
    def path(self) -> str:
        return "/" + "/".join(
            s if _PLAIN.fullmatch(s) else quote(s, safe=_PATH_SAFE) for s in self.segments
        )

    @property
    def query(self) -> str:
        return encode_query(self.params)

    def _replace(self, **changes: object) -> CanonicalRequest:
        """``dataclasses.replace`` without its per-call introspection (every request
        makes one or two of these)."""
        return CanonicalRequest(
            *[changes[n] if n in changes else getattr(self, n) for n in _FIELD_NAMES]  # type: ignore[arg-type]
        )

    @property
    def external(self) -> str | None:
        return self.header("x-external")

    @property
    def external_field(self) -> tuple[str, str]:
        """``X-EXTERNAL: Module.Field`` as (module, field): the one reading of it."""
        module, _, name = (self.external or "").strip().rpartition(".")
        return module, name

    @property
    def route_name(self) -> str:
        """The template the audit trail names (lower case, no value in it)."""
        return self.route.template.lower()

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def param(self, name: str) -> str | None:
        for n, v in self.params:
            if n == name:
                return v
        return None

    def with_params(self, params: Iterable[tuple[str, str]]) -> CanonicalRequest:
        params = tuple(params)
        return self if params == self.params else self._replace(params=params)

    def with_body(self, body: bytes) -> CanonicalRequest:
        return self._replace(body=body)

    def with_names(
        self,
        *,
        module: str | None = None,
        related_list: str | None = None,
        related_module: str | None = None,
    ) -> CanonicalRequest:
        """The module and related list in the CRM's own spelling (from its metadata), and
        the module of the related list's records."""
        template = self.route.segments
        segments = list(self.segments)
        if module is not None and "{module}" in template:
            segments[template.index("{module}")] = module
        if related_list is not None and "{related_list}" in template:
            segments[template.index("{related_list}")] = related_list
        return self._replace(
            segments=tuple(segments),
            module=module if module is not None else self.module,
            related_list=related_list if related_list is not None else self.related_list,
            related_module=related_module,
        )


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(CanonicalRequest))


def encode_query(params: Iterable[tuple[str, str]]) -> str:
    return "&".join(
        f"{n if _PLAIN.fullmatch(n) else quote(n, safe='')}="
        f"{v if _PLAIN.fullmatch(v) else quote(v, safe=_QUERY_SAFE)}"
        for n, v in params
    )


def canonicalize(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    raw_headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    extra_routes: Sequence[Route] = (),
) -> CanonicalRequest:
    if method not in METHODS:
        raise MethodNotAllowed()
    if method in ("GET", "HEAD") and body:
        # No guard reads a read's body; a server upstream might.
        raise InvalidData(details={"reason": "a read carries no body"})
    headers, gateway_key, accepts_gzip = _headers(raw_headers)
    segments = _segments(raw_path)
    try:
        found: Match = match(
            method, segments, external=_has(headers, "x-external"), extra=extra_routes
        )
    except NoRoute as exc:
        raise (MethodNotAllowed() if exc.status == 405 else InvalidUrl()) from None
    p = found.params
    return CanonicalRequest(
        method=method,
        route=found.route,
        kind=found.kind,
        segments=found.segments,
        params=_params(query_string),
        headers=tuple(headers),
        body=body,
        gateway_key=gateway_key,
        accepts_gzip=accepts_gzip,
        version=p.get("v"),
        module=p.get("module"),
        record_id=p.get("id"),
        related_list=p.get("related_list"),
        related_id=p.get("related_id"),
        job_id=p.get("job_id"),
    )


def _segments(raw_path: bytes) -> tuple[str, ...]:
    """Each segment percent-decoded once. A segment that is empty, a dot segment, holds a
    character outside plain names (``;``, ``/``, ``%``, ``\\``) or still decodes further
    is refused: another server could normalise it into a route that was never checked."""
    text = raw_path.decode("latin-1")
    if not text.startswith("/"):
        raise InvalidUrl()
    parts = text[1:].split("/")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # one trailing slash
    out: list[str] = []
    for part in parts:
        try:
            seg = unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidUrl() from None
        if not _SAFE_SEGMENT.fullmatch(seg) or not seg.strip("."):
            raise InvalidUrl()
        out.append(seg)
    return tuple(out)


def _params(query_string: bytes) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for part in query_string.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name = _decode(raw_name).lower()
        value = _decode(raw_value)
        if not _PARAM_NAME.fullmatch(name):
            raise InvalidData(details={"reason": "a query parameter name is not a plain word"})
        if name in seen:
            raise InvalidData(details={"reason": "a query parameter is given twice"})
        seen.add(name)
        if name in FIELD_LISTS and _STILL_ENCODED.search(value):
            raise InvalidData(details={"reason": "a field name is still percent-encoded"})
        out.append((name, value))
    return tuple(out)


def _decode(raw: bytes) -> str:
    """application/x-www-form-urlencoded: "+" is a space, then one percent-decoding."""
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidData(details={"reason": "a query parameter is not UTF-8"}) from None


def _connection_named(headers: Headers) -> set[str]:
    """The fields named in Connection (hop-by-hop too, RFC 9110 §7.6.1)."""
    return {
        token.strip().lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
    }


def end_to_end(headers: Headers) -> Headers:
    """Headers with hop-by-hop fields removed, including every field named in Connection
    (both directions: the client's request, the CRM's answer)."""
    named = _connection_named(headers)
    return [
        (n, v)
        for n, v in headers
        if n not in HOP_BY_HOP and n not in named and not n.startswith("proxy-")
    ]


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[Headers, str | None, bool]:
    pairs = list(raw)
    # RFC 9110 §5.5: obs-text in a field value is for legacy use only; its bytes could be
    # read as latin-1 here and re-sent as UTF-8 upstream. The gateway checks ASCII only.
    if _NOT_ASCII.search(b"".join(v for _, v in pairs)):
        raise InvalidData(details={"reason": "a header value is not ASCII"})
    decoded = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in pairs]
    # One pass (every request pays it). What end_to_end() drops is dropped first, so a
    # header the CRM will not receive never counts; then the gateway's own headers are
    # read and kept back.
    named = _connection_named(decoded)
    forwarded: Headers = []
    single: set[str] = set()
    key: str | None = None
    gzip = False
    coding = "identity"
    for n, v in decoded:
        # Some servers read "_" as "-" in a header name (CGI's HTTP_X_CRM_ORG): such a
        # header could mean X-CRM-ORG upstream while the gateway reads another. None is
        # forwarded.
        if n in HOP_BY_HOP or n.startswith("proxy-") or "_" in n or (named and n in named):
            continue
        if n in _SINGLE:
            if n in single:
                raise InvalidData(details={"reason": "a header the gateway checks is given twice"})
            single.add(n)
        if n in _KEPT_BACK or n.startswith(_GATEWAY_PREFIX):
            if n == "x-gateway-key":
                key = v
            elif n == "accept-encoding":
                gzip = gzip or "gzip" in v.lower()
            elif n == "content-encoding":
                coding = v
            continue
        forwarded.append((n, v))
    if coding.strip().lower() not in ("", "identity"):
        raise InvalidData(details={"reason": "request bodies must not be encoded"})
    return forwarded, key, gzip


def _has(headers: Headers, name: str) -> bool:
    return any(n == name for n, _ in headers)
