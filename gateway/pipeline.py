"""The corridor: classify → privacy view → guards → upstream → rewrite.

One function deep per step. Every request fills in its ``Decision``; every GatewayError
raised anywhere here ends as a CRM-envelope error (app.py), never as an upstream body.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from cachetools import LRUCache

from gateway import bulk
from gateway.crm import endpoints as ep_kind
from gateway.crm.coql import CoqlError, parse_coql
from gateway.crm.criteria import CriteriaError, criteria_fields, parse_criteria
from gateway.crm.endpoints import Endpoint, classify
from gateway.decision import REDACTED, Decision
from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidData,
    InvalidQuery,
    MetadataUnavailable,
    RestrictedField,
    UnreadableUpstream,
)
from gateway.jsonbody import loads_request
from gateway.keys import fingerprint
from gateway.metadata import MetadataCache
from gateway.policy import Policy
from gateway.privacy import guards
from gateway.privacy.catalog import ModuleCatalog, OrgInfo
from gateway.privacy.redact import (
    Counts,
    MaskPlan,
    build_coql_plan,
    build_plan,
    is_masked,
    redact_body,
    redact_coql_rows,
)
from gateway.stop_processing import StopProcessingGuard
from gateway.types import Incoming, Reply
from gateway.upstream import (
    GzipStreamDecoder,
    Headers,
    Upstream,
    UpstreamResponse,
    decode_body,
    end_to_end,
    fetch_json,
)

JSON_TYPE = "application/json;charset=UTF-8"
# Request headers that stop at the gateway: its own, and those it sets itself.
_GATEWAY_ONLY = frozenset(
    {
        "x-gateway-key",
        "accept-encoding",
        "x-request-id",
        # The gateway classifies a request by its method; a server or proxy upstream that
        # honoured an override would run another one than was checked.
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
# Response headers that no longer describe a rewritten body.
_STALE_AFTER_REWRITE = frozenset(
    {"content-encoding", "content-type", "etag", "content-md5", "digest"}
)
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _has_json_type(headers: Headers) -> bool:
    for n, v in headers:
        if n == "content-type":
            media = v.split(";", 1)[0].strip().lower()
            return media == "application/json" or media.endswith("+json") or media == "text/json"
    return False


@dataclass(slots=True)
class View:
    """What the gateway knows about one request's org: its privacy switch and metadata."""

    org: OrgInfo
    version: str
    headers: Headers
    shown: frozenset[str]
    catalogs: dict[str, ModuleCatalog] = field(default_factory=dict)
    age: float = 0.0


