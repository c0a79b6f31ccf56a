"""The gateway's secret and what is derived from it.

The secret keys the client fingerprint (HMAC-SHA256 of the OAuth token) and signs audit
checkpoints. It comes from ``GATEWAY_SECRET`` (hex or text), else from a file that is
created with 0600 permissions on first start. The token itself is never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def load_or_create_secret(path: Path, env_value: str | None = None) -> bytes:
    if env_value:
        return env_value.encode()
    try:
        data = path.read_bytes().strip()
        if data:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_hex(32).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data + b"\n")
    return data


def key_id(secret: bytes) -> str:
    """A public name for the secret, so a verifier knows which key signed a checkpoint."""
    return hashlib.sha256(b"privacy-gateway key id\x00" + secret).hexdigest()[:12]


def fingerprint(secret: bytes, token: str) -> str:
    """A stable, keyed, non-reversible name for a client token."""
    return hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()[:32]
