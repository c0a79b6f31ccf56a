"""How the process runs is a setting (flags and GATEWAY_* variables); the policy's old keys
for it are accepted for one release, each with one warning naming it."""

from __future__ import annotations

import pytest
import structlog

from gateway.policy import policy_from_mapping
from gateway.settings import Settings, SettingsError
from tests.conftest import MakeGateway, envelope

UP = "http://crm.invalid"


def test_flags_win_over_variables_which_win_over_the_old_policy_keys() -> None:
    old = policy_from_mapping(
        {"limits": {"max_concurrent_requests": 7, "read_timeout_seconds": 3, "breaker_failures": 2}}
    )
    s = Settings.build(
        upstream=UP,
        policy=old,
        runtime={"max_concurrent_requests": "9"},
        env={"GATEWAY_MAX_CONCURRENT_REQUESTS": "8", "GATEWAY_READ_TIMEOUT_SECONDS": "4.5"},
    )
    assert s.max_concurrent_requests == 9  # flag
    assert s.read_timeout_s == 4.5  # variable
    assert s.breaker_failures == 2  # the policy's old key
    assert s.pool_timeout_s == 5.0 and s.drain_timeout_s == 10 and s.log_level == "info"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_POOL_TIMEOUT_SECONDS": "soon"}, "GATEWAY_POOL_TIMEOUT_SECONDS must be a number"),
        ({"GATEWAY_MAX_HEADER_BYTES": "0"}, "GATEWAY_MAX_HEADER_BYTES must be greater than 0"),
        ({"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL must be one of"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.build(upstream=UP, env=env)


def test_a_limit_set_by_a_variable_is_enforced(make_gateway: MakeGateway) -> None:
    gw = make_gateway(env={"GATEWAY_MAX_HEADER_BYTES": "4096"})
    r = gw.http.get("/crm/v2/Leads", headers={"X-Padding": "a" * 5000})
    envelope(r, 431, "GATEWAY_HEADERS_TOO_LARGE")
    assert gw.http.get("/crm/v2/Leads", params={"per_page": 1}).status_code == 200


def test_an_old_policy_key_still_works_with_one_warning_naming_it(
    make_gateway: MakeGateway,
) -> None:
    with structlog.testing.capture_logs() as logs:
        gw = make_gateway({"limits": {"max_header_bytes": 4096, "max_request_body_bytes": 10**6}})
    warned = [e for e in logs if e["event"] == "policy_key_moved_to_settings"]
    assert [e["key"] for e in warned] == ["limits.max_header_bytes"]
    r = gw.http.get("/crm/v2/Leads", headers={"X-Padding": "a" * 5000})
    envelope(r, 431, "GATEWAY_HEADERS_TOO_LARGE")
