"""The bulk-export section of ``make bench`` (``python -m bench.run --only bulk``).

One generated result ZIP (``--bulk-rows``, 1,000,000 by default; 20 columns, 5 private)
served by ``bench/bulkcrm.py``:

- in process, on one core: the gateway's rewrite (``gateway.bulk.Export``, its thread and
  queue included) against a plain ``csv.reader`` -> ``csv.writer`` copy between the same
  ZIPs (same compression, no blanking), rows per CPU second, the two alternated;
- end to end, through a gateway process pinned to the other core: time to first byte, wall
  time, the gateway's CPU and its peak RSS over its RSS at rest, for 1 export and for 4 at
  once (a fresh gateway each, so each peak is its own).
"""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import targets
from bench.bulkcrm import make_zip, serve
from gateway import bulk
from gateway.serving import free_port

AUTH = {"Authorization": "Zoho-oauthtoken bench-token"}


@dataclass
class Run:
    exports: int
    ttfb: list[float]  # seconds to the first body byte, per export
    after_spool: float  # the most seconds from an upstream ZIP sent in full to a first byte
    wall: float
    cpu: float  # seconds of the gateway's CPU
    rest_mb: float
    peak_mb: float
    size: int  # bytes of one export

    @property
    def added_mb(self) -> float:
        return (self.peak_mb - self.rest_mb) / self.exports


def _copy(path: Path) -> None:
    """The floor: every row read and written again, between the same kinds of ZIP."""
    sink = _Null()
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zout:
        for member in zin.infolist():
            with (
                zin.open(member) as raw,
                zout.open(member.filename, "w", force_zip64=True) as dst,
                io.TextIOWrapper(
                    io.BufferedWriter(dst, bulk.CHUNK), encoding="utf-8", newline=""
                ) as out,
            ):
                buffered = io.BufferedReader(raw, 256 * 1024)  # as the gateway reads
                reader = csv.reader(io.TextIOWrapper(buffered, encoding="utf-8-sig", newline=""))
                csv.writer(out, lineterminator="\r\n").writerows(reader)


class _Null:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _rewrite(path: Path) -> None:
    blank_set = {"Field_02", "Field_04", "Field_08", "Field_12", "Field_16"}

    async def main() -> None:
        export = bulk.Export(
            open(path, "rb"),  # noqa: SIM115 (the export closes it)
            lambda h: h if h in blank_set else None,
            lambda: None,
        )
        await export.start()
        try:
            async for _ in export.chunks():
                pass
        finally:
            await export.aclose()

    asyncio.run(main())


def in_process(path: Path, rounds: int = 2) -> tuple[float, float]:
    """(copy, rewrite) CPU seconds, the best of ``rounds`` alternated runs."""
    best = {_copy: float("inf"), _rewrite: float("inf")}
    for _ in range(rounds):
        for fn in (_copy, _rewrite):
            t = time.process_time()
            fn(path)
            best[fn] = min(best[fn], time.process_time() - t)
    return best[_copy], best[_rewrite]


def _mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


async def _download(url: str, started: float) -> tuple[float, int]:
    async with aiohttp.ClientSession(headers=AUTH) as session, session.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
        first = None
        size = 0
        async for chunk in resp.content.iter_any():
            if first is None:
                first = time.perf_counter() - started
            size += len(chunk)
        return first or 0.0, size


