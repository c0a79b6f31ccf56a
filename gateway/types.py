"""The few shapes the corridor passes between rooms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from gateway.upstream import Headers, UpstreamResponse


@dataclass(slots=True)
class Reply:
    """What goes back to the client: a finished body, a spooled file, or an upstream stream."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    file: IO[bytes] | None = None
    stream: UpstreamResponse | None = None
    gunzip: bool = False  # decode a gzip stream for a client that did not ask for gzip
