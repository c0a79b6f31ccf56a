"""The route table: every CRM route the gateway forwards, one row each. Default deny.

Pure. A row is a canonical template (literal API words in lower case, ``{placeholders}``
for what varies), the methods it takes, and its handling (``Kind``). ``match`` finds the
row of a decoded path. Literal words are matched case-insensitively (the CRM may read
``/Leads/Search`` as ``/Leads/search``) and forwarded in the row's spelling; a path that
fits no row, or a placeholder value of the wrong shape, is refused: the gateway never
guesses an unknown segment into "a module" or an unknown method into "a write".

Rows are tried in order, so the literal ``/{module}/search`` wins over ``/{module}/{id}``;
record ids are numeric, so a keyword can never be read as one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class Kind(enum.Enum):
    """How the gateway handles a route. Each kind names one handler (pipeline.py)."""

    METADATA = "metadata"  # org, users: configuration, no module records
    SETTINGS = "settings"  # other settings: configuration whose criteria may hold values
    CUSTOM_VIEWS = "custom_views"  # settings whose criteria may hold a record's values
    JOB_STATUS = "job_status"  # a bulk or mass-update job's status: no field values
    BLOB = "blob"  # a record's photo or an attachment's bytes: no field values
    READ = "read"  # records of {module}: list, one, deleted
    SEARCH = "search"  # records of {module} found by criteria / email / phone / word
    COUNT = "count"  # how many records match: guarded like a search
    RELATED = "related"  # records of a related list's module
    COQL = "coql"
    BULK_READ_CREATE = "bulk_read_create"
    BULK_READ_RESULT = "bulk_read_result"
    INSERT = "insert"
    UPDATE = "update"  # PUT /{module}: every record names itself by id
    RECORD_UPDATE = "record_update"  # PUT /{module}/{id}
    UPSERT = "upsert"
    CONVERT = "convert"
    MASS_UPDATE = "mass_update"
    RELATED_WRITE = "related_write"  # link records, or write under a record
    UPLOAD = "upload"  # bulk-write file, to the upload host
    BULK_WRITE_CREATE = "bulk_write_create"
    DELETE = "delete"  # never refused: erasure must stay possible
    PASS_THROUGH = "pass_through"  # a non-record route the policy adds (checked JSON)
    COMPOSITE = "composite"  # refused until each sub-request goes through the corridor


#: kinds whose answers hold records of a GDPR module (rewritten, fail closed)
RECORD_BEARING = frozenset(
    {Kind.READ, Kind.SEARCH, Kind.COUNT, Kind.RELATED, Kind.COQL, Kind.BULK_READ_RESULT}
)

#: placeholder -> the shape its value must have
_VERSION = re.compile(r"v\d{1,2}(\.\d{1,2})?", re.IGNORECASE)
_NUMERIC = re.compile(r"\d{1,25}")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_LOWER_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: an X-EXTERNAL value in the path: any plain segment (classify refused the rest)
_EXTERNAL = re.compile(r"[A-Za-z0-9_.@+\-]{1,255}")
PLACEHOLDERS: Mapping[str, re.Pattern[str]] = {
    "v": _VERSION,
    "module": _NAME,
    "id": _NUMERIC,
    "related_list": _NAME,
    "related_id": _NUMERIC,
    "job_id": _NUMERIC,
    "name": _LOWER_NAME,
    "setting_id": _NUMERIC,
    "user_id": _NUMERIC,
}

GET = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Route:
    #: "/crm/{v}/{module}/search": the canonical spelling of its literal words, and (lower
    #: case) the audit trail's route name
    template: str
    methods: Mapping[str, Kind]  # method -> handling
    #: a placeholder whose value may be an external id when X-EXTERNAL is sent
    external: str | None = None
    #: the query parameters (lower case) its record-bearing GET takes; any other is
    #: refused (default deny). None: parameters are not checked against the row.
    params: frozenset[str] | None = None
    #: the template's segments, split once (every request is matched against them)
    segments: tuple[str, ...] = field(init=False, compare=False)
    #: per segment: (its lower-case literal, None) or (None, its placeholder's name)
    parts: tuple[tuple[str | None, str | None], ...] = field(init=False, compare=False)
    #: (position, lower-case literal) of each literal segment, checked first
    literals: tuple[tuple[int, str], ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        segments = tuple(self.template.strip("/").split("/"))
        object.__setattr__(self, "segments", segments)
        parts = tuple((None, s[1:-1]) if s.startswith("{") else (s.lower(), None) for s in segments)
        object.__setattr__(self, "parts", parts)
        literals = tuple((i, lit) for i, (lit, _) in enumerate(parts) if lit is not None)
        object.__setattr__(self, "literals", literals)


def _r(
    template: str,
    external: str | None = None,
    *,
    params: frozenset[str] | None = None,
    **methods: Kind,
) -> Route:
    table: dict[str, Kind] = {}
    for method, kind in methods.items():
        table[method] = kind
        if method == "GET":
            table["HEAD"] = kind
    return Route(template, table, external, params)


# The parameters of record-bearing reads (research §4.2, §4.9, §7), lower case: the
# canonical request lower-cases names (``startDateTime`` arrives as ``startdatetime``).
# ``include`` carries the gateway's own ``private_fields`` (and the CRM's values, passed on).
#: list and one record: the SDKs' GetRecordsParam (v2) and GetRecordParam (v8), without
#: ``territory_id`` and ``include_child``: a territory's rules select records by field
#: values the gateway cannot see (as a custom view's criteria do), so a read by territory
#: is refused like a mass update by territory (handlers/writes.py)
LIST_PARAMS = frozenset(
    {
        "approved",
        "converted",
        "cvid",
        "ids",
        "uid",
        "fields",
        "sort_by",
        "sort_order",
        "page",
        "per_page",
        "startdatetime",
        "enddatetime",
        "page_token",
        "on_demand_properties",
        "include",
    }
)
#: search: a list's parameters and the search keys (SearchRecordsParam; ``type`` is the
#: Users module's)
SEARCH_PARAMS = LIST_PARAMS | {"criteria", "email", "phone", "word", "type"}
#: how many records match: the search keys, a custom view, and the record filters
COUNT_PARAMS = frozenset({"criteria", "email", "phone", "word", "cvid", "approved", "converted"})
#: the recycle bin: which bin, and the page
DELETED_PARAMS = frozenset({"type", "page", "per_page", "include"})
#: a related list (research §4.9): no custom view, no search keys
RELATED_PARAMS = frozenset(
    {
        "fields",
        "page",
        "per_page",
        "page_token",
        "ids",
        "sort_by",
        "sort_order",
        "converted",
        "include",
    }
)


K = Kind
M = "/crm/{v}/{module}"
#: the table. Order matters only where a literal and a placeholder could both fit.
TABLE: tuple[Route, ...] = (
    _r("/crm/{v}/org", GET=K.METADATA),
    _r("/crm/{v}/users", GET=K.METADATA),
    _r("/crm/{v}/users/{user_id}", GET=K.METADATA),
    # a view's criteria may name a record's value (before the other settings: a literal)
    _r("/crm/{v}/settings/custom_views", GET=K.CUSTOM_VIEWS),
    _r("/crm/{v}/settings/custom_views/{setting_id}", GET=K.CUSTOM_VIEWS),
    _r("/crm/{v}/settings/{name}", GET=K.SETTINGS),
    _r("/crm/{v}/settings/{name}/{setting_id}", GET=K.SETTINGS),
    _r("/crm/{v}/coql", POST=K.COQL),
    _r("/crm/{v}/upload", POST=K.UPLOAD),
    _r("/crm/{v}/__composite_requests", POST=K.COMPOSITE),
    _r("/crm/bulk/{v}/read", POST=K.BULK_READ_CREATE),
    _r("/crm/bulk/{v}/read/{job_id}", GET=K.JOB_STATUS),
    _r("/crm/bulk/{v}/read/{job_id}/result", GET=K.BULK_READ_RESULT),
    _r("/crm/bulk/{v}/write", POST=K.BULK_WRITE_CREATE),
    _r("/crm/bulk/{v}/write/{job_id}", GET=K.JOB_STATUS),
    _r(M, params=LIST_PARAMS, GET=K.READ, POST=K.INSERT, PUT=K.UPDATE, DELETE=K.DELETE),
    _r(M + "/search", params=SEARCH_PARAMS, GET=K.SEARCH),
    _r(M + "/deleted", params=DELETED_PARAMS, GET=K.READ),
    _r(M + "/upsert", POST=K.UPSERT),
    _r(M + "/actions/count", params=COUNT_PARAMS, GET=K.COUNT),
    _r(M + "/actions/mass_update", POST=K.MASS_UPDATE, GET=K.JOB_STATUS),
    _r(
        M + "/{id}",
        "id",
        params=LIST_PARAMS,
        GET=K.READ,
        PUT=K.RECORD_UPDATE,
        DELETE=K.DELETE,
    ),
    _r(M + "/{id}/actions/convert", POST=K.CONVERT),
    _r(M + "/{id}/photo", GET=K.BLOB, POST=K.RELATED_WRITE, DELETE=K.DELETE),
    _r(M + "/{id}/Attachments/{related_id}", GET=K.BLOB, DELETE=K.DELETE),
    # A delink changes both records (it clears the lookup that tied them): it is a
    # related write, checked at both ends, not an erasure.
    _r(
        M + "/{id}/{related_list}",
        params=RELATED_PARAMS,
        GET=K.RELATED,
        POST=K.RELATED_WRITE,
        PUT=K.RELATED_WRITE,
        DELETE=K.RELATED_WRITE,
    ),
    _r(M + "/{id}/{related_list}/{related_id}", PUT=K.RELATED_WRITE, DELETE=K.RELATED_WRITE),
)

#: the literal words of the table (lower case): a {module} may not be one of them
KEYWORDS = frozenset(
    seg.lower() for route in TABLE for seg in route.segments if not seg.startswith("{")
)
_NOT_A_RELATED_LIST = frozenset({"actions", "photo"})
#: the table's rows by their number of segments, in table order (only those can fit)
_BY_LENGTH: dict[int, tuple[Route, ...]] = {}
for _row in TABLE:
    _BY_LENGTH[len(_row.segments)] = (*_BY_LENGTH.get(len(_row.segments), ()), _row)


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    kind: Kind
    segments: tuple[str, ...]  # the path in canonical spelling, for the upstream
    params: Mapping[str, str]  # placeholder -> value (module and lists as sent)


class NoRoute(Exception):
    """No row fits the path (404) or the row does not take the method (405)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


