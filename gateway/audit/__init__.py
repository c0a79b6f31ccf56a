"""The audit trail: one tamper-evident JSON line per request, and the tools to check it.

    gateway calls    await trail.record(decision.as_dict())
                              │ seq reserved now, entry queued (trail.py)
                              ▼
    one writer task  enrich ─▶ scrub ─▶ chain-hash ─▶ render   (processors.py, scrub.py)
                              │ one write() + one fsync() per group of entries
                              ▼
                     audit.jsonl (+ .1, .2 … after rotation; logfile.py, files.py)
                     audit.jsonl.checkpoints: signed {seq, hash} heads (checkpoints.py)

    people           verify_log / run_verify   (verify.py)
                     run_report → one self-contained HTML page (stats.py, report.py)

Entries hold names, ids, counts and reasons only, never a token, a query value, a body or
a private value: the scrub step is an allow-list.
"""

from gateway.audit.trail import AuditTrail
from gateway.audit.verify import VerifyResult, run_verify, verify_log
from gateway.errors import AuditUnavailable

__all__ = ["AuditTrail", "AuditUnavailable", "VerifyResult", "run_verify", "verify_log"]
