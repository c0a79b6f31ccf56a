"""verify_log and run_verify: every kind of damage is found, at the line where it is."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from gateway.audit import run_verify, verify_log
from gateway.audit.canonical import canonical_json, entry_hash
from gateway.audit.checkpoints import checkpoint_signature, make_checkpoint
from gateway.audit.files import log_files
from gateway.audit.verify import (
    CHECKPOINT_HASH,
    CHECKPOINT_SIG,
    CHECKPOINT_UNKNOWN_KEY,
    HASH_MISMATCH,
    NOT_JSON,
    PREV_MISMATCH,
    SEQ_GAP,
    TORN_TAIL,
)
from tests.audit.helpers import SECRET, build_log, checkpoints_of, entries, run, write_segment

Lines = list[tuple[Path, list[bytes]]]  # each file of the log with its lines, oldest first


@pytest.fixture(name="log", scope="module")
def _log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 50 entries over two segments and at least one rotation, with checkpoints."""
    return build_log(tmp_path_factory.mktemp("log"))


def copy(log: Path, into: Path) -> Path:
    shutil.copytree(log.parent, into, dirs_exist_ok=True)
    return into / log.name


def read_lines(base: Path) -> Lines:
    return [(f, f.read_bytes().splitlines(keepends=True)) for f in log_files(base)]


def write_lines(lines: Lines) -> None:
    for f, content in lines:
        f.write_bytes(b"".join(content))


def positions(lines: Lines) -> list[tuple[int, int]]:
    """(file index, line index) of every line in chain order."""
    return [(fi, li) for fi, (_, content) in enumerate(lines) for li in range(len(content))]


def verify(base: Path, secret: bytes | None = SECRET) -> tuple[bool, int | None, str | None, str]:
    r = verify_log(base, checkpoints_of(base), secret)
    return r.ok, r.first_bad_line, r.file and Path(r.file).name, r.reason or ""


def test_fixture_log_is_intact_and_shaped_as_promised(log: Path) -> None:
    """The generated log verifies: ~50 entries, 2 segments, rotated, checkpoints signed."""
    r = verify_log(log, checkpoints_of(log), SECRET)
    assert r.ok, r.summary
    assert r.entries == 50 and r.segments == 2 and r.checkpoints >= 2
    assert len(log_files(log)) >= 2


def test_c65_every_edited_line_is_found_at_that_line(log: Path, tmp_path: Path) -> None:
    """Changing one character of a value (a timestamp digit, a hash digit) names that line."""
    for fi, li in positions(read_lines(log)):
        for key in (b'"ts":"', b'"hash":"'):
            base = copy(log, tmp_path / f"edit-{fi}-{li}-{key[1]}")
            lines = read_lines(base)
            line = lines[fi][1][li]
            at = line.index(key) + len(key) + (25 if key == b'"ts":"' else 5)
            digit = line[at : at + 1]
            swapped = b"1" if digit != b"1" else b"2"
            lines[fi][1][li] = line[:at] + swapped + line[at + 1 :]
            write_lines(lines)
            ok, number, name, reason = verify(base)
            assert not ok
            assert (number, name) == (li + 1, lines[fi][0].name), (fi, li, key)
            assert reason == HASH_MISMATCH


def test_c66_every_deleted_line_is_found(log: Path, tmp_path: Path) -> None:
    """Removing any line breaks the chain where the next line now stands (or the checkpoint)."""
    order = positions(read_lines(log))
    for n, (fi, li) in enumerate(order):
        base = copy(log, tmp_path / f"del-{fi}-{li}")
        lines = read_lines(base)
        names = [f.name for f, _ in lines]
        del lines[fi][1][li]
        write_lines(lines)
        ok, number, name, reason = verify(base)
        assert not ok, (fi, li)
        if n + 1 == len(order):  # the last entry: only the checkpoint can tell
            assert reason == f"log ends before checkpoint seq {len(order)} (truncated)"
            continue
        nfi, nli = order[n + 1]
        expected = (nli + 1 - (nfi == fi), names[nfi])
        assert (number, name) == expected, (fi, li)
        assert reason == SEQ_GAP


