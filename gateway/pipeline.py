"""The corridor: canonicalise → route → view → handler.

``canonicalize`` (crm/request.py) has already parsed the request once and matched it to a
row of the route table (crm/routes.py); a request that fits no row never gets here. This
module fills in the Decision, loads the privacy view, names the module as the CRM does and
hands the request to the handler its route kind names. Every GatewayError raised on the way
ends as a CRM-envelope error (app.py), never as an upstream body.
"""

from __future__ import annotations

from typing import assert_never

from gateway.bulk import ExportSlots
from gateway.crm.request import CanonicalRequest
from gateway.crm.routes import RECORD_BEARING, Kind
from gateway.decision import Decision
from gateway.errors import InvalidData, InvalidUrl, Reason, RestrictedField, UnknownGatewayKey
from gateway.forward import Forwarder
from gateway.handlers import (
    Context,
    UploadedFiles,
    bulk,
    composite,
    coql,
    custom_views,
    reads,
    uploaded_files,
    uploads,
    writes,
)
from gateway.keys import fingerprint
from gateway.metadata import MetadataCache
from gateway.policy import Policy
from gateway.privacy.redact import is_masked
from gateway.rules import Rule
from gateway.state import RecordStates
from gateway.types import Reply
from gateway.upstream import Upstream
from gateway.view import View, Views

