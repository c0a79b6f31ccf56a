"""Red team of the mypyc-compiled redactor (gateway/compiled.py): where the compiled build
and its Python source part ways, and where the guard lets a build run for other sources.

Each test names what it found: "Found, fixed" for a bug the red team found (the test
failed before the fix), "HELD" for an attack that did not get through.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import compiled
from gateway.errors import UnreadableUpstream
from gateway.privacy import redact
from gateway.privacy.catalog import parse_fields
from tests.conftest import MakeGateway
from tests.servers import metadata_routes, serve
from tests.test_compiled import copy_built, which

NAME = "gateway.privacy.redact"
built = pytest.mark.skipif(
    not compiled.MANIFEST.exists() or compiled.use_source(),
    reason="no mypyc build of this source here, or GATEWAY_PURE_PYTHON is set",
)
MARK = "cmp-attack-mark-8d2f"
RESTRICTED = {"restricted": True, "type": "High", "export": True}


@pytest.fixture(scope="module")
def src() -> Iterator[ModuleType]:
    alias = "tests_compiled_attacks_redact_src"
    yield compiled.load_source(NAME, alias)
    del sys.modules[alias]


# == 1. Divergence: str.lower() of a capital sigma ===========================================
#
# mypyc compiles ``key.lower()`` on a ``str``-typed key (MaskPlan.steps) to CPyStr_Lower,
# which on Python < 3.13 maps each code point alone with _PyUnicode_ToLowerFull. CPython's
# str.lower() maps a capital sigma at the end of a word to a FINAL sigma:
#   "NotesΣ".lower() == "notesς" (Python: catalog.py, the source redactor)
#   CPyStr_Lower("NotesΣ") == "notes" + GREEK SMALL LETTER SIGMA (the compiled redactor)
# The catalog's keys are lowered by Python (catalog.py is not compiled), the record's keys by
# the compiled code: the field is not recognised, so it is taken for "no field". At the top
# level such a key is withheld as unknown (wrong count, ``unchecked``); everywhere else (a
# lookup's object, a subform row, a ``$``-key's object, a write answer's details, a body
# without ``data``) a key that is no field is KEPT: the private value goes out.

SIGMA = "NotesΣ"
SIG_LEADS = parse_fields(
    "Leads",
    {
        "fields": [
            {"api_name": "Last_Name", "data_type": "text", "private": None},
            {"api_name": SIGMA, "data_type": "text", "private": RESTRICTED},
            {
                "api_name": "Visits",
                "data_type": "subform",
                "private": None,
                "associated_module": {"module": "Lead_Visits"},
            },
            {
                "api_name": "Referrer",
                "data_type": "lookup",
                "private": None,
                "lookup": {"module": {"api_name": "Contacts"}},
            },
        ]
    },
)
SIG_SUB = parse_fields(
    "Lead_Visits",
    {"fields": [{"api_name": SIGMA, "data_type": "text", "private": RESTRICTED}]},
)
SIG_CONTACTS = parse_fields(
    "Contacts",
    {
        "fields": [
            {"api_name": "Last_Name", "data_type": "text", "private": None},
            {"api_name": SIGMA, "data_type": "text", "private": RESTRICTED},
        ]
    },
)


def test_the_catalog_and_the_compiled_lower_disagree_on_a_final_sigma() -> None:
    """The premise: Python's lower() uses the final sigma; the catalog keeps it."""
    assert SIGMA.lower() == "notesς"
    assert "notesς" in SIG_LEADS.fields


def _sig_run(module: ModuleType, body: Any, fn: str = "body") -> Any:
    plan = module.build_plan(
        SIG_LEADS, frozenset(), {"Lead_Visits": SIG_SUB}, {"Contacts": SIG_CONTACTS}
    )
    counts = module.Tally()
    body = copy.deepcopy(body)
    if fn == "body":
        module.redact_body(body, plan, counts)
    elif fn == "write":
        module.redact_write_answer(body, plan, counts)
    else:
        module.redact_rows(body, plan, counts)
    return body, dict(counts), counts.unchecked


SIGMA_BODIES = {
    "lookup-object": (
        "body",
        {"data": [{"id": "1", "Referrer": {"name": "n", "id": "2", SIGMA: MARK}}]},
    ),
    "subform-row": ("body", {"data": [{"id": "1", "Visits": [{"id": "3", SIGMA: MARK}]}]}),
    "dollar-key-object": ("body", {"data": [{"id": "1", "$x": {SIGMA: MARK}}]}),
    "other-top-level-key": ("body", {"data": [], "more": [{SIGMA: MARK}]}),
    "body-without-data": ("body", {SIGMA: MARK}),
    "write-answer-details": (
        "write",
        {"data": [{"code": "SUCCESS", "details": {"id": "1", SIGMA: MARK}}]},
    ),
    "subform-rows": ("rows", [{SIGMA: MARK}]),
}