def test_c66_every_swap_with_the_next_line_is_found(log: Path, tmp_path: Path) -> None:
    """Two neighbours in the wrong order are found at the first of them."""
    order = positions(read_lines(log))
    for (fi, li), (gi, gj) in itertools.pairwise(order):
        base = copy(log, tmp_path / f"swap-{fi}-{li}")
        lines = read_lines(base)
        lines[fi][1][li], lines[gi][1][gj] = lines[gi][1][gj], lines[fi][1][li]
        write_lines(lines)
        ok, number, name, reason = verify(base)
        assert not ok and reason == SEQ_GAP
        assert (number, name) == (li + 1, lines[fi][0].name)


def test_c67_every_cut_tail_is_found_by_the_checkpoints(log: Path, tmp_path: Path) -> None:
    """Cutting the log after any line is caught, because a checkpoint names a later seq."""
    order = positions(read_lines(log))
    for n, (fi, li) in enumerate(order[:-1]):
        base = copy(log, tmp_path / f"cut-{fi}-{li}")
        lines = read_lines(base)
        lines[fi] = (lines[fi][0], lines[fi][1][: li + 1])
        for f, _ in lines[fi + 1 :]:
            f.unlink()
        write_lines(lines[: fi + 1])
        ok, _, name, reason = verify(base)
        assert not ok, (fi, li)
        assert name == checkpoints_of(base).name
        assert reason.startswith("log ends before checkpoint seq")
        assert reason.endswith("(truncated)")
        # without the checkpoints the cut is invisible, and the summary says so
        alone = verify_log(base)
        assert alone.ok and "cut tail would go unnoticed" in alone.summary
        assert alone.entries == n + 1


def test_c66_every_duplicated_line_is_found_at_the_copy(log: Path, tmp_path: Path) -> None:
    order = positions(read_lines(log))
    for fi, li in order:
        base = copy(log, tmp_path / f"dup-{fi}-{li}")
        lines = read_lines(base)
        lines[fi][1].insert(li + 1, lines[fi][1][li])
        write_lines(lines)
        ok, number, name, reason = verify(base)
        assert not ok and reason == SEQ_GAP, (fi, li, reason)
        assert (number, name) == (li + 2, lines[fi][0].name)


def test_c66_an_inserted_forgery_that_links_to_its_predecessor_is_found(
    log: Path, tmp_path: Path
) -> None:
    """A well-formed entry with the next seq and the right prev_hash, slipped in after line
    3: the original that follows no longer links (or repeats a seq), and verify says so at
    that first affected line."""
    base = copy(log, tmp_path / "inserted")
    lines = read_lines(base)
    before = orjson.loads(lines[0][1][2])
    forged = {**orjson.loads(lines[0][1][3]), "outcome": "forwarded"}
    forged["seq"], forged["prev_hash"] = before["seq"] + 1, before["hash"]
    forged["hash"] = entry_hash(forged)
    lines[0][1].insert(3, canonical_json(forged) + b"\n")
    write_lines(lines)
    ok, number, name, reason = verify(base)
    assert not ok and (number, name) == (5, lines[0][0].name)
    assert reason in (SEQ_GAP, PREV_MISMATCH)


def test_c74_a_log_reserialised_in_another_key_order_still_verifies(
    log: Path, tmp_path: Path
) -> None:
    """The hash is over canonical JSON, not the bytes on disk: every line rewritten with
    its keys reversed (and spaces after separators) still verifies."""
    base = copy(log, tmp_path / "reordered")
    lines = read_lines(base)
    for _, content in lines:
        for i, line in enumerate(content):
            entry = orjson.loads(line)
            reordered = dict(reversed(list(entry.items())))
            assert list(reordered) != list(entry)
            content[i] = json.dumps(reordered, separators=(", ", ": ")).encode() + b"\n"
    write_lines(lines)
    assert base.read_bytes() != log.read_bytes()
    r = verify_log(base, checkpoints_of(base), SECRET)
    assert r.ok, r.summary
    assert r.entries == 50


