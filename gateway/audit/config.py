"""Build the gateway's audit trail from its settings: log, checkpoints file, signing key."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.audit.checkpoints import default_checkpoint_path
from gateway.audit.trail import AuditTrail
from gateway.keys import Ed25519SigningKey, SigningKey

if TYPE_CHECKING:
    from gateway.settings import Settings


def instance_name() -> str:
    """Which process wrote an entry: ``GATEWAY_INSTANCE`` if set, else the host name, with
    ``/N`` for worker N when ``GATEWAY_WORKER`` says the process is one of several."""
    name = os.environ.get("GATEWAY_INSTANCE") or socket.gethostname()
    worker = os.environ.get("GATEWAY_WORKER")
    return f"{name}/{worker}" if worker else name


def secret_required() -> bool:
    """In the container image (which sets ``GATEWAY_IN_CONTAINER=1``) the secret is never
    generated: a new one per container start would change every client fingerprint and
    checkpoint key."""
    return os.environ.get("GATEWAY_IN_CONTAINER", "") not in ("", "0")


def stdout_only(settings: Settings) -> bool:
    return settings.audit_log is None


def checkpoint_path(settings: Settings) -> Path | None:
    """The checkpoints file, or None when they go into the stdout stream."""
    if settings.checkpoint_file is not None:
        return settings.checkpoint_file
    if settings.audit_log is not None:
        return default_checkpoint_path(settings.audit_log)
    return None


def checkpoint_target(settings: Settings) -> str:
    path = checkpoint_path(settings)
    return str(path) if path is not None else "stdout (entries of event checkpoint)"


def checkpoint_signer(settings: Settings) -> SigningKey | None:
    """The Ed25519 key from ``settings.checkpoint_key``, or None to sign with the secret.

    Raises ``KeyFileError`` when the file is missing or not an Ed25519 private key.
    """
    if settings.checkpoint_key is None:
        return None
    return Ed25519SigningKey.load(settings.checkpoint_key)


def trail_from_settings(
    settings: Settings, secret: bytes, signing_key: SigningKey | None = None
) -> AuditTrail:
    """The trail ``Gateway`` would build, plus the checkpoint file and key settings.

    ``signing_key`` saves loading ``settings.checkpoint_key`` again when the caller has.
    """
    policy = settings.policy
    return AuditTrail(
        settings.audit_log,
        secret=secret,
        signing_key=signing_key or checkpoint_signer(settings),
        stdout=policy.audit_stdout or stdout_only(settings),
        fsync=policy.audit_fsync,
        on_full=policy.audit_on_full,
        checkpoint_path=settings.checkpoint_file,
        checkpoint_interval_s=policy.audit_checkpoint_interval_s,
        max_bytes=policy.audit_max_bytes,
        instance=instance_name(),
    )
