"""The structlog processor chain an entry walks: enrich → scrub → chain-hash → render.

Each step has structlog's processor signature ``(logger, method_name, event_dict)``, so the
steps compose in a plain structlog ``BoundLogger`` and each can be tested alone. The only
state is the chain head, held by ``ChainHasher``; the trail's single writer task is its
only caller, which is what keeps the chain linear.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from gateway.audit.canonical import GENESIS_HASH, canonical_json, entry_hash, utc_timestamp
from gateway.audit.scrub import scrub


class Enrich:
    """Stamp ``ts`` now and the writer's ``instance``, and insist on the ``seq`` the trail
    reserved in ``record()``.

    The trail passes ``seq`` as a keyword of the log call, which structlog applies after the
    caller's fields, so an input field named ``seq``, ``ts`` or ``instance`` can never win.
    """

    def __init__(
        self, clock: Callable[[], datetime] | None = None, instance: str | None = None
    ) -> None:
        self._clock = clock
        self._instance = instance

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        seq = event_dict.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("an audit entry needs the seq reserved by the trail")
        event_dict["ts"] = utc_timestamp(self._clock() if self._clock else None)
        event_dict["instance"] = self._instance
        return event_dict


class ChainHasher:
    """Link each entry to the one before: ``prev_hash`` is the head, ``hash`` the new head."""

    def __init__(self, head: str = GENESIS_HASH) -> None:
        self.head = head

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.pop("hash", None)
        event_dict["prev_hash"] = self.head
        event_dict["hash"] = self.head = entry_hash(event_dict)
        return event_dict


def render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
    """Canonical JSON bytes: the exact bytes the hash was computed over, plus ``hash``."""
    return canonical_json(event_dict)


class LineCollector:
    """The "logger" at the end of the chain: it keeps rendered lines for one group commit."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def msg(self, line: bytes) -> None:
        self.lines.append(line)

    def take(self) -> list[bytes]:
        lines, self.lines = self.lines, []
        return lines


def audit_logger(
    collector: LineCollector, hasher: ChainHasher, enrich: Enrich | None = None
) -> Any:
    """A structlog logger whose every ``.msg(event, seq=n)`` renders one audit line.

    Built with explicit processors, wrapper and context class, so the application's own
    ``structlog.configure()`` (console logs, tracebacks) can never reach the audit chain.
    """
    processors: list[Processor] = [enrich or Enrich(), scrub, hasher, render]
    return structlog.wrap_logger(
        collector,
        processors=processors,
        wrapper_class=structlog.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=False,
    ).bind()
