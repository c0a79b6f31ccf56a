"""The reviewable policy file (``policies/*.toml``): what the gateway shows, refuses and keeps.

A policy is plain data, validated once at start. An unknown key or a wrong type is an
error that names the key, so a typo can never silently weaken enforcement.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.crm.routes import Route, policy_route

SENSITIVITIES = frozenset({"high", "low"})
_DEFAULT_TTL = 300.0
_DEFAULT_MAX_STALE = 900.0
# A Host name, an IPv4 address or a bracketed IPv6 address; "*" or "*.example.com" match many.
_HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9]([a-z0-9.\-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


class PolicyError(ValueError):
    """The policy file is invalid; ``key`` names the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"policy key '{key}': {problem}")
        self.key = key


@dataclass(frozen=True, slots=True)
class ClientRule:
    """Extra visibility for one client, identified by the SHA-256 of its gateway key.

    The client sends the key in ``X-Gateway-Key``; only its hash is in the policy, and the
    header never reaches the CRM. OAuth tokens rotate hourly, so they cannot name a client.
    """

    name: str
    key_sha256: str
    show: frozenset[str]


@dataclass(frozen=True, slots=True)
class Policy:
    version: str = "default"
    metadata_ttl_s: float = _DEFAULT_TTL
    metadata_max_stale_s: float = _DEFAULT_MAX_STALE
    show: frozenset[str] = frozenset()
    clients: tuple[ClientRule, ...] = ()
    allow_word_search: bool = False
    require_consent: bool = False
    allow_mass_update_by_cvid: bool = False
    max_request_body: int = 50 * 1024 * 1024
    max_response_body: int = 64 * 1024 * 1024
    max_bulk_result: int = 1024 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    audit_fsync: str = "always"
    audit_on_full: str = "block"
    audit_stdout: bool = False
    audit_checkpoint_interval_s: float = 30.0
    audit_max_bytes: int = 100 * 1024 * 1024
    #: Host names clients may address; empty: the listen address, localhost and 127.0.0.1
    allowed_hosts: tuple[str, ...] = ()
    max_header_bytes: int = 32 * 1024
    body_read_timeout_s: float = 30.0
    max_concurrent_requests: int = 256
    max_upstream_connections: int = 200
    pool_timeout_s: float = 5.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    #: pass-through rows for non-record routes (crm/routes.py ``policy_route``)
    routes: tuple[Route, ...] = ()
    _by_key: Mapping[str, ClientRule] = field(default_factory=dict, repr=False, compare=False)

    def shown_for(self, gateway_key: str | None) -> tuple[str | None, frozenset[str]]:
        """(client rule name, sensitivities shown) for a request's ``X-Gateway-Key``."""
        if gateway_key:
            rule = self._by_key.get(hashlib.sha256(gateway_key.encode()).hexdigest())
            if rule is not None:
                return rule.name, rule.show
        return None, self.show


# section -> key -> (attribute, type)
_SCHEMA: dict[str, dict[str, tuple[str, type]]] = {
    "": {"version": ("version", str)},
    "metadata": {
        "ttl_seconds": ("metadata_ttl_s", float),
        "max_stale_seconds": ("metadata_max_stale_s", float),
    },
    "redaction": {"show": ("show", list)},
    "search": {"allow_word_search": ("allow_word_search", bool)},
    "writes": {
        "require_consent": ("require_consent", bool),
        "allow_mass_update_by_cvid": ("allow_mass_update_by_cvid", bool),
    },
    "limits": {
        "max_request_body_bytes": ("max_request_body", int),
        "max_response_body_bytes": ("max_response_body", int),
        "max_bulk_result_bytes": ("max_bulk_result", int),
        "connect_timeout_seconds": ("connect_timeout_s", float),
        "read_timeout_seconds": ("read_timeout_s", float),
        "max_header_bytes": ("max_header_bytes", int),
        "body_read_timeout_seconds": ("body_read_timeout_s", float),
        "max_concurrent_requests": ("max_concurrent_requests", int),
        "max_upstream_connections": ("max_upstream_connections", int),
        "pool_timeout_seconds": ("pool_timeout_s", float),
        "breaker_failures": ("breaker_failures", int),
        "breaker_cooldown_seconds": ("breaker_cooldown_s", float),
    },
    "server": {"allowed_hosts": ("allowed_hosts", list)},
    "audit": {
        "fsync": ("audit_fsync", str),
        "on_full": ("audit_on_full", str),
        "stdout": ("audit_stdout", bool),
        "checkpoint_interval_seconds": ("audit_checkpoint_interval_s", float),
        "max_bytes": ("audit_max_bytes", int),
    },
}


