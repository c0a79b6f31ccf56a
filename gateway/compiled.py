"""The modules built with mypyc, and the guard that keeps a stale build from ever running.

``make`` compiles the redactor (``gateway.privacy.redact``, the per-record walk every
answer takes) with mypyc, the compiler mypy ships and black and mypy itself are built with,
into a C extension beside its source (``gateway.compiled.build``). The source
stays the one definition of the rules: the extension is that source compiled, and the
gateway runs as plain Python where no build was made (no C compiler, ``pip install .``).

A build records the SHA-256 of each source it compiled and of every project module those
import, at any depth (compiled code was typed against them), and of the extension files
it made (``gateway/_compiled.json``). At import, when any of those sources no longer
matches the build (edited since: a test run after an edit, a no-op redactor to watch a
test fail) or is shadowed (a package or an extension of its name), when the extension
files are not those the build made, or when ``GATEWAY_PURE_PYTHON=1``, every compiled
module is loaded from its source instead: the compiled modules call each other directly,
so they are used all together or not at all.

Compiled code must mean what its source means. Known differences are avoided in the
source: ``str.lower`` is called through a name (mypyc's own maps each character alone);
``id()`` of a tuple names a temporary (mypyc unboxes tuples); a class attribute is no
default for the instances of a compiled dict subclass; and compiled code has no recursion
limit (the walk bounds its own depth). ``tests/test_compiled.py`` compares the two.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

MODULES = ("gateway.privacy.redact",)
ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the package
MANIFEST = ROOT / "gateway" / "_compiled.json"
PURE_ENV = "GATEWAY_PURE_PYTHON"


def source(name: str) -> Path:
    return ROOT.joinpath(*name.split(".")).with_suffix(".py")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tag() -> str:
    return sys.implementation.cache_tag or ""


def _closure(names: Sequence[str]) -> list[Path]:
    """The sources of ``names`` and of every ``gateway`` module they import, at any depth."""
    import ast  # at build time only: not on every import of the package

    seen: dict[str, Path] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        path = source(name)
        if name in seen or not path.is_file():
            continue
        seen[name] = path
        package = name.split(".")  # the module's own name, then its packages
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.ImportFrom):
                # ``from .x import y`` in gateway/privacy/catalog.py: gateway.privacy.x
                base = ".".join(package[: len(package) - node.level]) if node.level else ""
                parent = ".".join(p for p in (base, node.module or "") if p)
                todo.append(parent)
                todo.extend(f"{parent}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names)
        todo = [n for n in todo if n.split(".")[0] == "gateway"]
    return sorted(seen.values())


def _extensions(py: Path) -> list[Path]:
    """Extension modules that ``import`` would load before the source ``py`` (``x.py``:
    ``x.cpython-311-...so`` and, for a compiled module, its group's ``x__mypyc...so``)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(
        p
        for p in py.parent.iterdir()
        if p.name.startswith(py.stem) and p.name.endswith(suffixes)
        and p.name[len(py.stem)] in "._"
    )


def _shadowed(py: Path, *, compiled: bool) -> bool:
    """Whether ``import`` would load something other than ``py`` (or, ``compiled``, than
    its build) under its name: a package of that name (``x/__init__.py``), or an extension
    module where none was built."""
    package = (py.parent / py.stem / "__init__.py").exists()
    return package or (not compiled and bool(_extensions(py)))


def use_source() -> bool:
    """Whether the compiled modules must not run: asked not to, never built (or built by
    another Python), or not as built: a source they were built from (or typed against) has
    changed, or is shadowed, or the extension files are not those the build made."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return True
    try:
        built = json.loads(MANIFEST.read_text())
        sources: dict[str, str] = built["sources"]
        binaries: dict[str, str] = built["binaries"]
        if built.get("python") != _tag() or built.get("modules") != list(MODULES):
            return True
        compiled = {source(name) for name in MODULES}
        now = {str(p.relative_to(ROOT)) for py in compiled for p in _extensions(py)}
        if now != set(binaries) or any(
            _digest(ROOT / path) != digest for path, digest in binaries.items()
        ):
            return True
        for path, digest in sources.items():
            py = ROOT / path
            if _digest(py) != digest or _shadowed(py, compiled=py in compiled):
                return True
        return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return True


class _FromSource(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in MODULES:
            return importlib.util.spec_from_file_location(fullname, source(fullname))
        return None


def install() -> None:
    """Called by ``gateway/__init__``, before any compiled module can be imported."""
    if use_source() and not any(isinstance(f, _FromSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _FromSource())


def load_source(name: str, alias: str) -> ModuleType:
    """Module ``name`` loaded from its source as ``alias``, beside whatever ``name`` is
    (to compare the two: the equivalence test, the benchmark)."""
    spec = importlib.util.spec_from_file_location(alias, source(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module  # dataclasses look their module up while it runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[alias]
        raise
    return module


def running() -> dict[str, str]:
    """Each compiled module -> "compiled" or "python", as imported in this process."""
    out = {}
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name in MODULES:
        module = sys.modules.get(name) or importlib.import_module(name)
        origin = getattr(module, "__file__", "") or ""
        # only an extension module is compiled code (a lone .pyc is Python too)
        out[name] = "compiled" if origin.endswith(suffixes) else "python"
    return out


def redactor_build() -> str:
    """"compiled" or "python": how this process runs the redactor (the ``started`` line and
    ``privacy_gateway_build_info`` say it, so a slow instance can be told from a fast one)."""
    return running()["gateway.privacy.redact"]


def _source_digests() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): _digest(p) for p in _closure(MODULES)}


def build() -> int:
    """Compile ``MODULES`` in place with mypyc (a dev dependency); record what was built."""
    import subprocess

    MANIFEST.unlink(missing_ok=True)
    for name in MODULES:
        for old in _extensions(source(name)):
            old.unlink()  # a new file, not rewritten in place: a running process maps it
    files = [str(source(name).relative_to(ROOT)) for name in MODULES]
    # read before compiling: a source saved while mypyc runs must not pass for the built one
    sources = _source_digests()
    done = subprocess.run(
        [sys.executable, "-m", "mypyc", "--config-file", "pyproject.toml", *files],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    binaries = [p for name in MODULES for p in _extensions(source(name))]
    if done.returncode != 0 or not all(_extensions(source(name)) for name in MODULES):
        sys.stderr.write(done.stderr[-2000:])
        print("gateway.compiled: mypyc build failed; the gateway runs as plain Python")
        return 1
    if sources != _source_digests():
        print("gateway.compiled: a source changed while it was compiled; run the build again")
        return 1
    made = {str(p.relative_to(ROOT)): _digest(p) for p in binaries}
    manifest = {"python": _tag(), "modules": list(MODULES), "sources": sources, "binaries": made}
    MANIFEST.write_text(json.dumps(manifest, indent=1))
    print(f"gateway.compiled: built {', '.join(MODULES)} with mypyc")
    return 0

