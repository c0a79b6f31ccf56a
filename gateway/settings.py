"""One frozen settings object, from flags and ``GATEWAY_*`` environment variables (flags win)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.logs import LEVELS
from gateway.policy import MOVED_TO_SETTINGS, Policy

TRANSPORTS = ("aiohttp", "httpx", "h1")
LOG_LEVELS = LEVELS

#: how the process runs: attribute -> (flag, environment variable, type, default)
RUNTIME: dict[str, tuple[str, str, type, float | int | str]] = {
    "connect_timeout_s": ("--connect-timeout", "GATEWAY_CONNECT_TIMEOUT_SECONDS", float, 5.0),
    "read_timeout_s": ("--read-timeout", "GATEWAY_READ_TIMEOUT_SECONDS", float, 30.0),
    "pool_timeout_s": ("--pool-timeout", "GATEWAY_POOL_TIMEOUT_SECONDS", float, 5.0),
    "max_upstream_connections": (
        "--max-upstream-connections",
        "GATEWAY_MAX_UPSTREAM_CONNECTIONS",
        int,
        200,
    ),
    "body_read_timeout_s": (
        "--body-read-timeout",
        "GATEWAY_BODY_READ_TIMEOUT_SECONDS",
        float,
        30.0,
    ),
    "max_concurrent_requests": (
        "--max-concurrent-requests",
        "GATEWAY_MAX_CONCURRENT_REQUESTS",
        int,
        256,
    ),
    "max_concurrent_exports": (
        "--max-concurrent-exports",
        "GATEWAY_MAX_CONCURRENT_EXPORTS",
        int,
        4,
    ),
    "breaker_failures": ("--breaker-failures", "GATEWAY_BREAKER_FAILURES", int, 5),
    "breaker_cooldown_s": ("--breaker-cooldown", "GATEWAY_BREAKER_COOLDOWN_SECONDS", float, 30.0),
    "max_header_bytes": ("--max-header-bytes", "GATEWAY_MAX_HEADER_BYTES", int, 32 * 1024),
    "log_level": ("--log-level", "GATEWAY_LOG_LEVEL", str, "info"),
    "drain_timeout_s": ("--drain-timeout", "GATEWAY_DRAIN_TIMEOUT_SECONDS", int, 10),
}
#: settings attribute -> the policy key that set it before
_FROM_POLICY = {attr: key for key, (attr, _) in MOVED_TO_SETTINGS.items()}


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
    transport: str = "h1"
    policy: Policy = field(default_factory=Policy)
    #: where signed checkpoints go; None: ``<audit_log>.checkpoints`` (none on stdout only)
    checkpoint_file: Path | None = None
    #: Ed25519 private key (PEM) that signs checkpoints; None: HMAC with the gateway secret
    checkpoint_key: Path | None = None
    # -- how the process runs (``RUNTIME``) --
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    #: the longest a request waits for a free connection to the CRM (then 503)
    pool_timeout_s: float = 5.0
    max_upstream_connections: int = 200
    #: the whole request body must arrive within this (else 408)
    body_read_timeout_s: float = 30.0
    #: more in flight are refused at once (503 + Retry-After), never queued
    max_concurrent_requests: int = 256
    #: bulk exports streamed at once; more get a 503
    max_concurrent_exports: int = 4
    #: consecutive connection failures or 5xx from the CRM that open its circuit
    breaker_failures: int = 5
    #: while open: 503 + Retry-After at once; then one probe is let through
    breaker_cooldown_s: float = 30.0
    #: request headers in total; more is refused (431)
    max_header_bytes: int = 32 * 1024
    #: the least level logged on stderr
    log_level: str = "info"
    #: on shutdown, how long in-flight requests may take to finish
    drain_timeout_s: int = 10
    #: the HTTP(S) proxy upstream calls go through (only with --proxy-from-env)
    upstream_proxy: str | None = None
    #: worker processes sharing the port; each > 1 writes ``audit-<instance>.jsonl``
    workers: int = 1

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
        runtime: Mapping[str, object] | None = None,
        proxy_from_env: bool = False,
        workers: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """``runtime``: flag values by ``RUNTIME`` attribute (None: not given). Each is
        taken from its flag, else its variable, else the policy's old key, else the
        default."""
        env = os.environ if env is None else env
        policy = policy or Policy()
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
        kind = transport or env.get("GATEWAY_TRANSPORT", "h1")
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
        use_proxy = proxy_from_env or env.get("GATEWAY_PROXY_FROM_ENV", "") not in ("", "0")
        n_workers = worker_count(workers or env.get("GATEWAY_WORKERS") or "1")
        if n_workers > 1 and (not log or (policy and policy.audit_stdout)):
            # one stream cannot hold several chains whole: a line longer than a pipe's
            # atomic write could interleave with another worker's
            raise SettingsError("--workers above 1 needs --audit-log and audit.stdout off")
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
            policy=policy,
            checkpoint_file=Path(cp_file) if cp_file else None,
            checkpoint_key=Path(cp_key) if cp_key else None,
            upstream_proxy=env_proxy(up, env) if use_proxy else None,
            **_runtime(runtime or {}, env, policy),
            workers=n_workers,
        )

    def environment(self) -> dict[str, str]:
        """The ``GATEWAY_*`` variables from which ``build`` makes these settings again in
        another process (a worker). The secret itself is never put there: the worker reads
        the file, or inherits ``GATEWAY_SECRET`` when that is how it was given."""
        paths = {
            "GATEWAY_POLICY": self.policy_path,
            "GATEWAY_AUDIT_LOG": self.audit_log,
            "GATEWAY_CHECKPOINT_FILE": self.checkpoint_file,
            "GATEWAY_CHECKPOINT_KEY": self.checkpoint_key,
        }
        env = {name: str(path) for name, path in paths.items() if path is not None}
        env.update(
            GATEWAY_UPSTREAM=self.upstream,
            GATEWAY_UPLOAD_UPSTREAM=self.upload_upstream,
            GATEWAY_HOST=self.host,
            GATEWAY_PORT=str(self.port),
            GATEWAY_SECRET_FILE=str(self.secret_file),
            GATEWAY_TRANSPORT=self.transport,
            GATEWAY_WORKERS=str(self.workers),
        )
        env.update({var: str(getattr(self, attr)) for attr, (_, var, _, _) in RUNTIME.items()})
        if self.upstream_proxy is not None:
            env["GATEWAY_PROXY_FROM_ENV"] = "1"
        return env


def worker_count(text: str) -> int:
    """``--workers``: a positive number, or ``auto`` for the CPUs this process may run on."""
    if text == "auto":
        return len(os.sched_getaffinity(0))
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise SettingsError('--workers must be a number from 1 to 256, or "auto"')
    return int(text)


def _runtime(given: Mapping[str, object], env: Mapping[str, str], policy: Policy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, (flag, var, kind, _default) in RUNTIME.items():
        raw = given.get(attr)
        name = flag
        if raw is None and var in env:
            raw, name = env[var], var
        if raw is None and _FROM_POLICY.get(attr) in policy.legacy:
            raw, name = policy.legacy[_FROM_POLICY[attr]], _FROM_POLICY[attr]
        if raw is None:
            continue
        if kind is str:
            value = str(raw).lower()
            if value not in LOG_LEVELS:
                raise SettingsError(f"{name} must be one of {', '.join(LOG_LEVELS)}")
            out[attr] = value
            continue
        try:
            number = kind(raw) if not isinstance(raw, str) else kind(raw.strip())
        except ValueError:
            raise SettingsError(f"{name} must be a number") from None
        if number <= 0:
            raise SettingsError(f"{name} must be greater than 0")
        out[attr] = number
    return out


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
