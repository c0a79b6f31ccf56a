"""Checkpoint signatures as an auditor checks them: key ids, a key ring, Ed25519 public keys.

Each test writes logs with the real trail, then verifies them the way an auditor would:
with only the keys the auditor trusts, and never with more than the test says.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit import verify_log
from gateway.audit.canonical import canonical_json, entry_hash
from gateway.audit.checkpoints import (
    CheckpointFile,
    make_checkpoint,
    read_checkpoints,
    signed_bytes,
)
from gateway.audit.verify import (
    CHECKPOINT_HASH,
    CHECKPOINT_SIG,
    CHECKPOINT_UNKNOWN_KEY,
    HASH_MISMATCH,
)
from gateway.keys import (
    ED25519,
    HMAC_SHA256,
    Ed25519SigningKey,
    Ed25519VerifyKey,
    HmacKey,
    KeyFileError,
    KeyRing,
    key_id,
    write_key_pair,
)
from tests.audit.helpers import SECRET, checkpoints_of, entries, run, write_segment

LEGACY = Path(__file__).parent / "data" / "legacy"
KEY_A = Ed25519SigningKey.generate()
KEY_B = Ed25519SigningKey.generate()


def ring(*keys: Ed25519SigningKey) -> KeyRing:
    """What an auditor holds: the public halves only."""
    return KeyRing(k.public for k in keys)


def checkpoint_bodies(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def rotated_log(directory: Path, first: Any, second: Any) -> Path:
    """Two process lifetimes: the first signs with ``first``, the second with ``second``
    (a key, or None for HMAC with the gateway secret)."""
    path = directory / "audit.jsonl"
    run(write_segment(path, 4, signing_key=first))
    run(write_segment(path, 4, start=4, signing_key=second))
    return path


# -- Ed25519: verify with the public key and nothing else -----------------------------------


def test_c64_an_ed25519_signed_log_verifies_with_only_the_public_key(tmp_path: Path) -> None:
    """No secret anywhere: the auditor's ring is one public key, and every checkpoint holds."""
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 5, signing_key=KEY_A))
    bodies = checkpoint_bodies(checkpoints_of(path))
    assert bodies and all(b["alg"] == ED25519 and b["key_id"] == KEY_A.kid for b in bodies)
    assert all(len(b["sig"]) == 128 for b in bodies)
    r = verify_log(path, checkpoints_of(path), None, keys=ring(KEY_A))
    assert r.ok, r.summary
    assert r.key_ids == (KEY_A.kid,) and r.checkpoints == len(bodies)
    assert f"signed by key_id {KEY_A.kid}" in r.summary and "unchecked" not in r.summary


def test_c65_an_edited_line_is_named_under_public_key_verification(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 5, signing_key=KEY_A))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"module":"', b'"module":"X', 1)
    path.write_bytes(b"".join(lines))
    r = verify_log(path, checkpoints_of(path), None, keys=ring(KEY_A))
    assert not r.ok and (r.first_bad_line, r.reason) == (4, HASH_MISMATCH)
    assert r.file == str(path)


