"""Signed checkpoints: proof of how far the log reached, kept in a separate file.

A hash chain alone only proves the lines agree with each other: whoever can rewrite the
file can rebuild every hash or cut the tail off. A checkpoint pins the head at a moment in
time, signed, so a cut tail or a rebuilt chain no longer matches. As with CloudTrail's
digests, one is written on a timer even when nothing happened, so an idle hour can be told
from a deleted one.

One canonical JSON object per line (sorted keys, no whitespace)::

    {"alg": "ed25519", "hash": "<head, 64 hex>", "key_id": "<12 hex>", "seq": 42,
     "sig": "<hex>", "ts": "2026-01-01T00:00:00.000000Z"}

``sig`` signs the canonical JSON of every other field, ``alg`` and ``key_id`` included, so
neither can be swapped. ``alg`` is ``hmac-sha256`` (64 hex, keyed with the gateway secret)
or ``ed25519`` (128 hex); a checkpoint without ``alg`` is the older format and means
``hmac-sha256``. The file lives at ``<log>.checkpoints`` unless configured elsewhere
(``--checkpoint-file``): keep it where the gateway may append but not rewrite or delete it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.canonical import canonical_json, is_hash, utc_timestamp
from gateway.audit.files import Tail, lines_backwards, write_stdout
from gateway.keys import HMAC_SHA256, HmacKey, KeyRing, SigningKey, Verdict


def signed_bytes(checkpoint: dict[str, Any]) -> bytes:
    """What ``sig`` signs: the canonical JSON of the checkpoint without ``sig``."""
    return canonical_json({k: v for k, v in checkpoint.items() if k != "sig"})


def checkpoint_signature(secret: bytes, checkpoint: dict[str, Any]) -> str:
    """The HMAC-SHA256 signature (the older, secret-keyed kind)."""
    return HmacKey(secret).sign(signed_bytes(checkpoint))


def make_checkpoint(
    seq: int, head: str, key: bytes | SigningKey, ts: str | None = None
) -> dict[str, Any]:
    """A signed checkpoint; ``key`` is a signing key, or the gateway secret for HMAC."""
    signer = HmacKey(key) if isinstance(key, bytes) else key
    checkpoint: dict[str, Any] = {
        "seq": seq,
        "hash": head,
        "ts": ts or utc_timestamp(),
        "key_id": signer.kid,
        "alg": signer.alg,
    }
    checkpoint["sig"] = signer.sign(signed_bytes(checkpoint))
    return checkpoint


def default_checkpoint_path(log: Path) -> Path:
    return log.with_name(log.name + ".checkpoints")


@dataclass(frozen=True, slots=True)
class CheckpointLine:
    number: int  # 1-based line in the checkpoints file
    seq: int | None  # None when the line is not a readable checkpoint
    hash: str = ""
    key_id: str = ""
    sig: str = ""
    body: dict[str, Any] | None = None
    alg: str = HMAC_SHA256

    @property
    def readable(self) -> bool:
        return self.seq is not None

    def check(self, ring: KeyRing) -> Verdict:
        if self.body is None:
            return "bad_signature"
        return ring.check(self.key_id, self.alg, signed_bytes(self.body), self.sig)

    def signed_by(self, secret: bytes) -> bool:
        return self.check(KeyRing([HmacKey(secret)])) == "ok"


def read_checkpoints(path: Path) -> list[CheckpointLine]:
    result: list[CheckpointLine] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            result.append(_parse(number, raw))
    return result


def last_checkpoint(path: Path) -> Tail | None:
    """The seq and head of the last readable checkpoint in ``path``; None if it has none.

    A missing file has none; any other read error propagates.
    """
    try:
        for raw, _ in lines_backwards(path):
            line = _parse(0, raw)
            if line.seq is not None:
                return Tail(seq=line.seq, head=line.hash)
    except FileNotFoundError:
        pass
    return None


def _parse(number: int, raw: bytes) -> CheckpointLine:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return CheckpointLine(number, None)
    return parse_checkpoint(number, body)


def parse_checkpoint(number: int, body: object) -> CheckpointLine:
    """A checkpoint from a checkpoints file's line, or from a stream's ``checkpoint`` entry
    (whose ``event`` and ``instance`` are labels outside what ``sig`` signs)."""
    if not isinstance(body, dict):
        return CheckpointLine(number, None)
    if body.get("event") == STREAM_EVENT:
        body = {k: v for k, v in body.items() if k not in _STREAM_LABELS}
    seq, head = body.get("seq"), body.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or not is_hash(head):
        return CheckpointLine(number, None)
    return CheckpointLine(
        number,
        seq,
        str(head),
        str(body.get("key_id", "")),
        str(body.get("sig", "")),
        body,
        str(body.get("alg", HMAC_SHA256)),
    )


STREAM_EVENT = "checkpoint"
_STREAM_LABELS = ("event", "instance")


class StreamCheckpoints:
    """Checkpoints as entries of their own kind in the stdout stream, beside the entries
    they pin: ``{"event": "checkpoint", "instance": ..., <the checkpoint's fields>}``. They
    are not links of the hash chain (they have no ``prev_hash``); ``sig`` signs the same
    fields as in a checkpoints file."""

    def __init__(self, instance: str) -> None:
        self._instance = instance

    def append(self, checkpoint: dict[str, Any]) -> None:
        line = {"event": STREAM_EVENT, "instance": self._instance, **checkpoint}
        write_stdout(canonical_json(line) + b"\n")

    def close(self) -> None:
        pass


class CheckpointFile:
    """Appends one checkpoint per line and fsyncs it; blocking, called from a worker thread.

    The file is only ever opened with ``O_APPEND`` (never truncated), so the gateway's
    identity needs append permission only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def append(self, checkpoint: dict[str, Any]) -> None:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o640)
        os.write(self._fd, canonical_json(checkpoint) + b"\n")
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