@built
@pytest.mark.parametrize("case", list(SIGMA_BODIES))
def test_compiled_withholds_a_final_sigma_field_as_its_source_does(
    src: ModuleType, case: str
) -> None:
    """Found, fixed (value leak): the compiled redactor passes MARK; the source nulls it."""
    fn, body = SIGMA_BODIES[case]
    want = _sig_run(src, body, fn)
    assert MARK not in orjson.dumps(want[0]).decode()  # the source withholds it
    got = _sig_run(redact, body, fn)
    assert MARK not in orjson.dumps(got[0]).decode(), got
    assert got == want


@built
def test_compiled_counts_a_final_sigma_field_at_top_level_as_its_source_does(
    src: ModuleType,
) -> None:
    """Found, fixed (wrong count): top level, the value is withheld by both, but compiled
    counts it as ``unknown`` with ``unchecked`` 1 (the source: ``NotesΣ`` 1, unchecked 0).
    In shadow/off mode the source lets the answer go on (the rule is not enforced), the
    compiled one withholds the whole answer; the audit entry and X-Privacy-Withheld say
    ``unknown`` instead of the field."""
    body = {"data": [{"id": "1", SIGMA: MARK}]}
    assert _sig_run(redact, body) == _sig_run(src, body)


class SigmaCrm:
    """A CRM whose Leads have a restricted field named with a capital sigma and whose
    answers carry it inside a lookup object and a ``$``-key object."""

    def app(self) -> Starlette:
        async def records(_: Request) -> Response:
            rec = {
                "id": "1",
                "Last_Name": "Doe",
                "Referrer": {"name": "Roe", "id": "2", SIGMA: MARK},
                "$x": {SIGMA: MARK},
            }
            return _json({"data": [rec], "info": {"count": 1, "more_records": False}})

        return Starlette(
            routes=[
                *metadata_routes(
                    [
                        {"api_name": "Last_Name", "data_type": "text", "private": None},
                        {"api_name": SIGMA, "data_type": "text", "private": RESTRICTED},
                    ]
                ),
                Route("/crm/{v}/Leads", records),
            ]
        )


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def test_served_read_never_passes_a_final_sigma_field(make_gateway: MakeGateway) -> None:
    """Found, fixed with the compiled redactor (value leak through the served gateway): the
    client gets 200 with MARK in ``Referrer`` and ``$x``. With GATEWAY_PURE_PYTHON=1 both
    are nulled (this test passes), but see the next test: that answer is a 500."""
    with serve(SigmaCrm().app()) as upstream:
        gw = make_gateway(upstream=upstream.url)
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Referrer"})
    assert MARK not in r.text, (r.status_code, r.text)


def test_a_withheld_field_named_outside_latin1_still_gets_its_answer(
    make_gateway: MakeGateway,
) -> None:
    """Found, fixed with GATEWAY_PURE_PYTHON=1 (not a compiled-build bug; found on the way):
    a withheld field is counted under its catalog api name, which ``safe_label`` never
    checks; ``X-Privacy-Withheld: 2; fields=NotesΣ`` cannot be encoded (latin-1) and the
    client gets a plain-text 500 instead of the redacted answer (no value leaks). The
    compiled build passes this only because of the divergence above."""
    with serve(SigmaCrm().app()) as upstream:
        gw = make_gateway(upstream=upstream.url)
        r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name,Referrer"})
    assert r.status_code == 200, r.text


# == 2. Divergence: recursion depth ===========================================================


def _deep_more(depth: int) -> Any:
    """An answer whose non-``data`` member is a list nested ``depth`` deep (orjson reads up
    to 1024 levels)."""
    raw = b'{"data":[],"more":' + b"[" * depth + b'{"Email":"x"}' + b"]" * depth + b"}"
    return orjson.loads(raw)


@built
def test_deep_nesting_fails_alike_compiled_and_source(src: ModuleType) -> None:
    """Found, fixed (exception differs): at 1000 levels the source raises RecursionError
    (a 500 from the served gateway), the compiled one has no recursion limit and redacts.
    No value leaks: served in enforce mode the compiled answer then fails at orjson.dumps
    (255 levels) and is a 500 too; in shadow/off with nothing unchecked the CRM's body
    goes on where the source gives a 500."""
    from tests.privacy.test_redact import CONTACTS, LEADS, VISITS

    def run(module: ModuleType) -> str:
        plan = module.build_plan(
            LEADS, frozenset(), {"Lead_Visits": VISITS}, {"Contacts": CONTACTS}
        )
        try:
            module.redact_body(_deep_more(1000), plan, module.Tally())
        except UnreadableUpstream:
            return "unreadable"
        except RecursionError:
            return "RecursionError"
        return "ok"

    assert run(redact) == run(src) == "unreadable"  # past MAX_DEPTH, in both