def test_c68_a_rebuilt_chain_with_re_signed_checkpoints_fails_the_signature(
    tmp_path: Path,
) -> None:
    """The attacker edits seq 3, rebuilds every hash and rewrites every checkpoint to match.

    Signed with their own key, the checkpoints name a key not in the ring; claiming the
    gateway's key_id, their signatures do not verify. Either way the first checkpoint line
    is reported, before the (self-consistent) log is even read.
    """
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 5, signing_key=KEY_A))
    rebuilt: list[bytes] = []
    heads: dict[int, str] = {}
    head = None
    for entry in entries(path):
        if entry["seq"] == 3:
            entry["module"] = "Accounts"
        if head is not None:
            entry["prev_hash"] = head
        entry["hash"] = head = entry_hash(entry)
        heads[entry["seq"]] = head
        rebuilt.append(canonical_json(entry) + b"\n")
    path.write_bytes(b"".join(rebuilt))
    cps = checkpoints_of(path)
    old = checkpoint_bodies(cps)
    intruder = Ed25519SigningKey.generate()

    def forge(claim_kid: str | None) -> None:
        out = []
        for body in old:
            cp = make_checkpoint(body["seq"], heads[body["seq"]], intruder, body["ts"])
            if claim_kid is not None:
                cp["key_id"] = claim_kid
                cp["sig"] = intruder.sign(signed_bytes(cp))
            out.append(canonical_json(cp) + b"\n")
        cps.write_bytes(b"".join(out))

    assert verify_log(path, cps, None).reason == CHECKPOINT_HASH  # the old pins disagree
    forge(None)
    assert verify_log(path, cps, None).ok  # without a key the forgery is self-consistent
    r = verify_log(path, cps, None, keys=ring(KEY_A))
    assert not r.ok and r.first_bad_line == 1 and r.file == str(cps)
    assert r.reason == f"{CHECKPOINT_UNKNOWN_KEY} (key_id {intruder.kid!r})"
    forge(KEY_A.kid)
    r = verify_log(path, cps, None, keys=ring(KEY_A))
    assert (r.ok, r.first_bad_line, r.reason) == (False, 1, CHECKPOINT_SIG)


def test_the_algorithm_cannot_be_swapped_for_hmac_keyed_with_the_public_key(
    tmp_path: Path,
) -> None:
    """The classic confusion: an HMAC "signed" with the (public) key bytes, under the
    Ed25519 key's id. The ring binds each key id to its kind, so it fails."""
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 3, signing_key=KEY_A))
    cps = checkpoints_of(path)
    body = checkpoint_bodies(cps)[-1]
    body.update(alg=HMAC_SHA256, key_id=KEY_A.kid)
    body["sig"] = HmacKey(KEY_A.public.pem()).sign(signed_bytes(body))
    with cps.open("ab") as f:
        f.write(canonical_json(body) + b"\n")
    r = verify_log(path, cps, None, keys=ring(KEY_A))
    assert (r.ok, r.reason) == (False, CHECKPOINT_SIG)
    assert r.first_bad_line == len(cps.read_bytes().splitlines())


def test_an_edited_checkpoint_field_breaks_its_ed25519_signature(tmp_path: Path) -> None:
    """``ts`` and ``alg`` are signed too, not only seq and hash."""
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 3, signing_key=KEY_A))
    cps = checkpoints_of(path)
    lines = cps.read_bytes().splitlines(keepends=True)
    body = orjson.loads(lines[0])
    body["ts"] = body["ts"].replace("T", "T0", 1)[:-2] + "Z"
    cps.write_bytes(canonical_json(body) + b"\n" + b"".join(lines[1:]))
    r = verify_log(path, cps, None, keys=ring(KEY_A))
    assert (r.ok, r.first_bad_line, r.reason) == (False, 1, CHECKPOINT_SIG)


# -- rotation: a ring of keys ----------------------------------------------------------------


def test_c73_after_a_rotation_old_checkpoints_verify_with_the_old_public_key(
    tmp_path: Path,
) -> None:
    """Key A signed the first segment, key B the second. Every checkpoint names its key;
    the ring {A, B} verifies all; a ring missing either reports that key's first checkpoint."""
    path = rotated_log(tmp_path, KEY_A, KEY_B)
    cps = checkpoints_of(path)
    bodies = checkpoint_bodies(cps)
    kids = [b["key_id"] for b in bodies]
    assert set(kids) == {KEY_A.kid, KEY_B.kid} and all(b["alg"] == ED25519 for b in bodies)
    first_b = kids.index(KEY_B.kid) + 1

    both = verify_log(path, cps, None, keys=ring(KEY_A, KEY_B))
    assert both.ok and both.key_ids == tuple(sorted((KEY_A.kid, KEY_B.kid))), both.summary
    assert both.checkpoints == len(bodies) and both.segments == 2

    only_new = verify_log(path, cps, None, keys=ring(KEY_B))
    assert (only_new.ok, only_new.first_bad_line) == (False, 1)
    assert only_new.reason == f"{CHECKPOINT_UNKNOWN_KEY} (key_id {KEY_A.kid!r})"
    only_old = verify_log(path, cps, None, keys=ring(KEY_A))
    assert (only_old.ok, only_old.first_bad_line) == (False, first_b)
    assert only_old.reason == f"{CHECKPOINT_UNKNOWN_KEY} (key_id {KEY_B.kid!r})"


