"""`rallypoint terms` as a real process: terms published on alpha reach bravo by courier, bravo's
user is refused with an error that names the commands showing and accepting them, accepts, and
alpha's `terms status` then shows the acceptance with bravo's node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import run_cli


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_terms_from_publishing_to_acceptance_across_two_homes(tmp_path: Path) -> None:
    alpha, bravo, stick = tmp_path / "alpha", tmp_path / "bravo", tmp_path / "stick"
    stick.mkdir()
    ok(run_cli(alpha, "init", "--workspace", "acme", "--user", "alice", "--node-name", "alpha"))
    invited = json.loads(ok(run_cli(alpha, "invite", "bravo", "--user", "bob", "--out", str(tmp_path / "bravo.enroll"), "--json")))
    ok(run_cli(bravo, "join", str(tmp_path / "bravo.enroll"), "--code", invited["code"]))
    ok(run_cli(alpha, "channel", "create", "general"))
    text = tmp_path / "terms.txt"
    text.write_text("Be kind.\nReport lost sticks.\n")
    published = json.loads(ok(run_cli(alpha, "terms", "publish", "--version", "1", "--title", "Acceptable use", str(text), "--json")))
    assert (published["version"], published["publisher"]) == (1, "alice")
    ok(run_cli(alpha, "courier", str(stick)))
    ok(run_cli(bravo, "courier", str(stick)))

    refused = run_cli(bravo, "post", "general", "hello")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "rallypoint terms show" in refused.stderr and "rallypoint terms accept" in refused.stderr
    assert refused.stderr.count("\n") == 1  # one line
    as_json = json.loads(run_cli(bravo, "read", "general", "--json").stderr)
    assert as_json["kind"] == "TermsNotAccepted" and as_json["exit"] == 1

    shown = ok(run_cli(bravo, "terms", "show"))
    assert "version 1: Acceptable use" in shown and "Report lost sticks." in shown and "have not accepted" in shown
    accepted = json.loads(ok(run_cli(bravo, "terms", "accept", "--version", "1", "--json")))
    assert (accepted["user"], accepted["accepted_version"], accepted["node"]) == ("bob", 1, "bravo")
    ok(run_cli(bravo, "post", "general", "hello"))

    ok(run_cli(bravo, "courier", str(stick)))
    ok(run_cli(alpha, "courier", str(stick)))
    status = json.loads(ok(run_cli(alpha, "terms", "status", "--json")))
    users = {row["user"]: row for row in status["users"]}
    assert status["pending"] == []
    assert (users["bob"]["accepted_version"], users["bob"]["node"], users["bob"]["node_id"]) == (1, "bravo", invited["node_id"])
    member = run_cli(bravo, "terms", "status")
    assert member.returncode == 1 and "needs the admin role" in member.stderr
