"""``GET /_gateway/ready``: re-checked on every call (the upstream probe's answer is kept
for ``CACHE_S`` so a busy prober does not become load on the CRM).

The checks, each ``"ok"`` or a short sentence naming what is wrong:

- ``policy``: a policy is loaded (and its version is in the body);
- ``upstream``: the CRM answers an unauthenticated ``GET /crm/v2/org`` within the connect
  timeout (any answer but 502, 503 or 504, a 401 included, means it is there);
- ``metadata``: the last metadata fetch did not fail (while it fails, entries are served
  only up to ``metadata.max_stale_seconds`` old, and cold ones not at all);
- ``audit``: the audit sink is writing and keeping up;
- ``draining``: shutdown has not begun (from the shutdown signal on, 503).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.app import Gateway

OK = "ok"
CACHE_S = 2.0


class Readiness:
    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        self.draining = False
        self.cache_s = CACHE_S
        self._probe: tuple[float, str] | None = None  # (when, result)
        self._lock = asyncio.Lock()

    async def check(self) -> dict[str, str]:
        gw = self._gw
        policy = gw.pipeline.policy  # the one in force, after any reload
        stats = gw.metadata.stats
        return {
            "policy": OK if policy.version else "no policy version is loaded",
            "upstream": await self._upstream(),
            "metadata": (
                f"fetches from the CRM are failing; entries are served up to "
                f"{policy.metadata_max_stale_s:g} s old"
                if stats.failing
                else OK
            ),
            "audit": (
                OK
                if gw.audit.healthy
                else "checkpoints cannot be written"
                if gw.audit.accepting
                else "audit sink is not keeping up"
            ),
            "draining": "shutting down" if self.draining else OK,
        }

    async def _upstream(self) -> str:
        async with self._lock:  # concurrent probers share one probe
            now = time.monotonic()
            if self._probe is None or now - self._probe[0] >= self.cache_s:
                self._probe = (now, await self._probe_upstream())
            return self._probe[1]

    async def _probe_upstream(self) -> str:
        gw = self._gw
        timeout = gw.settings.connect_timeout_s
        try:
            resp = await asyncio.wait_for(
                gw.upstream.send("GET", f"{gw.settings.upstream}/crm/v2/org", [], b""), timeout
            )
        except TimeoutError:
            return f"the CRM did not answer within {timeout:g} s"
        except GatewayError as exc:
            return f"the CRM is not reachable ({exc.code})"
        await resp.aclose()
        if resp.status in (502, 503, 504):
            return f"the CRM answers {resp.status}"
        return OK
