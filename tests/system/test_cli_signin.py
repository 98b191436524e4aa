"""`--as` with a user's own secret and the `mfa` commands, run as real processes."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pyotp

from tests.conftest import REPO, cli_command, run_cli

BOB_OWN = "bob's own secret"


def cli(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    command, base = cli_command(home)
    return subprocess.run([*command, *args], env={**base, **env}, capture_output=True, text=True, input=stdin, timeout=60, cwd=REPO)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_as_a_user_with_their_own_secret_and_mfa_from_the_command_line(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    ok(run_cli(home, "init", "--workspace", "acme", "--user", "alice", "--node-name", "alpha"))
    ok(run_cli(home, "channel", "create", "general"))
    added = json.loads(ok(run_cli(home, "user", "add", "bob", "--json")))
    first = added["initial_secret"]
    assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}", first)
    refused = run_cli(home, "post", "general", "as bob", "--as", "bob")  # no secret, no terminal
    assert refused.returncode == 1 and "no secret for bob" in refused.stderr
    wrong = cli(home, "post", "general", "as bob", "--as", "bob", RALLYPOINT_USER_SECRET="correct horse battery")
    assert wrong.returncode == 1 and "wrong user name or secret" in wrong.stderr  # the passphrase is not bob's
    due = cli(home, "post", "general", "as bob", "--as", "bob", RALLYPOINT_USER_SECRET=first)
    assert due.returncode == 1 and "rallypoint user change-secret --as bob" in due.stderr
    ok(cli(home, "user", "change-secret", "--as", "bob", RALLYPOINT_USER_SECRET=first, RALLYPOINT_NEW_SECRET=BOB_OWN))
    ok(cli(home, "post", "general", "from bob", "--as", "bob", RALLYPOINT_USER_SECRET=BOB_OWN))
    assert json.loads(ok(run_cli(home, "read", "general", "--json")))[-1]["author"] == "bob"

    ok(run_cli(home, "mfa", "require", "member"))
    must = cli(home, "post", "general", "again", "--as", "bob", RALLYPOINT_USER_SECRET=BOB_OWN)
    assert must.returncode == 1 and "rallypoint mfa enrol --as bob" in must.stderr
    command, env = cli_command(home)
    enrol = subprocess.Popen(
        [*command, "mfa", "enrol", "--as", "bob"], env={**env, "RALLYPOINT_USER_SECRET": BOB_OWN}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    assert enrol.stdout is not None and enrol.stdin is not None
    printed = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("Or type this secret" in line for line in printed):
        printed.append(enrol.stdout.readline())
    secret = printed[-1].split(":", 1)[1].replace(" ", "").strip()
    assert any("▀" in line or "▄" in line for line in printed) and any(line.startswith("otpauth://totp/Rallypoint:bob") for line in printed)
    app = pyotp.TOTP(secret)  # what the phone's authenticator app computes from the QR code
    out, err = enrol.communicate(app.now() + "\n", timeout=60)
    assert enrol.returncode == 0, err
    codes = re.findall(r"^    ([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})$", out, re.MULTILINE)
    assert len(codes) == 10

    no_code = cli(home, "whoami", "--as", "bob", RALLYPOINT_USER_SECRET=BOB_OWN)
    assert no_code.returncode == 1 and "--totp CODE" in no_code.stderr
    me = json.loads(ok(cli(home, "whoami", "--as", "bob", "--totp", codes[0], "--json", RALLYPOINT_USER_SECRET=BOB_OWN)))
    assert me["user"] == "bob"
    status = json.loads(ok(cli(home, "mfa", "status", "--as", "bob", "--json", RALLYPOINT_USER_SECRET=BOB_OWN, RALLYPOINT_TOTP=codes[1])))
    assert (status["enrolled"], status["recovery_codes_left"], status["required_for"]) == (True, 8, "member")
    ok(run_cli(home, "mfa", "reset", "bob"))
    ok(run_cli(home, "mfa", "require", "off"))
    assert json.loads(ok(cli(home, "whoami", "--as", "bob", "--json", RALLYPOINT_USER_SECRET=BOB_OWN)))["user"] == "bob"
    actions = [e["action"] for e in json.loads(ok(run_cli(home, "audit", "--json")))]
    assert {"mfa_enrolled", "mfa_reset", "mfa_required_set", "recovery_code_used", "sign_in_failed", "secret_changed"} <= set(actions)


def test_init_with_a_separate_secret_for_the_first_user(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    ok(cli(home, "init", "--workspace", "acme", "--user", "alice", "--node-name", "alpha", RALLYPOINT_USER_SECRET="alice's own secret"))
    refused = run_cli(home, "whoami")  # the passphrase is not alice's secret here
    assert refused.returncode == 1 and "wrong user name or secret" in refused.stderr
    assert json.loads(ok(cli(home, "whoami", "--json", RALLYPOINT_USER_SECRET="alice's own secret")))["user"] == "alice"