#: kinds forwarded without a privacy view: they name no module and carry no field values
_NO_VIEW = frozenset({Kind.METADATA, Kind.SETTINGS, Kind.JOB_STATUS})
#: kinds forwarded once their module is known: no field values (blob)
_PASS_WITH_VIEW = frozenset({Kind.BLOB})


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
        uploads: UploadedFiles | None = None,
        exports: ExportSlots | int = 4,
    ) -> None:
        self.policy = policy
        self.secret = secret
        self.forward = Forwarder(upstream, upstream_url, upload_url, policy)
        self.views = Views(metadata, policy, secret)
        states = RecordStates(upstream, upstream_url, self.views)
        shared = uploaded_files() if uploads is None else uploads  # an empty cache is falsy
        slots = ExportSlots(exports) if isinstance(exports, int) else exports
        self.ctx = Context(self.forward, self.views, states, policy, slots, shared)

    def with_policy(self, policy: Policy) -> Pipeline:
        """The corridor under another policy (a reload), sharing this one's metadata cache,
        what was uploaded through it and its export slots. A request keeps the pipeline it
        started with."""
        fwd = self.forward
        return Pipeline(
            upstream=fwd.upstream,
            upstream_url=fwd.upstream_url,
            upload_url=fwd.upload_url,
            metadata=self.views.metadata,
            policy=policy,
            secret=self.secret,
            uploads=self.ctx.uploads,
            exports=self.ctx.exports,
        )

    async def handle(self, req: CanonicalRequest, decision: Decision) -> Reply:
        decision.route = req.route_name
        decision.api_version = req.version
        # decision.module is set once the module is resolved: a path segment the CRM does
        # not know as a module may be any value.
        token = _token(req.header("authorization"))
        decision.client = fingerprint(self.secret, token) if token else None
        shown = self._client_rule(req, decision)
        _no_key_in_url(req)
        if req.kind is Kind.COMPOSITE:
            # Never forwarded as one call: each sub-request walks this corridor on its own.
            return await composite.composite(req, decision, self.handle)
        if req.kind in _NO_VIEW:
            return await self.forward.passthrough(req, decision)
        if req.kind in RECORD_BEARING:
            _check_params(req)
        view = await self.views.load(req, decision, shown)
        if view is None:  # privacy_settings false: the CRM's GDPR rules do not apply
            decision.note(Reason.PRIVACY_SETTINGS_OFF)
            return await self.forward.passthrough(req, decision)
        req = await self.views.resolve(view, req, decision)
        if req.external is not None:
            await self._check_external(req, view, decision)
        if req.kind is Kind.PASS_THROUGH:
            return await self._policy_pass_through(req, view, decision)
        if req.kind in _PASS_WITH_VIEW:
            return await self.forward.passthrough(req, decision)
        return await self.dispatch(req, view, decision)

    def _client_rule(self, req: CanonicalRequest, decision: Decision) -> frozenset[str]:
        """What the policy shows the client its ``X-Gateway-Key`` names; an unknown key is
        served as the default or refused, as the policy says, and audited either way."""
        rule, shown, reason = self.policy.shown_for(req.gateway_key)
        decision.client_rule = rule
        if reason is Reason.UNKNOWN_GATEWAY_KEY and self.policy.unknown_keys == "refuse":
            raise UnknownGatewayKey()
        if reason is not None:
            decision.note(reason)
        return shown

    async def dispatch(self, req: CanonicalRequest, view: View, decision: Decision) -> Reply:
        ctx = self.ctx
        kind = req.kind
        match kind:
            case Kind.READ | Kind.SEARCH | Kind.COUNT | Kind.RELATED:
                return await reads.read(ctx, req, view, decision)
            case Kind.COQL:
                return await coql.coql(ctx, req, view, decision)
            case Kind.CUSTOM_VIEWS:
                return await custom_views.custom_views(ctx, req, view, decision)
            case Kind.BULK_READ_CREATE:
                return await bulk.read_create(ctx, req, view, decision)
            case Kind.BULK_READ_RESULT:
                return await bulk.read_result(ctx, req, view, decision)
            case Kind.UPLOAD:
                return await uploads.upload(ctx, req, view, decision)
            case (
                Kind.INSERT
                | Kind.UPDATE
                | Kind.RECORD_UPDATE
                | Kind.UPSERT
                | Kind.CONVERT
                | Kind.MASS_UPDATE
                | Kind.RELATED_WRITE
                | Kind.BULK_WRITE_CREATE
            ):
                return await writes.write(ctx, req, view, decision)
            case Kind.DELETE:
                # Never refused (erasure must stay possible, unless keyed by a withheld
                # field's value); its answer is a write's, checked as one.
                return await writes.forward_write(ctx, req, view, decision)
            case (
                Kind.METADATA
                | Kind.SETTINGS
                | Kind.JOB_STATUS
                | Kind.BLOB
                | Kind.COMPOSITE
                | Kind.PASS_THROUGH
            ):
                raise AssertionError("handled before dispatch")  # pragma: no cover
            case _:
                assert_never(kind)

    async def _policy_pass_through(
        self, req: CanonicalRequest, view: View, decision: Decision
    ) -> Reply:
        """A route the policy adds carries no records, unless its first word is a module
        of this org (a custom module named like it): then the CRM would read the path as
        that module's records, so it is refused."""
        if req.external is not None or req.segments[2].lower() in await self.views.modules(view):
            raise InvalidUrl()
        return await self.forward.passthrough(req, decision)

    async def _check_external(self, req: CanonicalRequest, view: View, decision: Decision) -> None:
        """``X-EXTERNAL: Module.Field`` keys a record by a field's value: a read or write
        keyed by a withheld field would tell whether a record holds that value."""
        module, name = req.external_field
        if not name or (module and module.lower() != (req.module or "").lower()):
            raise InvalidData(details={"reason": "X-EXTERNAL must name a field of the module"})
        catalog = await self.views.catalog(view, req.module or "", decision)
        info = catalog.get(name)
        if info is None:
            raise InvalidData(details={"reason": "X-EXTERNAL must name a field of the module"})
        if is_masked(info, view.shown):
            reason = Reason.RESTRICTED_EXTERNAL
            if self.ctx.refuses(decision, Rule.CRITERIA, reason, [info.api_name]):
                decision.refuse(reason, info.api_name)
                raise RestrictedField(info.api_name)


def _no_key_in_url(req: CanonicalRequest) -> None:
    """``X-Gateway-Key`` is a header, never forwarded. Given as a parameter it would be
    forwarded with the others (to the CRM and its logs), so such a request is refused."""
    for name, _ in req.params:
        if name.lower().replace("_", "-") == "x-gateway-key":
            raise InvalidData(
                details={"reason": "X-Gateway-Key goes in a header", "param_name": name}
            )


def _check_params(req: CanonicalRequest) -> None:
    """Default deny for parameters: a record-bearing read takes only the parameters its
    row of the route table lists. Any other could change which records come back in a way
    no guard has checked, so it is refused before anything is fetched (every mode, for
    every org: it is the route table's rule, not a privacy rule). ``details`` names the
    parameter (a plain word, canonicalize checked it), never its value."""
    allowed = req.route.params
    if allowed is None:
        return
    for name, _ in req.params:
        if name not in allowed:
            raise InvalidData(
                details={
                    "reason": "the gateway does not forward this parameter",
                    "param_name": name,
                },
                reason=Reason.UNKNOWN_PARAMETER,
            )


def _token(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip()
    if text.lower().startswith("zoho-oauthtoken "):
        return text.split(None, 1)[1].strip() or None
    return text
