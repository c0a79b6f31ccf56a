"""Red team of the audit trail's fast paths (commits a98b364..1355f2b): the scrub's memos
and fast checks, ``AuditChain`` in place of structlog's ``BoundLogger``, the trail's own I/O
thread, and ``record()`` copying the caller's fields with ``dict()``.

Each test drives the real trail or the real scrub and asserts what a reader of the audit
trail relies on: no personal value reaches a written line, one odd value costs one scrubbed
field (never the trail), nothing acknowledged is lost, and the new code writes what the
code before it (e8b5daa) wrote. The attacks that did not work are kept, cheap, as guards.
"""

from __future__ import annotations

import asyncio
import gc
import random
import subprocess
import sys
import threading
import time
import tracemalloc
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import AuditTrail, verify_log
from gateway.audit import scrub as scrub_module
from gateway.audit.canonical import canonical_json
from gateway.audit.logfile import LogFile
from gateway.audit.processors import AuditChain, ChainHasher, Enrich
from gateway.audit.scrub import ENTRY_KEYS, scrub
from tests.audit.helpers import SECRET, decision, entries, run

REPO = Path(__file__).resolve().parents[2]
BEFORE = "e8b5daa"  # the tree before the fast paths
EMAIL = "alice.redteam@example.com"
LEAKY_ROUTE = f"/crm/v8/Leads/{EMAIL}"


@pytest.fixture(autouse=True)
def _memos_restored() -> Iterator[None]:
    """The scrub's memos are process-wide: what an attack leaves there stays in this test."""
    routes = set(scrub_module._routes_passed)
    yield
    scrub_module._routes_passed.clear()
    scrub_module._routes_passed.update(routes)


def _old_module(name: str, path: str) -> types.ModuleType:
    """``path`` as it was at BEFORE, as a module of its own."""
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{BEFORE}:{path}"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"needs the git history ({BEFORE})")
    module = types.ModuleType(name)
    module.__file__ = f"<{BEFORE}:{path}>"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def _one_run(tmp_path: Path, *records: dict[str, Any]) -> tuple[list[BaseException | None], bytes]:
    """A real trail on a real file: each record, what it raised, then the file's bytes."""
    path = tmp_path / "audit.jsonl"

    async def main() -> list[BaseException | None]:
        t = AuditTrail(path, secret=SECRET, fsync="never")
        await t.start()
        raised: list[BaseException | None] = []
        for fields in records:
            try:
                await t.record(fields)
            except Exception as exc:
                raised.append(exc)
            else:
                raised.append(None)
        await t.close()
        return raised

    raised = run(main())
    return raised, path.read_bytes()


def _requests(raw: bytes) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in raw.splitlines()]
    return [e for e in lines if e["event"] == "request"]


# -- the route memo ----------------------------------------------------------------------


class PoisonRoute(str):
    """Text that is a fine route template, but which hashes and compares as a route that
    holds an email: once remembered, that route passes too."""

    def __hash__(self) -> int:
        return hash(LEAKY_ROUTE)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other) is True or other == LEAKY_ROUTE


class MasqueradeRoute(str):
    """Text that holds an email, but which hashes and compares as a route that passed."""

    PASSED = "/crm/{v}/{module}/redteam"

    def __hash__(self) -> int:
        return hash(self.PASSED)

    def __eq__(self, other: object) -> bool:
        return other.__class__ is str and str.__eq__(other, self.PASSED)


def test_a_remembered_str_subclass_lets_no_later_route_through(tmp_path: Path) -> None:
    """Memo poisoning: a str subclass whose text passes as a route was remembered as it
    was, so a later plain route with an email that it claims to equal skipped every check
    and was written (e8b5daa checked every route's text)."""
    _, raw = _one_run(
        tmp_path,
        decision(1, route=PoisonRoute("/crm/{v}/{module}/poisoned")),
        decision(2, route=LEAKY_ROUTE),
    )
    assert EMAIL.encode() not in raw
    second = _requests(raw)[1]
    assert second["route"] is None and "scrubbed:route" in second["reasons"]
    assert verify_log(tmp_path / "audit.jsonl").ok