# == 3. Attacks that held: memo state, shapes, identity, types ================================


@built
@pytest.mark.parametrize("n", [255, 256, 257, 600])
def test_many_shapes_and_a_reused_plan_redact_alike(src: ModuleType, n: int) -> None:
    """HELD: 256+ distinct shapes (past _MEMO_LIMIT), the same plan for three answers."""
    from tests.privacy.test_redact import CONTACTS, LEADS, VISITS

    def run(module: ModuleType) -> Any:
        plan = module.build_plan(
            LEADS, frozenset(), {"Lead_Visits": VISITS}, {"Contacts": CONTACTS}
        )
        out = []
        for _ in range(3):
            recs = [{f"k{i}": "v", "Email": "e", "$x": {"Email": "d"}} for i in range(n)]
            recs += [
                {"Email": "e", f"$k{i}": {"Referrer": {"name": "x", "Email": "s"}}}
                for i in range(n)
            ]
            body = {"data": recs}
            counts = module.Tally()
            module.redact_body(body, plan, counts, include_private=True)
            out.append((body, dict(counts), counts.unchecked, len(plan._shapes)))
        return out

    assert run(redact) == run(src)


@built
def test_plans_do_not_share_their_memo(src: ModuleType) -> None:
    """HELD: ``_shapes`` is per plan (a shared default would carry one client's "shown"
    decision into another's plan)."""
    from tests.privacy.test_redact import LEADS

    shown = redact.build_plan(LEADS, frozenset({"high", "low"}), {})
    hidden = redact.build_plan(LEADS, frozenset(), {})
    assert shown._shapes is not hidden._shapes
    assert shown._shapes is not redact.NAME_AND_ID._shapes
    body = {"data": [{"Phone": "1"}]}
    redact.redact_body(copy.deepcopy(body), shown, {})
    out = copy.deepcopy(body)
    redact.redact_body(out, hidden, {})
    assert out["data"][0]["Phone"] is None


@built
def test_values_of_every_json_type_redact_alike(src: ModuleType) -> None:
    """HELD: huge ints, 1e308, -0.0, bools, None, non-ASCII and empty keys, Kelvin sign."""
    from tests.privacy.test_redact import CONTACTS, LEADS, VISITS

    rec = {
        "Email": 10**40,
        "City": 1e308,
        "Phone": -0.0,
        "Last_Name": True,
        "": None,
        "Ünï": [[[{"Email": "x"}]]],
        "\u212aey": {"Email": "y"},
        "id": 2**70,
        "name": [1.5],
        "Referrer": [[{"name": "n", "Email": "z"}]],
        "Account": {"name": {"Email": "w"}},
        "Visits": {"Notes": "n", "Visit_Date": 1e-308},
    }
    body = {"data": [rec, rec], "info": {"Email": "i"}, "x": [rec]}
    for shown in (frozenset(), frozenset({"high"}), frozenset({"high", "low"})):
        for include in (False, True):
            outs = []
            for module in (redact, src):
                plan = module.build_plan(
                    LEADS, shown, {"Lead_Visits": VISITS}, {"Contacts": CONTACTS}
                )
                counts = module.Tally()
                b = copy.deepcopy(body)
                module.redact_body(b, plan, counts, include_private=include)
                outs.append((b, dict(counts), counts.unchecked))
            assert outs[0] == outs[1]


@built
def test_safe_label_and_is_masked_agree(src: ModuleType) -> None:
    """HELD: safe_label on ASCII edge cases, 100/101 chars, non-ASCII; is_masked."""
    from tests.privacy.test_redact import LEADS

    for key in ["a" * 100, "a" * 101, "A.B$()", "a-b", "\uff25mail", "\u00b2", "Σ", "", "ǅ"]:
        assert redact.safe_label(key) == src.safe_label(key)
    for info in [None, *LEADS.fields.values()]:
        for shown in (frozenset(), frozenset({"high"}), frozenset({""})):
            assert redact.is_masked(info, shown) == src.is_masked(info, shown)


# == 4. The guard ==============================================================================