class Pipeline:
    def __init__(
        self,
        *,
        upstream: Upstream,
        upstream_url: str,
        upload_url: str,
        metadata: MetadataCache,
        policy: Policy,
        secret: bytes,
    ) -> None:
        self.upstream = upstream
        self.upstream_url = upstream_url
        self.upload_url = upload_url
        self.metadata = metadata
        self.policy = policy
        self.secret = secret
        self._plans: LRUCache[tuple[Any, ...], tuple[tuple[Any, ...], MaskPlan]] = LRUCache(1024)
        self.writes = StopProcessingGuard(self)

    # -- the corridor -------------------------------------------------------------------

    async def handle(self, req: Incoming, decision: Decision) -> Reply:
        endpoint = classify(req.method, req.path)
        decision.route = endpoint.route
        decision.api_version = endpoint.version
        decision.module = endpoint.module
        if endpoint.record_id and endpoint.record_id.isdigit():
            decision.record_ids.append(endpoint.record_id)
        if endpoint.kind == ep_kind.NOT_FOUND:
            raise GatewayError(
                "Please check if the URL trying to access is a correct one",
                status_code=404,
                code="INVALID_URL_PATTERN",
                reason="not_found",
            )
        token = _token(req.header("authorization"))
        decision.client = fingerprint(self.secret, token) if token else None
        headers = self.forward_headers(req, decision.request_id)
        if endpoint.kind in (ep_kind.PASS, ep_kind.DELETE):
            return await self.passthrough(endpoint, req, headers, decision)
        view = await self.view(endpoint, req, headers, decision)
        if view is None:  # privacy_settings false: the CRM's GDPR rules do not apply
            decision.reasons.append("privacy_settings_off")
            return await self.passthrough(endpoint, req, headers, decision)
        kind = endpoint.kind
        if kind in (ep_kind.READ, ep_kind.SEARCH, ep_kind.RELATED):
            return await self.read(endpoint, req, headers, view, decision)
        if kind == ep_kind.COQL:
            return await self.coql(endpoint, req, headers, view, decision)
        if kind == ep_kind.BULK_READ_CREATE:
            return await self.bulk_read_create(endpoint, req, headers, view, decision)
        if kind == ep_kind.BULK_READ_RESULT:
            return await self.bulk_read_result(endpoint, req, headers, view, decision)
        if kind in ep_kind.WRITES:
            return await self.writes.handle(endpoint, req, headers, view, decision)
        raise AssertionError(f"unhandled endpoint kind {kind}")

    def forward_headers(self, req: Incoming, request_id: str) -> Headers:
        out = [(n, v) for n, v in end_to_end(req.headers) if n not in _GATEWAY_ONLY]
        out.append(("accept-encoding", "gzip, identity"))
        out.append(("x-request-id", request_id))
        return out

    async def send(
        self,
        endpoint: Endpoint,
        req: Incoming,
        headers: Headers,
        decision: Decision,
        *,
        query: str | None = None,
        body: bytes | None = None,
    ) -> UpstreamResponse:
        base = self.upload_url if endpoint.kind == ep_kind.UPLOAD else self.upstream_url
        # Forward exactly the path that was classified, re-encoded.
        url = base + quote(req.path, safe=_PATH_SAFE)
        q = req.query if query is None else query
        if q:
            url += "?" + q
        resp = await self.upstream.send(
            req.method, url, headers, req.body if body is None else body
        )
        decision.upstream_status = resp.status
        return resp

    async def passthrough(
        self, endpoint: Endpoint, req: Incoming, headers: Headers, decision: Decision
    ) -> Reply:
        resp = await self.send(endpoint, req, headers, decision)
        out = list(resp.headers)
        gunzip = False
        if (resp.header("content-encoding") or "").lower() == "gzip" and not _accepts_gzip(req):
            gunzip = True
            out = [(n, v) for n, v in out if n != "content-encoding"]
        elif resp.content_length is not None:
            out.append(("content-length", resp.content_length))
        return Reply(resp.status, out, stream=resp, gunzip=gunzip)

    # -- privacy view -------------------------------------------------------------------

    async def view(
        self, endpoint: Endpoint, req: Incoming, headers: Headers, decision: Decision
    ) -> View | None:
        version = endpoint.version or "v2"
        meta_headers = [(n, v) for n, v in headers if n in _METADATA_HEADERS]
        # The org is cached per token fingerprint and per X-CRM-ORG (a multi-org user's
        # choice of org, which the CRM may honour on more calls than it documents).
        client_key = decision.client or "anonymous"
        chosen_org = req.header("x-crm-org")
        if chosen_org:
            client_key += "|" + chosen_org
        org, age = await self.metadata.org(client_key, version, meta_headers)
        if not org.privacy_settings:
            decision.metadata_age_s = age
            return None
        rule, shown = self.policy.shown_for(req.header("x-gateway-key"))
        if rule is not None:
            decision.reasons.append(f"client_rule:{rule}")
        view = View(org, version, meta_headers, shown, age=age)
        decision.metadata_age_s = age
        return view

    async def catalog(self, view: View, module: str, decision: Decision) -> ModuleCatalog:
        key = module.lower()
        found = view.catalogs.get(key)
        if found is None:
            found, age = await self.metadata.fields(
                view.org.org_id, view.version, module, view.headers
            )
            view.catalogs[key] = found
            view.age = max(view.age, age)
            decision.metadata_age_s = view.age
        return found

    async def catalogs_for_paths(
        self, view: View, module: str, paths: Sequence[Sequence[str]], decision: Decision
    ) -> dict[str, ModuleCatalog]:
        """Metadata of ``module`` and of every module a ``Lookup.Field`` path passes through."""
        catalog = await self.catalog(view, module, decision)
        for path in paths:
            current = catalog
            for name in path[:-1]:
                info = current.get(name)
                if info is None or not info.target_module:
                    break
                current = await self.catalog(view, info.target_module, decision)
        return view.catalogs

    async def plan(self, view: View, module: str, decision: Decision) -> MaskPlan:
        catalog = await self.catalog(view, module, decision)
        subs = {sub: await self.catalog(view, sub, decision) for sub in catalog.subform_modules}
        # Plans are cached by the identity of the metadata objects they were built from.
        refs = (catalog, *sorted(subs.values(), key=id))
        key = (tuple(id(r) for r in refs), view.shown)
        hit = self._plans.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], refs, strict=True)):
            return hit[1]
        built = build_plan(catalog, view.shown, subs)
        self._plans[key] = (refs, built)
        return built

    # -- record-bearing reads -----------------------------------------------------------

    async def read(
        self, endpoint: Endpoint, req: Incoming, headers: Headers, view: View, decision: Decision
    ) -> Reply:
        module = endpoint.module or ""
        params = parse_qsl(req.query, keep_blank_values=True)
        if endpoint.kind == ep_kind.SEARCH:
            await self.guard_search(view, module, params, decision)
        if endpoint.kind == ep_kind.RELATED:
            module = await self.related_module(view, module, endpoint.related or "", decision)
        if any(key.lower() == "sort_by" for key, _ in params):
            catalog = await self.catalog(view, module, decision)
            self._refuse_restricted(decision, lambda: guards.check_sort_params(catalog, params))
        plan = await self.plan(view, module, decision)
        include_private, query = _take_include_private(req.query, params)
        resp = await self.send(endpoint, req, headers, decision, query=query)

        def rewrite(body: Any, counts: Counts) -> None:
            redact_body(body, plan, counts, include_private=include_private)

        return await self.json_reply(resp, rewrite, decision)

    async def related_module(
        self, view: View, module: str, related: str, decision: Decision
    ) -> str:
        lists, age = await self.metadata.related_lists(
            view.org.org_id, view.version, module, view.headers
        )
        view.age = max(view.age, age)
        target = lists.get(related.lower())
        if target is None:
            # Records of an unknown module cannot be checked.
            raise MetadataUnavailable(details={"reason": "unknown related list"})
        decision.module = module
        return target

    async def guard_search(
        self, view: View, module: str, params: list[tuple[str, str]], decision: Decision
    ) -> None:
        catalog = await self.catalog(view, module, decision)
        paths: list[tuple[str, ...]] = []
        for key, value in params:
            if key.lower() == "criteria":
                try:
                    node = parse_criteria(value)
                except CriteriaError as exc:
                    raise InvalidQuery(details={"reason": exc.reason}) from None
                paths += [tuple(name.split(".")) for name in criteria_fields(node)]
        self._refuse_restricted(
            decision,
            lambda: guards.check_search_params(
                catalog, params, allow_word=self.policy.allow_word_search
            ),
        )
        catalogs = await self.catalogs_for_paths(view, module, paths, decision)
        self._refuse_restricted(decision, lambda: guards.check_paths(module, paths, catalogs))

    @staticmethod
    def _refuse_restricted(decision: Decision, check: Callable[[], None]) -> None:
        try:
            check()
        except RestrictedField as exc:
            decision.refuse(f"restricted_criteria:{exc.api_name}")
            raise

    async def coql(
        self, endpoint: Endpoint, req: Incoming, headers: Headers, view: View, decision: Decision
    ) -> Reply:
        body = _json_body(req.body)
        text = body.get("select_query") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise InvalidQuery(details={"reason": "select_query is missing"})
        try:
            query = parse_coql(text)
        except CoqlError as exc:
            raise InvalidQuery(details={"reason": exc.reason}) from None
        decision.module = query.module
        paths = [c.path for c in query.columns] + list(query.condition_fields)
        catalogs = await self.catalogs_for_paths(view, query.module, paths, decision)
        # An aggregate over a field uses it too: COUNT(Email) tells which records have one.
        used = [*query.condition_fields, *(c.path for c in query.columns if c.function)]
        self._refuse_restricted(decision, lambda: guards.check_paths(query.module, used, catalogs))
        columns = [(c.key, c.path, c.function is not None) for c in query.columns]
        plan = build_coql_plan(query.module, columns, catalogs, view.shown)
        resp = await self.send(endpoint, req, headers, decision)

        def rewrite(parsed: Any, counts: Counts) -> None:
            if not isinstance(parsed, dict):
                raise UnreadableUpstream()
            if "data" in parsed:
                redact_coql_rows(parsed["data"], plan, counts)

        return await self.json_reply(resp, rewrite, decision)

    async def bulk_read_create(
        self, endpoint: Endpoint, req: Incoming, headers: Headers, view: View, decision: Decision
    ) -> Reply:
        body = _json_body(req.body)
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, dict):
            raise InvalidData(details={"reason": "query is missing"})
        module = _module_name(query.get("module"))
        if module is None:
            raise InvalidData(details={"reason": "query.module is missing"})
        decision.module = module
        paths = guards.bulk_criteria_fields(query.get("criteria"))
        catalogs = await self.catalogs_for_paths(view, module, paths, decision)
        self._refuse_restricted(decision, lambda: guards.check_paths(module, paths, catalogs))
        return await self.passthrough(endpoint, req, headers, decision)

    async def bulk_read_result(
        self, endpoint: Endpoint, req: Incoming, headers: Headers, view: View, decision: Decision
    ) -> Reply:
        status_url = f"{self.upstream_url}/crm/bulk/{endpoint.version}/read/{endpoint.job_id}"
        try:
            job = await fetch_json(self.upstream, "GET", status_url, headers, b"", 1 << 20)
        except UnreadableUpstream as exc:
            raise MetadataUnavailable(details={"reason": "bulk job unreadable"}) from exc
        module, fields = _bulk_job_module(job.body)
        if job.status != 200 or module is None:
            # Without the job's module, the export cannot be checked.
            raise MetadataUnavailable(details={"reason": "bulk job module unknown"})
        decision.module = module
        paths = [tuple(f.split(".")) for f in fields if "." in f]
        catalogs = await self.catalogs_for_paths(view, module, paths, decision)
        resp = await self.send(endpoint, req, headers, decision)
        if resp.status != 200:
            return await self.json_reply(resp, lambda body, counts: None, decision)
        limit = self.policy.max_bulk_result
        source = await _spool(resp, limit)
        counts: Counts = {}
        blank = _bulk_blanker(module, catalogs, view.shown)
        try:
            out = await asyncio.to_thread(bulk.rewrite_zip, source, blank, counts)
        finally:
            source.close()
        decision.withheld(counts)
        decision.outcome = REDACTED
        size = out.seek(0, os.SEEK_END)
        out.seek(0)
        hdrs = [(n, v) for n, v in resp.headers if n not in _STALE_AFTER_REWRITE]
        hdrs += [
            ("content-type", "application/zip"),
            ("content-length", str(size)),
            ("x-privacy-withheld", _withheld_header(counts)),
        ]
        return Reply(resp.status, hdrs, file=out)

    # -- rewriting ----------------------------------------------------------------------

    async def json_reply(
        self, resp: UpstreamResponse, rewrite: Callable[[Any, Counts], None], decision: Decision
    ) -> Reply:
        limit = self.policy.max_response_body
        raw = await resp.read(limit)
        hdrs = [(n, v) for n, v in resp.headers if n not in _STALE_AFTER_REWRITE]
        if resp.status in (204, 304) or (not raw and resp.status < 300):
            return Reply(resp.status, hdrs)
        if not _has_json_type(resp.headers):
            raise UnreadableUpstream()
        try:
            body = orjson.loads(decode_body(raw, resp.header("content-encoding"), limit))
        except orjson.JSONDecodeError as exc:
            raise UnreadableUpstream() from exc
        counts: Counts = {}
        if resp.status < 300 or (isinstance(body, dict) and "data" in body):
            rewrite(body, counts)
            decision.outcome = REDACTED if counts else decision.outcome
        decision.withheld(counts)
        hdrs += [("content-type", JSON_TYPE), ("x-privacy-withheld", _withheld_header(counts))]
        return Reply(resp.status, hdrs, orjson.dumps(body))

    async def read_json(self, resp: UpstreamResponse) -> Any:
        """A JSON answer the gateway reads itself (a write's per-record entries)."""
        limit = self.policy.max_response_body
        raw = decode_body(await resp.read(limit), resp.header("content-encoding"), limit)
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UnreadableUpstream() from exc


