"""The modules built with mypyc, and the guard that keeps a stale build from ever running.

``make`` compiles the redactor (``gateway.privacy.redact``, the per-record walk every
answer takes) with mypyc, the compiler mypy ships and black and mypy itself are built with,
into a C extension beside its source (``gateway.compiled.build``). The source
stays the one definition of the rules: the extension is that source compiled, and the
gateway runs as plain Python where no build was made (no C compiler, ``pip install .``).

A build records the SHA-256 of each source it compiled and of every project module those
import, at any depth (``gateway/_compiled.json``: compiled code was typed against them).
At import, when any of those sources no longer matches the build (edited since: a test run
after an edit, a no-op redactor to watch a test fail), or when ``GATEWAY_PURE_PYTHON=1``,
every compiled module is loaded from its source instead: the compiled modules call each
other directly, so they are used all together or not at all.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
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
    seen: dict[str, Path] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        path = source(name)
        if name in seen or not path.is_file():
            continue
        seen[name] = path
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                todo.append(node.module)
                todo.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names)
        todo = [n for n in todo if n.split(".")[0] == "gateway"]
    return sorted(seen.values())


def use_source() -> bool:
    """Whether the compiled modules must not run: asked not to, never built (or built by
    another Python), or built from other sources than those beside them now."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return True
    try:
        built = json.loads(MANIFEST.read_text())
        sources: dict[str, str] = built["sources"]
        if built.get("python") != _tag() or built.get("modules") != list(MODULES):
            return True
        return any(_digest(ROOT / path) != digest for path, digest in sources.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
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
    for name in MODULES:
        module = sys.modules.get(name) or importlib.import_module(name)
        origin = getattr(module, "__file__", "") or ""
        out[name] = "python" if origin.endswith(".py") else "compiled"
    return out


def redactor_build() -> str:
    """"compiled" or "python": how this process runs the redactor (the ``started`` line and
    ``privacy_gateway_build_info`` say it, so a slow instance can be told from a fast one)."""
    return running()["gateway.privacy.redact"]


def _built_files(name: str) -> list[Path]:
    folder, stem = source(name).parent, source(name).stem
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [p for p in folder.iterdir() if p.name.startswith(stem) and p.name.endswith(suffixes)]


def build() -> int:
    """Compile ``MODULES`` in place with mypyc (a dev dependency); record what was built."""
    MANIFEST.unlink(missing_ok=True)
    for name in MODULES:
        for old in _built_files(name):
            old.unlink()
    files = [str(source(name).relative_to(ROOT)) for name in MODULES]
    done = subprocess.run(
        [sys.executable, "-m", "mypyc", "--config-file", "pyproject.toml", *files],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0 or not all(_built_files(name) for name in MODULES):
        sys.stderr.write(done.stderr[-2000:])
        print("gateway.compiled: mypyc build failed; the gateway runs as plain Python")
        return 1
    sources = {str(p.relative_to(ROOT)): _digest(p) for p in _closure(MODULES)}
    MANIFEST.write_text(
        json.dumps({"python": _tag(), "modules": list(MODULES), "sources": sources}, indent=1)
    )
    print(f"gateway.compiled: built {', '.join(MODULES)} with mypyc")
    return 0

