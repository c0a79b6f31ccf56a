"""The checkpoint commands as an auditor and an operator run them: real processes, exit codes.

``audit keygen`` makes the key pair, ``serve --checkpoint-key/--checkpoint-file`` signs with
it wherever the checkpoints are kept, and ``audit verify --public-key`` checks a log with the
public key alone: no ``GATEWAY_SECRET``, no secret file anywhere near.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.keys import Ed25519SigningKey, key_id
from tests.audit.helpers import SECRET, checkpoints_of, run, write_segment
from tests.conftest import AUTH, Crm
from tests.servers import free_port

CLI = [sys.executable, "-m", "gateway"]
LEGACY = Path(__file__).parent / "data" / "legacy"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any GATEWAY_* setting: no secret can leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**env, **extra}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env=env or clean_env()
    )


def keygen(directory: Path) -> tuple[str, Path, Path]:
    p = cli("audit", "keygen", str(directory))
    assert p.returncode == 0, p.stderr
    kid = p.stdout.split()[1]
    return kid, directory / f"{kid}.key", directory / f"{kid}.pub"


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.fixture(name="keys", scope="module")
def _keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    return keygen(tmp_path_factory.mktemp("keys"))


def signed_log(directory: Path, private: Path, count: int = 5) -> Path:
    path = directory / "audit.jsonl"
    run(write_segment(path, count, signing_key=Ed25519SigningKey.load(private)))
    return path


def test_keygen_prints_the_key_id_and_writes_both_files(tmp_path: Path) -> None:
    kid, private, public = keygen(tmp_path / "k")
    assert os.stat(private).st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in public.read_bytes() and b"PRIVATE KEY" in private.read_bytes()
    assert Ed25519SigningKey.load(private).kid == kid
    (tmp_path / "file").write_text("")
    assert "cannot write the key pair" in one_error_line(
        cli("audit", "keygen", str(tmp_path / "file"))
    )


def test_c64_verify_with_only_the_public_key_exits_0(
    tmp_path: Path, keys: tuple[str, Path, Path]
) -> None:
    """The auditor has the log, the checkpoints and the public key: nothing secret."""
    kid, private, public = keys
    path = signed_log(tmp_path, private)
    assert not list(tmp_path.glob(".gateway-secret*"))
    p = cli("audit", "verify", str(path), "--public-key", str(public))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("audit log intact: 6 entries, 1 segments")
    assert f"signed by key_id {kid}" in p.stdout and "unchecked" not in p.stdout


def test_c65_verify_names_the_first_bad_line_and_exits_1(
    tmp_path: Path, keys: tuple[str, Path, Path]
) -> None:
    _, private, public = keys
    path = signed_log(tmp_path, private)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"status":200', b'"status":201', 1)
    path.write_bytes(b"".join(lines))
    p = cli("audit", "verify", str(path), "--public-key", str(public))
    assert p.returncode == 1
    assert p.stdout.strip() == f"audit log BROKEN at line 3 of {path}: hash mismatch (entry edited)"


def test_a_checkpoint_signed_by_a_key_not_in_the_ring_is_reported(
    tmp_path: Path, keys: tuple[str, Path, Path]
) -> None:
    kid, private, _ = keys
    path = signed_log(tmp_path, private)
    _, _, other = keygen(tmp_path / "other")
    p = cli("audit", "verify", str(path), "--public-key", str(other))
    assert p.returncode == 1
    cps = checkpoints_of(path)
    assert p.stdout.strip() == (
        f"audit log BROKEN at line 1 of {cps}: "
        f"checkpoint signed by a key not in the key ring (key_id '{kid}')"
    )


def test_c73_verify_with_the_old_and_the_new_public_key_after_a_rotation(
    tmp_path: Path, keys: tuple[str, Path, Path]
) -> None:
    old_kid, old_private, old_public = keys
    new_kid, new_private, new_public = keygen(tmp_path / "new")
    path = signed_log(tmp_path, old_private, 3)
    run(write_segment(path, 3, start=3, signing_key=Ed25519SigningKey.load(new_private)))
    both = cli(
        "audit", "verify", str(path), "--public-key", str(old_public), "--public-key",
        str(new_public),
    )  # fmt: skip
    assert both.returncode == 0, both.stdout
    assert f"signed by key_id {', '.join(sorted((old_kid, new_kid)))}" in both.stdout
    only_new = cli("audit", "verify", str(path), "--public-key", str(new_public))
    assert only_new.returncode == 1 and f"(key_id '{old_kid}')" in only_new.stdout


def test_explicit_keys_are_the_whole_ring(tmp_path: Path, keys: tuple[str, Path, Path]) -> None:
    """A secret lying next to the log (which whoever can write the log may also hold) is
    not trusted once the auditor names the keys: HMAC checkpoints then fail."""
    _, _, public = keys
    path = tmp_path / "audit.jsonl"
    run(write_segment(path, 3))  # HMAC with SECRET
    (tmp_path / ".gateway-secret").write_bytes(SECRET + b"\n")
    assert cli("audit", "verify", str(path)).returncode == 0  # today's discovery still works
    p = cli("audit", "verify", str(path), "--public-key", str(public))
    assert p.returncode == 1 and f"(key_id '{key_id(SECRET)}')" in p.stdout
    secret_file = tmp_path / "auditor-copy-of-secret"
    secret_file.write_bytes(SECRET)
    p = cli("audit", "verify", str(path), "--public-key", str(public), "--secret-file",
            str(secret_file))  # fmt: skip
    assert p.returncode == 0, p.stdout


def test_older_format_checkpoints_verify_from_the_cli(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    log = LEGACY / "audit.jsonl"
    p = cli("audit", "verify", str(log), "--secret-file", str(secret_file))
    assert p.returncode == 0 and "4 checkpoints verified" in p.stdout, p.stdout
    p = cli("audit", "verify", str(log), env=clean_env(GATEWAY_SECRET=SECRET.decode()))
    assert p.returncode == 0 and "unchecked" not in p.stdout, p.stdout


def test_key_options_that_cannot_work_exit_2_with_one_line(
    tmp_path: Path, keys: tuple[str, Path, Path]
) -> None:
    _, private, public = keys
    path = signed_log(tmp_path, private)
    assert "is a private key" in one_error_line(
        cli("audit", "verify", str(path), "--public-key", str(private))
    )
    assert "cannot read key file" in one_error_line(
        cli("audit", "verify", str(path), "--public-key", str(tmp_path / "nope.pub"))
    )
    checkpoints_of(path).unlink()  # nothing to check the key against
    p = cli("audit", "verify", str(path), "--public-key", str(public))
    assert p.returncode == 2 and p.stdout.startswith("audit log unverifiable: no checkpoints")


def test_verify_finds_the_checkpoint_file_from_the_environment(
    tmp_path: Path, keys: tuple[str, Path, Path]
) -> None:
    """GATEWAY_CHECKPOINT_FILE is read by verify as by serve; a cut tail is found there."""
    _, private, public = keys
    path = signed_log(tmp_path, private)
    store = tmp_path / "store.checkpoints"
    shutil.move(checkpoints_of(path), store)
    env = clean_env(GATEWAY_CHECKPOINT_FILE=str(store))
    assert cli("audit", "verify", str(path), "--public-key", str(public), env=env).returncode == 0
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
    p = cli("audit", "verify", str(path), "--public-key", str(public), env=env)
    assert p.returncode == 1 and f"of {store}: log ends before checkpoint seq 6" in p.stdout


# -- serve ----------------------------------------------------------------------------------


def serve(crm: Crm, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Start ``serve``, send two requests, SIGTERM it; its stdout and stderr."""
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--upstream", crm.url, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or clean_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/_gateway/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        for _ in range(2):
            r = httpx.get(url + "/crm/v8/settings/modules", headers=AUTH, timeout=10)
            assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), err
    return out.decode(), err.decode()


