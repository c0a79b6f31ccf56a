"""Build the gateway's audit trail from its settings: log, checkpoints file, signing key,
and the name of the process that writes it.

With several workers (``Settings.workers`` > 1) each worker writes its own log beside the
configured one: ``audit.jsonl`` becomes ``audit-<instance>.jsonl`` (and its checkpoints
``audit-<instance>.jsonl.checkpoints``; an explicit checkpoint file is split the same
way), each with its own lock and chain. A worker takes the first slot whose lock is free,
so one restarted after a crash takes its predecessor's file (the kernel released the lock
when it died) and continues that chain in a new segment.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.audit.checkpoints import default_checkpoint_path
from gateway.audit.files import AuditLogInUse
from gateway.audit.trail import AuditTrail
from gateway.keys import Ed25519SigningKey, SigningKey

if TYPE_CHECKING:
    from gateway.settings import Settings

#: slots a worker may take, per configured worker: a rolling restart (uvicorn on SIGHUP)
#: starts each new worker before it retires the old one, which still holds its slot
_SLOTS_PER_WORKER = 4


def instance_name(worker: int = 1) -> str:
    """Who writes an audit chain: the host (a pod's name in Kubernetes) and the worker
    number, ``gateway-7d9f-x2k4-w1``. ``GATEWAY_INSTANCE`` overrides the host part."""
    host = os.environ.get("GATEWAY_INSTANCE") or socket.gethostname()
    host = re.sub(r"[^A-Za-z0-9._\-]+", "-", host).strip("-.")[:63] or "gateway"
    return f"{host}-w{worker}"


def worker_path(path: Path, instance: str) -> Path:
    """``audit.jsonl`` → ``audit-<instance>.jsonl``, beside it."""
    return path.with_name(f"{path.stem}-{instance}{path.suffix}")


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
    A worker of several gets its trail already claimed (see the module doc); raises
    ``AuditLogInUse`` when every slot is held.
    """
    key = signing_key or checkpoint_signer(settings)
    if settings.workers == 1:
        log, checkpoints = settings.audit_log, settings.checkpoint_file
        return _trail(settings, secret, key, instance_name(), log, checkpoints)
    assert settings.audit_log is not None  # Settings refuses several workers on stdout
    for worker in range(1, _SLOTS_PER_WORKER * settings.workers + 1):
        instance = instance_name(worker)
        log = worker_path(settings.audit_log, instance)
        checkpoints = settings.checkpoint_file
        checkpoints = worker_path(checkpoints, instance) if checkpoints else None
        trail = _trail(settings, secret, key, instance, log, checkpoints)
        try:
            trail.claim()
        except AuditLogInUse:
            continue
        return trail
    raise AuditLogInUse(settings.audit_log)


def _trail(
    settings: Settings,
    secret: bytes,
    signing_key: SigningKey | None,
    instance: str,
    log: Path | None,
    checkpoints: Path | None,
) -> AuditTrail:
    policy = settings.policy
    return AuditTrail(
        log,
        secret=secret,
        signing_key=signing_key or checkpoint_signer(settings),
        stdout=policy.audit_stdout or log is None,
        fsync=policy.audit_fsync,
        on_full=policy.audit_on_full,
        checkpoint_path=checkpoints,
        checkpoint_interval_s=policy.audit_checkpoint_interval_s,
        max_bytes=policy.audit_max_bytes,
        instance=instance,
    )
