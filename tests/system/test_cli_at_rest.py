"""Encryption at rest from the command line: `rallypoint data-key --out FILE` and a relay that
opens with `--data-key-file` instead of the passphrase, in real processes."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

from tests.conftest import PASSPHRASE, REPO, cli_command, run_cli
from tests.plain_store import files_holding


def _run(home: Path, *args: str, user_secret: str | None = None) -> subprocess.CompletedProcess[str]:
    """`rallypoint ARGS` without a passphrase (a relay's environment)."""
    command, env = cli_command(home, None)
    if user_secret is not None:
        env["RALLYPOINT_USER_SECRET"] = user_secret
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)


def test_a_relay_opens_with_its_data_key_file_and_refuses_a_wrong_or_open_one(tmp_path: Path) -> None:
    home, key = tmp_path / "home", tmp_path / "relay.key"
    assert run_cli(home, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    assert run_cli(home, "channel", "create", "general").returncode == 0
    assert run_cli(home, "post", "general", "marmalade-3c1e at dawn").returncode == 0
    written = run_cli(home, "data-key", "--out", str(key), "--json")
    assert written.returncode == 0, written.stderr
    assert json.loads(written.stdout) == {"file": str(key)} and stat.S_IMODE(key.stat().st_mode) == 0o600
    again = run_cli(home, "data-key", "--out", str(key))
    assert again.returncode == 1 and "exists already" in again.stderr

    read = _run(home, "read", "general", "--data-key-file", str(key), "--json", user_secret=PASSPHRASE)
    assert read.returncode == 0, read.stderr
    assert [m["text"] for m in json.loads(read.stdout)] == ["marmalade-3c1e at dawn"]
    no_secret = _run(home, "read", "general", "--data-key-file", str(key))
    assert no_secret.returncode == 1 and "signs in with their own secret" in no_secret.stderr

    key.chmod(0o644)
    exposed = _run(home, "read", "general", "--data-key-file", str(key), user_secret=PASSPHRASE)
    assert exposed.returncode == 1 and "readable by other users" in exposed.stderr
    key.chmod(0o600)
    before = sorted((p.name, p.read_bytes()) for p in home.iterdir() if p.is_file())
    wrong = tmp_path / "wrong.key"
    wrong.write_text("00" * 32 + "\n")
    wrong.chmod(0o600)
    refused = _run(home, "read", "general", "--data-key-file", str(wrong), "--json", user_secret=PASSPHRASE)
    assert refused.returncode == 1 and json.loads(refused.stderr)["kind"] == "WrongKey"
    assert sorted((p.name, p.read_bytes()) for p in home.iterdir() if p.is_file()) == before
    assert files_holding([b"marmalade-3c1e"], home) == {}
    audit = run_cli(home, "audit")
    assert "data_key_exported" in audit.stdout