class LyingMasqueradeRoute(MasqueradeRoute):
    """The same, and it says it is a plain str (``__class__`` is an attribute like any)."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return str


@pytest.mark.parametrize("masquerade", [MasqueradeRoute, LyingMasqueradeRoute])
def test_a_str_subclass_that_equals_a_remembered_route_is_still_checked(
    tmp_path: Path, masquerade: type[MasqueradeRoute]
) -> None:
    """A route whose text is an email, passed as a str subclass equal (by its own __eq__)
    to a route already remembered, was written as it was."""
    _, raw = _one_run(
        tmp_path,
        decision(1, route=MasqueradeRoute.PASSED),
        decision(2, route=masquerade(f"/crm/v8/{EMAIL}")),
    )
    assert EMAIL.encode() not in raw
    second = _requests(raw)[1]
    assert second["route"] is None and "scrubbed:route" in second["reasons"]


# -- the float fast path ----------------------------------------------------------------


class LyingFloat(float):
    """A float subclass that says it is a float, and rounds to an email."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return float

    def __round__(self, ndigits: Any = None) -> Any:
        return EMAIL


def test_a_float_that_lies_about_its_class_is_rounded_as_a_float(tmp_path: Path) -> None:
    """``_amount``'s fast path trusted ``value.__class__ is float`` and called the value's
    own ``__round__``: what that returned was written as ``duration_ms``. e8b5daa rounded
    ``float(value)``, a plain float, whatever the value's class."""
    _, raw = _one_run(
        tmp_path, decision(1, duration_ms=LyingFloat(1.5), metadata_age_s=LyingFloat(2.25))
    )
    assert EMAIL.encode() not in raw
    entry = _requests(raw)[0]
    assert (entry["duration_ms"], entry["metadata_age_s"]) == (1.5, 2.25)


# -- names lists: what a memo of whole lists broke (it was dropped; these guard its return)


def test_a_names_item_that_cannot_be_hashed_costs_one_field_not_the_trail(
    tmp_path: Path,
) -> None:
    """The memo hashes every item of a names list; a writable memoryview raises
    ValueError there (not the TypeError caught), which failed the write: with on_full
    "block" that entry and every later one raised AuditUnavailable (a 503 for every request
    until a restart). e8b5daa dropped the item and said so in ``reasons``."""
    odd = {"names": ["Email", memoryview(bytearray(b"Phone"))], "count": 2}
    raised, raw = _one_run(tmp_path, decision(1, fields_withheld=odd), decision(2))
    assert raised == [None, None]
    first, second = _requests(raw)
    assert first["fields_withheld"] == {"names": ["Email"], "count": 2}
    assert "scrubbed:fields_withheld" in first["reasons"]
    assert second["request_id"] == "req-00002"