def test_a_line_that_is_not_json_is_found(log: Path, tmp_path: Path) -> None:
    """Garbage in the middle of the log is damage, reported at its line."""
    base = copy(log, tmp_path / "garbage")
    lines = read_lines(base)
    lines[0][1].insert(3, b"hello, auditor\n")
    write_lines(lines)
    assert verify(base)[1:] == (4, lines[0][0].name, NOT_JSON)


def test_c66_a_forged_line_with_a_recomputed_hash_breaks_the_link(
    log: Path, tmp_path: Path
) -> None:
    """Replacing an entry with a self-consistent forgery fails at the next line."""
    base = copy(log, tmp_path / "forged")
    lines = read_lines(base)
    entry = orjson.loads(lines[0][1][2])
    entry["outcome"] = "forwarded"
    entry["prev_hash"] = "b" * 64
    entry["hash"] = entry_hash(entry)
    lines[0][1][2] = canonical_json(entry) + b"\n"
    write_lines(lines)
    assert verify(base)[1:] == (3, lines[0][0].name, PREV_MISMATCH)


def test_c68_a_rebuilt_chain_fails_the_checkpoints(log: Path, tmp_path: Path) -> None:
    """Editing an entry and rehashing everything after it no longer matches the checkpoints."""
    base = copy(log, tmp_path / "rebuilt")
    lines = read_lines(base)
    head = None
    for _, content in lines:
        for i, raw in enumerate(content):
            entry = orjson.loads(raw)
            if entry["seq"] == 5:
                entry["module"] = "Accounts"
            if head is not None:
                entry["prev_hash"] = head
            entry["hash"] = head = entry_hash(entry)
            content[i] = canonical_json(entry) + b"\n"
    write_lines(lines)
    ok, _, name, reason = verify(base)
    assert not ok and reason == CHECKPOINT_HASH and name == checkpoints_of(base).name


def test_a_checkpoint_with_a_bad_signature_is_found(log: Path, tmp_path: Path) -> None:
    """A checkpoint not signed with the secret fails; without the secret it is unchecked."""
    base = copy(log, tmp_path / "badsig")
    cps = checkpoints_of(base)
    first, *rest = cps.read_bytes().splitlines(keepends=True)
    body = orjson.loads(first)
    body["sig"] = "0" * 64
    cps.write_bytes(canonical_json(body) + b"\n" + b"".join(rest))
    assert verify(base)[1:] == (1, cps.name, CHECKPOINT_SIG)
    unchecked = verify_log(base, cps)
    assert unchecked.ok and "signatures unchecked" in unchecked.summary


def test_a_checkpoint_signed_with_another_key_is_found(log: Path, tmp_path: Path) -> None:
    """Someone who rebuilt the chain cannot sign a matching checkpoint without the secret:
    under its own key_id it is a key not in the ring; under the real key_id, a bad signature."""
    base = copy(log, tmp_path / "otherkey")
    last = entries(base)[-1]
    cps = checkpoints_of(base)
    original = cps.read_bytes()
    forged = make_checkpoint(last["seq"], last["hash"], b"not the secret")
    cps.write_bytes(original + canonical_json(forged) + b"\n")
    ok, number, _, reason = verify(base)
    assert not ok and number == original.count(b"\n") + 1
    assert reason == f"{CHECKPOINT_UNKNOWN_KEY} (key_id {forged['key_id']!r})"
    forged["key_id"] = orjson.loads(original.splitlines()[0])["key_id"]
    forged["sig"] = checkpoint_signature(b"not the secret", forged)
    cps.write_bytes(original + canonical_json(forged) + b"\n")
    assert verify(base)[3] == CHECKPOINT_SIG


