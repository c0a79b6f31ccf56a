"""One frozen settings object, from flags and ``GATEWAY_*`` environment variables (flags win)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gateway.logs import LEVELS
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
    if parts.path not in ("", "/"):
        # the gateway adds /crm/{version}/... itself: a path here would be doubled
        raise SettingsError(
            f"{name} must be a scheme and host only (such as https://www.zohoapis.eu), "
            f"without the path {parts.path!r}"
        )
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
    #: the least level logged on stderr
    log_level: str = "info"
    #: on shutdown, how long in-flight requests may take to finish
    drain_timeout_s: float = 10.0
    #: the HTTP(S) proxy upstream calls go through (only with --proxy-from-env)
    upstream_proxy: str | None = None

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
        log_level: str | None = None,
        drain_timeout: str | float | None = None,
        proxy_from_env: bool = False,
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
        level = (log_level or env.get("GATEWAY_LOG_LEVEL") or "info").lower()
        if level not in LEVELS:
            raise SettingsError(
                f"--log-level (GATEWAY_LOG_LEVEL) must be one of {', '.join(LEVELS)}"
            )
        raw_drain = drain_timeout if drain_timeout is not None else env.get("GATEWAY_DRAIN_TIMEOUT")
        try:
            drain = float(raw_drain) if raw_drain not in (None, "") else 10.0
        except ValueError:
            drain = -1.0
        if not 0 <= drain <= 3600:
            raise SettingsError(
                "--drain-timeout (GATEWAY_DRAIN_TIMEOUT) must be seconds between 0 and 3600"
            )
        use_proxy = proxy_from_env or env.get("GATEWAY_PROXY_FROM_ENV", "") not in ("", "0")
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
            log_level=level,
            drain_timeout_s=drain,
            upstream_proxy=env_proxy(up, env) if use_proxy else None,
        )


def env_proxy(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY`` (either case) names for ``url``, unless
    ``NO_PROXY`` exempts its host: the rules curl and Python's urllib follow."""
    lowered = {k.lower(): v for k, v in env.items() if v}
    parts = urlsplit(url)
    no_proxy = lowered.get("no_proxy", "")
    host = parts.hostname or ""
    for entry in (e.strip().lower().lstrip(".") for e in no_proxy.split(",")):
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    proxy = lowered.get(f"{parts.scheme}_proxy")
    if proxy is not None:
        _check_proxy(proxy)
    return proxy


def _check_proxy(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError("HTTPS_PROXY / HTTP_PROXY must be an http:// or https:// URL")


def _is_log_file(candidate: Path, log: Path) -> bool:
    """Is ``candidate`` the log or a name its rotation uses (``log.N``)?"""
    if candidate.resolve().parent != log.resolve().parent:
        return False
    return re.fullmatch(re.escape(log.name) + r"(\.[0-9]+)?", candidate.name) is not None