def test_a_deeply_nested_names_item_does_not_crash_the_process() -> None:
    """Hashing a tuple nested a million deep overflows the C stack: the memo's
    ``tuple(names)`` key took the whole gateway down with a segfault where e8b5daa dropped
    the item (not a string) and flagged it."""
    code = (
        "from gateway.audit.scrub import scrub\n"
        "deep = ()\n"
        "for _ in range(1_000_000):\n"
        "    deep = (deep,)\n"
        "out = scrub(None, 'msg', {'fields_withheld': {'names': ['Email', deep], 'count': 2}})\n"
        "print(out['fields_withheld']['names'], out['reasons'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "['Email'] ['scrubbed:fields_withheld']"


class LookalikeName(str):
    """An email that hashes and compares as the field name ``Email``."""

    def __hash__(self) -> int:
        return hash("Email")

    def __eq__(self, other: object) -> bool:
        return other.__class__ is str and str.__eq__(other, "Email")


def test_a_names_item_that_is_no_name_is_flagged_even_when_it_equals_one() -> None:
    """A names list whose item only claims to equal a remembered name got that list's
    names and no ``scrubbed:`` reason: the gateway bug the scrub exists to reveal was hid."""
    scrub(None, "msg", {"fields_withheld": {"names": ["Email"], "count": 1}})
    out = scrub(None, "msg", {"fields_withheld": {"names": [LookalikeName(EMAIL)], "count": 1}})
    assert "scrubbed:fields_withheld" in out["reasons"]
    assert out["fields_withheld"]["names"] == []


def test_the_names_memo_keeps_no_value_past_the_cut() -> None:
    """A name is cut at MAX_STRING before it is checked, so what follows never reaches a
    line; the memo's key kept the caller's whole string (here an email past the cut) alive
    for as long as the process runs."""
    name = "Note_" + "ab_" * 70 + EMAIL  # the first 200 characters are a name
    refs = sys.getrefcount(name)
    out = scrub(None, "msg", {"fields_withheld": {"names": [name, "Email"], "count": 2}})
    assert EMAIL not in orjson.dumps(out).decode()
    del out
    gc.collect()
    assert sys.getrefcount(name) == refs


def test_the_names_memo_does_not_grow_with_distinct_long_lists() -> None:
    """Names lists that differ on every entry (field names the CRM's answer chose, each
    withheld) were all remembered, up to 4096 lists of 1000 names: about 1 GB held for
    good, where e8b5daa held at most 4096 names. Here 100 such entries."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for e in range(100):
            names = [f"Custom_{e}_{i}_" + "ab_" * 25 for i in range(1000)]
            scrub(None, "msg", {"fields_withheld": {"names": names, "count": 1000}})
            del names
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 4_000_000, f"{held / 1e6:.1f} MB held after the entries were scrubbed"


# -- the old and new code agree (attacks that did not work, kept as guards) --------------


class Sub(str):
    pass


class SubFloat(float):
    pass


_PIECES = ["crm", "_gateway", "v8", "{v}", "{module}", "search", "Leads", EMAIL, "", "x" * 41]
_PERSONAL = [
    EMAIL,
    "+44 20 7946 0958",
    "Jane Smith",
    "1000.0123456789abcdef0123.fedcba9876543210",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
    "A" * 40,
    "Bearer",
]
_names = st.from_regex(r"[A-Za-z0-9_.$]{1,12}", fullmatch=True)
_strings = st.one_of(
    _names,
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    st.lists(st.sampled_from(_PIECES), max_size=5).map(lambda p: "/" + "/".join(p)),
    st.sampled_from([*_PERSONAL, "unknown", ""]),
    st.builds(lambda a, b: a * 100 + b, st.sampled_from(["a_", "x."]), st.sampled_from(_PERSONAL)),
    st.text(max_size=30),
)
_floats = st.one_of(
    st.floats(),
    st.sampled_from([-0.0, 5e-324, float("nan"), float("inf"), 1e12, 999999999999.9999]),
)
_numbers = st.one_of(st.integers(-(2**60), 2**60), _floats, _floats.map(SubFloat), st.booleans())
_items = st.one_of(st.none(), _strings, _strings.map(Sub), _numbers)
_lists = st.lists(_items, max_size=5)
_name_lists = st.one_of(
    st.lists(st.one_of(_names, _strings, _strings.map(Sub)), max_size=5),
    st.lists(_names, min_size=999, max_size=1001),
    _lists,
    _items,
)
_counted = st.one_of(
    _items, st.fixed_dictionaries({"names": _name_lists, "count": st.one_of(_items, _numbers)})
)


def _value(key: str) -> st.SearchStrategy[Any]:
    if key in ("fields_withheld", "would_redact"):
        return _counted
    return st.one_of(_items, _lists)


_entries = st.fixed_dictionaries(
    {}, optional={k: _value(k) for k in sorted(ENTRY_KEYS | {"other"})}
)


@settings(max_examples=150)
@given(st.lists(_entries, min_size=1, max_size=3), st.integers(1, 3))
def test_the_scrub_writes_what_it_wrote_before(batch: list[dict[str, Any]], rounds: int) -> None:
    """Differential: e8b5daa's scrub and this one, on the same entries, over and over so
    the memos are warm: the same bytes (odd floats, float and str subclasses, strings past
    MAX_STRING, names lists around MAX_LIST, personal values and tokens everywhere)."""
    old = _old_scrub()
    for _ in range(rounds):
        for entry in batch:
            expected = canonical_json(old.scrub(None, "msg", dict(entry)))
            assert canonical_json(scrub(None, "msg", dict(entry))) == expected


_OLD: dict[str, types.ModuleType] = {}


def _old_scrub() -> types.ModuleType:
    if "scrub" not in _OLD:
        _OLD["scrub"] = _old_module("old_scrub", "gateway/audit/scrub.py")
    return _OLD["scrub"]


def _old_processors() -> types.ModuleType:
    if "processors" not in _OLD:
        _OLD["processors"] = _old_module("old_processors", "gateway/audit/processors.py")
    return _OLD["processors"]


_NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
_keys = st.sampled_from(
    [
        "event",
        "seq",
        "ts",
        "instance",
        "hash",
        "prev_hash",
        "schema",
        "gateway_version",
        "route",
        "method",
        "reasons",
        "request_id",
        "status",
        "other",
    ]
)
_fields = st.dictionaries(_keys, st.one_of(_items, _lists), max_size=6)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.sampled_from(["request", "segment_start", "x"]), _fields), min_size=1))
def test_audit_chain_renders_what_the_bound_logger_rendered(
    batch: list[tuple[str, dict[str, Any]]],
) -> None:
    """Differential: e8b5daa's ``audit_logger(...).bind(context).bind(**fields).msg(event,
    seq=n)`` and ``AuditChain.line(event, n, fields)``: the same bytes, line after line
    (fields named event, seq, ts, instance, hash or schema included)."""
    old = _old_processors()
    context = {"gateway_version": "1.2.3", "schema": 2}
    collector = old.LineCollector()
    bound = old.audit_logger(
        collector, ChainHasher(), Enrich(clock=lambda: _NOW, instance="host-1")
    ).bind(**context)
    chain = AuditChain(ChainHasher(), Enrich(clock=lambda: _NOW, instance="host-1"), context)
    for seq, (event, fields) in enumerate(batch, 1):
        bound.bind(**fields).msg(event, seq=seq)
        assert collector.take() == [chain.line(event, seq, fields)]


# -- the trail's own thread (attacks that did not work, kept as guards) ------------------


class DurableFile(LogFile):
    """A slowish disk that knows which request ids are on it for good: a line appended is
    durable once ``sync`` returns."""

    on_disk: set[str] = set()
    _appended: list[str] = []

    def append(self, lines: list[bytes]) -> None:
        time.sleep(0.002)
        super().append(lines)
        DurableFile._appended.extend(str(orjson.loads(line).get("request_id")) for line in lines)

    def sync(self) -> None:
        time.sleep(0.003)
        super().sync()
        DurableFile.on_disk.update(DurableFile._appended)
        DurableFile._appended.clear()


class DurableTrail(AuditTrail):
    file_class = DurableFile


def test_every_acknowledged_entry_is_fsynced_first_even_with_callers_cancelled(
    tmp_path: Path,
) -> None:
    """fsync "always", 16 callers at once, a third of them cancelled mid-record: each
    record() that returns finds its entry already fsynced; afterwards every acknowledged
    entry is in the log once, the chain verifies, and close() leaves no thread behind."""
    DurableFile.on_disk, DurableFile._appended = set(), []
    path = tmp_path / "audit.jsonl"
    rng = random.Random(7)
    acked: list[str] = []
    early: list[str] = []
    threads_before = set(threading.enumerate())

    async def one(i: int) -> None:
        rid = f"r{i:04d}"
        await t.record({"request_id": rid, "route": "/crm/{v}/{module}", "status": 200})
        if rid not in DurableFile.on_disk:
            early.append(rid)
        acked.append(rid)

    async def main() -> None:
        await t.start()
        for wave in range(12):
            tasks = [asyncio.create_task(one(wave * 16 + k)) for k in range(16)]
            await asyncio.sleep(rng.random() * 0.004)
            for task in rng.sample(tasks, 5):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        last = asyncio.create_task(one(9999))
        await asyncio.sleep(0)
        await asyncio.wait_for(t.close(), 5)  # while the last write is on the thread
        await last

    t = DurableTrail(path, secret=SECRET, fsync="always")
    run(main())
    assert early == []
    written = [e.get("request_id") for e in entries(path) if e["event"] == "request"]
    assert set(acked) <= set(written) and len(written) == len(set(written))
    assert verify_log(path).ok
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(2)
        assert not thread.is_alive(), thread.name


def test_a_trail_never_closed_lets_the_process_exit(tmp_path: Path) -> None:
    """A program that starts a trail, records, and returns from asyncio.run without
    close(): the trail's thread must not keep the interpreter alive."""
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from gateway.audit import AuditTrail\n"
        "async def main():\n"
        "    t = AuditTrail(Path(sys.argv[1]), secret=b's', fsync='always')\n"
        "    await t.start()\n"
        "    await t.record({'request_id': 'never-closed'})\n"
        "asyncio.run(main())\n"
        "print('exiting')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "audit.jsonl")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout.strip() == "exiting", done.stderr[-500:]
    assert b"never-closed" in (tmp_path / "audit.jsonl").read_bytes()
