"""privacy-gateway serve | sandbox | demo | audit verify | report | keygen | policy check."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.audit.config import checkpoint_signer
from gateway.audit.files import AuditLogInUse
from gateway.keys import KeyFileError, KeyRing
from gateway.policy import PolicyError, explain, load_policy
from gateway.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="privacy-gateway",
        description="A reverse proxy that enforces Zoho CRM's GDPR rules on every API call.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway in front of a CRM")
    s.add_argument("--upstream", help="the CRM API base URL (GATEWAY_UPSTREAM)")
    s.add_argument("--upload-upstream", help="the bulk-write upload host (GATEWAY_UPLOAD_UPSTREAM)")
    s.add_argument("--host", help="address to listen on (GATEWAY_HOST, default 127.0.0.1)")
    s.add_argument("--port", help="port to listen on (GATEWAY_PORT, default 8080)")
    s.add_argument("--policy", help="policy file (GATEWAY_POLICY)")
    s.add_argument("--audit-log", help="audit log file; stdout if absent (GATEWAY_AUDIT_LOG)")
    s.add_argument(
        "--workers",
        help='worker processes on the one port, or "auto" for one per usable CPU; above 1 each '
        "writes its own AUDIT_LOG-<instance> (GATEWAY_WORKERS, default 1)",
    )
    s.add_argument(
        "--transport", choices=("aiohttp", "httpx"), help="upstream client (GATEWAY_TRANSPORT)"
    )
    s.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        help="uvicorn's HTTP/1.1 parser (GATEWAY_HTTP, default auto: httptools if installed)",
    )
    s.add_argument(
        "--checkpoint-file",
        help="where signed checkpoints are appended; default AUDIT_LOG.checkpoints, none on "
        "stdout (GATEWAY_CHECKPOINT_FILE)",
    )
    s.add_argument(
        "--checkpoint-key",
        help="Ed25519 private key (from `audit keygen`) that signs checkpoints; default: "
        "HMAC with the gateway secret (GATEWAY_CHECKPOINT_KEY)",
    )

    sb = sub.add_parser("sandbox", help="run the Zoho-compatible CRM sandbox")
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=8081)
    sb.add_argument("--seed", type=int, default=42)

    d = sub.add_parser("demo", help="start the sandbox and the gateway and show the difference")
    d.add_argument("--once", action="store_true", help="exit after the tour")

    a = sub.add_parser("audit", help="audit log tools")
    asub = a.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="check the audit log's hash chain and checkpoints")
    v.add_argument("file", nargs="+", help="a log, several, or a directory of *.jsonl logs")
    _key_arguments(v)
    r = asub.add_parser("report", help="write one HTML report of one or several audit logs")
    r.add_argument("file", nargs="+", help="a log, several, or a directory of *.jsonl logs")
    r.add_argument("--html", required=True)
    _key_arguments(r)
    k = asub.add_parser("keygen", help="make an Ed25519 key pair for signing checkpoints")
    k.add_argument("dir", help="directory for KEY_ID.key (0600) and KEY_ID.pub")

    pc = sub.add_parser("policy", help="policy tools")
    psub = pc.add_subparsers(dest="policy_command", required=True)
    c = psub.add_parser("check", help="validate a policy file")
    c.add_argument("file")
    c.add_argument("--explain", action="store_true")
    return p


def _key_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoints",
        help="checkpoints file of the one log given (default GATEWAY_CHECKPOINT_FILE, else "
        "FILE.checkpoints; with several logs each has its FILE.checkpoints)",
    )
    p.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="PUB",
        help="trust this Ed25519 public key; repeat for keys used before a rotation",
    )
    p.add_argument(
        "--secret-file",
        action="append",
        default=[],
        metavar="FILE",
        help="trust this HMAC gateway secret; repeatable. With neither option the secret is "
        "taken from GATEWAY_SECRET, GATEWAY_SECRET_FILE or .gateway-secret beside the log",
    )


def _fail(message: str) -> int:
    print(f"privacy-gateway: {message}", file=sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import configure_logging, create_app
    from gateway.serving import DRAIN_SECONDS, uvicorn_options

    try:
        policy_path = args.policy or os.environ.get("GATEWAY_POLICY")
        policy = load_policy(Path(policy_path) if policy_path else None)
        settings = Settings.build(
            upstream=args.upstream,
            upload_upstream=args.upload_upstream,
            host=args.host,
            port=args.port,
            policy_path=policy_path,
            audit_log=args.audit_log,
            transport=args.transport,
            policy=policy,
            checkpoint_file=args.checkpoint_file,
            checkpoint_key=args.checkpoint_key,
            workers=args.workers,
        )
        checkpoint_signer(settings)  # a bad key stops serve before any file is created
    except (SettingsError, PolicyError, KeyFileError) as exc:
        return _fail(str(exc))
    try:
        options = uvicorn_options(
            args.http or os.environ.get("GATEWAY_HTTP", "auto"), settings.policy.max_header_bytes
        )
    except ValueError as exc:
        return _fail(str(exc))
    options.update(
        host=settings.host,
        port=settings.port,
        access_log=False,  # query strings are personal data
        log_level="warning",
        timeout_graceful_shutdown=DRAIN_SECONDS,
        server_header=False,
    )
    configure_logging()
    try:
        if settings.workers > 1:
            from gateway.workers import serve_workers

            serve_workers(settings, options)
            return 0
        app = create_app(settings)
        app.audit.claim()  # before the port is taken: a second process stops here
    except AuditLogInUse as exc:
        return _fail(str(exc))
    uvicorn.run(app, **options)
    return 0


def _audit_keys(args: argparse.Namespace) -> tuple[bytes | None, KeyRing | None]:
    """Explicit keys are the whole ring; without any, the gateway secret as found today."""
    if args.public_key or args.secret_file:
        ring = KeyRing.load(map(Path, args.public_key), map(Path, args.secret_file))
        return None, ring
    return _secret_beside(Path(args.file[0])), None


def _audit(args: argparse.Namespace) -> int:
    if args.audit_command == "keygen":
        from gateway.keys import write_key_pair

        try:
            kid, private, public = write_key_pair(Path(args.dir))
        except OSError as exc:
            return _fail(f"cannot write the key pair: {exc.filename or args.dir}: {exc.strerror}")
        print(f"key_id {kid}")
        print(f"private key {private} (0600; for serve --checkpoint-key)")
        print(f"public key {public} (for audit verify --public-key)")
        return 0
    try:
        secret, keys = _audit_keys(args)
    except KeyFileError as exc:
        return _fail(str(exc))
    checkpoints = args.checkpoints or os.environ.get("GATEWAY_CHECKPOINT_FILE") or None
    if args.audit_command == "verify":
        from gateway.audit import run_verify

        return run_verify(args.file, checkpoints, secret, keys=keys)
    from gateway.audit.report import run_report

    return run_report(args.file, args.html, checkpoints, secret, keys=keys)


def _audit_secret() -> bytes | None:
    value = os.environ.get("GATEWAY_SECRET")
    if value:
        return value.encode()
    path = os.environ.get("GATEWAY_SECRET_FILE")
    if path and Path(path).exists():
        return Path(path).read_bytes().strip()
    return None


def _secret_beside(log: Path) -> bytes | None:
    """The secret from the environment, else ``.gateway-secret`` beside the log (in it,
    for a directory of logs)."""
    found = _audit_secret()
    if found is None:
        candidate = log / ".gateway-secret" if log.is_dir() else log.with_name(".gateway-secret")
        if candidate.exists():
            found = candidate.read_bytes().strip()
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "sandbox":
        from gateway.sandbox import run

        run(host=args.host, port=args.port, seed=args.seed)
        return 0
    if args.command == "demo":
        from gateway.demo import run_demo

        return run_demo(once=args.once)
    if args.command == "audit":
        return _audit(args)
    if args.command == "policy":
        try:
            policy = load_policy(Path(args.file))
        except PolicyError as exc:
            return _fail(str(exc))
        print(f"policy {args.file} is valid (version {policy.version})")
        if args.explain:
            for line in explain(policy):
                print(f"- {line}")
        return 0
    return 2
