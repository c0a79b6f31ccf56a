"""The shipped policies load, and policies/README.md documents every key the schema has
(and no key it does not)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.policy import load_policy, policy_keys
from gateway.rules import Mode

POLICIES = Path(__file__).resolve().parents[2] / "policies"
FILES = sorted([POLICIES / "default.toml", *(POLICIES / "examples").glob("*.toml")])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_shipped_policy_passes_policy_check(path: Path) -> None:
    load_policy(path)
    p = subprocess.run(
        [sys.executable, "-m", "gateway", "policy", "check", str(path), "--explain"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "is valid" in p.stdout and "Traceback" not in p.stderr


def test_each_kind_of_user_has_its_example() -> None:
    examples = {p.stem: load_policy(p) for p in FILES}
    assert examples["default"].mode is Mode.ENFORCE
    assert examples["default"].unknown_keys == "refuse"
    assert examples["sidecar"].clients == () and examples["sidecar"].show == {"low"}
    shared = examples["shared-layer"]
    assert len(shared.clients) >= 2 and any(c.expires and c.owner for c in shared.clients)
    assert shared.private_fields
    assert examples["audit-only"].mode is Mode.SHADOW
    assert not any(p.legacy for p in examples.values())  # no key that is a setting now


def test_the_readme_documents_every_key_and_only_those() -> None:
    text = (POLICIES / "README.md").read_text()
    section = text[text.index("## Every key") : text.index("## Settings (not policy)")]
    documented = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(policy_keys())
