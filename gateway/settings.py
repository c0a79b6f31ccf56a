"""One frozen settings object, from flags and ``GATEWAY_*`` environment variables (flags win)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gateway.policy import Policy

TRANSPORTS = ("aiohttp", "httpx")


class SettingsError(ValueError):
    pass


def _check_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(f"{name} must not carry a query, fragment or credentials")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: str
    upload_upstream: str
    host: str = "127.0.0.1"
    port: int = 8080
    policy_path: Path | None = None
    audit_log: Path | None = None
    secret_file: Path = Path(".gateway-secret")
    secret: str | None = None
    transport: str = "aiohttp"
    policy: Policy = field(default_factory=Policy)
    #: where signed checkpoints go; None: ``<audit_log>.checkpoints`` (none on stdout only)
    checkpoint_file: Path | None = None
    #: Ed25519 private key (PEM) that signs checkpoints; None: HMAC with the gateway secret
    checkpoint_key: Path | None = None
    #: bulk exports streamed at once (``GATEWAY_MAX_CONCURRENT_EXPORTS``); more get a 503
    max_concurrent_exports: int = 4

    @classmethod
    def build(
        cls,
        *,
        upstream: str | None,
        upload_upstream: str | None = None,
        host: str | None = None,
        port: int | str | None = None,
        policy_path: str | None = None,
        audit_log: str | None = None,
        transport: str | None = None,
        policy: Policy | None = None,
        checkpoint_file: str | None = None,
        checkpoint_key: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if env is None else env
        up = upstream or env.get("GATEWAY_UPSTREAM")
        if not up:
            raise SettingsError("--upstream (or GATEWAY_UPSTREAM) is required")
        up = _check_url("--upstream", up)
        upload = upload_upstream or env.get("GATEWAY_UPLOAD_UPSTREAM") or up
        upload = _check_url("--upload-upstream", upload)
        raw_port = port if port is not None else env.get("GATEWAY_PORT", "8080")
        try:
            port_n = int(raw_port)
        except ValueError:
            raise SettingsError("--port must be a number") from None
        if not 0 <= port_n <= 65535:
            raise SettingsError("--port must be between 0 and 65535")
        kind = transport or env.get("GATEWAY_TRANSPORT", "aiohttp")
        if kind not in TRANSPORTS:
            raise SettingsError(f"--transport must be one of {', '.join(TRANSPORTS)}")
        pol_path = policy_path or env.get("GATEWAY_POLICY")
        log = audit_log or env.get("GATEWAY_AUDIT_LOG")
        secret_file = env.get("GATEWAY_SECRET_FILE")
        if secret_file is None:
            secret_file = str(Path(log).with_name(".gateway-secret")) if log else ".gateway-secret"
        cp_file = checkpoint_file or env.get("GATEWAY_CHECKPOINT_FILE") or None
        if cp_file and log and _is_log_file(Path(cp_file), Path(log)):
            raise SettingsError("--checkpoint-file must not be the audit log or one of its files")
        cp_key = checkpoint_key or env.get("GATEWAY_CHECKPOINT_KEY") or None
        exports = env.get("GATEWAY_MAX_CONCURRENT_EXPORTS", "4")
        if not exports.isdigit() or int(exports) < 1:
            raise SettingsError("GATEWAY_MAX_CONCURRENT_EXPORTS must be a number above 0")
        return cls(
            upstream=up,
            upload_upstream=upload,
            host=host or env.get("GATEWAY_HOST", "127.0.0.1"),
            port=port_n,
            policy_path=Path(pol_path) if pol_path else None,
            audit_log=Path(log) if log else None,
            secret_file=Path(secret_file),
            secret=env.get("GATEWAY_SECRET") or None,
            transport=kind,
            policy=policy or Policy(),
            checkpoint_file=Path(cp_file) if cp_file else None,
            checkpoint_key=Path(cp_key) if cp_key else None,
            max_concurrent_exports=int(exports),
        )


def _is_log_file(candidate: Path, log: Path) -> bool:
    """Is ``candidate`` the log or a name its rotation uses (``log.N``)?"""
    if candidate.resolve().parent != log.resolve().parent:
        return False
    return re.fullmatch(re.escape(log.name) + r"(\.[0-9]+)?", candidate.name) is not None
