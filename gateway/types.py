"""The few shapes the corridor passes between rooms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from gateway.upstream import Headers, UpstreamResponse


@dataclass(frozen=True, slots=True)
class Incoming:
    method: str
    path: str  # percent-decoded, as classified
    query: str  # raw query string
    headers: Headers  # lower-case names, as the client sent them
    body: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


@dataclass(slots=True)
class Reply:
    """What goes back to the client: a finished body, a spooled file, or an upstream stream."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    file: IO[bytes] | None = None
    stream: UpstreamResponse | None = None
    gunzip: bool = False  # decode a gzip stream for a client that did not ask for gzip
