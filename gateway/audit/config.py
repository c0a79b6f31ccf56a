"""Build the gateway's audit trail from its settings: log, checkpoints file, signing key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.audit.trail import AuditTrail
from gateway.keys import Ed25519SigningKey, SigningKey

if TYPE_CHECKING:
    from gateway.settings import Settings


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
        stdout=policy.audit_stdout or settings.audit_log is None,
        fsync=policy.audit_fsync,
        on_full=policy.audit_on_full,
        checkpoint_path=settings.checkpoint_file,
        checkpoint_interval_s=policy.audit_checkpoint_interval_s,
        max_bytes=policy.audit_max_bytes,
    )
