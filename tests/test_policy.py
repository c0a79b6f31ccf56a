"""Policy files: every key validated, errors name the key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.errors import Reason
from gateway.policy import PolicyError, load_policy, policy_from_mapping
from tests.conftest import Crm, MakeGateway, envelope


def test_the_shipped_default_policy_loads() -> None:
    policy = load_policy(Path("policies/default.toml"))
    assert policy.show == frozenset() and policy.audit_fsync == "always"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"colour": 1}, "colour"),
        ({"metadata": {"ttl": 5}}, "metadata.ttl"),
        ({"metadata": {"ttl_seconds": -1}}, "metadata.ttl_seconds"),
        ({"metadata": {"ttl_seconds": 60, "max_stale_seconds": 10}}, "metadata.max_stale_seconds"),
        ({"redaction": {"show": ["secret"]}}, "redaction.show"),
        ({"search": {"allow_word_search": "yes"}}, "search.allow_word_search"),
        ({"audit": {"fsync": "sometimes"}}, "audit.fsync"),
        ({"audit": {"on_full": "ignore"}}, "audit.on_full"),
        ({"clients": [{"name": "a", "key_sha256": "short"}]}, "clients[0].key_sha256"),
        ({"clients": [{"name": "a", "key_sha256": "0" * 64, "extra": 1}]}, "clients[0].extra"),
    ],
)
def test_invalid_policies_name_the_offending_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping(raw)
    assert err.value.key == key


def test_client_rules_match_by_key_hash_only() -> None:
    digest = hashlib.sha256(b"k1").hexdigest()
    policy = policy_from_mapping(
        {
            "redaction": {"show": ["low"]},
            "clients": [{"name": "bi", "key_sha256": digest, "show": ["High"]}],
        }
    )
    assert policy.shown_for("k1") == ("bi", frozenset({"high"}), Reason.CLIENT_RULE)
    assert policy.shown_for("k2") == (None, frozenset({"low"}), Reason.UNKNOWN_GATEWAY_KEY)
    assert policy.shown_for(None) == (None, frozenset({"low"}), None)


def test_not_toml_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text("[unclosed")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)


# -- pass-through rows for non-record routes -------------------------------------------------


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("/crm/{v}/{module}", "after the version"),
        ("/crm/{v}/search/x", "new literal word"),
        ("/crm/{v}/functions/{related_list}", "segments are"),
        ("/api/{v}/functions", "must start with"),
    ],
)
def test_a_pass_through_row_that_could_stand_for_records_is_refused(
    template: str, why: str
) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping({"routes": [{"template": template, "methods": ["GET"]}]})
    assert err.value.key == "routes[0].template"


def test_a_pass_through_row_forwards_its_route_and_nothing_else(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    gw = make_gateway(
        {"routes": [{"template": "/crm/{v}/functions/{name}/actions/execute", "methods": ["POST"]}]}
    )
    crm.clear()
    r = gw.http.post("/crm/v8/functions/send_mail/actions/execute", content=b"{}")
    assert r.headers["content-type"].startswith("application/json")
    assert [x["path"] for x in crm.received("/functions/")] == [
        "/crm/v8/functions/send_mail/actions/execute"
    ]
    # Only the row's methods, only its shape.
    envelope(
        gw.http.get("/crm/v8/functions/send_mail/actions/execute"), 405, "INVALID_REQUEST_METHOD"
    )
    envelope(gw.http.post("/crm/v8/functions/send_mail", content=b"{}"), 404, "INVALID_URL_PATTERN")


def test_a_pass_through_row_named_like_a_module_of_the_org_is_refused(
    crm: Crm, make_gateway: MakeGateway
) -> None:
    """The CRM would read /crm/v8/leads/... as records of Leads: never passed on unchecked."""
    gw = make_gateway({"routes": [{"template": "/crm/{v}/leads/{name}/x", "methods": ["GET"]}]})
    crm.clear()
    envelope(gw.http.get("/crm/v8/leads/abc/x"), 404, "INVALID_URL_PATTERN")
    assert not crm.received("/leads/")
