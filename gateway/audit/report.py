"""One self-contained HTML page about the audit log, for a privacy officer.

It opens offline in any browser: inline CSS, inline SVG, no script, no external resource.
Everything taken from the log is HTML-escaped. Key numbers carry stable ids
(``total-requests``, ``verify-status`` …) so tests and scrapers can read them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from html import escape
from itertools import chain
from pathlib import Path

from gateway.audit.canonical import utc_timestamp
from gateway.audit.charts import bars, stacked_bars
from gateway.audit.stats import AuditStats, Tally, collect, read_entries
from gateway.audit.verify import (
    VerifyResult,
    audit_logs,
    checkpoints_of,
    unverifiable,
    verify_log,
)
from gateway.keys import KeyRing

OUTCOME_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#79706e")  # forwarded redacted refused error
TABLE_ROWS = 50
CHART_ROWS = 20

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1d1d1f}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;margin-top:0}code{font-size:.9em}
.verify{padding:.8rem 1rem;border-radius:6px;margin:1rem 0}
.verify.intact{background:#e8f5e9;border:1px solid #66bb6a}
.verify.broken{background:#fdecea;border:1px solid #e53935}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:8rem}
.card .n{display:block;font-size:1.6rem;font-weight:600}
.card .l{color:#555;font-size:.85rem}
table{border-collapse:collapse;margin:.6rem 0;min-width:50%}
th,td{padding:.25rem .7rem;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}
td.id{font-family:ui-monospace,monospace}
.chart text{font-size:12px;fill:#333}
.legend span{display:inline-block;margin-right:1rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px}
.empty{color:#777;font-style:italic}
footer{margin-top:3rem;color:#666;font-size:.85rem}
"""


def _num(value: int, ident: str | None = None) -> str:
    attr = f' id="{ident}"' if ident else ""
    return f'<span class="n"{attr}>{value:,}</span>'


def _verify_section(result: VerifyResult) -> str:
    state = "intact" if result.ok else "broken"
    title = "Audit log intact" if result.ok else "Audit log BROKEN"
    detail = ""
    if not result.ok:
        detail = (
            f'<p>First bad line: <span id="verify-line">{result.first_bad_line}</span> of '
            f"<code>{escape(str(result.file))}</code>: "
            f'<strong id="verify-reason">{escape(str(result.reason))}</strong>. '
            "Numbers below are read from the lines that could be parsed.</p>"
        )
    return (
        f'<section class="verify {state}"><strong id="verify-status" data-ok="{result.ok}">'
        f'{title}</strong><p id="verify-summary">{escape(result.summary)}</p>{detail}</section>'
    )


def _cards(stats: AuditStats) -> str:
    t = stats.totals
    cards = [
        ("Requests", t.requests, "total-requests"),
        ("Forwarded unchanged", t.forwarded, "total-forwarded"),
        ("Redacted", t.redacted, "total-redacted"),
        ("Refused", t.refused, "total-refused"),
        ("Errors", t.errors, "total-errors"),
        ("Values withheld", t.withheld, "total-withheld"),
        ("Gateway starts (segments)", stats.segments, "total-segments"),
    ]
    items = "".join(
        f'<div class="card">{_num(n, ident)}<span class="l">{escape(label)}</span></div>'
        for label, n, ident in cards
    )
    return f'<section class="cards">{items}</section>'


def _legend() -> str:
    names = ("forwarded", "redacted", "refused", "error")
    items = "".join(
        f'<span><i style="background:{c}"></i>{n}</span>'
        for n, c in zip(names, OUTCOME_COLORS, strict=True)
    )
    return f'<p class="legend">{items}</p>'


def _tally_section(
    title: str, ident: str, tallies: Iterable[tuple[str, Tally]], key_header: str, mono: bool
) -> str:
    rows = list(tallies)
    if not rows:
        return f'<h2>{escape(title)}</h2><p class="empty">No requests.</p>'
    chart = stacked_bars(
        [(k, [t.forwarded, t.redacted, t.refused, t.errors]) for k, t in rows[:CHART_ROWS]],
        OUTCOME_COLORS,
        title,
    )
    cls = ' class="id"' if mono else ""
    body = "".join(
        f'<tr><td{cls} title="{escape(k)}">{escape(k)}</td><td>{t.requests:,}</td>'
        f"<td>{t.redacted:,}</td><td>{t.refused:,}</td><td>{t.errors:,}</td>"
        f"<td>{t.withheld:,}</td></tr>"
        for k, t in rows[:TABLE_ROWS]
    )
    more = len(rows) - TABLE_ROWS
    note = f'<p class="empty">and {more:,} more not shown.</p>' if more > 0 else ""
    return (
        f'<h2>{escape(title)}</h2>{_legend()}{chart}<table id="{ident}"><thead><tr>'
        f"<th>{escape(key_header)}</th><th>Requests</th><th>Redacted</th><th>Refused</th>"
        f"<th>Errors</th><th>Values withheld</th></tr></thead><tbody>{body}</tbody></table>{note}"
    )