def test_c73_rotating_from_the_hmac_secret_to_ed25519(tmp_path: Path) -> None:
    """A gateway that signed with its secret, then got an Ed25519 key: the old checkpoints
    need the secret in the ring, the new ones only the public key."""
    path = rotated_log(tmp_path, None, KEY_A)
    cps = checkpoints_of(path)
    algs = {(b["alg"], b["key_id"]) for b in checkpoint_bodies(cps)}
    assert algs == {(HMAC_SHA256, key_id(SECRET)), (ED25519, KEY_A.kid)}
    mixed = KeyRing([KEY_A.public, HmacKey(SECRET)])
    assert verify_log(path, cps, None, keys=mixed).ok
    assert verify_log(path, cps, SECRET, keys=ring(KEY_A)).ok  # the secret joins the ring
    r = verify_log(path, cps, None, keys=ring(KEY_A))
    assert r.reason == f"{CHECKPOINT_UNKNOWN_KEY} (key_id {key_id(SECRET)!r})"
    assert not verify_log(path, cps, SECRET).ok  # the secret alone cannot vouch for KEY_A


def test_without_any_key_signatures_are_reported_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 3, signing_key=KEY_A))
    r = verify_log(path, checkpoints_of(path))
    assert r.ok and "checkpoint signatures unchecked" in r.summary and r.key_ids == ()


# -- the older format -------------------------------------------------------------------------


def test_checkpoints_in_the_older_format_still_verify() -> None:
    """``tests/audit/data/legacy`` was written before checkpoints had ``alg``: HMAC-signed
    ``{seq, hash, ts, key_id, sig}``. They verify with the secret, and only with it."""
    log, cps = LEGACY / "audit.jsonl", LEGACY / "audit.jsonl.checkpoints"
    bodies = checkpoint_bodies(cps)
    assert all(set(b) == {"seq", "hash", "ts", "key_id", "sig"} for b in bodies)
    assert all(line.alg == HMAC_SHA256 for line in read_checkpoints(cps))
    r = verify_log(log, cps, SECRET)
    assert r.ok and r.checkpoints == len(bodies) and r.segments == 2, r.summary
    assert r.key_ids == (key_id(SECRET),)
    assert not verify_log(log, cps, b"another secret").ok
    assert not verify_log(log, cps, None, keys=ring(KEY_A)).ok


def test_an_edited_older_format_checkpoint_is_still_caught(tmp_path: Path) -> None:
    shutil.copytree(LEGACY, tmp_path, dirs_exist_ok=True)
    cps = tmp_path / "audit.jsonl.checkpoints"
    lines = cps.read_bytes().splitlines(keepends=True)
    body = orjson.loads(lines[1])
    body["alg"] = ED25519  # adding a field the signature did not cover
    lines[1] = canonical_json(body) + b"\n"
    cps.write_bytes(b"".join(lines))
    r = verify_log(tmp_path / "audit.jsonl", cps, SECRET)
    assert (r.ok, r.first_bad_line, r.reason) == (False, 2, CHECKPOINT_SIG)


