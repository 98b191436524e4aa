"""The `rallypoint` command, run as a real process."""

from __future__ import annotations

import json
from pathlib import Path

from automerge import core
from automerge._automerge import Document

from tests.conftest import PASSPHRASE, run_cli


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_whole_session_from_the_command_line(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    created = json.loads(ok(run_cli(home, "init", "--workspace", "acme", "--user", "alice", "--node-name", "alpha", "--json")))
    assert created["user"] == "alice" and created["node_id"].count("-") == 2
    me = json.loads(ok(run_cli(home, "whoami", "--json")))
    assert (me["user"], me["role"], me["node_id"]) == ("alice", "admin", created["node_id"])
    ok(run_cli(home, "channel", "create", "general", "--purpose", "all hands"))
    root = json.loads(ok(run_cli(home, "post", "general", "hello @alice", "--json")))["id"]
    attachment = tmp_path / "notes.txt"
    attachment.write_text("field notes")
    reply = ok(run_cli(home, "post", "general", "a reply", "--reply-to", root, "--attach", str(attachment))).strip()
    ok(run_cli(home, "react", root, "👍"))
    ok(run_cli(home, "edit", root, "hello again"))
    messages = json.loads(ok(run_cli(home, "read", "general", "--json")))
    (top,) = messages
    assert set(top) >= {"id", "channel", "author", "author_key", "created_at", "text", "root_id", "edited_at", "deleted", "reactions", "files"}
    assert (top["id"], top["text"], top["author"], top["root_id"], top["deleted"]) == (root, "hello again", "alice", None, False)
    assert top["created_at"].endswith("Z") and top["edited_at"] is not None
    assert top["reactions"] == {"👍": ["alice"]}
    thread = json.loads(ok(run_cli(home, "read", "general", "--thread", root, "--json")))
    assert [m["id"] for m in thread] == [root, reply] and thread[1]["root_id"] == root
    (file,) = thread[1]["files"]
    assert (file["name"], file["size"]) == ("notes.txt", 11)
    saved = tmp_path / "saved.txt"
    ok(run_cli(home, "file", file["hash"], "--out", str(saved)))
    assert saved.read_text() == "field notes"
    ok(run_cli(home, "delete", reply))
    assert json.loads(ok(run_cli(home, "read", "general", "--thread", root, "--json")))[1]["deleted"] is True
    found = json.loads(ok(run_cli(home, "search", "again", "--json")))
    assert [m["id"] for m in found] == [root]
    listed = json.loads(ok(run_cli(home, "channel", "list", "--json")))
    assert [c["name"] for c in listed] == ["general"]
    exported = json.loads(ok(run_cli(home, "channel", "export", "general", "--automerge", str(tmp_path / "export"), "--json")))
    segment = next(e for e in exported if "seg" in e["document"])
    doc = Document.load(Path(segment["file"]).read_bytes())
    assert root in doc.keys(core.ROOT)
    audit = json.loads(ok(run_cli(home, "audit", "--verify", "--json")))
    assert audit["ok"] is True and audit["entries"] >= 2


def test_invite_and_join_across_two_homes(tmp_path: Path) -> None:
    alpha, bravo = tmp_path / "alpha", tmp_path / "bravo"
    ok(run_cli(alpha, "init", "--workspace", "acme", "--user", "alice"))
    stick = tmp_path / "stick" / "bravo.enroll"
    stick.parent.mkdir()
    invited = json.loads(ok(run_cli(alpha, "invite", "bravo", "--user", "bob", "--out", str(stick), "--json")))
    wrong = run_cli(bravo, "join", str(stick), "--code", "0000-0000-0000")
    assert wrong.returncode != 0 and "wrong enrollment code" in wrong.stderr
    joined = json.loads(ok(run_cli(bravo, "join", str(stick), "--code", invited["code"], "--json")))
    assert (joined["user"], joined["node_id"], joined["role"]) == ("bob", invited["node_id"], "member")


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    missing = run_cli(home, "whoami")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "rallypoint init" in missing.stderr
    ok(run_cli(home, "init", "--workspace", "acme", "--user", "alice"))
    again = run_cli(home, "init", "--workspace", "acme", "--user", "alice")
    assert again.returncode == 1 and "already holds a node" in again.stderr
    wrong = run_cli(home, "whoami", passphrase="wrong passphrase")
    assert wrong.returncode == 1 and wrong.stderr.strip() == "rallypoint: error: wrong passphrase"
    no_passphrase = run_cli(home, "whoami", passphrase=None)
    assert no_passphrase.returncode == 1 and "RALLYPOINT_PASSPHRASE" in no_passphrase.stderr
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    assert json.loads(ok(run_cli(home, "whoami", "--passphrase-file", str(tmp_path / "pass"), "--json", passphrase=None)))["user"] == "alice"
    unknown = run_cli(home, "read", "nowhere")
    assert unknown.returncode == 1 and "no channel" in unknown.stderr and unknown.stderr.count("\n") == 1
    bad_id = run_cli(home, "edit", "not-an-id", "text")
    assert bad_id.returncode == 1 and "not a message id" in bad_id.stderr


def test_terminal_output_neutralises_escape_sequences(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    ok(run_cli(home, "init", "--workspace", "acme", "--user", "alice"))
    ok(run_cli(home, "channel", "create", "general"))
    ok(run_cli(home, "post", "general", "evil \x1b]0;pwned\x07 \x1b[31mred"))
    shown = ok(run_cli(home, "read", "general"))
    assert "\x1b" not in shown and "\x07" not in shown and "\u241b]0;pwned\u2407" in shown
