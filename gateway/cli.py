"""privacy-gateway serve | sandbox | demo | audit verify | report | keygen | policy check."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.audit.config import checkpoint_signer, checkpoint_target, instance_name
from gateway.audit.files import AuditLogInUse
from gateway.compiled import redactor_build
from gateway.keys import KeyFileError, KeyRing
from gateway.policy import PolicyError, load_policy
from gateway.settings import RUNTIME, TRANSPORTS, Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="privacy-gateway",
        description="A reverse proxy that enforces Zoho CRM's GDPR rules on every API call.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway in front of a CRM")
    s.add_argument(
        "--upstream",
        help="the CRM API host, scheme and host only, such as https://www.zohoapis.eu "
        "(GATEWAY_UPSTREAM)",
    )
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
        "--transport", choices=TRANSPORTS, help="upstream client (GATEWAY_TRANSPORT)"
    )
    s.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        help="uvicorn's HTTP/1.1 parser (GATEWAY_HTTP, default auto: httptools if installed)",
    )
    s.add_argument(
        "--checkpoint-file",
        help="where signed checkpoints are appended; default AUDIT_LOG.checkpoints, and with "
        "the trail on stdout lines of event checkpoint in the stream (GATEWAY_CHECKPOINT_FILE)",
    )
    s.add_argument(
        "--checkpoint-key",
        help="Ed25519 private key (from `audit keygen`) that signs checkpoints; default: "
        "HMAC with the gateway secret (GATEWAY_CHECKPOINT_KEY)",
    )
    s.add_argument(
        "--proxy-from-env",
        action="store_true",
        help="send upstream calls through the proxy HTTPS_PROXY / HTTP_PROXY name (NO_PROXY "
        "honoured); off by default (GATEWAY_PROXY_FROM_ENV=1)",
    )

    for attr, (flag, var, kind, default) in RUNTIME.items():
        unit = "SECONDS" if attr.endswith("_s") else "N" if kind is int else "LEVEL"
        s.add_argument(flag, dest=attr, metavar=unit, help=f"({var}, default {default})")

    sb = sub.add_parser("sandbox", help="run the Zoho-compatible CRM sandbox")
    sb.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    sb.add_argument("--port", type=int, default=8081, help="port to listen on (8081)")
    sb.add_argument("--seed", type=int, default=42, help="seed of the generated records (42)")

    d = sub.add_parser("demo", help="start the sandbox and the gateway and show the difference")
    d.add_argument("--once", action="store_true", help="exit after the tour")

    a = sub.add_parser("audit", help="audit log tools")
    asub = a.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="check the audit log's hash chain and checkpoints")
    v.add_argument(
        "file", nargs="+", help="audit logs, a directory of *.jsonl logs, or a captured stream"
    )
    _key_arguments(v)
    r = asub.add_parser("report", help="write one HTML report of one or several audit logs")
    r.add_argument("file", nargs="+", help="a log, several, or a directory of *.jsonl logs")
    r.add_argument("--html", required=True, help="where to write the HTML report")
    _key_arguments(r)
    k = asub.add_parser("keygen", help="make an Ed25519 key pair for signing checkpoints")
    k.add_argument("dir", help="directory for KEY_ID.key (0600) and KEY_ID.pub")

    pc = sub.add_parser("policy", help="policy tools")
    psub = pc.add_subparsers(dest="policy_command", required=True)
    c = psub.add_parser("check", help="validate a policy file: every problem, with its line")
    c.add_argument("file", help="the policy file (TOML)")
    c.add_argument("--explain", action="store_true", help="say what the policy does")
    df = psub.add_parser("diff", help="say what replacing one policy with another would do")
    df.add_argument("old", help="the policy in force (TOML)")
    df.add_argument("new", help="the policy that would replace it (TOML)")
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
    from gateway.preflight import PreflightError, bind, check_paths
    from gateway.serving import uvicorn_options

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
            runtime={attr: getattr(args, attr) for attr in RUNTIME},
            proxy_from_env=args.proxy_from_env,
            workers=args.workers,
        )
        checkpoint_signer(settings)  # a bad key stops serve before any file is created
        check_paths(settings)
        http = args.http or os.environ.get("GATEWAY_HTTP", "auto")
        options = uvicorn_options(http, settings.max_header_bytes)
        sock = bind(settings.host, settings.port)
    except (SettingsError, PolicyError, KeyFileError, PreflightError) as exc:
        return _fail(str(exc))
    except ValueError as exc:  # the HTTP parser's name
        return _fail(f"--http (GATEWAY_HTTP): {exc}")
    return _run(settings, sock, options)


def _run(settings: Settings, sock: socket.socket, options: dict[str, Any]) -> int:
    import structlog
    import uvicorn

    from gateway.app import create_app
    from gateway.logs import configure_logging
    from gateway.serving import GatewayServer

    configure_logging(level=settings.log_level)
    options.update(
        access_log=False,  # query strings are personal data
        log_config=None,  # stdlib logging is already routed to JSON lines
        # uvicorn's own info lines would repeat the gateway's started/stopped lines
        log_level="debug" if settings.log_level == "debug" else "warning",
        timeout_graceful_shutdown=settings.drain_timeout_s,
        server_header=False,
    )
    host, port = sock.getsockname()[:2]
    facts = {
        "version": __version__,
        "listen": f"http://{f'[{host}]' if ':' in host else host}:{port}",
        "upstream": settings.upstream,
        "policy_version": settings.policy.version,
        "audit_sink": str(settings.audit_log) if settings.audit_log else "stdout",
        "checkpoints": checkpoint_target(settings),
        "instance": instance_name(),
        "workers": settings.workers,
        "pid": os.getpid(),
        "redactor": redactor_build(),
    }
    try:
        if settings.workers > 1:
            from gateway.workers import serve_workers

            sock.close()  # checked free; uvicorn's supervisor binds it for its workers
            log = structlog.get_logger("gateway")
            where = {**options, "host": settings.host, "port": settings.port}
            serve_workers(settings, where, lambda: log.info("started", **facts))
            log.info("stopped", pid=os.getpid())
            return 0
        app = create_app(settings)
        app.audit.claim()  # a second process on the same audit log stops here
    except AuditLogInUse as exc:
        sock.close()
        return _fail(str(exc))
    GatewayServer(uvicorn.Config(app, **options), facts).run(sockets=[sock])
    return 0
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
    # The serving variable names one log's file: a collection finds each log's beside it.
    one_log = len(args.file) == 1 and not Path(args.file[0]).is_dir()
    checkpoints = (
        args.checkpoints or (os.environ.get("GATEWAY_CHECKPOINT_FILE") if one_log else None) or None
    )
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
        return _policy(args)
    return 2


def _policy(args: argparse.Namespace) -> int:
    from gateway.policy_text import check_file, diff, explain

    files = [args.file] if args.policy_command == "check" else [args.old, args.new]
    policies = []
    for name in files:
        policy, problems = check_file(Path(name))
        for problem in problems:
            print(f"privacy-gateway: {problem}", file=sys.stderr)
        if policy is None:
            return 2
        policies.append(policy)
    if args.policy_command == "diff":
        changes = diff(policies[0], policies[1])
        for line in changes or ["nothing the gateway does would change"]:
            print(f"- {line}")
        return 0
    (policy,) = policies
    print(f"policy {args.file} is valid (version {policy.version})")
    if args.explain:
        for line in explain(policy):
            print(f"- {line}")
    return 0
