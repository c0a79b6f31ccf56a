"""Named rules and their modes: how a policy rolls an enforcement out.

Each enforcement the gateway makes is a rule with a name the policy uses. A rule runs in
one of three modes: ``enforce`` (refuse or redact), ``shadow`` (evaluated on the same code
path; what enforce would have done is recorded in the Decision as ``would_refuse`` /
``would_redact``, and the traffic is left as it was) or ``off`` (still evaluated, nothing
recorded, nothing changed).

A check the gateway *could not make* is never a rule: metadata it cannot have, a body it
cannot read, a record whose state it cannot learn, a path it cannot resolve, a route it
does not know. Those fail closed in every mode, so shadow never turns "could not check"
into "pass". ``FAIL_CLOSED`` names them so a policy can say ``enforce`` and nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from gateway.decision import Decision
from gateway.errors import Reason, RestrictedField
from gateway.privacy.redact import Tally


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    SHADOW = "shadow"
    OFF = "off"


class Rule(enum.StrEnum):
    """Rules a policy may shadow or turn off."""

    #: private values in answers are nulled (record reads, search, COQL, bulk results,
    #: write answers)
    REDACT = "redact"
    #: restricted fields in search criteria, email/phone/word search, COQL conditions and
    #: aggregates, bulk-read criteria, a custom view's criteria (cvid), and X-EXTERNAL keys
    #: of a withheld field
    CRITERIA = "criteria"
    #: sort_by on a restricted field, or a custom view sorted by one
    SORT = "sort"
    #: writes that reach a record in stop processing
    STOP_PROCESSING = "stop_processing"
    #: inserts without Data_Processing_Basis_Details (only with writes.require_consent)
    CONSENT = "consent"


#: checks that fail closed: always enforced, whatever the policy's mode
FAIL_CLOSED = {
    "unknown_route": "a route, method or parameter outside the route table is refused",
    "metadata": "without field metadata, org or related-list metadata no record data passes",
    "unreadable_upstream": "an answer that cannot be read or checked is withheld",
    "state_unknown": "a write whose record's stop-processing state is unknown is refused",
    "unknown_targets": "a write whose records cannot be named beforehand is refused",
    "upload_limits": "an upload that cannot be scanned within its limits is refused",
}


#: a guard: raises ``RestrictedField``, or appends the restricted fields to its argument
Check = Callable[[list[str] | None], None]


def guard(
    mode: Mode,
    decision: Decision,
    rule: Rule,
    check: Check,
    reason: Reason = Reason.RESTRICTED_CRITERIA,
) -> None:
    """Run a guard that raises ``RestrictedField``. ``check`` gets None in enforce mode
    (raise at the first restricted field), or a list to append restricted fields to and
    go on checking, so its fail-closed checks still raise in shadow and off."""
    would: list[str] | None = None if mode is Mode.ENFORCE else []
    try:
        check(would)
    except RestrictedField as exc:
        if would is None:
            decision.refuse(reason, exc.api_name)
            raise
        would.append(exc.api_name)
    if would and mode is Mode.SHADOW:
        decision.would_refuse(rule, reason, would)


def refuses(
    mode: Mode, decision: Decision, rule: Rule, reason: Reason, fields: list[str] | None = None
) -> bool:
    """Whether a refusal ``rule`` found is made: in shadow it is recorded instead."""
    if mode is Mode.SHADOW:
        decision.would_refuse(rule, reason, fields)
    return mode is Mode.ENFORCE


def withholds(mode: Mode, decision: Decision, counts: dict[str, int]) -> bool:
    """Whether a redacted answer replaces the CRM's (enforce); in shadow what would have
    been withheld is recorded and the CRM's answer goes on. An answer holding values no
    metadata describes (``Tally.unchecked``) is withheld in every mode: the gateway could
    not judge them, and shadow never turns "could not check" into "pass"."""
    if mode is Mode.ENFORCE or (isinstance(counts, Tally) and counts.unchecked):
        decision.withheld(counts)
        return True
    if mode is Mode.SHADOW and counts:
        decision.would_withhold(counts)
    return False
