"""The HTML report: right totals, nothing unescaped, and it renders in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.audit.report import render_report, run_report
from gateway.audit.stats import collect
from gateway.audit.verify import verify_log
from tests.audit.helpers import CLIENTS, SECRET, checkpoints_of, decision, run, trail

CHROMIUM = "/usr/bin/chromium"
# decision(i) cycles forwarded, redacted (2 values withheld), refused, error
N = 40


@pytest.fixture(name="report", scope="module")
def _report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("report")
    path = directory / "audit.jsonl"

    async def go() -> None:
        t = trail(path)
        await t.start()
        for i in range(N):
            await t.record(decision(i))
        await t.close()

    run(go())
    out = directory / "report.html"
    assert run_report(str(path), str(out), None, SECRET) == 0
    return out


def number(html: str, ident: str) -> int:
    match = re.search(rf'id="{ident}"[^>]*>([\d,]+)<', html)
    assert match, ident
    return int(match.group(1).replace(",", ""))


def test_report_shows_the_expected_totals(report: Path) -> None:
    """Requests, outcomes and withheld values add up to what was recorded."""
    html = report.read_text()
    assert number(html, "total-requests") == N
    assert number(html, "total-forwarded") == N // 4
    assert number(html, "total-redacted") == N // 4
    assert number(html, "total-refused") == N // 4
    assert number(html, "total-errors") == N // 4
    assert number(html, "total-withheld") == 2 * N // 4
    assert number(html, "total-segments") == 1
    assert 'id="verify-status" data-ok="True">Audit log intact' in html


def test_report_has_the_sections_a_privacy_officer_reads(report: Path) -> None:
    """Per client, module and day; top refusal reasons; most-withheld fields."""
    html = report.read_text()
    for ident in ("by-client", "by-module", "by-day", "refusal-reasons", "withheld-fields"):
        assert f'id="{ident}"' in html
    assert CLIENTS[0] in html and "restricted_criteria" in html
    assert "<svg" in html and html.count("<table") == 5


def test_report_is_self_contained(report: Path) -> None:
    """No script and nothing fetched from anywhere: it opens offline."""
    html = report.read_text()
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "@import" not in html and "url(" not in html


def test_everything_from_the_log_is_escaped(tmp_path: Path) -> None:
    """A hostile value in a hand-edited log cannot inject markup into the page."""
    evil = '<script>alert("x")</script>'
    stats = collect(
        [{"event": "request", "module": evil, "client": evil, "outcome": "refused",
          "reasons": [evil], "fields_withheld": {"names": [evil], "count": 1}, "ts": evil}]
    )  # fmt: skip
    path = tmp_path / "a.jsonl"
    run(trail(path).start())
    html = render_report(stats, verify_log(path), f"{tmp_path}/{evil}")
    assert "<script" not in html and "&lt;script&gt;" in html


def test_a_broken_log_is_flagged_at_the_top(tmp_path: Path) -> None:
    """The report still renders, with the verify failure and exit code 1."""
    path = tmp_path / "audit.jsonl"

    async def go() -> None:
        t = trail(path)
        await t.start()
        for i in range(4):
            await t.record(decision(i))
        await t.close()

    run(go())
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    out = tmp_path / "r.html"
    assert run_report(str(path), str(out), str(checkpoints_of(path)), SECRET) == 1
    html = out.read_text()
    assert "Audit log BROKEN" in html and 'id="verify-line">3<' in html
    assert number(html, "total-requests") == 3


def test_unreadable_log_exits_2(tmp_path: Path) -> None:
    """No log, no report."""
    assert run_report(str(tmp_path / "none.jsonl"), str(tmp_path / "r.html"), None, None) == 2
    assert not (tmp_path / "r.html").exists()


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", *args,
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip


needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} not installed: browser test skipped"
)


@needs_chromium
def test_browser_shows_the_totals(report: Path, tmp_path: Path) -> None:
    """Headless Chromium renders the page and its DOM carries the totals."""
    dom = chromium(tmp_path, "--dump-dom", report.as_uri()).stdout
    assert number(dom, "total-requests") == N
    assert number(dom, "total-refused") == N // 4
    assert "Audit log intact" in dom


@needs_chromium
def test_browser_screenshot_is_a_png(report: Path, tmp_path: Path) -> None:
    """The page paints: a screenshot is a non-empty PNG."""
    shot = tmp_path / "r.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", report.as_uri())
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
