"""Backups of a running node and restores into an empty home: consistent, checked, audited, and
never leaving a half-written file or a half-restored node behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from appliance.errors import AlreadyInitialised, InvalidInput, PermissionDenied, StorageError, WrongPassphrase
from appliance.node import BACKUP_SUFFIX, Attachment, Node
from appliance.services.custody import backup_key_path
from tests.conftest import PASSPHRASE, make_workspace, run_cli, start_cli

KILLS = 3  # backups killed mid-copy before the one that must clean up after them
KILL_ATTEMPTS = 8  # a backup that finishes before the kill lands is one attempt more


async def test_a_backup_taken_while_posting_restores_to_the_same_node(tmp_path: Path) -> None:
    (alpha,) = await make_workspace(tmp_path)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    async with alpha:
        await alpha.chat.create_channel("general")
        posted = [await alpha.chat.post("general", f"message {i}") for i in range(20)]

        async def keep_posting() -> None:
            for i in range(20, 60):
                posted.append(await alpha.chat.post("general", f"message {i}"))

        poster = asyncio.create_task(keep_posting())
        taken = await alpha.custody.backup(shelf)
        await poster
        assert taken.path.parent == shelf and taken.path.name.endswith(BACKUP_SUFFIX) and taken.bytes == taken.path.stat().st_size
        # No partial file left beside it; its key file (node.key, sealed under the passphrase) is.
        assert sorted(p.name for p in shelf.iterdir()) == [taken.path.name, backup_key_path(taken.path).name]
        assert (await alpha.audit.entries(1))[0].action == "backup"
        node_id = alpha.identity.node_id

    async with await Node.restore(tmp_path / "rebuilt", taken.path, PASSPHRASE) as restored:
        assert restored.identity.node_id == node_id
        kept = [m.id for m in await restored.views.read("general", limit=100)]
        assert len(kept) >= 20 and kept == posted[: len(kept)]  # one snapshot: a prefix of the posts, no gaps
        entries = await restored.audit.entries(1)
        assert [e.action for e in entries] == ["restored"]
        assert (await restored.audit.verify()).ok
        await restored.chat.post("general", "written on the rebuilt machine")


async def test_a_failed_restore_leaves_no_node_and_a_bad_backup_is_named(tmp_path: Path) -> None:
    (alpha,) = await make_workspace(tmp_path)
    async with alpha:
        taken = await alpha.custody.backup(tmp_path)
    target = tmp_path / "target"
    with pytest.raises(WrongPassphrase):
        await Node.restore(target, taken.path, "not the passphrase")
    assert not Node.exists(target)

    truncated = tmp_path / "truncated.backup.db"
    truncated.write_bytes(taken.path.read_bytes()[: taken.bytes // 2])
    shutil.copy(backup_key_path(taken.path), backup_key_path(truncated))
    with pytest.raises(StorageError, match="truncated.backup.db"):
        await Node.restore(target, truncated, PASSPHRASE)
    not_a_database = tmp_path / "notes.backup.db"
    not_a_database.write_text("shopping list")
    with pytest.raises(StorageError, match="not a readable node database"):
        await Node.restore(target, not_a_database, PASSPHRASE)
    assert not Node.exists(target)

    with pytest.raises(AlreadyInitialised):
        await Node.restore(tmp_path / "alpha", taken.path, PASSPHRASE)


async def test_a_backup_is_readable_by_its_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    (alpha,) = await make_workspace(tmp_path)
    previous = os.umask(0)
    try:
        async with alpha:
            taken = await alpha.custody.backup(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(taken.path.stat().st_mode) == 0o600
    async with await Node.restore(tmp_path / "rebuilt", taken.path, PASSPHRASE):
        pass
    assert stat.S_IMODE((tmp_path / "rebuilt" / "node.db").stat().st_mode) == 0o600


async def _fill(home: Path, megabytes: int) -> None:
    """A node whose store holds `megabytes` MiB of attachments (incompressible): its backup takes
    long enough to be killed in the middle."""
    (alpha,) = await make_workspace(home)
    async with alpha:
        await alpha.chat.create_channel("general")
        for i in range(megabytes // 8):
            await alpha.chat.post("general", f"file {i}", attachments=[Attachment(f"f{i}.bin", os.urandom(8 << 20))])


def _partials(shelf: Path) -> list[Path]:
    return [p for p in shelf.iterdir() if p.name.startswith(".rallypoint-") and ".backup.db.partial" in p.name]


@pytest.mark.timeout(300)
def test_the_debris_of_killed_backups_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """kill -9 in the middle of the copy leaves the partial file (and SQLite's journal); the next
    backup into that folder removes exactly those, says how much, and touches nothing else: after
    any number of kills, one finished backup leaves the folder clean."""
    asyncio.run(_fill(tmp_path, 64))
    home, shelf = tmp_path / "alpha", tmp_path / "shelf"
    shelf.mkdir()
    mine = {"notes.txt": b"the user's", ".rallypoint-notes.partial": b"not a backup's name"}
    for name, data in mine.items():
        (shelf / name).write_bytes(data)
    killed = 0
    for _ in range(KILL_ATTEMPTS):
        before = set(_partials(shelf))
        backup = start_cli(home, "backup", "--to", str(shelf))
        deadline = time.monotonic() + 120
        while backup.poll() is None and time.monotonic() < deadline:
            if any(p.stat().st_size > 0 for p in set(_partials(shelf)) - before if p.exists()):
                backup.kill()
                killed += 1
                break
            time.sleep(0.002)  # polling the folder; the copy itself takes a few hundred ms
        backup.communicate(timeout=60)
        assert backup.returncode in (0, -9), backup.stderr
        if killed == KILLS:
            break
        time.sleep(1)  # the next run's backup name has a new second in it
    assert killed == KILLS
    debris = _partials(shelf)  # each run removed the debris of the run before it
    assert debris and all(p.name.endswith((".partial", ".partial-journal")) for p in debris)
    debris_bytes = sum(p.stat().st_size for p in debris)

    taken = run_cli(home, "backup", "--to", str(shelf), "--json", timeout=120)
    assert taken.returncode == 0, taken.stderr
    assert _partials(shelf) == []
    report = json.loads(taken.stdout)
    assert report["removed_debris"] == {"files": len(debris), "bytes": debris_bytes}
    assert {p.name: p.read_bytes() for p in shelf.iterdir() if p.name in mine} == mine
    finished = [p for p in shelf.iterdir() if p.name.endswith(BACKUP_SUFFIX)]
    assert Path(report["file"]) in finished and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in finished)
    audit = json.loads(run_cli(home, "audit", "--json", "--limit", "1").stdout)
    assert audit[0]["detail"]["removed_debris"] == {"files": len(debris), "bytes": debris_bytes}


async def test_only_admins_take_backups_and_bad_folders_are_refused(tmp_path: Path) -> None:
    alpha, bob = await make_workspace(tmp_path, "bob")
    async with alpha, bob:
        with pytest.raises(PermissionDenied, match="backup needs the admin role"):
            await bob.custody.backup(tmp_path)
        assert (await bob.audit.entries(1))[0].action == "permission_denied"
        with pytest.raises(InvalidInput, match="no folder"):
            await alpha.custody.backup(tmp_path / "missing")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs standing in for a full stick")
@pytest.mark.parametrize("room", ["64k", "1m"])  # full at once; full in the middle of the copy
async def test_a_full_disk_fails_the_backup_cleanly(tmp_path: Path, room: str) -> None:
    (alpha,) = await make_workspace(tmp_path)
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(small)], capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        async with alpha:
            await alpha.chat.create_channel("general")
            await alpha.chat.post("general", "x" * 30_000, attachments=[Attachment("big.bin", os.urandom(2 << 20))])
            with pytest.raises(StorageError, match="full"):
                await alpha.custody.backup(small)
            assert list(small.iterdir()) == []
            assert [m.text for m in await alpha.views.read("general")] == ["x" * 30_000]
            assert (await alpha.audit.entries(1))[0].action != "backup"
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