_METADATA_HEADERS = frozenset({"authorization", "x-request-id", "accept-encoding", "x-crm-org"})
_TOKEN = re.compile(r"(?i)zoho-oauthtoken\s+(\S+)")


def _token(value: str | None) -> str | None:
    if not value:
        return None
    m = _TOKEN.match(value.strip())
    return m.group(1) if m else value.strip()


def _accepts_gzip(req: Incoming) -> bool:
    return "gzip" in (req.header("accept-encoding") or "").lower()


def _take_include_private(query: str, params: list[tuple[str, str]]) -> tuple[bool, str]:
    """``include=private_fields`` is the gateway's; the rest of ``include`` goes on."""
    wanted = False
    kept: list[str] = []
    for part in query.split("&") if query else []:
        name, _, value = part.partition("=")
        if name == "include":
            items = [i for i in value.split(",") if i and i != "private_fields"]
            if len(items) != len([i for i in value.split(",") if i]):
                wanted = True
            if items:
                kept.append("include=" + ",".join(items))
            continue
        kept.append(part)
    if not wanted:
        wanted = any(k == "include" and "private_fields" in v.split(",") for k, v in params)
    return wanted, "&".join(kept)


def _json_body(raw: bytes) -> Any:
    # The SDKs send writes and COQL with no Content-Type: parse whatever it says.
    return loads_request(raw)


