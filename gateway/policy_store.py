"""Hot reload that keeps the last good policy.

The policy file is read again on SIGHUP and when it changes (its size and mtime are looked
at every ``interval`` seconds, its bytes hashed only then). A valid file takes effect for
new requests: ``apply`` is called with it, and a request keeps the policy it started with.
An invalid file is refused with one log line naming the key, and the policy in force stays.
Either way the reload is an audit entry (event ``policy_reload``).

What is built once at start (the metadata cache, the audit trail) keeps the values it was
built with; a reload that changes them says so in one log line per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import structlog

from gateway.errors import AuditUnavailable, Reason
from gateway.policy import Policy, PolicyError, parse_policy

log = structlog.get_logger("gateway.policy")

#: Policy attributes read once at start, by what they configure
_AT_START = {
    "metadata_ttl_s": "metadata.ttl_seconds",
    "metadata_max_stale_s": "metadata.max_stale_seconds",
    "audit_fsync": "audit.fsync",
    "audit_on_full": "audit.on_full",
    "audit_stdout": "audit.stdout",
    "audit_checkpoint_interval_s": "audit.checkpoint_interval_seconds",
    "audit_max_bytes": "audit.max_bytes",
}

Record = Callable[[dict[str, object]], Awaitable[None]]


class PolicyStore:
    def __init__(
        self,
        path: Path | None,
        policy: Policy,
        apply: Callable[[Policy], None],
        record: Record,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self.policy = policy
        self.apply = apply
        self.record = record
        self.interval = interval
        self.reloads = 0
        self.rejected = 0
        self._seen = self._stat()
        self._rejected_digest: bytes | None = None  # the bytes last refused
        self._wake = asyncio.Event()

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Watch the file (and SIGHUP, where this runs in the main thread) while inside."""
        if self.path is None:
            yield
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self._wake.set)
        task = asyncio.create_task(self._watch(), name="policy-watch")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGHUP)

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            forced = self._wake.is_set()
            self._wake.clear()
            seen = self._stat()
            if forced or seen != self._seen:
                self._seen = seen
                await self.reload()

    async def reload(self) -> bool:
        """Read the file again; whether a new policy took effect."""
        assert self.path is not None
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            return await self._refuse("<file>", f"cannot be read ({exc.strerror})", None)
        if data == self._rejected_digest:
            return False  # the same bad bytes: refused once, logged once
        try:
            policy = parse_policy(data)
        except PolicyError as exc:
            return await self._refuse(exc.key, str(exc), data)
        if policy.digest == self.policy.digest:
            return False
        for attr, key in _AT_START.items():
            if getattr(policy, attr) != getattr(self.policy, attr):
                log.warning("policy_key_needs_restart", key=key)
        for key in sorted(set(policy.legacy) | set(self.policy.legacy)):
            if policy.legacy.get(key) != self.policy.legacy.get(key):
                log.warning("policy_key_needs_restart", key=key)
        self._rejected_digest = None
        self.policy = policy
        self.apply(policy)
        self.reloads += 1
        log.info("policy_reloaded", version=policy.version, hash=policy.digest)
        await self._audit(Reason.POLICY_RELOADED, None)
        return True

    async def _refuse(self, key: str, problem: str, data: bytes | None) -> bool:
        self._rejected_digest = data
        self.rejected += 1
        log.warning(
            "policy_rejected",
            key=key,
            error=problem,
            kept=self.policy.version,
            hash=self.policy.digest,
        )
        await self._audit(Reason.POLICY_INVALID, "refused")
        return False

    async def _audit(self, reason: Reason, outcome: str | None) -> None:
        try:
            await self._record_change(reason, outcome)
        except AuditUnavailable:
            # The change stands (or was refused) either way; the watch goes on.
            log.error("audit_unavailable", route="/_gateway/policy", reason=reason.value)

    async def _record_change(self, reason: Reason, outcome: str | None) -> None:
        await self.record(
            {
                "request_id": uuid.uuid4().hex,
                "route": "/_gateway/policy",
                "outcome": outcome,
                "reasons": [reason.value],
                "policy_version": self.policy.version,
                "policy_hash": self.policy.digest or None,
            }
        )