_POLICY_LITERAL = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_POLICY_PLACEHOLDERS = frozenset({"{v}", "{name}", "{id}"})
_POLICY_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})


def policy_route(template: str, methods: Sequence[str]) -> Route:
    """A pass-through row a policy adds, for a route that carries no records (functions,
    notifications, ...). Refused (``ValueError``, with the reason) unless it is plainly
    such a route: under ``/crm/{v}/``, a literal word right after the version that is no
    word of the table (so it can never stand for a module or a record route), and only
    ``{v}``, ``{name}`` and ``{id}`` placeholders."""
    parts = template.strip().strip("/").split("/")
    if parts[:2] != ["crm", "{v}"] or len(parts) < 3:
        raise ValueError("must start with /crm/{v}/")
    if not _POLICY_LITERAL.fullmatch(parts[2]) or parts[2] in KEYWORDS:
        raise ValueError("the segment after the version must be a new literal word")
    for part in parts[3:]:
        if part not in _POLICY_PLACEHOLDERS and not _POLICY_LITERAL.fullmatch(part):
            raise ValueError("segments are lower-case words, {name} or {id}")
    wanted = {m.upper() for m in methods}
    if not wanted or not wanted <= _POLICY_METHODS:
        raise ValueError("methods must be some of GET, POST, PUT, DELETE")
    table = {m: Kind.PASS_THROUGH for m in wanted | ({"HEAD"} if "GET" in wanted else set())}
    return Route("/" + "/".join(parts), table)


