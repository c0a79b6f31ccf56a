"""Counters for ``GET /_gateway/metrics`` in the Prometheus text format.

Fed from the one Decision per request; nothing here re-derives a fact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from gateway.decision import Decision

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (route, outcome, status)
        self.withheld: Counter[str] = Counter()  # field name -> values nulled
        self.refusals: Counter[str] = Counter()  # reason kind -> count
        self.shadowed: Counter[str] = Counter()  # rule -> times shadow mode held it back
        self.duration_buckets = [0] * (len(_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.gauges: dict[str, Callable[[], float]] = {}
        #: name -> its labels now, rendered as a gauge of 1 (the policy version in force)
        self.info: dict[str, Callable[[], dict[str, str]]] = {}

    def observe(self, d: Decision) -> None:
        self.requests[(d.route, d.outcome, d.status)] += 1
        self.withheld.update(d.fields_withheld)
        self.shadowed.update(d.shadowed)
        for reason in d.reasons:
            self.refusals[reason.split(":", 1)[0]] += 1
        seconds = d.duration_ms / 1000
        self.duration_sum += seconds
        for i, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                self.duration_buckets[i] += 1
                break
        else:
            self.duration_buckets[-1] += 1

    def render(self) -> str:
        lines = [
            "# HELP gateway_requests_total Requests by route template, outcome and status.",
            "# TYPE gateway_requests_total counter",
        ]
        for (route, outcome, status), n in sorted(self.requests.items()):
            labels = f'route="{route}",outcome="{outcome}",status="{status}"'
            lines.append(f"gateway_requests_total{{{labels}}} {n}")
        lines += [
            "# HELP gateway_values_withheld_total Private values nulled, by field.",
            "# TYPE gateway_values_withheld_total counter",
        ]
        for name, n in sorted(self.withheld.items()):
            lines.append(f'gateway_values_withheld_total{{field="{name}"}} {n}')
        lines += [
            "# HELP gateway_decision_reasons_total Refusal and error reasons.",
            "# TYPE gateway_decision_reasons_total counter",
        ]
        for reason, n in sorted(self.refusals.items()):
            lines.append(f'gateway_decision_reasons_total{{reason="{reason}"}} {n}')
        lines += [
            "# HELP gateway_shadow_would_act_total Times a rule in shadow mode would have acted.",
            "# TYPE gateway_shadow_would_act_total counter",
        ]
        for rule, n in sorted(self.shadowed.items()):
            lines.append(f'gateway_shadow_would_act_total{{rule="{rule}"}} {n}')
        lines += [
            "# HELP gateway_request_duration_seconds Time spent per request.",
            "# TYPE gateway_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip((*_BUCKETS, float("inf")), self.duration_buckets, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'gateway_request_duration_seconds_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"gateway_request_duration_seconds_sum {self.duration_sum:.6f}")
        lines.append(f"gateway_request_duration_seconds_count {cumulative}")
        for name, read in sorted(self.gauges.items()):
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {read():g}")
        for name, read_labels in sorted(self.info.items()):
            pairs = ",".join(f'{k}="{_escaped(v)}"' for k, v in sorted(read_labels().items()))
            lines += [f"# TYPE {name} gauge", f"{name}{{{pairs}}} 1"]
        return "\n".join(lines) + "\n"


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
