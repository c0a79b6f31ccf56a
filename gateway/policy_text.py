"""What a policy says, in sentences: ``policy check`` (every problem, with its key and
line), ``--explain`` (what the policy makes the gateway do) and ``policy diff`` (what a
change would do)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from gateway.policy import ClientRule, Policy, PolicyError, parse_policy
from gateway.rules import FAIL_CLOSED, Mode, Rule

_ARRAY = re.compile(r"\s*\[\[\s*([^\]]+?)\s*\]\]")
_TABLE = re.compile(r"\s*\[\s*([^\]]+?)\s*\]")
_KEY = re.compile(r"""\s*(["']?)([A-Za-z0-9_\-]+)\1\s*=""")
_INDEXED = re.compile(r"(\w+)\[(\d+)\](?:\.(.+))?")


def _name(header: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in header.split("."))


def line_of(text: str, key: str) -> int | None:
    """The line (from 1) that sets ``key`` as PolicyError names it, or the line of its
    table; None when the file does not show it (a key from a dotted or inline table)."""
    indexed = _INDEXED.fullmatch(key)
    if indexed:
        section, index, leaf = indexed.group(1), int(indexed.group(2)), indexed.group(3)
    else:
        section, _, leaf = key.rpartition(".")
        index = -1
    header_line: int | None = None
    current, seen = "", -1
    for number, line in enumerate(text.splitlines(), 1):
        if m := _ARRAY.match(line):
            current = _name(m.group(1))
            seen = seen + 1 if current == section else seen
            if current == section and seen == index:
                header_line = number
            continue
        if m := _TABLE.match(line):
            current = _name(m.group(1))
            if current in (section, key) and index < 0:
                header_line = header_line or number
            continue
        m = _KEY.match(line)
        if m and leaf and m.group(2) == leaf and current == section and index in (-1, seen):
            return number
    return header_line


def check_file(path: Path) -> tuple[Policy | None, list[str]]:
    """The policy, or every problem in the file as ``FILE:LINE: policy key 'k': problem``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [f"{path}: cannot be read ({exc.strerror})"]
    try:
        return parse_policy(data), []
    except PolicyError as exc:
        text = data.decode("utf-8", errors="replace")
        found = [(line_of(text, p.key) if p.key != "<file>" else None, p) for p in exc.problems]
        found.sort(key=lambda pair: pair[0] or 0)
        return None, [f"{path}:{n}: {p}" if n else f"{path}: {p}" for n, p in found]


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _refused(policy: Policy, rule: Rule) -> str:
    """How a refusal of ``rule`` happens under ``policy``."""
    return {
        Mode.ENFORCE: "refused",
        Mode.SHADOW: f"recorded as would_refuse, not refused (rule {rule} in shadow)",
        Mode.OFF: f"not refused (rule {rule} off)",
    }[policy.rule_mode(rule)]


def _mode_sentence(rule: Rule, mode: Mode) -> str:
    if mode is Mode.SHADOW:
        return (
            f"rule {rule} runs in shadow: checked, never applied; the audit says what it "
            "would have done"
        )
    if mode is Mode.OFF:
        return f"rule {rule} is off: nothing is refused or withheld for it, nothing recorded"
    return f"rule {rule} is enforced"


def _client_sentence(c: ClientRule, now: datetime) -> str:
    who = f"client '{c.name}'" + (f" (owner {c.owner}: {c.reason})" if c.owner or c.reason else "")
    sees = ", ".join(sorted(c.show)) or "nothing private"
    if c.expires is None:
        return f"{who} is shown: {sees}"
    when = c.expires.isoformat()
    if c.expired(now):
        return f"{who} expired at {when}: it is served as the default, audited exception_expired"
    return f"{who} is shown: {sees}, until {when}; then the default, audited exception_expired"


def explain(policy: Policy, now: datetime | None = None) -> list[str]:
    """Plain sentences a reviewer can read: what this policy makes the gateway do."""
    now = now or datetime.now(UTC)
    shown = ", ".join(sorted(policy.show)) or "nothing"
    digest = f" (file sha256 {policy.digest}…)" if policy.digest else ""
    lines = [f"policy version {policy.version}{digest}"]
    if policy.mode is Mode.SHADOW:
        lines.append(
            "audit-only rollout: every rule runs in shadow unless [rules] says otherwise; "
            "answers pass unchanged and the audit records what would have been refused or withheld"
        )
    lines += [_mode_sentence(rule, policy.rule_mode(rule)) for rule in Rule]
    lines.append(
        "in every mode, what cannot be checked is refused: " + "; ".join(FAIL_CLOSED.values())
    )
    lines += [
        f"passes on {route.template} ({', '.join(sorted(set(route.methods) - {'HEAD'}))}) "
        "unrewritten: its answers are checked as JSON, never as records"
        for route in policy.routes
    ]
    lines += [
        "restricted private fields are always withheld (null) in every record API"
        if policy.rule_mode(Rule.REDACT) is Mode.ENFORCE
        else f"private values pass unchanged (rule redact {policy.rule_mode(Rule.REDACT)})",
        f"non-restricted private fields shown to clients without a rule: {shown}",
    ]
    for module, fields in sorted(policy.private_fields.items()):
        for name, sensitivity in sorted(fields.items()):
            lines.append(
                f"field {name} of module {module} is private ({sensitivity}) even where the "
                "CRM's metadata leaves it public"
            )
    lines += [_client_sentence(c, now) for c in policy.clients]
    lines += [
        "an X-Gateway-Key that matches no client is "
        + ("refused (403)" if policy.unknown_keys == "refuse" else "served as the default")
        + ", audited unknown_gateway_key",
        "word= search when the module has a restricted text field is "
        + ("allowed" if policy.allow_word_search else _refused(policy, Rule.CRITERIA)),
        "inserts without Data_Processing_Basis_Details are "
        + (_refused(policy, Rule.CONSENT) if policy.require_consent else "allowed"),
        "mass update by custom view or territory is "
        + ("allowed" if policy.allow_mass_update_by_cvid else "refused"),
        *_operational(policy),
    ]
    lines += [
        f"{key} = {value} is a setting now (see settings); it is still applied in this release"
        for key, value in policy.legacy.items()
    ]
    return lines


def _seen(shown: frozenset[str]) -> str:
    return ", ".join(sorted(shown)) or "no private field"


def _became(what: str, old: bool, new: bool, on: str, off: str) -> list[str]:
    return [] if old == new else [f"{what} {on if new else off}"]


def diff(old: Policy, new: Policy, now: datetime | None = None) -> list[str]:
    """What replacing ``old`` with ``new`` would do, in sentences: what becomes visible,
    what stops (or starts) being refused. Empty when nothing the gateway does changes."""
    now = now or datetime.now(UTC)
    out: list[str] = []
    if (old.version, old.digest) != (new.version, new.digest):
        out.append(f"version {old.version} becomes {new.version}")
    for rule in Rule:
        before, after = old.rule_mode(rule), new.rule_mode(rule)
        if before != after:
            effect = {
                Mode.ENFORCE: "becomes enforced: what it finds is refused or withheld",
                Mode.SHADOW: "stops being enforced: what it finds passes and is only audited",
                Mode.OFF: "stops being enforced or recorded: what it finds passes unnoticed",
            }[after]
            out.append(f"rule {rule} ({before} -> {after}) {effect}")
    if old.show != new.show:
        out.append(f"clients without a rule see {_seen(new.show)} (before: {_seen(old.show)})")
    out += _clients_diff(old, new, now)
    if old.unknown_keys != new.unknown_keys:
        out.append(
            "an X-Gateway-Key that matches no client "
            + ("is refused (403)" if new.unknown_keys == "refuse" else "stops being refused")
        )
    out += _overrides_diff(old, new)
    out += _became(
        "word= search on a module with a restricted text field",
        old.allow_word_search,
        new.allow_word_search,
        "stops being refused",
        "is refused",
    )
    out += _became(
        "inserts without Data_Processing_Basis_Details",
        old.require_consent,
        new.require_consent,
        "are refused",
        "stop being refused",
    )
    out += _became(
        "mass update by custom view or territory",
        old.allow_mass_update_by_cvid,
        new.allow_mass_update_by_cvid,
        "stops being refused (its records are not checked for stop processing)",
        "is refused",
    )
    old_routes = {r.template: r for r in old.routes}
    new_routes = {r.template: r for r in new.routes}
    out += [f"{t} is passed through" for t in sorted(set(new_routes) - set(old_routes))]
    out += [f"{t} is refused again" for t in sorted(set(old_routes) - set(new_routes))]
    # Everything else: the sentence --explain gives for it, before and after.
    out += [
        f"{b} -> now: {a}"
        for b, a in zip(_operational(old), _operational(new), strict=True)
        if b != a
    ]
    return out


def _clients_diff(old: Policy, new: Policy, now: datetime) -> list[str]:
    out: list[str] = []
    before = {c.name: c for c in old.clients}
    after = {c.name: c for c in new.clients}
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        if a is None:
            out.append(f"client '{name}' is removed: its key gets the default ({_seen(new.show)})")
        elif b is None:
            out.append("new " + _client_sentence(a, now))
        elif b != a:
            if b.key_sha256 != a.key_sha256:
                out.append(f"client '{name}' has a new key: the old one stops working")
            if b.show != a.show or b.expires != a.expires:
                out.append(_client_sentence(a, now) + f" (before: {_seen(b.show)})")
    return out


def _overrides_diff(old: Policy, new: Policy) -> list[str]:
    out: list[str] = []
    for module in sorted(set(old.private_fields) | set(new.private_fields)):
        b, a = old.private_fields.get(module, {}), new.private_fields.get(module, {})
        for field in sorted(set(b) | set(a)):
            if field not in a:
                out.append(
                    f"field {field} of module {module} is no longer private unless the CRM "
                    "marks it: its values become visible"
                )
            elif b.get(field) != a[field]:
                out.append(f"field {field} of module {module} is private ({a[field]})")
    return out


def _operational(policy: Policy) -> list[str]:
    """The --explain sentences on metadata, sizes, hosts and the audit trail (diff() shows
    them before and after)."""
    audit_size = _size(policy.audit_max_bytes)
    return [
        f"field metadata is cached {policy.metadata_ttl_s:g} seconds and served stale at most "
        f"{policy.metadata_max_stale_s:g} seconds when the CRM cannot be asked; then requests "
        "fail closed",
        f"request bodies over {_size(policy.max_request_body)} are refused (413); CRM answers "
        f"over {_size(policy.max_response_body)} and bulk results over "
        f"{_size(policy.max_bulk_result)} are not passed on",
        "clients may address the gateway as: "
        + (", ".join(policy.allowed_hosts) or "its listen address, localhost, 127.0.0.1"),
        f"audit: fsync {policy.audit_fsync}; when the sink is full: {policy.audit_on_full}; "
        f"a signed checkpoint every {policy.audit_checkpoint_interval_s:g} seconds; the log "
        f"is rotated at {audit_size}"
        + ("; entries are also written to stdout" if policy.audit_stdout else ""),
    ]