# -- key files ---------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_0600_and_a_public_key(tmp_path: Path) -> None:
    kid, private, public = write_key_pair(tmp_path / "keys")
    assert private.name == f"{kid}.key" and public.name == f"{kid}.pub"
    assert os.stat(private).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "keys").st_mode & 0o077 == 0
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    signer, verifier = Ed25519SigningKey.load(private), Ed25519VerifyKey.load(public)
    assert signer.kid == verifier.kid == kid
    assert verifier.verify(b"data", signer.sign(b"data"))
    assert not verifier.verify(b"data!", signer.sign(b"data"))


def test_a_private_key_is_refused_where_a_public_key_belongs(tmp_path: Path) -> None:
    """An auditor is never asked for the private key; a garbled file is named."""
    _, private, _ = write_key_pair(tmp_path)
    with pytest.raises(KeyFileError, match="is a private key"):
        Ed25519VerifyKey.load(private)
    garbled = tmp_path / "garbled.pub"
    garbled.write_text("not a key")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        Ed25519VerifyKey.load(garbled)
    with pytest.raises(KeyFileError, match="cannot read"):
        Ed25519SigningKey.load(tmp_path / "missing.key")


# -- where checkpoints go ----------------------------------------------------------------------


def test_c67_a_cut_tail_is_found_against_a_checkpoint_file_kept_elsewhere(
    tmp_path: Path,
) -> None:
    """The checkpoints live in another directory (another store); cutting the log below the
    last checkpoint is reported as a truncation at that checkpoint's line."""
    logs, store = tmp_path / "logs", tmp_path / "store"
    logs.mkdir(), store.mkdir()
    path, cps = logs / "audit.jsonl", store / "gateway.checkpoints"
    run(write_segment(path, 6, signing_key=KEY_A, checkpoint_path=cps))
    assert not checkpoints_of(path).exists() and cps.exists()
    assert verify_log(path, cps, None, keys=ring(KEY_A)).ok
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    r = verify_log(path, cps, None, keys=ring(KEY_A))
    last = len(cps.read_bytes().splitlines())
    assert (r.ok, r.file, r.first_bad_line) == (False, str(cps), last)
    assert r.reason == f"log ends before checkpoint seq {len(lines)} (truncated)"
    # without the checkpoints, the same cut goes unnoticed, and the summary says so
    blind = verify_log(path)
    assert blind.ok and "a cut tail would go unnoticed" in blind.summary


