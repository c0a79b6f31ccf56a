"""privacy-gateway serve | sandbox | demo | audit verify | audit report | policy check."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
        "--transport", choices=("aiohttp", "httpx"), help="upstream client (GATEWAY_TRANSPORT)"
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
    v.add_argument("file")
    v.add_argument("--checkpoints")
    r = asub.add_parser("report", help="write an HTML report of an audit log")
    r.add_argument("file")
    r.add_argument("--html", required=True)
    r.add_argument("--checkpoints")

    pc = sub.add_parser("policy", help="policy tools")
    psub = pc.add_subparsers(dest="policy_command", required=True)
    c = psub.add_parser("check", help="validate a policy file")
    c.add_argument("file")
    c.add_argument("--explain", action="store_true")
    return p


def _fail(message: str) -> int:
    print(f"privacy-gateway: {message}", file=sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import configure_logging, create_app

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
        )
    except (SettingsError, PolicyError) as exc:
        return _fail(str(exc))
    configure_logging()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,  # query strings are personal data
        log_level="warning",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    return 0


def _audit_secret() -> bytes | None:
    value = os.environ.get("GATEWAY_SECRET")
    if value:
        return value.encode()
    path = os.environ.get("GATEWAY_SECRET_FILE")
    if path and Path(path).exists():
        return Path(path).read_bytes().strip()
    return None


def _secret_beside(log: str) -> bytes | None:
    found = _audit_secret()
    if found is None:
        candidate = Path(log).with_name(".gateway-secret")
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
        if args.audit_command == "verify":
            from gateway.audit import run_verify

            return run_verify(args.file, args.checkpoints, _secret_beside(args.file))
        from gateway.audit.report import run_report

        return run_report(args.file, args.html, args.checkpoints, _secret_beside(args.file))
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
