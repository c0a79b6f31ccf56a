"""The reviewable policy file (``policies/*.toml``): what the gateway shows, refuses and keeps.

A policy is plain data, validated whole whenever it is read (at start and on each reload,
gateway/policy_store.py). An unknown key or a wrong type is an error that names the key,
so a typo can never silently weaken enforcement; every problem in a file is reported at
once (``PolicyErrors``). Every key is documented in policies/README.md (``policy_keys``);
how the process runs is not policy but settings (``MOVED_TO_SETTINGS``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit.scrub import CLIENT_RULE, POLICY_VERSION
from gateway.crm.routes import Route, policy_route
from gateway.errors import Reason
from gateway.rules import FAIL_CLOSED, Mode, Rule

SENSITIVITIES = frozenset({"high", "low"})
#: what a module override may mark a field: shown by sensitivity, or always withheld
OVERRIDE_SENSITIVITIES = frozenset({"high", "low", "restricted"})
_DEFAULT_TTL = 300.0
_DEFAULT_MAX_STALE = 900.0
# A Host name, an IPv4 address or a bracketed IPv6 address; "*" or "*.example.com" match many.
_HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9]([a-z0-9.\-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


class PolicyError(ValueError):
    """The policy file is invalid; ``key`` names the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"policy key '{key}': {problem}")
        self.key = key
        self.problem = problem
        self.problems: list[PolicyError] = [self]


class PolicyErrors(PolicyError):
    """Every problem found in one policy; ``key`` names the first."""

    def __init__(self, problems: list[PolicyError]) -> None:
        flat = [p for problem in problems for p in problem.problems]
        first = flat[0]
        more = f" (and {len(flat) - 1} more)" if len(flat) > 1 else ""
        super().__init__(first.key, first.problem + more)
        self.problems = flat


@dataclass(frozen=True, slots=True)
class ClientRule:
    """Extra visibility for one client, identified by the SHA-256 of its gateway key.

    The client sends the key in ``X-Gateway-Key``; only its hash is in the policy, and the
    header never reaches the CRM. OAuth tokens rotate hourly, so they cannot name a client.
    """

    name: str
    key_sha256: str
    show: frozenset[str]
    #: a time-boxed exception: after this instant the client is served as the default
    expires: datetime | None = None
    owner: str = ""
    reason: str = ""

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True, slots=True)
class Policy:
    version: str = "default"
    #: the first 12 hex digits of the SHA-256 of the file's bytes; "" when not from a file
    digest: str = ""
    #: the mode of every rule the [rules] table does not name (gateway/rules.py)
    mode: Mode = Mode.ENFORCE
    rule_modes: Mapping[Rule, Mode] = field(default_factory=dict)
    metadata_ttl_s: float = _DEFAULT_TTL
    metadata_max_stale_s: float = _DEFAULT_MAX_STALE
    show: frozenset[str] = frozenset()
    clients: tuple[ClientRule, ...] = ()
    #: an X-Gateway-Key that matches no client: "default" (served as the default) or "refuse"
    unknown_keys: str = "default"
    allow_word_search: bool = False
    require_consent: bool = False
    allow_mass_update_by_cvid: bool = False
    max_request_body: int = 50 * 1024 * 1024
    max_response_body: int = 64 * 1024 * 1024
    max_bulk_result: int = 1024 * 1024 * 1024
    audit_fsync: str = "always"
    audit_on_full: str = "block"
    audit_stdout: bool = False
    audit_checkpoint_interval_s: float = 30.0
    audit_max_bytes: int = 100 * 1024 * 1024
    #: Host names clients may address; empty: the listen address, localhost and 127.0.0.1
    allowed_hosts: tuple[str, ...] = ()
    #: keys that are settings now (``MOVED_TO_SETTINGS``), accepted for one release:
    #: policy key -> value; settings.py uses them when no flag or variable is given
    legacy: Mapping[str, float | int] = field(default_factory=dict)
    #: pass-through rows for non-record routes (crm/routes.py ``policy_route``)
    routes: tuple[Route, ...] = ()
    #: module -> field -> sensitivity, as the file spells them: more private fields than
    #: the CRM's metadata marks (never fewer; privacy/catalog.py ``with_overrides``)
    private_fields: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    _by_key: Mapping[str, ClientRule] = field(default_factory=dict, repr=False, compare=False)

    def rule_mode(self, rule: Rule) -> Mode:
        return self.rule_modes.get(rule, self.mode)

    def shown_for(
        self, gateway_key: str | None, now: datetime | None = None
    ) -> tuple[str | None, frozenset[str], Reason | None]:
        """(client rule name, sensitivities shown, the audit reason) for a request's
        ``X-Gateway-Key``. An expired exception and an unknown key get the default."""
        if not gateway_key:
            return None, self.show, None
        rule = self._by_key.get(hashlib.sha256(gateway_key.encode()).hexdigest())
        if rule is None:
            return None, self.show, Reason.UNKNOWN_GATEWAY_KEY
        if rule.expired(now or datetime.now(UTC)):
            return rule.name, self.show, Reason.EXCEPTION_EXPIRED
        return rule.name, rule.show, Reason.CLIENT_RULE