def _counter_section(
    title: str, ident: str, rows: list[tuple[str, int]], header: str, unit: str, color: str
) -> str:
    if not rows:
        return f'<h2>{escape(title)}</h2><p class="empty">None.</p>'
    body = "".join(
        f'<tr><td class="id">{escape(k)}</td><td>{n:,}</td></tr>' for k, n in rows[:TABLE_ROWS]
    )
    return (
        f"<h2>{escape(title)}</h2>{bars(rows[:CHART_ROWS], color, title)}"
        f'<table id="{ident}"><thead><tr><th>{escape(header)}</th><th>{escape(unit)}</th></tr>'
        f"</thead><tbody>{body}</tbody></table>"
    )


def _by_requests(tallies: dict[str, Tally]) -> list[tuple[str, Tally]]:
    return sorted(tallies.items(), key=lambda kv: (-kv[1].requests, kv[0]))


def render_report(stats: AuditStats, result: VerifyResult, log_path: str) -> str:
    period = (
        f"{escape(stats.first_ts or '?')} to {escape(stats.last_ts or '?')}"
        if stats.first_ts
        else "no entries"
    )
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Privacy gateway audit report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Privacy gateway audit report</h1>",
        f'<p class="meta">Log <code>{escape(log_path)}</code> · period {period} (UTC) · '
        f"generated {escape(utc_timestamp())}</p>",
        _verify_section(result),
        _cards(stats),
        _tally_section(
            "Requests per client",
            "by-client",
            _by_requests(stats.by_client),
            "Client fingerprint",
            mono=True,
        ),
        _tally_section(
            "Requests per module", "by-module", _by_requests(stats.by_module), "Module", mono=False
        ),
        _tally_section(
            "Requests per day", "by-day", sorted(stats.by_day.items()), "Day (UTC)", mono=False
        ),
        _counter_section(
            "Top refusal reasons",
            "refusal-reasons",
            stats.refusal_reasons.most_common(),
            "Reason",
            "Refused requests",
            OUTCOME_COLORS[2],
        ),
        _counter_section(
            "Most-withheld fields",
            "withheld-fields",
            stats.withheld_fields.most_common(),
            "Field (API name)",
            "Requests with values withheld",
            OUTCOME_COLORS[1],
        ),
        "<footer><p>A client is named by a keyed fingerprint of its OAuth token, never by the "
        "token. The audit log holds field names, record ids, counts and reasons; it never "
        "holds field values, query strings or bodies. Integrity is checked by recomputing the "
        "hash chain and, where available, the signed checkpoints.</p></footer>",
        "</body></html>",
    ]
    return "".join(parts)


def run_report(
    paths: str | Sequence[str],
    html_out: str,
    checkpoints: str | None,
    secret: bytes | None,
    *,
    keys: KeyRing | None = None,
) -> int:
    """Write one HTML report over every log ``paths`` names (files, or directories of
    ``*.jsonl``, as ``audit verify`` takes them): the numbers of all of them merged, and the
    verification of each. 0 all intact, 1 any broken (the report is still written), 2
    unreadable."""
    named = [paths] if isinstance(paths, str) else list(paths)
    logs = audit_logs(named)
    if checkpoints is not None and len(logs) != 1:
        print("audit report failed: --checkpoints names the file of one log, not of several")
        return 2
    try:
        if not logs:
            raise FileNotFoundError(2, "no *.jsonl audit log", ", ".join(named))
        results = []
        collected = len(named) > 1 or logs != [Path(named[0])]
        for log in logs:
            cps = checkpoints_of(log, checkpoints)
            result = verify_log(log, cps, secret, keys=keys)
            refused = unverifiable(log, cps, keys=keys, collected=collected)
            if refused is not None:  # as ``audit verify`` says: never "intact"
                result = dataclasses.replace(result, ok=False, reason=refused, summary=refused)
            results.append((log, result))
        result = results[0][1] if len(results) == 1 else _merged(results)
        stats = collect(chain.from_iterable(read_entries(log) for log in logs))
        page = render_report(stats, result, ", ".join(map(str, named)))
        tmp = f"{html_out}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, html_out)
    except OSError as exc:
        print(f"audit report failed: {exc.filename or named[0]}: {exc.strerror or exc}")
        return 2
    print(f"audit report written to {html_out}: {result.summary}")
    return 0 if result.ok else 1


def _merged(results: list[tuple[Path, VerifyResult]]) -> VerifyResult:
    """Several logs as one verdict: intact only if each is; the first broken one named."""
    broken = next((r for _, r in results if not r.ok), None)
    intact = sum(r.ok for _, r in results)
    summary = f"{intact} of {len(results)} audit logs intact; " + "; ".join(
        f"{log}: {r.summary}" for log, r in results
    )
    first = broken or results[0][1]
    return replace(
        first,
        entries=sum(r.entries for _, r in results),
        segments=sum(r.segments for _, r in results),
        checkpoints=sum(r.checkpoints for _, r in results),
        summary=summary,
    )