def test_c75_the_gateway_only_ever_appends_to_the_checkpoint_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It opens the file O_APPEND and never O_TRUNC, so an append-only store (chattr +a, a
    write-only bind mount) is enough; what was there before stays byte for byte."""
    cps = tmp_path / "cps"
    cps.write_bytes(b"earlier line\n")
    opened: list[int] = []
    real_open = os.open

    def spy(path: Any, flags: int, *args: Any) -> int:
        if Path(path) == cps:
            opened.append(flags)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", spy)
    f = CheckpointFile(cps)
    f.append(make_checkpoint(1, "a" * 64, KEY_A))
    f.append(make_checkpoint(2, "b" * 64, KEY_A))
    f.close()
    assert opened and all(fl & os.O_APPEND and not fl & os.O_TRUNC for fl in opened)
    assert cps.read_bytes().startswith(b"earlier line\n")
    assert len(cps.read_bytes().splitlines()) == 3


def test_stdout_only_trail_writes_checkpoints_to_the_checkpoint_file(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """With the trail on stdout, checkpoints go to the configured file; the next process
    continues the chain from the last checkpoint, so the whole captured stream verifies."""
    cps = tmp_path / "store" / "gateway.checkpoints"
    cps.parent.mkdir()
    run(write_segment_stdout(cps, 3, 0))
    run(write_segment_stdout(cps, 2, 3))
    captured = tmp_path / "captured.jsonl"
    captured.write_bytes(capsysbinary.readouterr().out)
    starts = [e for e in entries(captured) if e["event"] == "segment_start"]
    assert [s["seq"] for s in starts] == [1, 5]
    assert starts[1]["reasons"] == ["resumed_from_checkpoint"]
    r = verify_log(captured, cps, None, keys=ring(KEY_A))
    assert r.ok and r.entries == 7 and r.checkpoints >= 2, r.summary
    assert r.last_checkpoint_seq == 7
    lines = captured.read_bytes().splitlines(keepends=True)
    captured.write_bytes(b"".join(lines[:-1]))
    assert "truncated" in (verify_log(captured, cps, None, keys=ring(KEY_A)).reason or "")


def test_stdout_only_trail_without_a_checkpoint_file_signs_them_into_the_stream(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run(write_segment(None, 2, stdout=True))  # type: ignore[arg-type]
    lines = [orjson.loads(x) for x in capsysbinary.readouterr().out.splitlines()]
    assert [e["seq"] for e in lines if e["event"] != "checkpoint"] == [1, 2, 3]
    final = [e for e in lines if e["event"] == "checkpoint"][-1]
    assert final["seq"] == 3 and lines[-1]["event"] == "checkpoint"  # written on close
    assert list(tmp_path.iterdir()) == []  # no file, the stream holds everything


async def write_segment_stdout(cps: Path, count: int, start: int) -> None:
    from tests.audit.helpers import decision, trail

    t = trail(None, stdout=True, checkpoint_path=cps, signing_key=KEY_A)
    await t.start()
    for i in range(start, start + count):
        await t.record(decision(i))
    await t.close()


def test_every_checkpoint_of_a_resumed_stdout_chain_is_checked(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A pin that disagrees with the captured stream is still a mismatch after a resume."""
    cps = tmp_path / "cps"
    run(write_segment_stdout(cps, 3, 0))
    run(write_segment_stdout(cps, 2, 3))
    captured = tmp_path / "captured.jsonl"
    captured.write_bytes(capsysbinary.readouterr().out)
    lines = cps.read_bytes().splitlines(keepends=True)
    forged = make_checkpoint(orjson.loads(lines[-1])["seq"], "c" * 64, KEY_A)
    cps.write_bytes(b"".join([*lines, canonical_json(forged) + b"\n"]))
    r = verify_log(captured, cps, None, keys=ring(KEY_A))
    assert (r.ok, r.first_bad_line, r.reason) == (False, len(lines) + 1, CHECKPOINT_HASH)


def test_a_checkpoint_must_be_of_the_kind_its_key_is(tmp_path: Path) -> None:
    """A valid HMAC signature under a checkpoint that claims ``ed25519`` is refused: the
    ``alg`` an auditor reads (publicly verifiable or not) must be the key's real kind."""
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 3))
    cps = checkpoints_of(path)
    body = checkpoint_bodies(cps)[-1]
    body["alg"] = ED25519
    body["sig"] = HmacKey(SECRET).sign(signed_bytes(body))
    with cps.open("ab") as f:
        f.write(canonical_json(body) + b"\n")
    r = verify_log(path, cps, SECRET)
    assert (r.ok, r.reason) == (False, CHECKPOINT_SIG)


def test_an_untrusted_checkpoint_is_reported_as_untrusted_not_as_log_damage(
    tmp_path: Path,
) -> None:
    """Someone appends a checkpoint that contradicts an intact log. Its signature is judged
    first, so verify says the checkpoint is not from a trusted key, not that the log broke."""
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 4, signing_key=KEY_A))
    cps = checkpoints_of(path)
    framing = make_checkpoint(2, "d" * 64, KEY_B)
    with cps.open("ab") as f:
        f.write(canonical_json(framing) + b"\n")
    r = verify_log(path, cps, None, keys=ring(KEY_A))
    assert r.reason == f"{CHECKPOINT_UNKNOWN_KEY} (key_id {KEY_B.kid!r})"
    assert r.first_bad_line == len(cps.read_bytes().splitlines())