def _typed(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise PolicyError(key, "must be greater than 0")
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise PolicyError(key, "must be greater than 0")
        return value
    if kind in (str, bool, list) and isinstance(value, kind):
        return value
    raise PolicyError(key, f"expected {kind.__name__}, got {type(value).__name__}")


def _sensitivities(key: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(key, "expected a list of sensitivities")
    lowered = frozenset(v.lower() for v in value)
    if not lowered <= SENSITIVITIES:
        raise PolicyError(key, "sensitivities are 'high' and 'low'")
    return lowered


def _hosts(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError(key, "expected a non-empty list of host names")
    hosts = tuple(v.strip().lower() for v in value)
    for host in hosts:
        if not _HOST_PATTERN.fullmatch(host):
            raise PolicyError(key, "expected host names without a port, such as 'crm-gw.internal'")
    return hosts


def _routes(raw: Any) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        raise PolicyError("routes", "expected an array of tables ([[routes]])")
    out = []
    for i, row in enumerate(raw):
        where = f"routes[{i}]"
        if not isinstance(row, dict) or set(row) - {"template", "methods"}:
            raise PolicyError(where, "expected a table with template and methods")
        template, methods = row.get("template"), row.get("methods", ["GET"])
        if not isinstance(template, str) or not isinstance(methods, list):
            raise PolicyError(where, "template is a string, methods a list")
        try:
            out.append(policy_route(template, [str(m) for m in methods]))
        except ValueError as exc:
            raise PolicyError(f"{where}.template", str(exc)) from None
    return tuple(out)


def _client(index: int, raw: Any) -> ClientRule:
    where = f"clients[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(where, "expected a table")
    unknown = set(raw) - {"name", "key_sha256", "show"}
    if unknown:
        raise PolicyError(f"{where}.{sorted(unknown)[0]}", "unknown key")
    name = raw.get("name")
    digest = raw.get("key_sha256")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{where}.name", "required text")
    if (
        not isinstance(digest, str)
        or len(digest) != 64
        or not all(c in "0123456789abcdef" for c in digest)
    ):
        raise PolicyError(f"{where}.key_sha256", "expected 64 lower-case hex characters")
    return ClientRule(name, digest, _sensitivities(f"{where}.show", raw.get("show", [])))


def policy_from_mapping(raw: Mapping[str, Any]) -> Policy:
    values: dict[str, Any] = {}
    clients: list[ClientRule] = []
    for top, body in raw.items():
        if top == "clients":
            if not isinstance(body, list):
                raise PolicyError("clients", "expected an array of tables ([[clients]])")
            clients = [_client(i, c) for i, c in enumerate(body)]
        elif top == "routes":
            values["routes"] = _routes(body)
        elif top in _SCHEMA and top:
            if not isinstance(body, dict):
                raise PolicyError(top, "expected a table")
            for key, value in body.items():
                if key not in _SCHEMA[top]:
                    raise PolicyError(f"{top}.{key}", "unknown key")
                attr, kind = _SCHEMA[top][key]
                values[attr] = _typed(f"{top}.{key}", value, kind)
        elif top in _SCHEMA[""]:
            attr, kind = _SCHEMA[""][top]
            values[attr] = _typed(top, body, kind)
        else:
            raise PolicyError(top, "unknown key")
    if "show" in values:
        values["show"] = _sensitivities("redaction.show", values["show"])
    if "allowed_hosts" in values:
        values["allowed_hosts"] = _hosts("server.allowed_hosts", values["allowed_hosts"])
    fsync = values.get("audit_fsync", "always")
    if fsync not in ("always", "never") and not (
        fsync.startswith("interval:") and fsync[9:].isdigit() and int(fsync[9:]) > 0
    ):
        raise PolicyError("audit.fsync", "expected 'always', 'never' or 'interval:<ms>'")
    if values.get("audit_on_full", "block") not in ("block", "drop"):
        raise PolicyError("audit.on_full", "expected 'block' or 'drop'")
    ttl = values.get("metadata_ttl_s", _DEFAULT_TTL)
    if values.get("metadata_max_stale_s", max(ttl, _DEFAULT_MAX_STALE)) < ttl:
        raise PolicyError("metadata.max_stale_seconds", "must be at least metadata.ttl_seconds")
    values.setdefault("metadata_max_stale_s", max(ttl, _DEFAULT_MAX_STALE))
    by_key = {c.key_sha256: c for c in clients}
    if len(by_key) != len(clients):
        raise PolicyError("clients", "two clients share one key")
    return Policy(clients=tuple(clients), _by_key=by_key, **values)


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError("<file>", f"{path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
        raise PolicyError("<file>", f"{path} cannot be read ({type(exc).__name__})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("<file>", f"not valid TOML ({exc})") from exc
    return policy_from_mapping(raw)


def explain(policy: Policy) -> list[str]:
    """Plain sentences a reviewer can read: what this policy makes the gateway do."""
    shown = ", ".join(sorted(policy.show)) or "nothing"
    lines = [
        f"policy version {policy.version}",
        *(
            f"passes on {route.template} ({', '.join(sorted(set(route.methods) - {'HEAD'}))}) "
            "unrewritten: its answers are checked as JSON, never as records"
            for route in policy.routes
        ),
        "restricted private fields are always withheld (null) in every record API",
        f"non-restricted private fields shown to clients without a rule: {shown}",
    ]
    for c in policy.clients:
        lines.append(f"client '{c.name}' is shown: {', '.join(sorted(c.show)) or 'nothing'}")
    lines += [
        f"field metadata is cached {policy.metadata_ttl_s:g}s and served stale at most "
        f"{policy.metadata_max_stale_s:g}s when the CRM cannot be asked; then requests fail closed",
        "word= search is "
        + ("allowed" if policy.allow_word_search else "refused")
        + " when the module has a restricted text field",
        "inserts without Data_Processing_Basis_Details are "
        + ("refused" if policy.require_consent else "allowed"),
        "mass update by custom view or territory is "
        + ("allowed" if policy.allow_mass_update_by_cvid else "refused"),
        f"request bodies over {policy.max_request_body} bytes are refused (413), and bodies "
        f"not complete within {policy.body_read_timeout_s:g}s are cut off (408)",
        f"request headers over {policy.max_header_bytes} bytes are refused (431)",
        "clients may address the gateway as: "
        + (", ".join(policy.allowed_hosts) or "its listen address, localhost, 127.0.0.1"),
        f"more than {policy.max_concurrent_requests} requests in flight are refused at once "
        f"(503); a request waits at most {policy.pool_timeout_s:g}s for one of "
        f"{policy.max_upstream_connections} connections to the CRM (then 503)",
        f"after {policy.breaker_failures} consecutive failures the CRM is not called for "
        f"{policy.breaker_cooldown_s:g}s (503), then one probe request is let through",
        f"audit: fsync {policy.audit_fsync}, when the sink is full: {policy.audit_on_full}",
    ]
    return lines
