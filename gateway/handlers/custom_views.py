"""Custom views' definitions: ``GET /crm/{v}/settings/custom_views[/{id}]?module=``.

Configuration, but a view's criteria hold the values records are selected by (an admin's
view "Email equals x@y"): each criterion's value is withheld when its field is withheld
from this client, as a record read withholds it (privacy/view_body.py), under the redact
rule. The module's metadata is had before the request leaves (fail closed: 503). A
``module`` missing or not in the org's list is the CRM's to refuse; the answer is still
checked, with no field to judge a value by.
"""

from __future__ import annotations

from typing import Any

from gateway.crm.request import CanonicalRequest
from gateway.decision import Decision
from gateway.errors import UnreadableUpstream
from gateway.handlers import Context
from gateway.privacy.catalog import ModuleCatalog
from gateway.privacy.redact import Counts
from gateway.privacy.view_body import withhold_criteria_values
from gateway.types import Reply
from gateway.view import View


async def custom_views(
    ctx: Context, req: CanonicalRequest, view: View, decision: Decision
) -> Reply:
    module = ""
    catalogs: dict[str, ModuleCatalog] = {}
    named = req.param("module")
    found = (await ctx.views.modules(view)).get(named.lower()) if named else None
    if found is not None:
        module = decision.module = found[0]
        catalog = await ctx.views.catalog(view, module, decision)
        # a criterion names a field of the module or, through a lookup, of its target
        # (and is matched by the target's name: whole_values)
        lookups = [(f.api_name,) for f in catalog.fields.values() if f.target_module]
        catalogs = await ctx.views.catalogs_for_paths(
            view, module, lookups, decision, whole_values=True
        )
        # One view, by an id that is the org's, not the module's: a CRM may answer another
        # module's view whatever ``module`` says. Judged by the module only when the
        # module's own list names it.
        one = req.segments[4].lstrip("0") if len(req.segments) > 4 else None
        if one is not None and not await _listed(ctx, view, module, one, decision):
            module, catalogs = "", {}
    resp = await ctx.forward.send(req, decision)

    def rewrite(body: Any, counts: Counts) -> None:
        if not isinstance(body, dict):
            raise UnreadableUpstream()
        withhold_criteria_values(body, module, catalogs, view.shown, counts)

    return await ctx.forward.json_reply(resp, rewrite, decision, req)


async def _listed(ctx: Context, view: View, module: str, cvid: str, decision: Decision) -> bool:
    """Whether the module's list of views names ``cvid``: the cached list, else (a view
    made since) the list asked of the CRM now."""
    views = ctx.views
    return cvid in await views.custom_view_ids(view, module, decision) or (
        cvid in await views.custom_view_ids(view, module, decision, fresh=True)
    )