def _module_name(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("api_name"), str):
        name: str = value["api_name"]
        return name
    return None


def _bulk_job_module(body: Any) -> tuple[str | None, list[str]]:
    try:
        query = body["data"][0]["query"]
    except (KeyError, IndexError, TypeError):
        return None, []
    if not isinstance(query, dict):
        return None, []
    fields = query.get("fields")
    names = [f for f in fields if isinstance(f, str)] if isinstance(fields, list) else []
    return _module_name(query.get("module")), names


def _bulk_blanker(
    module: str, catalogs: dict[str, ModuleCatalog], shown: frozenset[str]
) -> Callable[[str], str | None]:
    """A CSV column is emptied when its field is exported blank by the CRM
    (``private.export``), restricted, or not shown to this client."""

    def blank(header: str) -> str | None:
        path = header.strip().split(".")
        catalog = catalogs.get(module.lower())
        for depth, name in enumerate(path):
            if catalog is None:
                return header
            info = catalog.get(name)
            if info is None:
                return None
            if info.private is not None and (info.private.export or is_masked(info, shown)):
                return ".".join([*path[:depth], info.api_name])
            if depth + 1 < len(path):
                catalog = catalogs.get((info.target_module or "").lower())
        return None

    return blank


async def _spool(resp: UpstreamResponse, limit: int) -> Any:
    """The upstream body, identity-decoded, in a spooled temporary file (bounded)."""
    out = bulk.spooled()
    decoder = (
        GzipStreamDecoder() if (resp.header("content-encoding") or "").lower() == "gzip" else None
    )
    coding = (resp.header("content-encoding") or "identity").lower()
    if coding not in ("identity", "gzip"):
        await resp.aclose()
        raise UnreadableUpstream()
    size = 0
    try:
        async for chunk in resp.chunks:
            data = decoder.feed(chunk) if decoder else chunk
            size += len(data)
            if size > limit:
                raise BodyTooLarge("The bulk result is larger than the gateway inspects.")
            out.write(data)
        if decoder:
            out.write(decoder.flush())
    except BaseException:
        out.close()
        raise
    finally:
        await resp.aclose()
    out.seek(0)
    return out


def _withheld_header(counts: Counts) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total}; fields={','.join(sorted(counts))}"
