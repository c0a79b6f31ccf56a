"""The privacy view of one request: its org, the metadata of the modules it reaches, and the
mask plans built from them. Read through the metadata cache; fails closed.

Names the client chose are resolved here against the CRM's own metadata, case-insensitively
(the CRM compares api names that way): a module must be in the org's module list and a
related list in the module's related lists, or the request is refused. The request then
goes on in the CRM's spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache

from gateway.crm.request import CanonicalRequest
from gateway.decision import Decision
from gateway.errors import GatewayError, InvalidModule, MetadataUnavailable
from gateway.keys import fingerprint
from gateway.metadata import MetadataCache
from gateway.policy import Policy
from gateway.privacy.catalog import (
    SE_MODULE,
    CustomView,
    ModuleCatalog,
    OrgInfo,
    names_any_module,
    with_overrides,
)
from gateway.privacy.redact import MaskPlan, build_plan
from gateway.upstream import Headers

#: the headers the gateway's own metadata and state look-ups carry
LOOKUP_HEADERS = frozenset({"authorization", "x-crm-org"})
GDPR_STANDARD = ("Leads", "Contacts", "Vendors")
_GDPR_STANDARD_LOWER = frozenset(m.lower() for m in GDPR_STANDARD)


@dataclass(frozen=True, slots=True)
class _Ready:
    """A module's mask plan with the catalogs it was built from, while they are fresh."""

    generation: int  # the metadata cache's, when built
    fetched_at: float  # of the oldest metadata the request had read by then
    plan: MaskPlan
    catalogs: tuple[tuple[str, ModuleCatalog], ...]


@dataclass(slots=True)
class View:
    """What the gateway knows about one request's org: its privacy switch and metadata."""

    org: OrgInfo
    version: str
    headers: Headers  # for the gateway's own look-ups
    shown: frozenset[str]
    catalogs: dict[str, ModuleCatalog] = field(default_factory=dict)
    age: float = 0.0


def lookup_headers(req: CanonicalRequest, request_id: str) -> Headers:
    return [(n, v) for n, v in req.headers if n in LOOKUP_HEADERS] + [
        ("accept-encoding", "gzip, identity"),
        ("x-request-id", request_id),
    ]


