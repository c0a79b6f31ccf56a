"""What ``serve`` checks before it writes anything: each problem is one sentence naming the
flag, variable or path, and ``serve`` exits 2 on it.

Nothing here creates or writes a file: a start that fails leaves the audit log, the
checkpoints file and the secret file as they were. The listening socket is bound here, so a
port in use is reported the same way, before the audit trail opens.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from gateway.audit.config import checkpoint_path, secret_required
from gateway.settings import Settings


class PreflightError(ValueError):
    pass


def check_paths(settings: Settings) -> None:
    if settings.audit_log is not None:
        _appendable(settings.audit_log, "--audit-log (GATEWAY_AUDIT_LOG)")
    checkpoints = checkpoint_path(settings)
    if checkpoints is not None:
        _appendable(checkpoints, "--checkpoint-file (GATEWAY_CHECKPOINT_FILE)")
    if settings.secret:
        return
    secret = settings.secret_file
    if secret.exists():
        _readable(secret, "GATEWAY_SECRET_FILE")
    elif secret_required():
        raise PreflightError(
            f"GATEWAY_SECRET_FILE {secret} does not exist, and in a container the gateway "
            "does not generate a secret (it would change with every start): mount the "
            "secret file there, or set GATEWAY_SECRET"
        )
    else:
        _creatable(secret, "GATEWAY_SECRET_FILE")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so that a port in use stops ``serve`` here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "already in use" if exc.errno == errno.EADDRINUSE else _why(exc)
        raise PreflightError(
            f"--port (GATEWAY_PORT) {port} on --host (GATEWAY_HOST) {host}: {why}"
        ) from None
    sock.set_inheritable(True)
    return sock


def _appendable(path: Path, name: str) -> None:
    if path.is_dir():
        raise PreflightError(f"{name} {path} is a directory, not a file")
    if path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as exc:
            raise PreflightError(f"{name} {path} cannot be appended to: {_why(exc)}") from None
        return
    _creatable(path, name, parents=False)


def _readable(path: Path, name: str) -> None:
    if path.is_dir():
        raise PreflightError(f"{name} {path} is a directory, not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise PreflightError(f"{name} {path} cannot be read: {_why(exc)}") from None


def _creatable(path: Path, name: str, *, parents: bool = True) -> None:
    """``path`` does not exist; could it be created (with its parents, if ``parents``)?"""
    folder = path.parent
    while parents and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise PreflightError(f"{name} {path} cannot be created: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PreflightError(f"{name} {path} cannot be created: {folder} is not writable")


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
