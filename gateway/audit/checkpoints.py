"""Signed checkpoints: proof of how far the log reached, kept in a separate file.

A hash chain alone only proves the lines agree with each other: whoever can rewrite the
file can rebuild every hash or cut the tail off. A checkpoint ``{seq, hash, ts, key_id,
sig}`` signed with the gateway's secret pins the head at a moment in time, so a cut tail
or a rebuilt chain no longer matches. As with CloudTrail's digests, one is written on a
timer even when nothing happened, so an idle hour can be told from a deleted one. Keep
the checkpoints file where the gateway may append but not rewrite it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.canonical import canonical_json, hmac_sha256_hex, is_hash, utc_timestamp
from gateway.keys import key_id


def checkpoint_signature(secret: bytes, checkpoint: dict[str, Any]) -> str:
    body = {k: v for k, v in checkpoint.items() if k != "sig"}
    return hmac_sha256_hex(secret, canonical_json(body))


def make_checkpoint(seq: int, head: str, secret: bytes, ts: str | None = None) -> dict[str, Any]:
    checkpoint: dict[str, Any] = {
        "seq": seq,
        "hash": head,
        "ts": ts or utc_timestamp(),
        "key_id": key_id(secret),
    }
    checkpoint["sig"] = checkpoint_signature(secret, checkpoint)
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

    @property
    def readable(self) -> bool:
        return self.seq is not None

    def signed_by(self, secret: bytes) -> bool:
        if self.body is None:
            return False
        return self.key_id == key_id(secret) and checkpoint_signature(secret, self.body) == self.sig


def read_checkpoints(path: Path) -> list[CheckpointLine]:
    result: list[CheckpointLine] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            result.append(_parse(number, raw))
    return result


def _parse(number: int, raw: bytes) -> CheckpointLine:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return CheckpointLine(number, None)
    if not isinstance(body, dict):
        return CheckpointLine(number, None)
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
    )


class CheckpointFile:
    """Appends one checkpoint per line and fsyncs it; blocking, called from a worker thread."""

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
