"""``audit verify`` and ``audit report`` over the chains of many writers: a directory of
``*.jsonl`` logs (one per worker or pod), or several files; each chain and each checkpoints
file is checked on its own, and the report merges their numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.audit.helpers import SECRET, checkpoints_of, run, write_segment

CLI = [sys.executable, "-m", "gateway", "audit"]


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "GATEWAY_SECRET": SECRET.decode()},
    )  # fmt: skip


def three_workers(directory: Path) -> list[Path]:
    """What ``serve --workers 3`` leaves: a log, its checkpoints and its lock per worker."""
    directory.mkdir(exist_ok=True)
    logs = []
    for w, count in ((1, 4), (2, 2), (3, 3)):
        log = directory / f"audit-pod-a-w{w}.jsonl"
        run(write_segment(log, count, instance=f"pod-a-w{w}"))
        (directory / f"{log.name}.lock").touch()
        logs.append(log)
    return logs


def test_a_directory_verifies_each_chain_and_names_each_file(tmp_path: Path) -> None:
    logs = three_workers(tmp_path / "logs")
    p = audit("verify", str(tmp_path / "logs"))
    assert p.returncode == 0, p.stdout
    lines = p.stdout.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [str(log) for log in logs]
    assert all("audit log intact" in line and "checkpoints verified" in line for line in lines)
    assert "5 entries" in lines[0]  # four requests and the segment start


def test_one_edited_chain_among_many_fails_and_is_named(tmp_path: Path) -> None:
    logs = three_workers(tmp_path / "logs")
    edited = logs[1].read_text().replace('"status":200', '"status":201', 1)
    logs[1].write_text(edited)
    p = audit("verify", *map(str, logs))
    assert p.returncode == 1
    broken = [line for line in p.stdout.splitlines() if "BROKEN" in line]
    assert len(broken) == 1 and broken[0].startswith(f"{logs[1]}: "), p.stdout


def test_a_deleted_log_is_caught_by_its_checkpoints_left_behind(tmp_path: Path) -> None:
    """Every chain of a directory is checked, including the one someone removed."""
    logs = three_workers(tmp_path / "logs")
    logs[2].unlink()
    p = audit("verify", str(tmp_path / "logs"))
    assert p.returncode == 1
    assert f"{checkpoints_of(logs[2])}: checkpoints BROKEN" in p.stdout, p.stdout


def test_a_cut_tail_in_one_of_many_is_caught_by_its_own_checkpoints(tmp_path: Path) -> None:
    logs = three_workers(tmp_path / "logs")
    lines = logs[0].read_bytes().splitlines(keepends=True)
    logs[0].write_bytes(b"".join(lines[:-2]))
    p = audit("verify", str(tmp_path / "logs"))
    assert p.returncode == 1 and "truncated" in p.stdout, p.stdout


def test_one_checkpoints_file_for_several_logs_is_refused(tmp_path: Path) -> None:
    logs = three_workers(tmp_path / "logs")
    p = audit("verify", *map(str, logs), "--checkpoints", str(checkpoints_of(logs[0])))
    assert p.returncode == 2 and "one log" in p.stdout


def test_report_merges_the_logs(tmp_path: Path) -> None:
    three_workers(tmp_path / "logs")
    out = tmp_path / "report.html"
    p = audit("report", str(tmp_path / "logs"), "--html", str(out))
    assert p.returncode == 0, p.stdout
    html = out.read_text()
    total = re.search(r'id="total-requests">([0-9,]+)<', html)
    segments = re.search(r'id="total-segments">([0-9,]+)<', html)
    assert total and total.group(1) == "9" and segments and segments.group(1) == "3"
    assert "3 of 3 audit logs intact" in html


def test_report_over_a_broken_log_says_so_and_still_writes(tmp_path: Path) -> None:
    logs = three_workers(tmp_path / "logs")
    shutil.copy(logs[0], logs[1])  # another chain in its place
    out = tmp_path / "report.html"
    p = audit("report", str(tmp_path / "logs"), "--html", str(out))
    assert p.returncode == 1 and out.exists()
    assert 'data-ok="False"' in out.read_text()
