"""The other processors, one at a time, and the chain they make together."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from gateway.audit.canonical import GENESIS_HASH, canonical_json, entry_hash, sha256_hex
from gateway.audit.processors import AuditChain, ChainHasher, Enrich, render
from gateway.audit.scrub import scrub
from tests.audit.helpers import decision


class TestEnrich:
    def test_stamps_utc_microsecond_timestamp(self) -> None:
        """ts is RFC 3339 in UTC with microseconds and a Z."""
        clock = lambda: datetime(2024, 5, 1, 12, 30, 5, 123, tzinfo=UTC)  # noqa: E731
        out = Enrich(clock)(None, "msg", {"seq": 3, "ts": "forged"})
        assert out["ts"] == "2024-05-01T12:30:05.000123Z"

    def test_requires_the_reserved_seq(self) -> None:
        """An entry without the trail's seq is a bug, not something to write."""
        with pytest.raises(ValueError):
            Enrich()(None, "msg", {"seq": "7"})


class TestChainHasher:
    def test_first_entry_links_to_genesis(self) -> None:
        """The first prev_hash is 64 zeros."""
        out = ChainHasher()(None, "msg", {"seq": 1})
        assert out["prev_hash"] == GENESIS_HASH

    def test_hash_is_sha256_of_prev_hash_and_canonical_json(self) -> None:
        """The hash can be recomputed by anyone from the line alone."""
        out = ChainHasher("a" * 64)(None, "msg", {"seq": 2, "b": 1, "a": [1, 2]})
        body = {"seq": 2, "b": 1, "a": [1, 2], "prev_hash": "a" * 64}
        assert out["hash"] == sha256_hex(b"a" * 64 + canonical_json(body))

    def test_c74_hash_is_reproducible_and_independent_of_key_order(self) -> None:
        """Same content, same hash, whatever order the keys came in."""
        one = ChainHasher()(None, "msg", {"seq": 1, "x": 1, "y": 2})
        two = ChainHasher()(None, "msg", {"y": 2, "seq": 1, "x": 1})
        assert one["hash"] == two["hash"] == entry_hash(one)

    def test_each_entry_links_to_the_one_before(self) -> None:
        """The head moves on with every entry."""
        hasher = ChainHasher()
        first = dict(hasher(None, "msg", {"seq": 1}))
        second = hasher(None, "msg", {"seq": 2})
        assert second["prev_hash"] == first["hash"]
        assert hasher.head == second["hash"]


class TestRender:
    def test_canonical_json_sorted_without_spaces(self) -> None:
        """Keys sorted, no whitespace: one byte sequence per entry."""
        assert render(None, "msg", {"b": 1, "a": "x y"}) == b'{"a":"x y","b":1}'

    def test_round_trip_is_byte_identical(self) -> None:
        """Parsing and re-rendering a line gives the same bytes (floats included)."""
        line = render(None, "msg", {"d": 0.1 + 0.2, "n": None, "l": [1.5e-7, 3]})
        assert canonical_json(orjson.loads(line)) == line


def test_the_chain_renders_one_verifiable_line_per_entry() -> None:
    """enrich → scrub → chain-hash → render yields one verifiable line per call; the seq
    the trail reserved and the event win over fields of those names."""
    hasher = ChainHasher()
    chain = AuditChain(hasher, context={"schema": 2})
    first = orjson.loads(chain.line("request", 1, {**decision(1), "token": "secret"}))
    second = orjson.loads(chain.line("request", 2, {**decision(2), "seq": 99, "event": "x"}))
    assert "token" not in first
    assert first["schema"] == 2
    assert second["seq"] == 2 and second["event"] == "request"
    assert second["prev_hash"] == first["hash"]
    assert entry_hash(second) == second["hash"] == hasher.head


def test_scrub_runs_before_hashing() -> None:
    """The hash covers the scrubbed entry, so verify recomputes it from the line."""
    entry = orjson.loads(AuditChain(ChainHasher()).line("request", 1, {"query": "q=1"}))
    assert entry_hash(entry) == entry["hash"]
    assert scrub(None, "msg", dict(entry))["request_id"] is None
