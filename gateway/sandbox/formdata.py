"""A minimal ``multipart/form-data`` reader for the bulk-write upload.

Starlette's form parser needs the optional ``python-multipart`` package, which the project
does not depend on; the upload carries one small part, so a byte-level split suffices.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(r';\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(r';\s*filename="([^"]*)"', re.IGNORECASE)


class FormError(ValueError):
    pass


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Map each part's name to ``(filename, content)``."""
    m = _BOUNDARY.search(content_type or "")
    if not content_type.lower().startswith("multipart/form-data") or m is None:
        raise FormError("not multipart/form-data")
    delimiter = b"--" + m.group(1).encode("latin-1")
    out: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        content = content.removesuffix(b"\r\n")
        disposition = next(
            (
                line
                for line in head.decode("latin-1").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        name = _NAME.search(disposition)
        if name is None:
            continue
        filename = _FILENAME.search(disposition)
        out[name.group(1)] = (filename.group(1) if filename else None, content)
    return out
