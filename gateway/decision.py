"""One Decision per request.

The pipeline fills it in as the request walks the corridor; the audit trail writes it and
the metrics count it. Nothing else re-derives these facts. It holds names, ids, counts and
reasons only: never a token, a query value, a body or a private value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: outcome values, in the order of precedence the pipeline applies
FORWARDED = "forwarded"
REDACTED = "redacted"
REFUSED = "refused"
ERROR = "error"


@dataclass(slots=True)
class Decision:
    request_id: str
    method: str
    client: str | None = None  # keyed fingerprint of the token, never the token
    route: str = "unknown"  # a template such as /crm/{v}/{module}/search
    api_version: str | None = None
    module: str | None = None
    record_ids: list[str] = field(default_factory=list)
    outcome: str = FORWARDED
    reasons: list[str] = field(default_factory=list)
    fields_withheld: dict[str, int] = field(default_factory=dict)  # api_name -> values nulled
    upstream_status: int | None = None
    status: int = 0
    duration_ms: float = 0.0
    policy_version: str | None = None
    metadata_age_s: float | None = None

    def withheld(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.fields_withheld[name] = self.fields_withheld.get(name, 0) + n

    def refuse(self, reason: str) -> None:
        self.outcome = REFUSED
        self.reasons.append(reason)

    def as_dict(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "client": self.client,
            "method": self.method,
            "route": self.route,
            "api_version": self.api_version,
            "module": self.module,
            "record_ids": list(self.record_ids),
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "fields_withheld": {
                "names": sorted(self.fields_withheld),
                "count": sum(self.fields_withheld.values()),
            },
            "upstream_status": self.upstream_status,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "policy_version": self.policy_version,
            "metadata_age_s": None
            if self.metadata_age_s is None
            else round(self.metadata_age_s, 3),
        }
