"""`rallypoint channel ...` and `rallypoint dm` as an operator types them, across two homes
that meet by courier: same-named channels made apart, channel admin actions, direct messages."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.system.test_cli_courier import enroll, ok


def test_channels_made_apart_direct_messages_and_channel_admin_from_the_command_line(tmp_path: Path) -> None:
    alpha, bravo, stick = tmp_path / "alpha", tmp_path / "bravo", tmp_path / "stick"
    stick.mkdir()
    ok(run_cli(alpha, "init", "--workspace", "acme", "--user", "alice", "--node-name", "alpha"))
    enroll(alpha, bravo, "bravo", "bob", tmp_path)
    ok(run_cli(alpha, "channel", "create", "ops"))
    ok(run_cli(bravo, "channel", "create", "ops"))
    ok(run_cli(alpha, "post", "ops", "alpha ops"))
    ok(run_cli(alpha, "dm", "bob", "-m", "hi bob"))
    ok(run_cli(bravo, "dm", "alice", "-m", "hi alice"))
    for home in (alpha, bravo, alpha):
        ok(run_cli(home, "courier", str(stick)))

    listed = json.loads(ok(run_cli(alpha, "channel", "list", "--json")))
    ops = sorted(c["label"] for c in listed if c["name"] == "ops")
    assert len(ops) == 2 and ops[0].startswith("#ops (alice, ") and ops[1].startswith("#ops (bob, ")
    ambiguous = run_cli(alpha, "read", "ops")
    assert ambiguous.returncode == 1 and "2 channels are called #ops" in ambiguous.stderr
    mine = next(c for c in listed if c["label"].startswith("#ops (alice"))
    assert "alpha ops" in ok(run_cli(alpha, "read", f"ops~{mine['id'][:4]}"))
    assert f"#ops~{mine['id'][:4]}" in ambiguous.stderr
    ok(run_cli(alpha, "channel", "rename", f"ops~{mine['id'][:4]}", "ops-alpha"))
    assert "alpha ops" in ok(run_cli(alpha, "read", "ops-alpha"))
    (dm,) = [c for c in listed if c["kind"] == "direct"]
    assert dm["label"] == "@bob"
    assert sorted(m["text"] for m in json.loads(ok(run_cli(alpha, "read", "@bob", "--json")))) == ["hi alice", "hi bob"]
    assert "@bob" in ok(run_cli(alpha, "dm"))

    ok(run_cli(alpha, "channel", "read-only", "ops-alpha"))
    ok(run_cli(alpha, "channel", "admin", "ops-alpha", "bob"))
    members = json.loads(ok(run_cli(alpha, "channel", "members", "ops-alpha", "--json")))
    assert [(m["name"], m["role"]) for m in members] == [("alice", "channel admin"), ("bob", "channel admin")]
    denied = run_cli(bravo, "channel", "archive", f"ops~{mine['id'][:4]}")  # bravo has not heard yet
    assert denied.returncode == 1 and "channel admin" in denied.stderr
    actions = [e["action"] for e in json.loads(ok(run_cli(alpha, "audit", "--json")))]
    assert {"channel_renamed", "channel_read_only_set", "channel_admin_granted", "direct_started"} <= set(actions)


def test_attributes_and_a_channel_requirement_from_the_command_line(tmp_path: Path) -> None:
    alpha = tmp_path / "alpha"
    ok(run_cli(alpha, "init", "--workspace", "acme", "--user", "alice", "--node-name", "alpha"))
    ok(run_cli(alpha, "user", "add", "dave"))
    ok(run_cli(alpha, "user", "attributes", "alice", "clearance=secret", "unit=north"))
    ok(run_cli(alpha, "channel", "create", "intel", "--private"))
    ok(run_cli(alpha, "channel", "require", "intel", "clearance=secret"))
    refused = run_cli(alpha, "channel", "add-member", "intel", "dave")
    assert refused.returncode == 1 and "dave lacks the attributes #intel requires (clearance=secret)" in refused.stderr
    bad = run_cli(alpha, "user", "attributes", "dave", "clearance")
    assert bad.returncode == 1 and "key=value" in bad.stderr
    ok(run_cli(alpha, "user", "attributes", "dave", "clearance=secret"))
    ok(run_cli(alpha, "channel", "add-member", "intel", "dave"))
    users = {u["name"]: u["attributes"] for u in json.loads(ok(run_cli(alpha, "user", "list", "--json")))}
    assert users == {"alice": {"clearance": "secret", "unit": "north"}, "dave": {"clearance": "secret"}}
    (intel,) = json.loads(ok(run_cli(alpha, "channel", "list", "--json")))
    assert intel["requires"] == {"clearance": "secret"} and intel["members"] == ["alice", "dave"]
    ok(run_cli(alpha, "user", "attributes", "alice"))  # cleared: alice no longer reads it
    assert json.loads(ok(run_cli(alpha, "channel", "list", "--json"))) == []
