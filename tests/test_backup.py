"""Backups of a running node and restores into an empty home: consistent, checked, audited, and
never leaving a half-written file or a half-restored node behind."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from appliance.errors import AlreadyInitialised, InvalidInput, PermissionDenied, StorageError, WrongPassphrase
from appliance.node import BACKUP_SUFFIX, Node
from tests.conftest import PASSPHRASE, make_workspace, run_cli


async def test_a_backup_taken_while_posting_restores_to_the_same_node(tmp_path: Path) -> None:
    (alpha,) = await make_workspace(tmp_path)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    async with alpha:
        await alpha.create_channel("general")
        posted = [await alpha.post("general", f"message {i}") for i in range(20)]

        async def keep_posting() -> None:
            for i in range(20, 60):
                posted.append(await alpha.post("general", f"message {i}"))

        poster = asyncio.create_task(keep_posting())
        taken = await alpha.backup(shelf)
        await poster
        assert taken.path.parent == shelf and taken.path.name.endswith(BACKUP_SUFFIX) and taken.bytes == taken.path.stat().st_size
        assert [p.name for p in shelf.iterdir()] == [taken.path.name]  # no partial file left beside it
        assert (await alpha.audit_entries(1))[0].action == "backup"
        node_id = alpha.node_id

    async with await Node.restore(tmp_path / "rebuilt", taken.path, PASSPHRASE) as restored:
        assert restored.node_id == node_id
        kept = [m.id for m in await restored.read("general", limit=100)]
        assert len(kept) >= 20 and kept == posted[: len(kept)]  # one snapshot: a prefix of the posts, no gaps
        entries = await restored.audit_entries(1)
        assert [e.action for e in entries] == ["restored"]
        assert (await restored.verify_audit()).ok
        await restored.post("general", "written on the rebuilt machine")


async def test_a_failed_restore_leaves_no_node_and_a_bad_backup_is_named(tmp_path: Path) -> None:
    (alpha,) = await make_workspace(tmp_path)
    async with alpha:
        taken = await alpha.backup(tmp_path)
    target = tmp_path / "target"
    with pytest.raises(WrongPassphrase):
        await Node.restore(target, taken.path, "not the passphrase")
    assert not Node.exists(target)

    truncated = tmp_path / "truncated.backup.db"
    truncated.write_bytes(taken.path.read_bytes()[: taken.bytes // 2])
    with pytest.raises(StorageError, match="truncated.backup.db"):
        await Node.restore(target, truncated, PASSPHRASE)
    not_a_database = tmp_path / "notes.backup.db"
    not_a_database.write_text("shopping list")
    with pytest.raises(StorageError, match="not a readable node database"):
        await Node.restore(target, not_a_database, PASSPHRASE)
    assert not Node.exists(target)

    with pytest.raises(AlreadyInitialised):
        await Node.restore(tmp_path / "alpha", taken.path, PASSPHRASE)


async def test_only_admins_take_backups_and_bad_folders_are_refused(tmp_path: Path) -> None:
    alpha, bob = await make_workspace(tmp_path, "bob")
    async with alpha, bob:
        with pytest.raises(PermissionDenied, match="backup needs the admin role"):
            await bob.backup(tmp_path)
        assert (await bob.audit_entries(1))[0].action == "permission_denied"
        with pytest.raises(InvalidInput, match="no folder"):
            await alpha.backup(tmp_path / "missing")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs standing in for a full stick")
async def test_a_full_disk_fails_the_backup_cleanly(tmp_path: Path) -> None:
    (alpha,) = await make_workspace(tmp_path)
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        async with alpha:
            await alpha.create_channel("general")
            await alpha.post("general", "x" * 30_000)
            with pytest.raises(StorageError, match="full"):
                await alpha.backup(small)
            assert list(small.iterdir()) == []
            assert [m.text for m in await alpha.read("general")] == ["x" * 30_000]
            assert (await alpha.audit_entries(1))[0].action != "backup"
    finally:
        subprocess.run(["umount", str(small)], capture_output=True, timeout=30)


def test_backup_and_restore_from_the_command_line(tmp_path: Path) -> None:
    home, rebuilt, shelf = tmp_path / "home", tmp_path / "rebuilt", tmp_path / "shelf #2?"  # a stick's label may hold anything
    shelf.mkdir()
    assert run_cli(home, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    assert run_cli(home, "channel", "create", "general").returncode == 0
    assert run_cli(home, "post", "general", "kept").returncode == 0
    written = run_cli(home, "backup", "--to", str(shelf), "--json")
    assert written.returncode == 0, written.stderr
    backup_file = json.loads(written.stdout)["file"]
    wrong = run_cli(rebuilt, "restore", backup_file, passphrase="wrong passphrase")
    assert wrong.returncode != 0 and "passphrase" in wrong.stderr and not (rebuilt / "node.db").exists()
    damaged = shelf / "damaged.backup.db"
    damaged.write_bytes(b"not a database" * 100)
    refused = run_cli(rebuilt, "restore", str(damaged))
    assert refused.returncode != 0 and "damaged.backup.db is not a readable node database" in refused.stderr
    restored = run_cli(rebuilt, "restore", backup_file)
    assert restored.returncode == 0, restored.stderr
    assert "restored into" in restored.stdout
    read = run_cli(rebuilt, "read", "general", "--json")
    assert [m["text"] for m in json.loads(read.stdout)] == ["kept"]
