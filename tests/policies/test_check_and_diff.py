"""`policy check` names every problem with its key and line; `policy diff` says what a
change would do. Run as a user runs them: a real process."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from gateway.policy import policy_from_mapping
from gateway.policy_text import diff, line_of

BAD = """version = "x"
mode = "audit"

[limits]
max_request_body_bytes = -1
colour = 3

[[clients]]
name = "a"
key_sha256 = "short"

[[clients]]
name = "b"
key_sha256 = "%s"
expires = "soon"

[modules.Leads.private]
Company = "secret"

[rules]
unknown_route = "shadow"
""" % ("0" * 64)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "policy", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_names_every_problem_with_its_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    p = _cli("check", str(path))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert [line.split(": policy key ")[0].rsplit(":", 1)[1] for line in lines] == [
        "2", "5", "6", "10", "15", "18", "21",
    ]  # fmt: skip
    for key in (
        "'mode'",
        "'limits.max_request_body_bytes'",
        "'limits.colour'",
        "'clients[0].key_sha256'",
        "'clients[1].expires'",
        "'modules.Leads.private.Company'",
        "'rules.unknown_route'",
    ):
        assert sum(key in line for line in lines) == 1, (key, lines)


def test_a_binary_or_non_utf8_file_is_one_line(tmp_path: Path) -> None:
    for content in (b"\x00\xff\xfe\x01", b"\x89PNG\r\n\x1a\n\x00\x00"):
        path = tmp_path / "binary.toml"
        path.write_bytes(content)
        p = _cli("check", str(path))
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_line_of_finds_keys_in_tables_and_arrays_of_tables() -> None:
    text = '[[routes]]\ntemplate = "/a"\n[[routes]]\ntemplate = "/b"\n[audit]\nfsync = "x"\n'
    assert line_of(text, "routes[1].template") == 4
    assert line_of(text, "routes[1]") == 3
    assert line_of(text, "audit.fsync") == 6
    assert line_of(text, "audit.stdout") == 5  # not in the file: its table


def test_explain_says_what_each_client_sees_in_human_units() -> None:
    p = _cli("check", "policies/examples/shared-layer.toml", "--explain")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "client 'billing' is shown: high, low" in out
    assert "client 'migration-2027q1' (owner dpo@example.com" in out and "until 2027" in out
    assert "request bodies over 50 MB are refused" in out
    assert "field Secondary_Email of module Leads is private (high)" in out


def test_diff_says_what_becomes_visible_and_what_stops_being_refused() -> None:
    digest = hashlib.sha256(b"k").hexdigest()
    old = policy_from_mapping(
        {
            "writes": {"require_consent": True},
            "modules": {"Leads": {"private": {"Company": "high"}}},
        }
    )
    new = policy_from_mapping(
        {
            "redaction": {"show": ["low"]},
            "rules": {"criteria": "shadow"},
            "search": {"allow_word_search": True},
            "clients": [{"name": "bi", "key_sha256": digest, "show": ["high"]}],
        }
    )
    said = diff(old, new)
    assert "clients without a rule see low (before: no private field)" in said
    assert any(s.startswith("rule criteria (enforce -> shadow) stops being enforced") for s in said)
    assert "word= search on a module with a restricted text field stops being refused" in said
    assert "inserts without Data_Processing_Basis_Details stop being refused" in said
    assert any("field Company of module Leads is no longer private" in s for s in said)
    assert "new client 'bi' is shown: high" in said
    assert diff(new, new) == []


def test_policy_diff_on_the_command_line() -> None:
    p = _cli("diff", "policies/examples/audit-only.toml", "policies/default.toml")
    assert p.returncode == 0, p.stderr
    assert "rule redact (shadow -> enforce) becomes enforced" in p.stdout
    assert "an X-Gateway-Key that matches no client is refused (403)" in p.stdout
