"""The audit trail: one tamper-evident JSON line per request, and the tools to check it.

    gateway calls    await trail.record(decision.as_dict())
                              │ seq reserved now, entry queued (trail.py)
                              ▼
    one writer task  enrich ─▶ scrub ─▶ chain-hash ─▶ render   (processors.py, scrub.py)
                              │ one write() + one fsync() per group of entries
                              ▼
                     audit.jsonl (+ .1, .2 … after rotation; logfile.py, files.py)
                     checkpoints file: signed {seq, hash} heads (checkpoints.py, keys.py)

    people           verify_log / run_verify   (verify.py)
                     run_report → one self-contained HTML page (stats.py, report.py)

Entries hold names, ids, counts and reasons only, never a token, a query value, a body or
a private value: the scrub step is an allow-list. Their schema is unchanged by checkpoint
signing; a stdout segment that continues from a checkpoint says ``resumed_from_checkpoint``
in its ``reasons``.

Checkpoints (every ``audit.checkpoint_interval_seconds``, idle or not, and on close) are
one canonical JSON line each: ``{"alg", "hash", "key_id", "seq", "sig", "ts"}``, ``sig``
over all the other fields. Two kinds of key (``gateway.keys``):

- ``hmac-sha256`` with the gateway secret: the default, and the only kind older
  checkpoints have (they carry no ``alg``; they still verify, with the secret).
- ``ed25519``: ``privacy-gateway audit keygen DIR`` writes ``DIR/KEY_ID.key`` (PKCS#8 PEM,
  0600) and ``DIR/KEY_ID.pub`` (SubjectPublicKeyInfo PEM). ``serve --checkpoint-key``
  (``GATEWAY_CHECKPOINT_KEY``) signs with the private key; an auditor verifies with the
  public key alone: ``audit verify LOG --public-key KEY_ID.pub``.

Rotation: each checkpoint names its ``key_id``; the verifier holds a ``KeyRing``, so give
every public key that signed part of the log (``--public-key OLD --public-key NEW``, plus
``--secret-file`` for HMAC-signed parts). Explicit keys are the whole ring; without any,
``audit verify`` uses the gateway secret from ``GATEWAY_SECRET``, ``GATEWAY_SECRET_FILE`` or
``.gateway-secret`` beside the log, as before. A checkpoint by a key outside the ring, or
whose ``alg`` is not its key's kind, fails verification; with no key at all signatures are
reported unchecked.

Where: ``--checkpoint-file`` (``GATEWAY_CHECKPOINT_FILE``), default ``<log>.checkpoints``.
Keep it where the gateway's identity may append but not rewrite or delete it (it is only
ever opened ``O_APPEND``): ``chattr +a``, another owner's directory, or a shipped copy.
With the trail on stdout only, checkpoints are written only when this is set, and each
start continues the chain from the file's last checkpoint, so a capture of several runs
verifies as one log; a crash between checkpoints in that mode is reported at the resumed
segment start. What checkpoints prove: a cut tail or rebuilt chain below the last
checkpoint fails; entries after the last checkpoint are not pinned (the summary counts
them), and without any checkpoints a cut tail is undetectable.

Exit codes of ``audit verify``: 0 intact, 1 broken (the first bad line and its file are
named: a log line, or a checkpoint line), 2 unreadable or nothing to check the keys against.

Many writers (``serve --workers N``, many pods): each process holds the lock on its own log
(``<log>.lock``) and stamps ``instance`` on every entry (``config.instance_name``). ``audit
verify`` and ``audit report`` take several logs or a directory of ``*.jsonl`` logs, each
with its own ``<log>.checkpoints``; verify exits 0 only if every chain is intact.
"""

from gateway.audit.trail import AuditTrail
from gateway.audit.verify import VerifyResult, run_verify, verify_log
from gateway.errors import AuditUnavailable

__all__ = ["AuditTrail", "AuditUnavailable", "VerifyResult", "run_verify", "verify_log"]
