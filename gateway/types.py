"""The few shapes the corridor passes between rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from gateway.upstream import Headers


class Produced(Protocol):
    """A body made while it is sent (a bulk export, rewritten as it streams): ``chunks``
    raises what ended it early; ``aclose`` stops it and frees what it holds."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Reply:
    """What goes back to the client: a finished body, or one made while it is sent (an
    upstream body checked on the way, a bulk export: audited once it is made, app.py)."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    produced: Produced | None = None
