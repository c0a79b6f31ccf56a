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
        workers: str | None = None,
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
            policy=policy or Policy(),
            checkpoint_file=Path(cp_file) if cp_file else None,
            checkpoint_key=Path(cp_key) if cp_key else None,
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
        return env



def worker_count(text: str) -> int:
    """``--workers``: a positive number, or ``auto`` for the CPUs this process may run on."""
    if text == "auto":
        return len(os.sched_getaffinity(0))
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise SettingsError('--workers must be a number from 1 to 256, or "auto"')
    return int(text)


def _is_log_file(candidate: Path, log: Path) -> bool:
    """Is ``candidate`` the log or a name its rotation uses (``log.N``)?"""
    if candidate.resolve().parent != log.resolve().parent:
        return False
    return re.fullmatch(re.escape(log.name) + r"(\.[0-9]+)?", candidate.name) is not None
