"""Time-boxed client exceptions and keys that match no client, through the real gateway."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.policy import PolicyError, policy_from_mapping
from tests.conftest import MakeGateway, envelope

KEY = "partner-key"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()


def _client(expires: Any) -> dict[str, Any]:
    return {
        "name": "partner",
        "key_sha256": DIGEST,
        "show": ["low", "high"],
        "expires": expires,
        "owner": "dpo@example.com",
        "reason": "migration of the partner portal",
    }


def _phones(gw: Any, **headers: str) -> list[Any]:
    r = gw.http.get("/crm/v2/Leads", params={"per_page": 10}, headers=headers)
    assert r.status_code == 200, r.text
    return [rec["Phone"] for rec in r.json()["data"]]


def test_an_exception_serves_its_client_until_it_expires(make_gateway: MakeGateway) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    gw = make_gateway({"clients": [_client(soon)]})
    assert any(_phones(gw, **{"X-Gateway-Key": KEY}))  # High shown to the partner
    entry = gw.requests()[-1]
    assert entry["client_rule"] == "partner" and "client_rule" in entry["reasons"]


def test_after_expiry_the_client_gets_the_default_and_each_use_is_audited(
    make_gateway: MakeGateway,
) -> None:
    gone = datetime.now(UTC) - timedelta(seconds=1)
    gw = make_gateway({"clients": [_client(gone)]})
    for _ in range(2):
        assert not any(_phones(gw, **{"X-Gateway-Key": KEY}))
    entries = gw.requests()[-2:]
    for entry in entries:
        assert entry["client_rule"] == "partner"
        assert "exception_expired" in entry["reasons"] and "client_rule" not in entry["reasons"]


def test_an_unknown_key_is_served_as_the_default_and_audited(make_gateway: MakeGateway) -> None:
    gw = make_gateway({"clients": [_client(None)]})
    assert not any(_phones(gw, **{"X-Gateway-Key": "guessed"}))
    entry = gw.requests()[-1]
    assert entry["client_rule"] is None and "unknown_gateway_key" in entry["reasons"]
    assert not any(_phones(gw))  # no key at all: the default, nothing to audit
    assert "unknown_gateway_key" not in gw.requests()[-1]["reasons"]


def test_an_unknown_key_is_refused_when_the_policy_says_so(make_gateway: MakeGateway) -> None:
    gw = make_gateway({"unknown_keys": "refuse", "clients": [_client(None)]})
    r = gw.http.get("/crm/v2/Leads", headers={"X-Gateway-Key": "guessed"})
    envelope(r, 403, "GATEWAY_UNKNOWN_KEY")
    assert "guessed" not in r.text
    entry = gw.requests()[-1]
    assert entry["outcome"] == "refused" and entry["reasons"] == ["unknown_gateway_key"]
    assert any(_phones(gw, **{"X-Gateway-Key": KEY}))  # the known key still works


@pytest.mark.parametrize(
    ("expires", "problem"),
    [
        ("next week", "RFC 3339"),
        ("2026-01-31T00:00:00", "offset"),
        (datetime(2026, 1, 31).date(), "RFC 3339"),
    ],
)
def test_an_expiry_must_be_an_instant(expires: Any, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem) as err:
        policy_from_mapping({"clients": [_client(expires)]})
    assert err.value.key == "clients[0].expires"


def test_unknown_keys_takes_two_values() -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping({"unknown_keys": "ignore"})
    assert err.value.key == "unknown_keys"