def test_serve_on_stdout_signs_checkpoints_into_the_checkpoint_file(
    crm: Crm, tmp_path: Path, keys: tuple[str, Path, Path]
) -> None:
    """No --audit-log: entries on stdout, checkpoints in --checkpoint-file, signed with the
    Ed25519 key; two runs captured together verify with the public key alone."""
    kid, private, public = keys
    cps = tmp_path / "store" / "checkpoints"
    cps.parent.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    args = ("--checkpoint-file", str(cps), "--checkpoint-key", str(private))
    env = clean_env(GATEWAY_SECRET_FILE=str(work / ".gateway-secret"))
    first, _ = serve(crm, *args, env=env)
    second, _ = serve(crm, *args, env=env)
    captured = tmp_path / "captured.jsonl"
    captured.write_text(first + second)
    bodies = [orjson.loads(x) for x in cps.read_bytes().splitlines()]
    assert bodies and all(b["key_id"] == kid and b["alg"] == "ed25519" for b in bodies)
    p = cli("audit", "verify", str(captured), "--checkpoints", str(cps), "--public-key",
            str(public))  # fmt: skip
    assert p.returncode == 0, p.stdout
    assert p.stdout.startswith("audit log intact: 6 entries, 2 segments")


def test_serve_writes_checkpoints_where_configured_and_not_beside_the_log(
    crm: Crm, tmp_path: Path
) -> None:
    """GATEWAY_CHECKPOINT_FILE moves them; HMAC with the secret stays the default kind."""
    log, cps = tmp_path / "logs" / "audit.jsonl", tmp_path / "store" / "cps"
    log.parent.mkdir(), cps.parent.mkdir()
    env = clean_env(GATEWAY_CHECKPOINT_FILE=str(cps))
    serve(crm, "--audit-log", str(log), env=env)
    assert cps.exists() and not checkpoints_of(log).exists()
    assert {orjson.loads(x)["alg"] for x in cps.read_bytes().splitlines()} == {"hmac-sha256"}
    verify_env = clean_env(
        GATEWAY_CHECKPOINT_FILE=str(cps), GATEWAY_SECRET_FILE=str(log.parent / ".gateway-secret")
    )
    p = cli("audit", "verify", str(log), env=verify_env)
    assert p.returncode == 0 and "unchecked" not in p.stdout, p.stdout


def test_serve_refuses_a_bad_checkpoint_setting_with_one_line(
    tmp_path: Path, keys: tuple[str, Path, Path]
) -> None:
    _, _, public = keys
    base = ("serve", "--upstream", "http://127.0.0.1:9")
    env = clean_env(GATEWAY_SECRET_FILE=str(tmp_path / ".gateway-secret"))
    assert "not an unencrypted PEM private key" in one_error_line(
        cli(*base, "--checkpoint-key", str(public), env=env)
    )
    assert "cannot read key file" in one_error_line(
        cli(*base, "--checkpoint-key", str(tmp_path / "missing.key"), env=env)
    )
    log = tmp_path / "audit.jsonl"
    assert "--checkpoint-file" in one_error_line(
        cli(*base, "--audit-log", str(log), "--checkpoint-file", str(log) + ".1", env=env)
    )
    assert not (tmp_path / ".gateway-secret").exists()
