"""The redactor compiled with mypyc (gateway/compiled.py): it runs where it was built, it
withholds exactly what its source withholds, and a stale build never runs.

Where no build of this source was made (no C compiler, an edit since) or
``GATEWAY_PURE_PYTHON`` is set, the tests marked ``built`` say so and skip: the gateway then
runs the redactor as Python, which every other test covers.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import compiled
from gateway.errors import UnreadableUpstream
from gateway.privacy import redact
from tests.conftest import AUTH, LEAD_FIELDS, Crm
from tests.privacy.test_redact import CONTACTS, LEADS, VISITS
from tests.servers import free_port
from tests.test_cli_ops import _env, _serve, _stop

NAME = "gateway.privacy.redact"
built = pytest.mark.skipif(
    not compiled.MANIFEST.exists() or compiled.use_source(),
    reason="no mypyc build of this source here (make builds one with gcc), or "
    "GATEWAY_PURE_PYTHON is set",
)


@built
def test_the_gateway_runs_the_compiled_redactor_where_it_was_built() -> None:
    assert not compiled.use_source()
    assert compiled.running() == {NAME: "compiled"}
    assert not redact.__file__.endswith(".py")


def test_where_the_build_is_required_it_runs() -> None:
    """CI sets ``GATEWAY_REQUIRE_COMPILED=1`` (.ci/run): there a build that failed (make
    goes on without one) fails here, instead of skipping every test of it."""
    if os.environ.get("GATEWAY_REQUIRE_COMPILED") != "1":
        pytest.skip("the compiled build is not required here")
    assert not compiled.use_source(), "no compiled redactor matches these sources (make)"
    assert compiled.running() == {NAME: "compiled"}


@pytest.mark.parametrize(
    ("origin", "says"),
    [("redact.py", "python"), ("redact.pyc", "python"), ("", "python"),
     ("redact" + compiled.importlib.machinery.EXTENSION_SUFFIXES[0], "compiled")],
)
def test_only_an_extension_module_counts_as_compiled(
    monkeypatch: pytest.MonkeyPatch, origin: str, says: str
) -> None:
    """What ``started`` and the build-info metric report: a sourceless ``.pyc`` (or a
    module with no file) is Python, not the build."""
    module = ModuleType(NAME)
    module.__file__ = origin
    monkeypatch.setitem(sys.modules, NAME, module)
    assert compiled.running() == {NAME: says}


@pytest.fixture(scope="module")
def source_redact() -> Iterator[ModuleType]:
    """The redactor loaded from its source, beside the compiled one."""
    alias = "tests_redact_from_source"
    yield compiled.load_source(NAME, alias)
    del sys.modules[alias]


KEYS = ["Email", "email", "EMAIL", "City", "Phone", "Referrer", "REFERRER", "Account",
        "Visits", "Notes", "Last_Name", "id", "name", "$approval", "$x", "Other", "Ünï"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
records = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
bodies = st.one_of(
    st.fixed_dictionaries({"data": st.lists(records, max_size=4)}, optional={"more": values}),
    st.fixed_dictionaries({"data": values}),
    records,
    values,
)


def _run(module: ModuleType, body: Any, shown: frozenset[str], include: bool) -> Any:
    plan = module.build_plan(LEADS, shown, {"Lead_Visits": VISITS}, {"Contacts": CONTACTS})
    counts = module.Tally()
    body = copy.deepcopy(body)
    try:
        module.redact_body(body, plan, counts, include_private=include)
    except UnreadableUpstream:
        return "unreadable"
    return body, dict(counts), counts.unchecked


@built
@settings(max_examples=400, deadline=None)
@given(body=bodies, shown=st.sampled_from([frozenset(), frozenset({"high", "low"})]),
       include=st.booleans())
def test_the_compiled_redactor_withholds_what_its_source_withholds(
    source_redact: ModuleType, body: Any, shown: frozenset[str], include: bool
) -> None:
    assert redact.__file__ != source_redact.__file__
    assert _run(redact, body, shown, include) == _run(source_redact, body, shown, include)


def test_the_equivalence_above_sees_a_difference(source_redact: ModuleType) -> None:
    """The comparison is not vacuous: a record with private values changes, and differs
    from the same record through a plan that withholds nothing."""
    body = {"data": [{"Email": "a@x", "Referrer": {"name": "n", "id": "1", "Email": "b"}}]}
    out = _run(source_redact, body, frozenset(), False)
    assert out[0]["data"][0] == {"Email": None, "Referrer": None}
    assert out != _run(source_redact, body, frozenset({"high", "low"}), False)


def copy_built(dst: Path) -> Path:
    """A copy of the built package (and the configuration a build there reads)."""
    shutil.copytree(
        compiled.ROOT / "gateway", dst / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(compiled.ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def which(root: Path, env: dict[str, str] | None = None) -> str:
    """What a fresh process importing the package at ``root`` runs: "<use_source>
    <compiled|python> <what a restricted Email became>"."""
    code = (
        "import gateway.compiled as c, gateway.privacy.redact as r\n"
        "from gateway.privacy.catalog import parse_fields\n"
        "cat = parse_fields('Leads', {'fields': [{'api_name': 'Email', 'data_type': 'email',"
        " 'private': {'restricted': True, 'type': 'High'}}]})\n"
        "body = {'data': [{'Email': 'a@x'}]}\n"
        "r.redact_body(body, r.build_plan(cat, frozenset(), {}), {})\n"
        "print(c.use_source(), c.running()['gateway.privacy.redact'], body['data'][0]['Email'])\n"
    )
    run_env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    run_env.update(PYTHONPATH=str(root), **(env or {}))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=run_env, capture_output=True, text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@built
