"""One module per route kind, named by the route table (``crm/routes.py``). Each handler
takes the canonical request, the privacy view and the request's Decision, and returns the
Reply; none reads anything the upstream will not receive."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachetools import TTLCache

from gateway.bulk import ExportSlots
from gateway.crm.upload_file import UploadScan
from gateway.decision import Decision
from gateway.errors import Reason
from gateway.forward import Forwarder
from gateway.policy import Policy
from gateway.privacy.writes import STOP_PROCESSING, verdict
from gateway.rules import Check, Rule, guard, refuses
from gateway.state import RecordStates
from gateway.view import Views

#: file id -> what its upload scan found (crm/upload_file.py ``UploadScan``)
UploadedFiles = TTLCache[str, UploadScan]


def uploaded_files() -> UploadedFiles:
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
    uploads: UploadedFiles = field(default_factory=uploaded_files)

    def guard(self, decision: Decision, rule: Rule, check: Check) -> None:
        """Run a guard that refuses restricted fields, in the mode the policy gives ``rule``
        (rules.py ``guard``)."""
        guard(self.policy.rule_mode(rule), decision, rule, check)

    def refuses(
        self, decision: Decision, rule: Rule, reason: Reason, fields: list[str] | None = None
    ) -> bool:
        """Whether a refusal ``rule`` found is made (enforce); in shadow it is recorded."""
        return refuses(self.policy.rule_mode(rule), decision, rule, reason, fields)

    def verdict(self, decision: Decision, state: bool | None) -> str | None:
        """A write target's reason to refuse, or None. Stop processing follows its rule's
        mode; an unknown state is refused in every mode (fail closed)."""
        reason = verdict(state)
        if reason == STOP_PROCESSING and not self.refuses(
            decision, Rule.STOP_PROCESSING, Reason.STOP_PROCESSING
        ):
            return None
        return reason
