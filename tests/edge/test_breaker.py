"""The circuit breaker (engineering-anchors §B.4 item 36): pure ``CircuitBreaker`` tests
with an injected clock, ``BreakerUpstream`` over a fake transport, and the gateway end to
end in front of the sandbox CRM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.errors import Overloaded, UpstreamTimeout, UpstreamUnreachable
from gateway.upstream import BreakerUpstream, CircuitBreaker, Headers, UpstreamResponse
from tests.conftest import Crm, envelope
from tests.edge.conftest import EdgeGateway
from tests.servers import free_port

# -- CircuitBreaker: pure --------------------------------------------------------------------


def _opened(failures: int = 3, cooldown: float = 10.0, at: float = 100.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failures, cooldown)
    for _ in range(failures):
        assert breaker.admit(at) == 0.0
        breaker.failed(at)
    return breaker


def test_c36_n_consecutive_failures_open_the_circuit_for_the_cooldown() -> None:
    breaker = CircuitBreaker(3, 10.0)
    for _ in range(2):
        breaker.failed(100.0)
    assert breaker.admit(100.0) == 0.0  # two are not enough
    breaker.failed(100.0)
    assert breaker.admit(100.0) == 10.0
    assert breaker.admit(104.0) == 6.0


def test_c36_a_success_in_between_starts_the_count_again() -> None:
    breaker = CircuitBreaker(3, 10.0)
    for _ in range(2):
        breaker.failed(100.0)
    breaker.succeeded()
    for _ in range(2):
        breaker.failed(100.0)
    assert breaker.admit(100.0) == 0.0


def test_c36_after_the_cooldown_exactly_one_probe_is_admitted() -> None:
    breaker = _opened()
    assert breaker.admit(110.0) == 0.0  # the probe
    assert breaker.admit(110.0) > 0  # everyone else waits for its answer
    assert breaker.admit(200.0) > 0  # however long it takes


def test_c36_a_successful_probe_closes_the_circuit() -> None:
    breaker = _opened()
    breaker.admit(110.0)
    breaker.succeeded()
    assert breaker.admit(110.0) == 0.0 and breaker.admit(110.0) == 0.0


def test_c36_a_failed_probe_opens_it_for_another_cooldown() -> None:
    breaker = _opened()
    breaker.admit(110.0)
    breaker.failed(110.0)
    assert breaker.admit(115.0) == 5.0
    assert breaker.admit(120.0) == 0.0  # the next probe


def test_c36_a_probe_that_ends_without_an_answer_passes_the_turn_on() -> None:
    breaker = _opened()
    breaker.admit(110.0)
    breaker.abandoned()
    assert breaker.admit(110.0) == 0.0


# -- BreakerUpstream over a fake transport ---------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedUpstream:
    """Answers each call with the next status, or raises the next exception."""

    def __init__(self, *script: int | BaseException) -> None:
        self.script = list(script)
        self.calls = 0

    async def send(self, method: str, url: str, headers: Headers, body: bytes) -> UpstreamResponse:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return UpstreamResponse(step, [], _no_chunks(), _release)

    async def aclose(self) -> None:
        pass


async def _no_chunks() -> AsyncIterator[bytes]:
    for chunk in ():
        yield chunk


async def _release() -> None:
    pass


def _run(upstream: BreakerUpstream, n: int) -> list[int | str]:
    async def go() -> list[int | str]:
        out: list[int | str] = []
        for _ in range(n):
            try:
                resp = await upstream.send("GET", "https://crm.example/crm/v8/org", [], b"")
                out.append(resp.status)
            except Overloaded as exc:
                out.append(f"503 retry-after {exc.retry_after}")
            except (UpstreamUnreachable, UpstreamTimeout) as exc:
                out.append(exc.status_code)
        return out

    return asyncio.run(go())


def test_c36_unavailability_and_connection_failures_trip_the_breaker_without_calling_the_crm() -> (
    None
):
    clock = FakeClock()
    inner = ScriptedUpstream(503, UpstreamUnreachable(), UpstreamTimeout(), 200)
    upstream = BreakerUpstream(inner, failures=3, cooldown=30.0, clock=clock)
    assert _run(upstream, 4) == [503, 502, 504, "503 retry-after 30"]
    assert inner.calls == 3
    clock.now += 29.5
    assert _run(upstream, 1) == ["503 retry-after 1"]
    clock.now += 0.5
    assert _run(upstream, 1) == [200]  # the probe
    assert inner.calls == 4


def test_c36_a_429_and_a_full_pool_do_not_trip_the_breaker() -> None:
    inner = ScriptedUpstream(429, 429, 429, Overloaded(), Overloaded(), 429, 200)
    upstream = BreakerUpstream(inner, failures=2, cooldown=30.0, clock=FakeClock())
    assert _run(upstream, 7) == [429, 429, 429, "503 retry-after 1", "503 retry-after 1", 429, 200]
    assert inner.calls == 7


# -- end to end ------------------------------------------------------------------------------

MODULES = "/crm/v8/settings/modules"
POLICY = {"limits": {"breaker_failures": 3, "breaker_cooldown_seconds": 1}}


def test_c36_after_n_crm_failures_requests_get_503_until_one_probe_goes_through(
    crm: Crm, edge_gateway: EdgeGateway
) -> None:
    gw = edge_gateway(POLICY)
    crm.clear()
    crm.fault(path_contains=MODULES, status=503, json={"code": "SERVICE_UNAVAILABLE"}, times=3)
    assert [gw.http.get(MODULES).status_code for _ in range(3)] == [503, 503, 503]
    r = gw.http.get(MODULES)
    envelope(r, 503, "GATEWAY_UPSTREAM_UNAVAILABLE")
    assert r.headers["retry-after"] == "1"
    assert len(crm.received(MODULES)) == 3  # the CRM was not called
    time.sleep(1.1)
    assert gw.http.get(MODULES).status_code == 200  # the probe
    assert gw.http.get(MODULES).status_code == 200
    assert len(crm.received(MODULES)) == 5
    refused = [e for e in gw.requests() if e["status"] == 503 and e["upstream_status"] is None]
    assert len(refused) == 1 and refused[0]["reasons"] == ["upstream_unreachable"]


def test_c36_connection_failures_open_the_circuit_too(edge_gateway: EdgeGateway) -> None:
    gw = edge_gateway(POLICY, upstream=f"http://127.0.0.1:{free_port()}")
    assert [gw.http.get(MODULES).status_code for _ in range(3)] == [502, 502, 502]
    r = gw.http.get(MODULES)
    envelope(r, 503, "GATEWAY_UPSTREAM_UNAVAILABLE")
    assert "retry-after" in r.headers


@pytest.mark.parametrize("status", [429, 404])
def test_c36_crm_client_errors_429_included_do_not_open_the_circuit(
    crm: Crm, edge_gateway: EdgeGateway, status: int
) -> None:
    gw = edge_gateway(POLICY)
    crm.clear()
    crm.fault(path_contains=MODULES, status=status, json={"code": "LIMIT_REACHED"}, times=5)
    assert [gw.http.get(MODULES).status_code for _ in range(5)] == [status] * 5
    assert gw.http.get(MODULES).status_code == 200
    assert len(crm.received(MODULES)) == 6
