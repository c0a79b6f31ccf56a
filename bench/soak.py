"""``make soak``: a bounded mixed load against the gateway in front of the sandbox.

Reads, searches, COQL queries, writes and requests the policy refuses, in a fixed mix, over
many connections for a fixed time. It reports errors (an answer other than the one that
kind of request should get, or no answer), p50/p99 latency, and the gateway's RSS and open
files after warm-up and at the end. The target: no errors and RSS growth under 10%.

    make soak                                   # 5 minutes, 64 connections
    python -m bench.soak --seconds 30 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

from bench.run import AUTH, process
from gateway.serving import free_port

FIELDS = "Last_Name,Company,Email,Phone"
#: (kind, method, path, body, the statuses that kind of request should get)
MIX: list[tuple[str, str, str, bytes | None, frozenset[int]]] = [
    ("read", "GET", f"/crm/v8/Leads?per_page=50&fields={FIELDS}", None, frozenset({200})),
    ("read", "GET", f"/crm/v8/Contacts?per_page=20&fields={FIELDS}", None, frozenset({200})),
    (
        "search",
        "GET",
        "/crm/v8/Leads/search?criteria=(Last_Name:starts_with:S)",
        None,
        frozenset({200, 204}),
    ),
    (
        "coql",
        "POST",
        "/crm/v8/coql",
        orjson.dumps({"select_query": "select Last_Name from Leads where Last_Name is not null"}),
        frozenset({200, 204}),
    ),
    (
        "write",
        "POST",
        "/crm/v8/Leads",
        orjson.dumps({"data": [{"Last_Name": "Soak", "Company": "Soak Ltd"}]}),
        frozenset({201}),
    ),
    (
        "refusal",
        "GET",
        "/crm/v8/Leads/search?criteria=(Email:equals:someone@example.com)",
        None,
        frozenset({400}),
    ),
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_files(pid: int) -> tuple[int, int]:
    """(open files, of which sockets)."""
    fds = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):  # closed while listed
            targets.append(os.readlink(fds / fd))
    return len(targets), sum(t.startswith("socket:") for t in targets)


async def soak(url: str, connections: int, seconds: float) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH, timeout=timeout) as s:
        deadline = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            i = n
            while time.perf_counter() < deadline:
                kind, method, path, body, expected = MIX[i % len(MIX)]
                i += 1
                started = time.perf_counter()
                try:
                    async with s.request(method, url + path, data=body) as resp:
                        await resp.read()
                        if resp.status not in expected:
                            errors[f"{kind} answered {resp.status}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[f"{kind}: {type(exc).__name__}"] += 1
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(n) for n in range(connections)))
    return latencies, errors


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=300.0, help="how long (default 300)")
    p.add_argument("--connections", type=int, default=64, help="concurrent connections (64)")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    sport, gport = free_port(), free_port()
    sandbox, url = f"http://127.0.0.1:{sport}", f"http://127.0.0.1:{gport}"
    gateway_env = {
        "GATEWAY_UPSTREAM": sandbox,
        "GATEWAY_PORT": str(gport),
        "GATEWAY_AUDIT_LOG": str(tmp / "audit.jsonl"),
        "GATEWAY_SECRET": "soak",
        "GATEWAY_LOG_LEVEL": "warning",
    }
    with (
        process(["-m", "gateway", "sandbox", "--port", str(sport)], sandbox, None),
        process(["-m", "gateway", "serve"], url, None, gateway_env) as gw,
    ):
        # warm up at full width, so the start figures include the metadata cache and the
        # connection pools at their working size: growth after that is what leaks
        asyncio.run(soak(url, a.connections, min(15.0, a.seconds)))
        rss0, files0 = rss_kib(gw.pid), open_files(gw.pid)
        started = time.perf_counter()
        latencies, errors = asyncio.run(soak(url, a.connections, a.seconds))
        elapsed = time.perf_counter() - started
        rss1, files1 = rss_kib(gw.pid), open_files(gw.pid)
    growth = 100 * (rss1 - rss0) / max(rss0, 1)
    print(
        f"soak: {len(latencies)} requests in {elapsed:.0f} s over {a.connections} connections "
        f"({len(latencies) / elapsed:.0f}/s), {sum(errors.values())} errors"
    )
    for what, n in errors.most_common():
        print(f"  {n} x {what}")
    print(
        f"latency p50 {1000 * percentile(latencies, 0.5):.1f} ms, "
        f"p99 {1000 * percentile(latencies, 0.99):.1f} ms"
    )
    print(f"gateway RSS {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB ({growth:+.1f}%)")
    print(
        f"gateway open files {files0[0]} -> {files1[0]} "
        f"(of which sockets {files0[1]} -> {files1[1]})"
    )
    ok = not errors and growth < 10
    print("PASS" if ok else "FAIL (target: 0 errors, RSS growth under 10%)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
