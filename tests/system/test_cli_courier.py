"""The courier workflow with the real `rallypoint` command: three homes, one stick, a route."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr
    return result.stdout


def enroll(admin: Path, home: Path, node: str, user: str, tmp_path: Path) -> None:
    enrollment = tmp_path / f"{node}.enrollment"
    invited = json.loads(ok(run_cli(admin, "invite", node, "--user", user, "--out", str(enrollment), "--json")))
    ok(run_cli(home, "join", str(enrollment), "--code", invited["code"]))


def texts(home: Path, channel: str) -> list[str]:
    return [m["text"] for m in json.loads(ok(run_cli(home, "read", channel, "--limit", "100", "--json")))]


def test_a_stick_carried_round_a_route_converges_every_node(tmp_path: Path) -> None:
    alpha, bravo, charlie = tmp_path / "alpha", tmp_path / "bravo", tmp_path / "charlie"
    stick = tmp_path / "stick"
    stick.mkdir()
    ok(run_cli(alpha, "init", "--workspace", "acme", "--user", "alice", "--node-name", "alpha"))
    enroll(alpha, bravo, "bravo", "bob", tmp_path)
    enroll(alpha, charlie, "charlie", "carol", tmp_path)
    ok(run_cli(alpha, "channel", "create", "general"))
    ok(run_cli(alpha, "channel", "create", "ops", "--private"))
    ok(run_cli(alpha, "channel", "add-member", "ops", "carol"))
    ok(run_cli(alpha, "post", "general", "alpha says hi"))
    ok(run_cli(alpha, "post", "ops", "for carol's eyes"))

    first = json.loads(ok(run_cli(alpha, "courier", str(stick), "--json")))
    assert len(first["export"]["bundles"]) == 2
    preview = json.loads(ok(run_cli(bravo, "bundle", "import", "--from", str(stick), "--preview", "--json")))
    assert preview["preview"] and [c["name"] for c in preview["channels"]] == ["general"]  # ops never reaches bravo
    ok(run_cli(bravo, "courier", str(stick)))
    ok(run_cli(bravo, "post", "general", "bravo was here"))
    ok(run_cli(bravo, "courier", str(stick)))
    human = ok(run_cli(charlie, "courier", str(stick)))
    assert "Imported" in human and "#general" in human and "#ops" in human
    ok(run_cli(charlie, "post", "ops", "carol answers"))
    ok(run_cli(charlie, "courier", str(stick)))
    ok(run_cli(alpha, "courier", str(stick)))

    assert texts(alpha, "general") == texts(bravo, "general") == texts(charlie, "general") == ["alpha says hi", "bravo was here"]
    assert texts(alpha, "ops") == texts(charlie, "ops") == ["for carol's eyes", "carol answers"]
    assert run_cli(bravo, "read", "ops").returncode != 0

    # The stick names no node; bundle inspect needs no passphrase and shows only what anyone
    # holding the file can know; with --unlock, a recipient sees who sent it, when, for whom.
    node_ids = [json.loads(ok(run_cli(home, "whoami", "--json")))["node_id"] for home in (alpha, bravo, charlie)]
    leftovers = sorted((stick / "rallypoint").rglob("*.rpb"))  # alpha's last two, charlie's for bravo
    assert len(leftovers) == 3 and all(p.parent.name == "bundles" for p in leftovers)
    assert not any(node_id in str(path) for path in (stick / "rallypoint").rglob("*") for node_id in node_ids)
    clear = json.loads(ok(run_cli(alpha, "bundle", "inspect", str(leftovers[0]), "--json", passphrase=None)))
    # Format 4 when it carries audit trails (alpha serves an admin: its bundles acknowledge them), else 3.
    assert clear == {"file": str(leftovers[0]), "bytes": leftovers[0].stat().st_size, "format": leftovers[0].read_bytes()[8], "recipient_stanzas": 1, "opened": False}
    assert sorted(path.read_bytes()[8] for path in leftovers) == [3, 4, 4]
    human = ok(run_cli(alpha, "bundle", "inspect", str(leftovers[0]), passphrase=None))
    assert not any(node_id in human for node_id in node_ids) and "alpha" not in human
    opened = [json.loads(ok(run_cli(bravo, "bundle", "inspect", str(path), "--unlock", "--json"))) for path in leftovers]
    assert sorted(o["opened"] for o in opened) == [False, True, True]
    mine = next(o for o in opened if o.get("sender_name") == "alpha")
    assert (mine["sender"], mine["sender_name"], mine["recipients"]) == (node_ids[0], "alpha", [node_ids[1]])
    assert mine["created_at"] and mine["channels_acknowledged"] >= 1
    assert (mine["documents_as_changes"], mine["segments_whole"]) == (0, 0)  # alpha's last bundle: an acknowledgement only
    theirs = next(o for o in opened if not o["opened"])
    assert "sender" not in theirs and "not addressed" in theirs["refused"]

    audit = json.loads(ok(run_cli(charlie, "audit", "--json")))
    assert {"bundle_accepted"} <= {e["action"] for e in audit}


def alpha_and_bravo(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two homes in one workspace, and an empty stick."""
    alpha, bravo = tmp_path / "alpha", tmp_path / "bravo"
    stick = tmp_path / "stick"
    stick.mkdir()
    ok(run_cli(alpha, "init", "--workspace", "acme", "--user", "alice", "--node-name", "alpha"))
    enroll(alpha, bravo, "bravo", "bob", tmp_path)
    return alpha, bravo, stick


def test_rejected_bundles_exit_non_zero_and_are_quarantined(tmp_path: Path) -> None:
    alpha, bravo, stick = alpha_and_bravo(tmp_path)
    ok(run_cli(alpha, "bundle", "export", "--to", str(stick)))
    (bundle,) = list((stick / "rallypoint").glob("bundles/*.rpb"))
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    result = run_cli(bravo, "bundle", "import", "--from", str(stick))
    assert result.returncode == 3
    assert "Rejected 1 bundle(s)" in result.stdout and "Tampered" in result.stdout
    assert list((bravo / "quarantine").glob("*.rpb"))
    missing = run_cli(bravo, "bundle", "import", "--from", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no such folder" in missing.stderr


def test_node_revoke_reaches_the_node_which_wipes_itself(tmp_path: Path) -> None:
    alpha, bravo, stick = alpha_and_bravo(tmp_path)
    ok(run_cli(alpha, "channel", "create", "general"))
    ok(run_cli(alpha, "courier", str(stick)))
    ok(run_cli(bravo, "courier", str(stick)))
    ok(run_cli(alpha, "node", "revoke", "bravo", "--reason", "stolen"))
    nodes = json.loads(ok(run_cli(alpha, "node", "list", "--json")))
    assert [n["revoked"] for n in nodes if n["name"] == "bravo"] == [True]
    refused = run_cli(alpha, "courier", str(stick))  # bravo's last bundle is still on the stick
    assert refused.returncode == 3 and "RevokedSender" in refused.stdout
    wiping = run_cli(bravo, "courier", str(stick), "--json")
    assert wiping.returncode == 4 and "revoked" in wiping.stderr
    wiped = json.loads(wiping.stdout)
    assert wiped["import"]["wiped"] is True and wiped["export"] is None
    # Exit status 4: wiped, nothing to retry (rallypoint.service does not restart on it).
    after = run_cli(bravo, "read", "general")
    assert after.returncode == 4 and "revoked" in after.stderr
    serve = run_cli(bravo, "serve", "--port", "0", "--no-mdns")
    assert serve.returncode == 4 and "revoked" in serve.stderr
