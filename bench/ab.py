"""Two versions of the gateway side by side: a git revision against the working tree, served
in turn, round after round, under the same load; CPU per request of each, and their ratio.

On this shared 2-core machine one ``make bench`` run moves by about 0.1 in its ratios from
the next, as much as most single changes weigh now; alternating the two versions in one
run, several rounds, and taking the median of each is what tells a change from the noise.

    python -m bench.ab HEAD~1                       # 3 rounds, 1 and 16 connections,
                                                    # 1-record answers (about 1 minute)
    python -m bench.ab main --pages one page --rounds 5 --connections 16 64

The revision is checked out in a temporary git worktree (its compiled redactor built there
when this tree's is), served from there, and removed at the end. Both gateways run with
the default policy unless ``--policy`` names another, pinned to CPU 0; the sandbox and the
load generator share CPU 1, as in ``bench.run``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.run import ONE, PAGE, measure, process
from gateway import compiled
from gateway.serving import free_port

PAGES = {"one": ONE, "page": PAGE}


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """``revision`` checked out beside this tree, its redactor compiled like this one's."""
    path = Path(tempfile.mkdtemp(prefix="gateway-ab-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(path), revision], check=True
    )
    try:
        if not compiled.use_source():
            build = "from gateway.compiled import build; raise SystemExit(build())"
            subprocess.run([sys.executable, "-c", build], cwd=path, check=False)
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], check=False)
        shutil.rmtree(path.parent, ignore_errors=True)


def redactor(tree: Path) -> str:
    """Which build of the redactor the gateway of ``tree`` runs."""
    code = "from gateway import compiled; print('python' if compiled.use_source() else 'compiled')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="the git revision to compare the working tree with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    p.add_argument("--pages", choices=sorted(PAGES), nargs="+", default=["one"])
    p.add_argument("--policy", help="a policy file both gateways run with")
    a = p.parse_args()

    here = Path.cwd()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-ab-"))
    sport = free_port()
    sandbox = f"http://127.0.0.1:{sport}"
    cpu: dict[tuple[str, str, int], list[float]] = {}
    with (
        worktree(a.base) as there,
        process(["-m", "gateway", "sandbox", "--port", str(sport)], sandbox, {1}),
    ):
        trees = {a.base: there, "working tree": here}
        for name, tree in trees.items():
            print(f"{name}: {tree} (redactor {redactor(tree)})", flush=True)
        for r in range(1, a.rounds + 1):
            for c in a.connections:
                for name, tree in trees.items():
                    port = free_port()
                    url = f"http://127.0.0.1:{port}"
                    log = tmp / f"{r}-{c}-{port}" / "audit.jsonl"
                    log.parent.mkdir()
                    cmd = ["-m", "gateway", "serve", "--upstream", sandbox, "--port", str(port)]
                    cmd += ["--audit-log", str(log)]
                    cmd += ["--policy", str(Path(a.policy).resolve())] if a.policy else []
                    env = {"GATEWAY_SECRET": "bench"}
                    with process(cmd, url, {0}, env, cwd=tree) as proc:
                        for page in a.pages:
                            res = measure(name, url, proc.pid, c, a.seconds, PAGES[page])
                            cpu.setdefault((page, name, c), []).append(res.cpu_ms)
                            print(
                                f"round {r}  c={c:<3} {page:4}  {name:14} {res.rps:8.1f} req/s"
                                f"  {res.cpu_ms:6.3f} ms CPU/req",
                                flush=True,
                            )
    print()
    print(f"| page | conns | {a.base} (median, min-max) | working tree | ratio |")
    print("|---|---|---|---|---|")
    for page in a.pages:
        for c in a.connections:
            old, new = cpu[(page, a.base, c)], cpu[(page, "working tree", c)]
            print(
                f"| {page} | {c} | {statistics.median(old):.3f} ({min(old):.3f}-{max(old):.3f})"
                f" | {statistics.median(new):.3f} ({min(new):.3f}-{max(new):.3f})"
                f" | {statistics.median(new) / statistics.median(old):.3f}x |"
            )
    print(
        f"\nCPU ms per request of the gateway process, {a.rounds} alternating rounds "
        f"of {a.seconds:g} s; below 1 the working tree is cheaper."
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