class Views:
    def __init__(self, metadata: MetadataCache, policy: Policy, secret: bytes) -> None:
        self.metadata = metadata
        self.policy = policy
        self.secret = secret
        self._plans: LRUCache[tuple[Any, ...], tuple[tuple[Any, ...], MaskPlan]] = LRUCache(1024)
        #: lower-case module -> lower-case field -> sensitivity (the policy's overrides)
        self._extra: dict[str, dict[str, str]] = {}
        for module, fields in policy.private_fields.items():
            extra = self._extra.setdefault(module.lower(), {})
            extra.update((name.lower(), sensitivity) for name, sensitivity in fields.items())
        #: (org id, version, lower-case module, shown) -> the module's plan, reused while no
        #: metadata was stored since and the oldest it was built from is still fresh: a
        #: page in steady state makes no cache look-up for its module's fields at all
        self._ready: LRUCache[tuple[Any, ...], _Ready] = LRUCache(1024)
        #: id(the CRM's catalog) -> (it, with the policy's module overrides)
        self._overridden: LRUCache[int, tuple[ModuleCatalog, ModuleCatalog]] = LRUCache(1024)

    async def load(
        self, req: CanonicalRequest, decision: Decision, shown: frozenset[str]
    ) -> View | None:
        """The view, or None when the org has privacy settings off. ``shown``: the
        sensitivities the policy shows this request's client."""
        version = req.version or "v2"
        headers = lookup_headers(req, decision.request_id)
        # The org is cached per token fingerprint and per X-CRM-ORG (a multi-org user's
        # choice of org). Both are read from the canonical headers: what the CRM receives.
        client_key = decision.client or "anonymous"
        chosen_org = req.header("x-crm-org")
        if chosen_org:
            client_key += "|" + fingerprint(self.secret, chosen_org)
        org, age = await self.metadata.org(client_key, version, headers)
        decision.metadata_age_s = age
        if not org.privacy_settings:
            return None
        return View(org, version, headers, shown, age=age)

    async def modules(self, view: View) -> dict[str, tuple[str, str]]:
        """lower-case api_name -> (api_name, generated_type), from the CRM's module list."""
        found, age = await self.metadata.modules(view.org.org_id, view.version, view.headers)
        view.age = max(view.age, age)
        return found

    async def resolve_module(self, view: View, name: str) -> str:
        """The module's api_name in the CRM's spelling; an unknown module is refused."""
        found = (await self.modules(view)).get(name.lower())
        if found is None:
            raise InvalidModule()
        return found[0]

    async def resolve(
        self, view: View, req: CanonicalRequest, decision: Decision
    ) -> CanonicalRequest:
        """The request with its module (and related list) named as the CRM names them."""
        if req.module is None:
            return req
        module = await self.resolve_module(view, req.module)
        decision.module = module
        if req.related_list is None:
            return req.with_names(module=module)
        lists, age = await self.metadata.related_lists(
            view.org.org_id, view.version, module, view.headers
        )
        view.age = max(view.age, age)
        found = lists.get(req.related_list.lower())
        if found is None:
            # Records of an unknown related list cannot be checked.
            raise MetadataUnavailable(details={"reason": "unknown related list"})
        return req.with_names(module=module, related_list=found[0], related_module=found[1])

    async def catalog(self, view: View, module: str, decision: Decision) -> ModuleCatalog:
        key = module.lower()
        found = view.catalogs.get(key)
        if found is None:
            found, age = await self.metadata.fields(
                view.org.org_id, view.version, module, view.headers
            )
            found = self._with_overrides(found)
            view.catalogs[key] = found
            view.age = max(view.age, age)
            decision.metadata_age_s = view.age
        return found

    async def custom_view(
        self, view: View, module: str, cvid: str, decision: Decision
    ) -> CustomView:
        """The definition of custom view ``cvid`` of ``module`` (fails closed)."""
        found, age = await self.metadata.custom_view(
            view.org.org_id, view.version, module, cvid, view.headers
        )
        view.age = max(view.age, age)
        decision.metadata_age_s = view.age
        return found

    async def custom_view_ids(
        self, view: View, module: str, decision: Decision, *, fresh: bool = False
    ) -> frozenset[str]:
        """The ids of ``module``'s custom views, from the CRM's list of them (``fresh``:
        asked now, not cached)."""
        found, age = await self.metadata.custom_view_ids(
            view.org.org_id, view.version, module, view.headers, fresh=fresh
        )
        view.age = max(view.age, age)
        decision.metadata_age_s = view.age
        return found

    def _with_overrides(self, catalog: ModuleCatalog) -> ModuleCatalog:
        """Every route reads a module's private fields here, the policy's overrides
        included; built once per cached catalog."""
        extra = self._extra.get(catalog.module.lower())
        if not extra:
            return catalog
        hit = self._overridden.get(id(catalog))
        if hit is None or hit[0] is not catalog:
            hit = (catalog, with_overrides(catalog, extra))
            self._overridden[id(catalog)] = hit
        return hit[1]

    async def catalogs_for_paths(
        self,
        view: View,
        module: str,
        paths: Sequence[Sequence[str]],
        decision: Decision,
        *,
        whole_values: bool = False,
    ) -> dict[str, ModuleCatalog]:
        """Metadata of ``module`` and of every module a ``Lookup.Field`` path passes through;
        with ``whole_values``, also of the module a path's last lookup or subform points to
        (its value is redacted with that module's plan)."""
        root = await self.catalog(view, module, decision)
        for path in paths:
            current = root
            for depth, name in enumerate(path):
                info = current.get(name)
                if whole_values and depth + 1 == len(path) and info and names_any_module(info):
                    # a criterion on a parent field is matched by the name of whichever
                    # record it names (guards._looked_up_name)
                    for other in await self.gdpr_modules(view, strict=True):
                        await self.catalog(view, other, decision)
                if (
                    info is None
                    or info.data_type == "ownerlookup"
                    or not info.target_module
                    or info.target_module.lower() == SE_MODULE  # no one module to fetch
                ):
                    break
                if depth + 1 == len(path) and not whole_values:
                    break
                current = await self.catalog(view, info.target_module, decision)
        return view.catalogs

    async def plan(self, view: View, module: str, decision: Decision) -> MaskPlan:
        metadata = self.metadata
        key = (view.org.org_id, view.version, module.lower(), view.shown)
        ready = self._ready.get(key)
        now = metadata.now()
        if (
            ready is not None
            and ready.generation == metadata.generation
            and now - ready.fetched_at < metadata.ttl
        ):
            for name, catalog in ready.catalogs:
                view.catalogs.setdefault(name, catalog)
            view.age = max(view.age, now - ready.fetched_at)
            decision.metadata_age_s = view.age
            return ready.plan
        generation = metadata.generation
        built = await self._build_plan(view, module, decision)
        if metadata.generation == generation:  # nothing was fetched meanwhile
            catalogs = tuple(view.catalogs.items())
            self._ready[key] = _Ready(generation, metadata.now() - view.age, built, catalogs)
        return built

    async def _build_plan(self, view: View, module: str, decision: Decision) -> MaskPlan:
        catalog = await self.catalog(view, module, decision)
        subs = {sub: await self.catalog(view, sub, decision) for sub in catalog.subform_modules}
        looks = {
            target: await self.catalog(view, target, decision) for target in catalog.lookup_modules
        }
        if any(names_any_module(f) for f in catalog.fields.values() if f.target_module):
            # a parent field may name a record of any GDPR module: a lookup's name is
            # judged by all of theirs (build_plan)
            for other in await self.gdpr_modules(view, strict=True):
                looks.setdefault(other, await self.catalog(view, other, decision))
        # Plans are cached by the identity of the metadata objects they were built from.
        refs = (catalog, *sorted([*subs.values(), *looks.values()], key=id))
        key = (tuple(id(r) for r in refs), view.shown)
        hit = self._plans.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], refs, strict=True)):
            return hit[1]
        built = build_plan(catalog, view.shown, subs, looks)
        self._plans[key] = (refs, built)
        return built

    async def gdpr_modules(self, view: View, *, strict: bool = False) -> list[str]:
        """Leads, Contacts, Vendors and the custom modules. When the module list cannot be
        had, the custom modules stay unknown: ``strict`` raises (fail closed), otherwise
        only the standard ones are named."""
        modules = list(GDPR_STANDARD)
        try:
            found = await self.modules(view)
        except GatewayError:
            if strict:
                raise
            return modules
        modules += [name for name, kind in found.values() if kind == "custom"]
        return modules

    async def is_gdpr_module(self, view: View, module: str) -> bool:
        """Whether records of ``module`` can be in stop processing (contract §1: Leads,
        Contacts, Vendors and custom modules). Only a module the CRM lists as one of its
        other standard modules is exempt; an unknown answer keeps the check (fail closed)."""
        if module.lower() in _GDPR_STANDARD_LOWER:
            return True
        try:
            found = (await self.modules(view)).get(module.lower())
        except GatewayError:
            return True
        return found is None or found[1] != "default"
