"""One Decision per request.

The pipeline fills it in as the request walks the corridor; the audit trail writes it and
the metrics count it. Nothing else re-derives these facts. It holds names, ids, counts and
reason codes only: never a token, a query value, a body or a private value. ``reasons`` come
from the closed ``Reason`` vocabulary; ``record_ids`` only ever hold numeric ids the client
sent as record ids or the CRM returned (never a path value under ``X-EXTERNAL``, never a
cell of an upload).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.errors import Reason

#: outcome values, in the order of precedence the pipeline applies
FORWARDED = "forwarded"
REDACTED = "redacted"
REFUSED = "refused"
ERROR = "error"
CANCELLED = "cancelled"  # stopped at shutdown, past the drain deadline

_RECORD_ID = re.compile(r"\d{1,25}")


@dataclass(slots=True)
class Decision:
    request_id: str  # the gateway's own id: the audit entry's key
    method: str
    client: str | None = None  # keyed fingerprint of the token, never the token
    client_request_id: str | None = None  # the client's X-Request-Id, when short and plain
    route: str = "unknown"  # a template such as /crm/{v}/{module}/search
    api_version: str | None = None
    module: str | None = None
    record_ids: list[str] = field(default_factory=list)
    outcome: str = FORWARDED
    reasons: list[str] = field(default_factory=list)
    fields_refused: list[str] = field(default_factory=list)  # api names (metadata spelling)
    client_rule: str | None = None  # the policy's name for the client, never its key
    fields_withheld: dict[str, int] = field(default_factory=dict)  # api_name -> values nulled
    upstream_status: int | None = None
    status: int = 0
    duration_ms: float = 0.0
    policy_version: str | None = None
    policy_hash: str | None = None  # the policy file's digest (policy.py ``parse_policy``)
    metadata_age_s: float | None = None
    #: its entry has been handed to the audit trail (not itself an audit fact)
    recorded: bool = False
    # What rules in shadow mode would have done (gateway/rules.py); the traffic was not
    # changed. ``shadowed`` counts, per rule, the times it would have acted (for metrics).
    would_refuse_reasons: list[str] = field(default_factory=list)
    would_refuse_fields: list[str] = field(default_factory=list)
    would_redact: dict[str, int] = field(default_factory=dict)  # api_name -> values
    shadowed: dict[str, int] = field(default_factory=dict)

    def withheld(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.fields_withheld[name] = self.fields_withheld.get(name, 0) + n

    def note(self, reason: Reason) -> None:
        if reason.value not in self.reasons:
            self.reasons.append(reason.value)

    def refuse(self, reason: Reason, field_name: str | None = None) -> None:
        self.outcome = REFUSED
        self.note(reason)
        if field_name is not None and field_name not in self.fields_refused:
            self.fields_refused.append(field_name)

    def would_refuse(self, rule: str, reason: Reason, fields: list[str] | None = None) -> None:
        self.shadowed[rule] = self.shadowed.get(rule, 0) + 1
        if reason.value not in self.would_refuse_reasons:
            self.would_refuse_reasons.append(reason.value)
        for name in fields or ():
            if name not in self.would_refuse_fields:
                self.would_refuse_fields.append(name)

    def would_withhold(self, counts: dict[str, int]) -> None:
        self.shadowed["redact"] = self.shadowed.get("redact", 0) + 1
        for name, n in counts.items():
            self.would_redact[name] = self.would_redact.get(name, 0) + n

    def merge_shadow(self, other: Decision) -> None:
        """What ``other`` (a composite's sub-request) would have done, added to this."""
        for rule, n in other.shadowed.items():
            self.shadowed[rule] = self.shadowed.get(rule, 0) + n
        for reason in other.would_refuse_reasons:
            if reason not in self.would_refuse_reasons:
                self.would_refuse_reasons.append(reason)
        for name in other.would_refuse_fields:
            if name not in self.would_refuse_fields:
                self.would_refuse_fields.append(name)
        for name, n in other.would_redact.items():
            self.would_redact[name] = self.would_redact.get(name, 0) + n

    def add_record_id(self, rid: str | None) -> None:
        """A record id the client named as one, or the CRM returned; anything else is no
        audit fact."""
        if rid and _RECORD_ID.fullmatch(rid) and rid not in self.record_ids:
            self.record_ids.append(rid)

    def as_dict(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "client": self.client,
            "client_rule": self.client_rule,
            "method": self.method,
            "route": self.route,
            "api_version": self.api_version,
            "module": self.module,
            "record_ids": list(self.record_ids),
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "fields_refused": list(self.fields_refused),
            "fields_withheld": {
                "names": sorted(self.fields_withheld),
                "count": sum(self.fields_withheld.values()),
            },
            "upstream_status": self.upstream_status,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "policy_version": self.policy_version,
            "policy_hash": self.policy_hash,
            "metadata_age_s": None
            if self.metadata_age_s is None
            else round(self.metadata_age_s, 3),
            "would_refuse": list(self.would_refuse_reasons),
            "would_refuse_fields": list(self.would_refuse_fields),
            "would_redact": {
                "names": sorted(self.would_redact),
                "count": sum(self.would_redact.values()),
            },
            "shadowed_rules": sorted(self.shadowed),
        }
