"""The audit log is append-only and hash-chained: edits, deletions and reorderings show."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import audit
from appliance.errors import WrongPassphrase
from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE, run_cli


def chain(n: int) -> list[audit.AuditEntry]:
    entries: list[audit.AuditEntry] = []
    for i in range(n):
        entries.append(audit.make_entry(entries[-1] if entries else None, 1000 + i, "actor", f"action{i}", {"i": i}))
    return entries


@given(st.integers(min_value=2, max_value=12), st.data())
def test_any_edit_delete_or_swap_breaks_the_chain(n: int, data: st.DataObject) -> None:
    entries = chain(n)
    assert audit.verify_chain(entries).ok
    i = data.draw(st.integers(min_value=0, max_value=n - 2))
    edited = list(entries)
    edited[i] = audit.AuditEntry(**{**entries[i].__dict__, "detail": '{"i":999}'})
    assert not audit.verify_chain(edited).ok
    assert not audit.verify_chain(entries[:i] + entries[i + 1 :]).ok
    swapped = list(entries)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    assert not audit.verify_chain(swapped).ok


async def _node_with_history(home: Path) -> None:
    node = await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    async with node:
        await node.add_user("bob")
        await node.set_role("bob", "observer")
        await node.create_channel("general")
    with pytest.raises(WrongPassphrase):
        await Node.open(home, "wrong passphrase")


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
    with sqlite3.connect(home / "node.db") as conn:
        conn.executescript(tamper)
    result = run_cli(home, "audit", "--verify")
    assert result.returncode == 1 and "AUDIT LOG BROKEN" in result.stdout
