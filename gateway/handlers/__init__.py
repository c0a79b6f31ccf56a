"""One module per route kind, named by the route table (``crm/routes.py``). Each handler
takes the canonical request, the privacy view and the request's Decision, and returns the
Reply; none reads anything the upstream will not receive."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachetools import TTLCache

from gateway.bulk import ExportSlots
from gateway.forward import Forwarder
from gateway.policy import Policy
from gateway.state import RecordStates
from gateway.view import Views

#: file_id -> (the ids an uploaded bulk-write file names, the other id-like values in it)
UploadedFiles = TTLCache[str, tuple[tuple[str, ...], tuple[str, ...]]]


def _uploaded_files() -> UploadedFiles:
    # The CRM keeps an uploaded file for a few days; a job after that has nothing to run.
    return TTLCache(maxsize=10_000, ttl=7 * 24 * 3600)


@dataclass(frozen=True, slots=True)
class Context:
    forward: Forwarder
    views: Views
    states: RecordStates
    policy: Policy
    #: bulk exports running at once (``Settings.max_concurrent_exports``)
    exports: ExportSlots
    #: what each file uploaded through this gateway named, to check again when a job runs it
    uploads: UploadedFiles = field(default_factory=_uploaded_files)