@built
def test_an_extension_from_another_build_does_not_run(tmp_path: Path) -> None:
    """Found, fixed (stale build runs): the manifest binds the sources, not the binary. A
    ``redact__mypyc`` built from another redactor (here one whose is_masked says False),
    left beside sources the manifest matches, runs as "compiled" and passes the value."""
    other = copy_built(tmp_path / "other")
    source = other / "gateway" / "privacy" / "redact.py"
    text = source.read_text()
    text = text.replace(
        "    return info.private.restricted or info.private.sensitivity not in shown\n",
        "    return False\n",
    )
    source.write_text(text)
    done = subprocess.run(
        [sys.executable, "-c", "from gateway.compiled import build; raise SystemExit(build())"],
        cwd=other,
        env={**os.environ, "PYTHONPATH": str(other)},
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert which(other) == "False compiled a@x"  # the other build: withholds nothing
    here = copy_built(tmp_path / "here")
    assert which(here) == "False compiled None"
    for so in (other / "gateway" / "privacy").glob("redact__mypyc*.so"):
        shutil.copy(so, here / "gateway" / "privacy" / so.name)
    assert which(here) == "True python None"


@built
def test_a_package_shadowing_a_module_the_build_was_typed_against_turns_it_off(
    tmp_path: Path,
) -> None:
    """Found, fixed (compiled code runs against another module than it was built with): a
    package ``gateway/errors/`` beside ``gateway/errors.py`` is what ``import`` loads, but
    the guard hashes ``errors.py``, so the compiled redactor still runs."""
    here = copy_built(tmp_path)
    pkg = here / "gateway" / "errors"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        (here / "gateway" / "errors.py").read_text() + "\nSHADOWED = True\n"
    )
    code = (
        "import gateway.errors as e, gateway.compiled as c; "
        "print(e.__file__.endswith('__init__.py'), c.use_source())"
    )
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=here,
        env={**env, "PYTHONPATH": str(here)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    shadowed, stale = out.stdout.split()
    assert shadowed == "True"
    assert stale == "True"


def test_the_closure_follows_relative_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found, fixed (latent): ``_closure`` skips ``from .x import y`` (``node.level == 0``):
    a module the redactor's imports reach only relatively is not hashed, so an edit of it
    would leave the compiled build running. No such import exists today."""
    here = copy_built(tmp_path)
    catalog = here / "gateway" / "privacy" / "catalog.py"
    catalog.write_text(catalog.read_text() + "\nfrom .errors_body import scrub_answer  # noqa\n")
    monkeypatch.setattr(compiled, "ROOT", here)
    found = {p.relative_to(here).as_posix() for p in compiled._closure(compiled.MODULES)}
    assert "gateway/privacy/errors_body.py" in found


@built
def test_held_an_edit_of_any_hashed_module_or_a_lying_manifest_turns_it_off(tmp_path: Path) -> None:
    """HELD: an edit of catalog.py or jsonbody.py, a manifest naming another Python or other
    modules, a manifest of the wrong JSON type, a missing manifest: all run as Python."""
    here = copy_built(tmp_path)
    assert which(here) == "False compiled None"
    for rel in ("gateway/privacy/catalog.py", "gateway/jsonbody.py"):
        path = here / rel
        before = path.read_bytes()
        path.write_bytes(before + b"\n")
        assert which(here) == "True python None"
        path.write_bytes(before)
    manifest = here / "gateway" / "_compiled.json"
    good = manifest.read_text()
    for bad in (
        good.replace("cpython-311", "cpython-312"),
        good.replace('"gateway.privacy.redact"', '"gateway.privacy.other"'),
        "[]",
        '{"python": "cpython-311", "modules": ["gateway.privacy.redact"], "sources": []}',
        "",
    ):
        manifest.write_text(bad)
        assert which(here) == "True python None"
    manifest.unlink()
    assert which(here) == "True python None"
    manifest.write_text(good)
    assert which(here) == "False compiled None"


# == 5. Other names whose lowering is not one character to one ================================


@built
@pytest.mark.parametrize("name", ["Notİ", "ΣΑΣ", "Straße", "ǅx", "ﬁeld"])
def test_names_that_lower_unevenly_are_withheld_alike(src: ModuleType, name: str) -> None:
    """HELD (after the final-sigma fix): a restricted field whose name lowers to more or
    other characters (dotted capital I, a sigma-only word, sharp s, titlecase digraph,
    ligature), in another letter case, inside a lookup object and a ``$``-object."""
    catalog = parse_fields(
        "Leads",
        {
            "fields": [
                {"api_name": name, "data_type": "text", "private": RESTRICTED},
                {"api_name": "Referrer", "data_type": "lookup", "private": None,
                 "lookup": {"module": {"api_name": "Leads"}}},
            ]
        },
    )
    spelled = name.upper()
    body = {"data": [{"id": "1", "Referrer": {"name": "n", "id": "2", spelled: MARK},
                      "$x": {name: MARK}}]}
    runs = []
    for module in (redact, src):
        plan = module.build_plan(catalog, frozenset(), {}, {"Leads": catalog})
        counts = module.Tally()
        out = copy.deepcopy(body)
        module.redact_body(out, plan, counts)
        runs.append((out, dict(counts), counts.unchecked))
    assert runs[0] == runs[1]
    if spelled.lower() == name.lower():  # the CRM's letter cases match as Python's do
        assert MARK not in orjson.dumps(runs[0][0]).decode()
