"""The audit log is append-only, hash-chained and signed by the node's key: edits, deletions
and reorderings show, also when the chain was recomputed by someone without the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import audit, crypto
from appliance.errors import WrongPassphrase
from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE, connect_node_db, make_workspace, node_engine, run_cli, sync_all

NODE_KEY = crypto.new_signing_key(bytes(range(32)))
NODE_PUB = bytes(NODE_KEY.verify_key)


def chain(n: int) -> list[audit.AuditEntry]:
    entries: list[audit.AuditEntry] = []
    for i in range(n):
        entries.append(audit.make_entry(entries[-1] if entries else None, 1000 + i, "actor", f"action{i}", {"i": i}, NODE_KEY))
    return entries


@given(st.integers(min_value=2, max_value=12), st.data())
def test_any_edit_delete_or_swap_breaks_the_chain(n: int, data: st.DataObject) -> None:
    entries = chain(n)
    assert audit.verify_chain(entries, NODE_PUB).ok
    i = data.draw(st.integers(min_value=0, max_value=n - 2))
    edited = list(entries)
    edited[i] = audit.AuditEntry(**{**entries[i].__dict__, "detail": '{"i":999}'})
    assert not audit.verify_chain(edited, NODE_PUB).ok
    assert not audit.verify_chain(entries[:i] + entries[i + 1 :], NODE_PUB).ok
    swapped = list(entries)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    assert not audit.verify_chain(swapped, NODE_PUB).ok


def recomputed(entries: list[audit.AuditEntry], i: int, detail: str, *, strip: bool = False) -> list[audit.AuditEntry]:
    """Entry `i` edited and the hash chain recomputed from there on, as anyone can without the
    key; with `strip`, the signatures from there on dropped too."""
    out = entries[:i]
    for entry in entries[i:]:
        prev = out[-1].hash if out else audit.GENESIS
        text = detail if entry.seq == entries[i].seq else entry.detail
        digest = audit.entry_hash(entry.seq, entry.at, entry.actor, entry.action, text, prev)
        out.append(audit.AuditEntry(entry.seq, entry.at, entry.actor, entry.action, text, prev, digest, None if strip else entry.signature))
    return out


@given(st.integers(min_value=2, max_value=12), st.data())
def test_a_recomputed_chain_fails_at_the_edited_entry(n: int, data: st.DataObject) -> None:
    entries = chain(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    for strip in (False, True):
        verdict = audit.verify_chain(recomputed(entries, i, '{"i":999}', strip=strip), NODE_PUB)
        assert not verdict.ok and verdict.count == i
        assert verdict.problem is not None and verdict.problem.startswith(f"entry {i + 1} ")
    other = crypto.new_signing_key(bytes(32))
    assert audit.verify_chain(entries, bytes(other.verify_key)).problem == "entry 1 was altered: its signature by this node's key does not verify"


def test_unsigned_entries_verify_only_as_legacy_or_as_failed_unlocks_covered_later() -> None:
    legacy = [audit.make_entry(None, 1, "-", "unlock_failed", {}, None)]
    legacy.append(audit.AuditEntry(**{**audit.make_entry(legacy[0], 2, "a", "init", {}, NODE_KEY).__dict__, "signature": None}))
    signed = audit.make_entry(legacy[-1], 3, "a", "backup", {}, NODE_KEY)
    failed = audit.make_entry(signed, 4, "-", "unlock_failed", {}, None)
    verdict = audit.verify_chain([*legacy, signed, failed], NODE_PUB, legacy_until=2)
    assert (verdict.ok, verdict.legacy, verdict.uncovered) == (True, 2, 1)
    assert audit.verify_chain([*legacy, signed], NODE_PUB).problem == "entry 2 is not signed by this node's key: it was written or rewritten without it"
    with pytest.raises(ValueError):
        audit.make_entry(signed, 5, "a", "backup", {}, None)


async def _node_with_history(home: Path) -> None:
    node = await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    async with node:
        await node.directory.add_user("bob")
        await node.directory.set_role("bob", "observer")
        await node.chat.create_channel("general")
    with pytest.raises(WrongPassphrase):
        await Node.open(home, "wrong passphrase")
    # The store cannot be opened to record it then: the next unlock audits the attempt.
    await (await Node.open(home, PASSPHRASE)).close()


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE audit_log SET detail = '{\"user\":\"mallory\"}' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
        "UPDATE audit_log SET seq = -seq WHERE seq IN (2, 3);"
        "UPDATE audit_log SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE seq < 0;",
    ],
    ids=["edited", "deleted", "reordered"],
)
async def test_audit_verify_detects_tampering_in_the_store(tmp_path: Path, tamper: str) -> None:
    home = tmp_path / "alpha"
    await _node_with_history(home)
    assert run_cli(home, "audit", "--verify").returncode == 0
    actions = [line.split()[2] for line in run_cli(home, "audit").stdout.splitlines()]
    assert actions[:5] == ["init", "user_added", "role_changed", "channel_created", "unlock_failed"]
    with connect_node_db(home / "node.db") as conn:
        conn.executescript(tamper)
    result = run_cli(home, "audit", "--verify")
    assert result.returncode == 1 and "AUDIT LOG BROKEN" in result.stdout


def _recompute_chain_from(db: Path, seq: int, detail: str) -> None:
    """The attack, with nothing but sqlite3 and the published hash rule: entry `seq` edited,
    every later hash recomputed so that the links and hashes all check out."""
    with connect_node_db(db) as conn:
        rows = conn.execute("SELECT seq, at, actor, action, detail, prev_hash FROM audit_log WHERE seq >= ? ORDER BY seq", (seq,)).fetchall()
        prev = conn.execute("SELECT prev_hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0]
        for row_seq, at, actor, action, old_detail, _ in rows:
            text = detail if row_seq == seq else old_detail
            digest = audit.entry_hash(row_seq, at, actor, action, text, prev)
            conn.execute("UPDATE audit_log SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?", (text, prev, digest, row_seq))
            prev = digest


@pytest.mark.parametrize("strip", [False, True], ids=["signatures-kept", "signatures-stripped"])
async def test_an_edited_entry_with_the_chain_recomputed_is_named_by_verify(tmp_path: Path, strip: bool) -> None:
    home = tmp_path / "alpha"
    await _node_with_history(home)
    _recompute_chain_from(home / "node.db", 2, '{"key":"00","role":"admin","user":"mallory"}')
    if strip:
        with connect_node_db(home / "node.db") as conn:
            conn.execute("UPDATE audit_log SET signature = NULL WHERE seq >= 2")
    result = run_cli(home, "audit", "--verify")
    assert result.returncode == 1 and "AUDIT LOG BROKEN after 1 good entries: entry 2 " in result.stdout
    async with await Node.open(home, PASSPHRASE) as node:
        verdict = await node.audit.verify()
        assert not verdict.ok and verdict.count == 1 and verdict.problem is not None and verdict.problem.startswith("entry 2 ")


async def test_entries_written_before_the_upgrade_verify_as_legacy(tmp_path: Path) -> None:
    """A store made by the previous version (schema 0004, unsigned entries) is upgraded in
    place: its entries verify as legacy, every later one is signed and checked."""
    home = tmp_path / "alpha"
    await _node_with_history(home)
    with connect_node_db(home / "node.db") as conn:  # back to what version 0004 wrote
        conn.execute("UPDATE audit_log SET signature = NULL")
    from alembic import command
    from alembic.config import Config

    from appliance.store import MIGRATIONS

    engine = node_engine(home / "node.db")
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    engine.dispose()
    async with await Node.open(home, PASSPHRASE) as node:  # upgrades the store
        verdict = await node.audit.verify()
        assert (verdict.ok, verdict.count, verdict.legacy) == (True, 5, 5)
        await node.chat.create_channel("later")
        verdict = await node.audit.verify()
        assert (verdict.ok, verdict.count, verdict.legacy) == (True, 6, 5)
    assert "5 legacy entries" in run_cli(home, "audit", "--verify").stdout
    _recompute_chain_from(home / "node.db", 6, '{"channel":"other","kind":"public"}')
    with connect_node_db(home / "node.db") as conn:
        conn.execute("UPDATE audit_log SET signature = NULL WHERE seq = 6")
    result = run_cli(home, "audit", "--verify")
    assert result.returncode == 1 and "entry 6 is not signed" in result.stdout


async def test_an_admin_deleting_another_users_message_and_membership_changes_are_audited(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general")
        ops = await alice.chat.create_channel("ops", private=True)
        await sync_all(alice, bob)
        theirs = await bob.chat.post("general", "bob's message")
        await sync_all(bob, alice)
        own = await alice.chat.post("general", "alice's own")
        await alice.chat.delete(own)  # deleting one's own message is ordinary use, not moderation
        await alice.chat.delete(theirs)
        await alice.chat.add_member("ops", "bob")
        entries = [(e.action, e.detail) for e in await alice.audit.entries()]
        assert entries[-2:] == [
            ("message_deleted", {"message": theirs, "channel": "general", "author": "bob"}),
            ("member_added", {"channel": "ops", "channel_id": ops.channel_id, "user": "bob", "role": "member"}),  # the id: two channels may share a name
        ]
        assert "message_deleted" not in [action for action, _ in entries[:-2]]
        assert (await alice.audit.verify()).ok