def match(
    method: str,
    segments: tuple[str, ...],
    *,
    external: bool = False,
    extra: Sequence[Route] = (),
) -> Match:
    """The row for decoded path ``segments`` (without the leading empty one). ``external``:
    the client sent X-EXTERNAL, so a route's ``external`` placeholder may hold a value
    that is not numeric. ``extra``: the policy's pass-through rows, tried after the table."""
    path_fits = False
    rows = _BY_LENGTH.get(len(segments), ())
    for route in (*rows, *extra) if extra else rows:
        bound = _bind(route, segments, external)
        if bound is None:
            continue
        path_fits = True
        kind = route.methods.get(method)
        if kind is None:
            continue
        canonical, params = bound
        return Match(route, kind, canonical, params)
    raise NoRoute(405 if path_fits else 404)


def _bind(
    route: Route, segments: tuple[str, ...], external: bool
) -> tuple[tuple[str, ...], dict[str, str]] | None:
    template = route.segments
    if len(template) != len(segments):
        return None
    for i, literal in route.literals:
        if segments[i].lower() != literal:
            return None
    canonical: list[str] = []
    params: dict[str, str] = {}
    for want, (_, name), got in zip(template, route.parts, segments, strict=True):
        if name is None:
            canonical.append(want)
            continue
        shape = _EXTERNAL if external and name == route.external else PLACEHOLDERS[name]
        if not shape.fullmatch(got):
            return None
        if name == "module" and got.lower() in KEYWORDS:
            return None
        if name == "related_list" and got.lower() in _NOT_A_RELATED_LIST:
            return None
        if name == "v":
            got = got.lower()
        params[name] = got
        canonical.append(got)
    return tuple(canonical), params