#: the keys of one [[clients]] table
CLIENT_KEYS = ("name", "key_sha256", "show", "expires", "owner", "reason")

# section -> key -> (attribute, type)
_SCHEMA: dict[str, dict[str, tuple[str, type]]] = {
    "": {
        "version": ("version", str),
        "mode": ("mode", str),
        "unknown_keys": ("unknown_keys", str),
    },
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


#: how the process runs is a setting (settings.py); these policy keys said it before:
#: policy key -> (settings attribute, type). Accepted for one release, with a warning.
MOVED_TO_SETTINGS: dict[str, tuple[str, type]] = {
    "limits.connect_timeout_seconds": ("connect_timeout_s", float),
    "limits.read_timeout_seconds": ("read_timeout_s", float),
    "limits.max_header_bytes": ("max_header_bytes", int),
    "limits.body_read_timeout_seconds": ("body_read_timeout_s", float),
    "limits.max_concurrent_requests": ("max_concurrent_requests", int),
    "limits.max_upstream_connections": ("max_upstream_connections", int),
    "limits.pool_timeout_seconds": ("pool_timeout_s", float),
    "limits.breaker_failures": ("breaker_failures", int),
    "limits.breaker_cooldown_seconds": ("breaker_cooldown_s", float),
}


def policy_keys() -> list[str]:
    """Every key a policy file may hold, spelled as policies/README.md documents them
    (``<Module>`` and ``<Field>`` stand for names; ``[]`` for each table of an array)."""
    keys = [f"{top}.{key}" if top else key for top, body in _SCHEMA.items() for key in body]
    keys += [f"clients[].{key}" for key in CLIENT_KEYS]
    keys += ["routes[].template", "routes[].methods", "modules.<Module>.private.<Field>"]
    keys += [f"rules.{name}" for name in [*Rule, *FAIL_CLOSED]]
    return keys + list(MOVED_TO_SETTINGS)


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


def _modules(raw: Any) -> dict[str, dict[str, str]]:
    """``[modules.<Module>.private]``: field = "high" | "low" | "restricted"."""
    if not isinstance(raw, dict):
        raise PolicyError("modules", "expected tables such as [modules.Leads.private]")
    out: dict[str, dict[str, str]] = {}
    seen_modules: set[str] = set()
    for module, body in raw.items():
        where = f"modules.{module}"
        # Names are compared case-insensitively: one named twice would let the second
        # spelling silently replace what a reviewer reads in the first.
        if module.lower() in seen_modules:
            raise PolicyError(where, "the module is named twice (in another letter case)")
        seen_modules.add(module.lower())
        if not isinstance(body, dict):
            raise PolicyError(where, "expected a table")
        if set(body) - {"private"}:
            raise PolicyError(f"{where}.{sorted(set(body) - {'private'})[0]}", "unknown key")
        private = body.get("private", {})
        if not isinstance(private, dict):
            raise PolicyError(f"{where}.private", "expected a table of field = sensitivity")
        fields: dict[str, str] = {}
        for name, sensitivity in private.items():
            if not isinstance(sensitivity, str) or sensitivity.lower() not in (
                OVERRIDE_SENSITIVITIES
            ):
                raise PolicyError(
                    f"{where}.private.{name}", "expected 'high', 'low' or 'restricted'"
                )
            if any(other.lower() == name.lower() for other in fields):
                raise PolicyError(
                    f"{where}.private.{name}", "the field is named twice (in another letter case)"
                )
            fields[name] = sensitivity.lower()
        out[module] = fields
    return out


def _mode(key: str, value: Any, choices: tuple[str, ...]) -> Mode:
    if value not in choices:
        raise PolicyError(key, "expected " + " or ".join(f"'{c}'" for c in choices))
    return Mode(value)


def _rules(raw: Any) -> dict[Rule, Mode]:
    """``[rules]``: rule = "enforce" | "shadow" | "off"; a check that fails closed may
    only be named to say "enforce"."""
    if not isinstance(raw, dict):
        raise PolicyError("rules", "expected a table of rule = mode")
    out: dict[Rule, Mode] = {}
    for name, value in raw.items():
        key = f"rules.{name}"
        if name in FAIL_CLOSED:
            if value != "enforce":
                raise PolicyError(key, "fails closed, so it is always 'enforce'")
        elif name in Rule.__members__.values():
            out[Rule(name)] = _mode(key, value, ("enforce", "shadow", "off"))
        else:
            raise PolicyError(key, "unknown rule")
    return out


def _client(index: int, raw: Any) -> ClientRule:
    where = f"clients[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(where, "expected a table")
    unknown = set(raw) - set(CLIENT_KEYS)
    if unknown:
        raise PolicyError(f"{where}.{sorted(unknown)[0]}", "unknown key")
    name = raw.get("name")
    digest = raw.get("key_sha256")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{where}.name", "required text")
    if not CLIENT_RULE.fullmatch(name):
        raise PolicyError(f"{where}.name", "letters, digits, '_', '.' or '-' (up to 64)")
    if (
        not isinstance(digest, str)
        or len(digest) != 64
        or not all(c in "0123456789abcdef" for c in digest)
    ):
        raise PolicyError(f"{where}.key_sha256", "expected 64 lower-case hex characters")
    for key in ("owner", "reason"):
        if not isinstance(raw.get(key, ""), str):
            raise PolicyError(f"{where}.{key}", "expected text")
    return ClientRule(
        name,
        digest,
        _sensitivities(f"{where}.show", raw.get("show", [])),
        _instant(f"{where}.expires", raw.get("expires")),
        raw.get("owner", ""),
        raw.get("reason", ""),
    )


def _instant(key: str, value: Any) -> datetime | None:
    """An RFC 3339 date-time with an offset (a TOML offset date-time, or the same as text)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, datetime):  # a TOML date alone is a date, not a datetime
        raise PolicyError(key, "expected an RFC 3339 date-time such as 2026-01-31T00:00:00Z")
    if value.tzinfo is None:
        raise PolicyError(key, "needs an offset (Z or +01:00): a local time is ambiguous")
    return value


@contextlib.contextmanager
def _collected(problems: list[PolicyError]) -> Iterator[None]:
    """Note a problem and go on, so one check of a file reports all of them."""
    try:
        yield
    except PolicyError as exc:
        problems.append(exc)


def _section(
    top: str, body: Any, values: dict[str, Any], legacy: dict[str, Any]
) -> list[PolicyError]:
    problems: list[PolicyError] = []
    if not isinstance(body, dict):
        return [PolicyError(top, "expected a table")]
    for key, value in body.items():
        with _collected(problems):
            moved = MOVED_TO_SETTINGS.get(f"{top}.{key}")
            if moved is not None:
                legacy[f"{top}.{key}"] = _typed(f"{top}.{key}", value, moved[1])
                continue
            if key not in _SCHEMA[top]:
                raise PolicyError(f"{top}.{key}", "unknown key")
            attr, kind = _SCHEMA[top][key]
            values[attr] = _typed(f"{top}.{key}", value, kind)
    return problems


def policy_from_mapping(raw: Mapping[str, Any]) -> Policy:
    """The policy, or ``PolicyErrors`` naming every problem found."""
    values: dict[str, Any] = {}
    legacy: dict[str, float | int] = {}
    clients: list[ClientRule] = []
    problems: list[PolicyError] = []
    for top, body in raw.items():
        with _collected(problems):
            if top == "clients":
                if not isinstance(body, list):
                    raise PolicyError("clients", "expected an array of tables ([[clients]])")
                for i, c in enumerate(body):
                    with _collected(problems):
                        clients.append(_client(i, c))
            elif top == "routes":
                values["routes"] = _routes(body)
            elif top == "modules":
                values["private_fields"] = _modules(body)
            elif top == "rules":
                values["rule_modes"] = _rules(body)
            elif top in _SCHEMA and top:
                problems += _section(top, body, values, legacy)
            elif top in _SCHEMA[""]:
                attr, kind = _SCHEMA[""][top]
                values[attr] = _typed(top, body, kind)
            else:
                raise PolicyError(top, "unknown key")
    for check in (_check_values, _check_clients):
        with _collected(problems):
            check(values, clients)
    if problems:
        raise PolicyErrors(problems)
    by_key = {c.key_sha256: c for c in clients}
    return Policy(clients=tuple(clients), legacy=legacy, _by_key=by_key, **values)


def _check_clients(_values: dict[str, Any], clients: list[ClientRule]) -> None:
    if len({c.key_sha256 for c in clients}) != len(clients):
        raise PolicyError("clients", "two clients share one key")


def _check_values(values: dict[str, Any], _clients: list[ClientRule]) -> None:
    """The checks of one key's value against its meaning, or of two keys together."""
    problems: list[PolicyError] = []
    with _collected(problems):
        if "show" in values:
            values["show"] = _sensitivities("redaction.show", values["show"])
    with _collected(problems):
        if "allowed_hosts" in values:
            values["allowed_hosts"] = _hosts("server.allowed_hosts", values["allowed_hosts"])
    with _collected(problems):
        fsync = values.get("audit_fsync", "always")
        if fsync not in ("always", "never") and not (
            fsync.startswith("interval:") and fsync[9:].isdigit() and int(fsync[9:]) > 0
        ):
            raise PolicyError("audit.fsync", "expected 'always', 'never' or 'interval:<ms>'")
    with _collected(problems):
        version = str(values.get("version", "default"))
        if len(version) > 100 or not POLICY_VERSION.fullmatch(version):
            raise PolicyError("version", "letters, digits and _ . : # + - (up to 100)")
    with _collected(problems):
        values["mode"] = _mode("mode", values.get("mode", "enforce"), ("enforce", "shadow"))
    with _collected(problems):
        if values.get("unknown_keys", "default") not in ("default", "refuse"):
            raise PolicyError("unknown_keys", "expected 'default' or 'refuse'")
    with _collected(problems):
        if values.get("audit_on_full", "block") not in ("block", "drop"):
            raise PolicyError("audit.on_full", "expected 'block' or 'drop'")
    with _collected(problems):
        ttl = values.get("metadata_ttl_s", _DEFAULT_TTL)
        if values.get("metadata_max_stale_s", max(ttl, _DEFAULT_MAX_STALE)) < ttl:
            raise PolicyError("metadata.max_stale_seconds", "must be at least metadata.ttl_seconds")
        values.setdefault("metadata_max_stale_s", max(ttl, _DEFAULT_MAX_STALE))
    if problems:
        raise PolicyErrors(problems)


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PolicyError("<file>", f"{path} does not exist") from exc
    except OSError as exc:  # a directory, no permission
        raise PolicyError("<file>", f"{path} cannot be read ({type(exc).__name__})") from exc
    return parse_policy(data)


def parse_policy(data: bytes) -> Policy:
    """A policy from a file's bytes, with their digest as its version's second half."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError("<file>", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("<file>", f"not valid TOML ({exc})") from exc
    digest = hashlib.sha256(data).hexdigest()[:12]
    return dataclasses.replace(policy_from_mapping(raw), digest=digest)