def test_a_redactor_edited_since_its_build_runs_from_its_source(tmp_path: Path) -> None:
    """A copy of the built package: compiled as built; as Python when asked to, or when a
    module it imports was edited; and after an edit of the redactor (here a no-op, as when
    breaking a rule on purpose) the edit is what runs."""
    copy_built(tmp_path)
    assert which(tmp_path) == "False compiled None"
    assert which(tmp_path, {compiled.PURE_ENV: "1"}) == "True python None"
    # a module the compiled one imports (its code was typed against it) counts too
    errors = tmp_path / "gateway" / "errors.py"
    built_errors = errors.read_bytes()
    errors.write_bytes(built_errors + b"\n# edited\n")
    assert which(tmp_path) == "True python None"
    errors.write_bytes(built_errors)
    assert which(tmp_path) == "False compiled None"
    source = tmp_path / "gateway" / "privacy" / "redact.py"
    source.write_text(source.read_text() + "\n\ndef redact_body(*args, **kwargs):\n    pass\n")
    assert which(tmp_path) == "True python a@x"


@built
@pytest.mark.parametrize("pure", ["", "1"])
def test_serve_says_how_it_runs_the_redactor(crm: Crm, tmp_path: Path, pure: str) -> None:
    """Operators can tell a compiled instance from one running as Python: the ``started``
    line and ``privacy_gateway_build_info``; both withhold alike."""
    port = free_port()
    extra = {compiled.PURE_ENV: pure} if pure else {}
    env = _env(crm, port, GATEWAY_SECRET="s", GATEWAY_AUDIT_LOG=str(tmp_path / "a.jsonl"), **extra)
    proc, url = _serve(env)
    try:
        page = httpx.get(url + "/crm/v8/Leads", params={"fields": LEAD_FIELDS}, headers=AUTH)
        metrics = httpx.get(url + "/_gateway/metrics").text
    finally:
        _, err = _stop(proc)
    want = "python" if pure else "compiled"
    started = next(json.loads(x) for x in err.splitlines() if '"started"' in x)
    assert started["redactor"] == want
    assert f'redactor="{want}"' in metrics
    records = page.json()["data"]
    assert records and all(r["Email"] is None for r in records)