def end_to_end(upstream: str, sent: list[float], exports: int, tmp: Path) -> Run:
    from bench.run import cpu_seconds, process

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = ["-m", "gateway", "serve", "--upstream", upstream, "--port", str(port)]
    cmd += ["--audit-log", str(tmp / f"bulk-{exports}.jsonl")]
    env = {"GATEWAY_SECRET": "bench", "GATEWAY_MAX_CONCURRENT_EXPORTS": str(exports)}
    with process(cmd, url, {0}, env) as proc:
        asyncio.run(_download(url + "/crm/bulk/v8/read/2/result", time.perf_counter()))
        rest = _mb(proc.pid, "VmRSS")
        cpu = cpu_seconds(proc.pid)
        started = time.perf_counter()

        async def all_at_once() -> list[tuple[float, int]]:
            big = url + "/crm/bulk/v8/read/1/result"
            return await asyncio.gather(*(_download(big, started) for _ in range(exports)))

        del sent[:]
        got = asyncio.run(all_at_once())
        wall = time.perf_counter() - started
        # Each export starts as soon as its ZIP is in: pair the n-th ZIP in with the n-th
        # first byte.
        firsts = sorted(started + t for t, _ in got)
        return Run(
            exports,
            [t for t, _ in got],
            max(f - s for f, s in zip(firsts, sorted(sent), strict=True)),
            wall,
            cpu_seconds(proc.pid) - cpu,
            rest,
            _mb(proc.pid, "VmHWM"),
            got[0][1],
        )


def run(rows: int) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-bulk-"))
    t = time.perf_counter()
    big = make_zip(tmp / "big.zip", rows)
    print(f"bulk: generated {rows} rows in {time.perf_counter() - t:.1f} s", flush=True)
    small = make_zip(tmp / "small.zip", 10)
    zip_size = big.stat().st_size
    with zipfile.ZipFile(big) as z:
        csv_size = z.infolist()[0].file_size
    copy_s, rewrite_s = in_process(big)
    print(f"bulk: in process copy {copy_s:.2f} s, rewrite {rewrite_s:.2f} s CPU", flush=True)
    sent: list[float] = []
    server = serve({"1": big, "2": small}, sent)
    try:
        runs = []
        for n in (1, 4):
            runs.append(end_to_end(server.url, sent, n, tmp))
            r = runs[-1]
            print(
                f"bulk: {n} at once: first byte {max(r.ttfb):.2f} s "
                f"({r.after_spool:.2f} s after its ZIP was in), wall {r.wall:.1f} s, "
                f"CPU {r.cpu:.1f} s, +{r.added_mb:.1f} MB RSS each",
                flush=True,
            )
    finally:
        server.stop()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    one, four = runs
    lines = [
        f"## Bulk export ({rows:,} rows x 20 columns, 5 private; "
        f"{zip_size / 1e6:.0f} MB ZIP, {csv_size / 1e6:.0f} MB CSV)",
        "",
        f"In process, one core: the gateway's rewrite {rows / rewrite_s:,.0f} rows/s "
        f"({rewrite_s:.2f} s CPU) against a plain csv.reader -> csv.writer copy between the "
        f"same ZIPs {rows / copy_s:,.0f} rows/s ({copy_s:.2f} s): "
        f"**{rewrite_s / copy_s:.2f}x** the copy's CPU.",
        "",
        "Through the gateway (pinned to one core): the first byte counted from the request "
        "(the CRM's ZIP fetched and spooled first) and from the moment the CRM had sent "
        "its ZIP in full:",
        "",
        "| exports at once | first byte (slowest) | after the ZIP was in | wall "
        "| rows/s (all) | gateway CPU | CPU vs N x one | peak RSS over rest, per export |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.exports} | {max(r.ttfb):.2f} s | {r.after_spool:.2f} s | {r.wall:.1f} s "
            f"| {r.exports * rows / r.wall:,.0f} | {r.cpu:.1f} s "
            f"| {r.cpu / (r.exports * one.cpu):.2f}x | {r.added_mb:.1f} MB |"
        )
    lines += ["", f"One export: {one.size / 1e6:.0f} MB ({four.size / 1e6:.0f} MB each of 4)."]
    lines += ["", "Targets (issue 14), each from this run:", "", *targets.HEADER]
    lines.append(
        targets.row(
            "bulk rewrite speed vs csv.reader -> csv.writer copy (in process, rows per CPU s)",
            copy_s / rewrite_s,
            0.8,
            at_most=False,
        )
    )
    for r in runs:
        lines.append(
            targets.row(
                f"gateway peak RSS, {r.exports} export{'s' if r.exports > 1 else ''} at once",
                r.peak_mb,
                150,
                unit="MB",
            )
        )
    return "\n".join(lines) + "\n"