def test_every_checkpoint_for_a_seq_is_checked(log: Path, tmp_path: Path) -> None:
    """Idle periods repeat a seq; a wrong hash in any one of those checkpoints is found."""
    base = copy(log, tmp_path / "dupseq")
    cps = checkpoints_of(base)
    lines = cps.read_bytes().splitlines(keepends=True)
    forged = make_checkpoint(orjson.loads(lines[-1])["seq"], "c" * 64, SECRET)
    cps.write_bytes(b"".join([*lines[:-1], canonical_json(forged) + b"\n", lines[-1]]))
    assert verify(base)[1:] == (len(lines), cps.name, CHECKPOINT_HASH)


class TestTornTail:
    def test_c71_a_partial_last_line_is_reported_as_a_torn_tail(self, tmp_path: Path) -> None:
        """A crash mid-write leaves half a line: verify names it, distinct from tampering."""
        path = tmp_path / "audit.jsonl"
        run(write_segment(path, 3))
        last = path.read_bytes().splitlines(keepends=True)[-1]
        with path.open("ab") as f:
            f.write(last[: len(last) // 2])
        ok, number, _, reason = verify(path)
        assert not ok and number == 5 and reason == TORN_TAIL

    def test_c71_a_restart_after_a_torn_tail_recovers_visibly(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The next segment links past the partial line and says so; verify accepts it."""
        path = tmp_path / "audit.jsonl"
        first = run(write_segment(path, 3))
        with path.open("ab") as f:
            f.write(b'{"api_version":"v8","client":"01234')
        run(write_segment(path, 2, start=3))
        raw = path.read_bytes().splitlines()
        assert raw[4] == b'{"api_version":"v8","client":"01234'  # history is not edited
        start = orjson.loads(raw[5])
        assert start["event"] == "segment_start"
        assert start["reasons"] == ["previous_tail_unreadable"]
        assert start["prev_hash"] == first.head and start["seq"] == 5
        result = verify_log(path, checkpoints_of(path), SECRET)
        assert result.ok and result.recovered == (f"line 5 of {path}",)
        assert run_verify(str(path), None, SECRET) == 0
        assert "recovered from a crash" in capsys.readouterr().out

    def test_a_bad_line_followed_by_an_ordinary_entry_is_not_a_recovery(
        self, tmp_path: Path
    ) -> None:
        """Only a segment_start that says previous_tail_unreadable excuses a bad line."""
        path = tmp_path / "audit.jsonl"
        run(write_segment(path, 3))
        lines = path.read_bytes().splitlines(keepends=True)
        lines.insert(2, b'{"half":\n')
        path.write_bytes(b"".join(lines))
        assert verify(path)[1:] == (3, path.name, NOT_JSON)


class TestRunVerify:
    def test_intact_log_prints_the_summary_and_exits_0(
        self, log: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One line: entries, segments, head, checkpoints verified."""
        assert run_verify(str(log), str(checkpoints_of(log)), SECRET) == 0
        out = capsys.readouterr().out.strip()
        head = entries(log)[-1]["hash"][:12]
        assert out.startswith(f"audit log intact: 50 entries, 2 segments, head {head}, ")
        assert "checkpoints verified" in out and "\n" not in out

    def test_broken_log_prints_where_and_exits_1(
        self, log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The first bad line and its file are named."""
        base = copy(log, tmp_path / "broken")
        lines = read_lines(base)
        del lines[0][1][1]  # the oldest file: the one sure to have more than two lines
        write_lines(lines)
        assert run_verify(str(base), None, SECRET) == 1
        out = capsys.readouterr().out.strip()
        assert out == f"audit log BROKEN at line 2 of {lines[0][0]}: {SEQ_GAP}"

    @pytest.mark.parametrize("make", [lambda p: p / "missing.jsonl", lambda p: p])
    def test_unreadable_path_exits_2(
        self, tmp_path: Path, make: Callable[[Path], Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing file or a directory is not a broken log but no log at all."""
        assert run_verify(str(make(tmp_path)), None, None) == 2
        assert capsys.readouterr().out.startswith("audit log unreadable: ")
