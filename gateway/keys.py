"""The gateway's secret, the checkpoint signing keys, and the key ring a verifier holds.

The secret keys the client fingerprint (HMAC-SHA256 of the OAuth token) and, unless an
Ed25519 key is configured, signs audit checkpoints. It comes from ``GATEWAY_SECRET`` (hex
or text), else from a file that is created with 0600 permissions on first start. The token
itself is never stored or logged.

Checkpoint keys come in two kinds, named by the checkpoint's ``alg``:

- ``hmac-sha256``: the gateway secret. Whoever verifies needs the secret itself.
- ``ed25519``: a key pair made by ``privacy-gateway audit keygen DIR``. The gateway signs
  with the private key (PKCS#8 PEM, mode 0600); an auditor verifies with the public key
  (SubjectPublicKeyInfo PEM) and needs no secret at all.

Every key has a public name, its ``key_id``: 12 hex characters of a domain-separated
SHA-256 of the secret (HMAC) or of the raw 32-byte public key (Ed25519). A checkpoint names
the key that signed it; a ``KeyRing`` maps key ids to keys, so after a rotation the old
public key still verifies the checkpoints it signed and the new one verifies the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
PRIVATE_KEY_SUFFIX = ".key"
PUBLIC_KEY_SUFFIX = ".pub"


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not the kind of key expected."""


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


def ed25519_key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(b"privacy-gateway ed25519 key id\x00" + raw).hexdigest()[:12]


def fingerprint(secret: bytes, token: str) -> str:
    """A stable, keyed, non-reversible name for a client token."""
    return hmac.digest(secret, token.encode(), "sha256").hex()[:32]  # the C one-shot


# -- the two kinds of key ------------------------------------------------------------------


class HmacKey:
    """HMAC-SHA256 with the gateway secret: signs and verifies, and both need the secret."""

    alg: ClassVar[str] = HMAC_SHA256

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.kid = key_id(secret)

    def sign(self, data: bytes) -> str:
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def verify(self, data: bytes, sig: str) -> bool:
        return hmac.compare_digest(self.sign(data), sig)


class Ed25519VerifyKey:
    """An Ed25519 public key: verifies checkpoints, holds nothing secret."""

    alg: ClassVar[str] = ED25519

    def __init__(self, public: Ed25519PublicKey) -> None:
        self._public = public
        self.kid = ed25519_key_id(public)

    def verify(self, data: bytes, sig: str) -> bool:
        try:
            self._public.verify(bytes.fromhex(sig), data)
        except (ValueError, InvalidSignature):
            return False
        return True

    def pem(self) -> bytes:
        return self._public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def load(cls, path: Path) -> Ed25519VerifyKey:
        data = _read_key_file(path)
        if b"PRIVATE KEY" in data:
            raise KeyFileError(f"{path} is a private key; give the public key ({path.stem}.pub)")
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(f"{path} is not a PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise KeyFileError(f"{path} is not an Ed25519 public key")
        return cls(public)


class Ed25519SigningKey:
    """An Ed25519 private key: the gateway signs checkpoints with it."""

    alg: ClassVar[str] = ED25519

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = Ed25519VerifyKey(private.public_key())
        self.kid = self.public.kid

    def sign(self, data: bytes) -> str:
        return self._private.sign(data).hex()

    def verify(self, data: bytes, sig: str) -> bool:
        return self.public.verify(data, sig)

    def pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def generate(cls) -> Ed25519SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> Ed25519SigningKey:
        data = _read_key_file(path)
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyFileError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFileError(f"{path} is not an Ed25519 private key")
        return cls(private)


SigningKey = HmacKey | Ed25519SigningKey
VerifyKey = HmacKey | Ed25519VerifyKey | Ed25519SigningKey


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None


def write_key_pair(directory: Path) -> tuple[str, Path, Path]:
    """Make an Ed25519 key pair in ``directory``: ``<key_id>.key`` (0600) and ``<key_id>.pub``.

    Never overwrites a file. Returns the key id and both paths.
    """
    key = Ed25519SigningKey.generate()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = directory / f"{key.kid}{PRIVATE_KEY_SUFFIX}"
    public = directory / f"{key.kid}{PUBLIC_KEY_SUFFIX}"
    _write_new(private, key.pem(), 0o600)
    try:
        _write_new(public, key.public.pem(), 0o644)
    except OSError:
        private.unlink()
        raise
    return key.kid, private, public


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)  # the umask may have taken bits away from the public key


# -- the ring a verifier holds -------------------------------------------------------------

Verdict = Literal["ok", "unknown_key", "bad_signature"]


class KeyRing:
    """The keys a verifier trusts, by key id. An empty ring checks no signatures."""

    def __init__(self, keys: Iterable[VerifyKey] = ()) -> None:
        self._keys: dict[str, VerifyKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: VerifyKey) -> None:
        self._keys[key.kid] = key

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[VerifyKey]:
        return iter(self._keys.values())

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def check(self, kid: str, alg: str, data: bytes, sig: str) -> Verdict:
        """Is ``sig`` over ``data`` made by the ring's key ``kid``, of kind ``alg``?"""
        key = self._keys.get(kid)
        if key is None:
            return "unknown_key"
        if key.alg != alg or not key.verify(data, sig):
            return "bad_signature"
        return "ok"

    @classmethod
    def load(cls, public_keys: Iterable[Path] = (), secret_files: Iterable[Path] = ()) -> KeyRing:
        """A ring from Ed25519 public key files and HMAC secret files."""
        ring = cls(Ed25519VerifyKey.load(p) for p in public_keys)
        for path in secret_files:
            secret = _read_key_file(path).strip()
            if not secret:
                raise KeyFileError(f"secret file {path} is empty")
            ring.add(HmacKey(secret))
        return ring
