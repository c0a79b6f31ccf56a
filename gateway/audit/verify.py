"""Check a log: every line whole, every hash right, every seq next, every checkpoint met.

Walks the log's files oldest first (``audit.jsonl.N`` … ``.1``, then ``audit.jsonl``) and
stops at the first bad line. Given the checkpoints file it also proves the tail was not cut
and the chain not rebuilt: each checkpoint must name a seq that is present, with the same
hash, and, given a key ring, carry a valid signature by a key of the ring. Signatures are
checked before the log is walked: a checkpoint that is not signed by a trusted key proves
nothing, so it is reported as such rather than as a mismatch with the log. Without
checkpoints a cut tail is undetectable, and the summary says so; entries after the last
checkpoint are never pinned, and the summary counts them.

The ring holds Ed25519 public keys (no secret needed) and/or HMAC secrets. A checkpoint
whose ``key_id`` is not in the ring is reported as such; an empty ring checks no signatures
(the summary says "unchecked").

A captured stdout stream (``serve`` without ``--audit-log`` or ``--checkpoint-file``)
carries its checkpoints as entries of event ``checkpoint`` between the entries they pin;
``verify_stream`` checks it: one chain per ``instance`` (the workers of one host
interleave), each process start (a ``segment_start`` at seq 1 linking to the genesis hash)
begins that instance's chain anew, and each checkpoint must pin the entry just before it
in its instance's chain, signed by a key of the ring. A whole process lifetime removed
from the stream (its checkpoints with it) cannot be told from one that never ran: keep the
stream where it cannot be edited (the SIEM), or give ``--checkpoint-file``.

One unreadable line directly followed by a ``segment_start`` that carries
``previous_tail_unreadable`` and links to the last whole entry is a crash the writer
recovered from (see ``gateway.audit.trail``): it is reported in the summary, not as damage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.canonical import GENESIS_HASH, entry_hash, is_hash
from gateway.audit.checkpoints import (
    STREAM_EVENT,
    CheckpointLine,
    default_checkpoint_path,
    parse_checkpoint,
    read_checkpoints,
)
from gateway.audit.files import log_files
from gateway.keys import HmacKey, KeyRing

HASH_MISMATCH = "hash mismatch (entry edited)"
SEQ_GAP = "seq gap (entry deleted or reordered)"
PREV_MISMATCH = "prev_hash mismatch"
NOT_JSON = "not JSON"
NOT_ENTRY = "not an audit entry"
TORN_TAIL = "partial last line (write cut short)"
CHECKPOINT_HASH = "checkpoint hash mismatch"
CHECKPOINT_SIG = "checkpoint signature invalid"
CHECKPOINT_UNKNOWN_KEY = "checkpoint signed by a key not in the key ring"
CHECKPOINT_UNREADABLE = "checkpoint not readable"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_line: int | None  # 1-based, in ``file``
    file: str | None
    reason: str | None
    summary: str
    segments: int = 0
    head: str = GENESIS_HASH
    checkpoints: int = 0  # checkpoints that matched the log
    recovered: tuple[str, ...] = ()  # "line L of FILE" for each torn line a segment recovered
    key_ids: tuple[str, ...] = ()  # the keys whose signatures were checked and held
    last_checkpoint_seq: int | None = None  # the highest seq a checkpoint pins


@dataclass(frozen=True, slots=True)
class _Line:
    file: Path
    number: int
    raw: bytes

    @property
    def terminated(self) -> bool:
        return self.raw.endswith(b"\n")


class _Broken(Exception):
    def __init__(self, line: _Line | CheckpointLine, file: Path, reason: str) -> None:
        super().__init__(reason)
        self.number = line.number
        self.file = file
        self.reason = reason


def _lines(files: list[Path]) -> Iterator[_Line]:
    for path in files:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                yield _Line(path, number, raw)


def _load(line: _Line) -> tuple[dict[str, Any] | None, str]:
    """The entry on a line, or None and why not."""
    try:
        entry = orjson.loads(line.raw)
    except orjson.JSONDecodeError:
        return None, NOT_JSON
    seq = entry.get("seq") if isinstance(entry, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None, NOT_ENTRY
    if not is_hash(entry.get("prev_hash")) or not isinstance(entry.get("hash"), str):
        return None, NOT_ENTRY
    return entry, ""


class _Walk:
    """The chain state while reading lines in order."""

    def __init__(self, checkpoints: list[CheckpointLine], checkpoint_file: Path | None) -> None:
        self.seq = 0
        self.head = GENESIS_HASH
        self.entries = 0
        self.segments = 0
        self.recovered: list[str] = []
        # idle periods give many checkpoints for one seq: every one of them is checked
        self._pinned: dict[int, list[CheckpointLine]] = {}
        for c in checkpoints:
            if c.seq is not None:
                self._pinned.setdefault(c.seq, []).append(c)
        self._checkpoint_file = checkpoint_file
        self.matched = 0  # checkpoint lines whose seq and hash the log agrees with
        self.pinned = 0  # in a stream: the seq the last checkpoint pinned

    def run(self, lines: Iterator[_Line]) -> None:
        unreadable: tuple[_Line, str] | None = None  # held back: it may be a recovered crash
        for line in lines:
            entry, why = _load(line)
            if unreadable is not None:
                bad, bad_why = unreadable
                if entry is None or not _recovers(entry):
                    raise _Broken(bad, bad.file, bad_why)
                try:
                    self._check(line, entry)
                except _Broken:  # a segment start that does not link up recovers nothing
                    raise _Broken(bad, bad.file, bad_why) from None
                self.recovered.append(f"line {bad.number} of {bad.file}")
                unreadable = None
                continue
            if entry is None:
                unreadable = (line, why)
                continue
            self._check(line, entry)
        if unreadable is not None:
            bad, bad_why = unreadable
            raise _Broken(bad, bad.file, TORN_TAIL if not bad.terminated else bad_why)

    def _check(self, line: _Line, entry: dict[str, Any]) -> None:
        if entry_hash(entry) != entry["hash"]:
            raise _Broken(line, line.file, HASH_MISMATCH)
        if entry["seq"] != self.seq + 1:
            raise _Broken(line, line.file, SEQ_GAP)
        if entry["prev_hash"] != self.head:
            raise _Broken(line, line.file, PREV_MISMATCH)
        self.seq, self.head = entry["seq"], entry["hash"]
        self.entries += 1
        self.segments += entry.get("event") == "segment_start"
        for pinned in self._pinned.get(self.seq, ()):
            if pinned.hash != self.head and self._checkpoint_file is not None:
                raise _Broken(pinned, self._checkpoint_file, CHECKPOINT_HASH)
            self.matched += 1


def _recovers(entry: dict[str, Any]) -> bool:
    reasons = entry.get("reasons")
    return (
        entry.get("event") == "segment_start"
        and isinstance(reasons, list)
        and "previous_tail_unreadable" in reasons
    )


def verify_log(
    path: str | Path,
    checkpoints: str | Path | None = None,
    secret: bytes | None = None,
    *,
    keys: KeyRing | None = None,
) -> VerifyResult:
    """Verify the log at ``path`` (its base name: rotated files are found next to it).

    Checkpoint signatures are checked against ``keys`` plus, given ``secret``, the HMAC key
    it makes; with neither they are not checked. Raises ``FileNotFoundError`` (or another
    ``OSError``) when the log or the checkpoints file cannot be read at all; damage inside
    them is a result, not an exception.
    """
    base = Path(path)
    if base.is_dir():
        raise IsADirectoryError(f"{base} is a directory")
    files = log_files(base)
    if not files:
        raise FileNotFoundError(f"no audit log at {base}")
    ring = KeyRing(keys or ())
    if secret is not None:
        ring.add(HmacKey(secret))
    if checkpoints is None and _is_stream_file(base):
        return verify_stream(base, ring)
    checkpoint_file = Path(checkpoints) if checkpoints is not None else None
    pins = read_checkpoints(checkpoint_file) if checkpoint_file is not None else []
    readable = [p.seq for p in pins if p.seq is not None]
    last_pinned = max(readable) if readable else None
    walk = _Walk(pins, checkpoint_file)
    signers: set[str] = set()
    try:
        if checkpoint_file is not None:
            signers = _check_signatures(pins, checkpoint_file, ring)
        walk.run(_lines(files))
        if checkpoint_file is not None:
            _check_truncation(pins, checkpoint_file, walk.seq)
    except _Broken as broken:
        return VerifyResult(
            ok=False,
            entries=walk.entries,
            first_bad_line=broken.number,
            file=str(broken.file),
            reason=broken.reason,
            summary=f"audit log BROKEN at line {broken.number} of {broken.file}: {broken.reason}",
            segments=walk.segments,
            head=walk.head,
            checkpoints=walk.matched,
            recovered=tuple(walk.recovered),
            last_checkpoint_seq=last_pinned,
        )
    summary = (
        f"audit log intact: {walk.entries} entries, {walk.segments} segments, "
        f"head {walk.head[:12]}, {walk.matched} checkpoints verified"
    )
    if signers:
        summary += " (signed by key_id " + ", ".join(sorted(signers)) + ")"
    if walk.recovered:
        summary += "; recovered from a crash (partial line kept) at " + ", ".join(walk.recovered)
    if checkpoint_file is None:
        summary += "; no checkpoints given, so a cut tail would go unnoticed"
    else:
        unpinned = walk.seq - (last_pinned or 0)
        if unpinned:
            summary += f"; {unpinned} entries after the last checkpoint are not pinned"
        if not ring:
            summary += "; checkpoint signatures unchecked (no key given)"
    return VerifyResult(
        ok=True,
        entries=walk.entries,
        first_bad_line=None,
        file=None,
        reason=None,
        summary=summary,
        segments=walk.segments,
        head=walk.head,
        checkpoints=walk.matched,
        recovered=tuple(walk.recovered),
        key_ids=tuple(sorted(signers)),
        last_checkpoint_seq=last_pinned,
    )


def _check_signatures(pins: list[CheckpointLine], file: Path, ring: KeyRing) -> set[str]:
    """Every checkpoint readable and, given a ring, signed by one of its keys."""
    signers: set[str] = set()
    for pin in pins:
        _check_signature(pin, file, ring, signers)
    return signers


def _check_signature(pin: CheckpointLine, file: Path, ring: KeyRing, signers: set[str]) -> None:
    if not pin.readable:
        raise _Broken(pin, file, CHECKPOINT_UNREADABLE)
    if not ring:
        return
    verdict = pin.check(ring)
    if verdict == "unknown_key":
        raise _Broken(pin, file, f"{CHECKPOINT_UNKNOWN_KEY} (key_id {pin.key_id!r})")
    if verdict != "ok":
        raise _Broken(pin, file, CHECKPOINT_SIG)
    signers.add(pin.key_id)


def _is_stream_file(path: Path) -> bool:
    """Is ``path`` a file that carries its checkpoints inline (a captured stdout stream)?"""
    if not path.is_file():
        return False
    marker = b'"event":"' + STREAM_EVENT.encode() + b'"'
    with path.open("rb") as f:
        return any(marker in line for line in f)


def verify_stream(path: str | Path, ring: KeyRing) -> VerifyResult:
    """Verify a captured stdout stream and the checkpoints inside it (see the module doc)."""
    file = Path(path)
    walks: dict[str, _Walk] = {}
    starts = unpinned = 0
    signers: set[str] = set()
    walk = _Walk([], None)
    try:
        for line in _lines([file]):
            body = _json(line)
            walk = walks.setdefault(str(body.get("instance") or ""), _Walk([], None))
            if body.get("event") == STREAM_EVENT:
                pin = parse_checkpoint(line.number, body)
                _check_signature(pin, file, ring, signers)
                if (pin.seq, pin.hash) != (walk.seq, walk.head):
                    raise _Broken(line, file, CHECKPOINT_HASH)
                walk.matched += 1
                walk.pinned = walk.seq
                continue
            entry, why = _load(line)
            if entry is None:
                raise _Broken(line, file, TORN_TAIL if not line.terminated else why)
            if entry["seq"] == 1 and entry["prev_hash"] == GENESIS_HASH:
                starts += 1  # a process started: its chain begins at the genesis hash
                unpinned += walk.seq - walk.pinned  # what the previous lifetime left unpinned
                walk.seq, walk.head, walk.pinned = 0, GENESIS_HASH, 0
            walk._check(line, entry)
    except _Broken as broken:
        return VerifyResult(
            ok=False,
            entries=sum(w.entries for w in walks.values()),
            first_bad_line=broken.number,
            file=str(broken.file),
            reason=broken.reason,
            summary=f"audit stream BROKEN at line {broken.number} of {file}: {broken.reason}",
        )
    entries = sum(w.entries for w in walks.values())
    matched = sum(w.matched for w in walks.values())
    unpinned += sum(w.seq - w.pinned for w in walks.values())
    summary = (
        f"audit stream intact: {entries} entries from {len(walks)} instances, "
        f"{starts} process starts, {matched} checkpoints verified"
    )
    if signers:
        summary += " (signed by key_id " + ", ".join(sorted(signers)) + ")"
    if unpinned:
        summary += f"; {unpinned} entries after the last checkpoint are not pinned"
    if not ring:
        summary += "; checkpoint signatures unchecked (no key given)"
    return VerifyResult(
        ok=True,
        entries=entries,
        first_bad_line=None,
        file=None,
        reason=None,
        summary=summary,
        segments=sum(w.segments for w in walks.values()),
        checkpoints=matched,
        key_ids=tuple(sorted(signers)),
    )


def _json(line: _Line) -> dict[str, Any]:
    try:
        body = orjson.loads(line.raw)
    except orjson.JSONDecodeError:
        raise _Broken(line, line.file, TORN_TAIL if not line.terminated else NOT_JSON) from None
    if not isinstance(body, dict):
        raise _Broken(line, line.file, NOT_ENTRY)
    return body


def _check_truncation(pins: list[CheckpointLine], file: Path, last_seq: int) -> None:
    for pin in pins:
        if pin.seq is not None and pin.seq > last_seq:
            raise _Broken(pin, file, f"log ends before checkpoint seq {pin.seq} (truncated)")


def audit_logs(paths: Sequence[str | Path]) -> list[Path]:
    """The logs ``paths`` name: a file is one log (its base name); a directory holds one
    log per ``*.jsonl`` file in it (rotated ``.N`` files, checkpoints and locks beside them
    belong to those)."""
    logs: list[Path] = []
    for path in map(Path, paths):
        logs.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    return logs


def orphan_checkpoints(paths: Sequence[str | Path], logs: list[Path]) -> list[Path]:
    """Checkpoint files in the named directories whose log is not there (deleted?)."""
    orphans: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.jsonl.checkpoints"))
            orphans.extend(c for c in found if c.with_suffix("") not in logs)
    return orphans


def checkpoints_of(log: str | Path, given: str | Path | None) -> str | Path | None:
    """The checkpoints file to check ``log`` against: ``given``, else ``<log>.checkpoints``
    when it exists, else none."""
    default = default_checkpoint_path(Path(log))
    return given if given is not None or not default.exists() else default


def unverifiable(
    path: str | Path, checkpoints: str | Path | None, *, keys: KeyRing | None, collected: bool
) -> str | None:
    """Why ``path`` cannot be verified without a checkpoints file (``check_log``), or None."""
    if checkpoints is not None or not (keys or collected) or _is_stream_file(Path(path)):
        return None
    why = (
        " to check the keys against"
        if keys
        else ": without them a rewritten log cannot be told from an intact one"
    )
    default = default_checkpoint_path(Path(path))
    return f"audit log unverifiable: no checkpoints file at {default}{why}"


def check_log(
    path: str | Path,
    checkpoints: str | Path | None,
    secret: bytes | None,
    *,
    keys: KeyRing | None = None,
    collected: bool = False,
) -> tuple[int, str]:
    """One log's exit status (0 intact, 1 broken, 2 unreadable) and its one-line summary.

    Without ``checkpoints`` the default ``<log>.checkpoints`` is used when it exists, so
    the plain command already catches a cut tail. Given ``keys`` (an auditor's ring), a
    log without any checkpoints file cannot be checked against them: that is status 2.
    So it is for a log ``collected`` with others (a directory, several files): the chain
    itself is unkeyed, so without its signed checkpoints a rewritten log could not be told
    from an intact one, and a collection is expected to hold both.
    """
    checkpoints = checkpoints_of(path, checkpoints)
    refused = unverifiable(path, checkpoints, keys=keys, collected=collected)
    if refused is not None:
        return 2, refused
    try:
        result = verify_log(path, checkpoints, secret, keys=keys)
    except OSError as exc:
        return 2, f"audit log unreadable: {exc.filename or path}: {exc.strerror or exc}"
    return (0 if result.ok else 1), result.summary


def run_verify(
    paths: str | Sequence[str],
    checkpoints: str | None,
    secret: bytes | None,
    *,
    keys: KeyRing | None = None,
) -> int:
    """Print one line per log; 0 only when every log is intact, else 1 (broken) or 2
    (unreadable, or nothing to check the keys against), whichever is worse.

    One file prints its summary alone; several files or a directory print each log's
    summary after its name, and a checkpoints file in a directory without its log is
    broken (the log it pinned is gone). ``checkpoints`` names one log's file only.
    """
    named = [paths] if isinstance(paths, str) else list(paths)
    logs = audit_logs(named)
    if len(named) == 1 and logs == [Path(named[0])]:
        status, line = check_log(named[0], checkpoints, secret, keys=keys)
        print(line)
        return status
    if checkpoints is not None:
        print("audit log unverifiable: --checkpoints names the file of one log, not of several")
        return 2
    if not logs:
        print(f"audit log unreadable: no *.jsonl audit log in {', '.join(named)}")
        return 2
    worst = 0
    for log in logs:
        status, line = check_log(log, None, secret, keys=keys, collected=True)
        print(f"{log}: {line}")
        worst = max(worst, status)
    for orphan in orphan_checkpoints(named, logs):
        print(f"{orphan}: checkpoints BROKEN: their audit log {orphan.with_suffix('')} is missing")
        worst = max(worst, 1)
    return worst
