"""Backups of a running node and restores into an empty home: consistent, checked, audited, and
never leaving a half-written file or a half-restored node behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from appliance.backups import backup_key_path
from appliance.errors import AlreadyInitialised, InvalidInput, PermissionDenied, StorageError, WrongPassphrase
from appliance.node import BACKUP_SUFFIX, Attachment, Node
from tests.conftest import PASSPHRASE, make_workspace, run_cli, start_cli, tmpfs

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
        sha256 = shelf / f"{taken.path.name}.sha256"  # beside it, as sha256sum writes it, and its key file; no partial file
        assert sorted(p.name for p in shelf.iterdir()) == [taken.path.name, backup_key_path(taken.path).name, sha256.name]
        assert sha256.read_text() == f"{hashlib.sha256(taken.path.read_bytes()).hexdigest()}  {taken.path.name}\n"
        assert stat.S_IMODE(sha256.stat().st_mode) == 0o600
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
        with pytest.raises(InvalidInput, match="no folder"):  # an unmounted stick is not replaced by a folder on this disk
            await alpha.custody.backup(tmp_path / "missing" / "backups")
        assert not (tmp_path / "missing").exists()
        (tmp_path / "a file").write_text("not a folder")
        with pytest.raises(InvalidInput, match="is not a folder"):
            await alpha.custody.backup(tmp_path / "a file")
        taken = await alpha.custody.backup(tmp_path / "new")  # a missing folder is made, readable by its owner only
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700 and taken.path.parent == tmp_path / "new"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs standing in for a full stick")
@pytest.mark.parametrize("room", ["64k", "1m"])  # full at once; full in the middle of the copy
async def test_a_full_disk_fails_the_backup_cleanly(tmp_path: Path, room: str) -> None:
    (alpha,) = await make_workspace(tmp_path)
    with tmpfs(tmp_path / "small", f"size={room}") as small:
        async with alpha:
            await alpha.chat.create_channel("general")
            await alpha.chat.post("general", "x" * 30_000, attachments=[Attachment("big.bin", os.urandom(2 << 20))])
            with pytest.raises(StorageError, match="full"):
                await alpha.custody.backup(small)
            assert list(small.iterdir()) == []
            assert [m.text for m in await alpha.views.read("general")] == ["x" * 30_000]
            last = (await alpha.audit.entries(1))[0]
            assert last.action == "backup_checked" and last.detail["ok"] is False and "full" in str(last.detail["problem"])
            health = await alpha.custody.backup_health()
            assert health.state.value == "failed" and "full" in health.summary


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


def test_the_scheduled_backup_runs_beside_serve_and_prunes_by_the_configured_policy(tmp_path: Path) -> None:
    """What the appliance's timer runs: `backup --scheduled` with the passphrase only, while the
    node's LAN service holds the home; the folder and retention come from `config`."""
    from tests.system.test_cli_gaps import start_serve, stop

    home, shelf = tmp_path / "home", tmp_path / "shelf"
    assert run_cli(home, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    unset = run_cli(home, "backup", "--scheduled")
    assert unset.returncode == 1 and "no backup folder is set" in unset.stderr
    none = run_cli(home, "backup", "--status")
    assert "NONE taken yet" in none.stdout and none.returncode == 1 and "backups need attention: none" in none.stderr  # a monitoring check sees it
    usage = run_cli(home, "backup", "--keep", "30d")
    assert usage.returncode == 2 and "--to DIR" in usage.stderr
    bad = run_cli(home, "config", "--backup-dir", str(shelf), "--backup-keep", "30 days")
    assert bad.returncode == 1 and "cannot read the retention '30 days'" in bad.stderr
    configured = run_cli(home, "config", "--backup-dir", str(shelf), "--backup-keep", "1h", "--backup-keep-at-least", "1", "--json")
    assert json.loads(configured.stdout)["scheduled_backup"] == {"folder": str(shelf), "keep": "1h", "keep_at_least": 1}
    shelf.mkdir(mode=0o700)
    serve, _ = start_serve(home)
    try:
        first = run_cli(home, "backup", "--scheduled", "--json")
        assert first.returncode == 0, first.stderr
        name = Path(json.loads(first.stdout)["file"]).name
        old = shelf / name.replace(name[-26:-10], "20200101T000000Z")
        os.rename(shelf / name, old)  # as if it had been taken in 2020 (the check recorded is for its real name)
        os.rename(shelf / f"{name}.sha256", shelf / f"{old.name}.sha256")
        time.sleep(1)  # a new second: a new name
        second = run_cli(home, "backup", "--scheduled", "--json")
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["pruned"] == [old.name]  # not recorded as checked under that name, older than an hour
        assert serve.poll() is None  # the LAN service kept running
    finally:
        stop(serve)
    kept = Path(json.loads(second.stdout)["file"]).name
    assert sorted(p.name for p in shelf.iterdir()) == [kept, f"{kept}.key", f"{kept}.sha256"]  # the pruned backup's SHA-256 and key file went with it
    status = run_cli(home, "backup", "--status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["state"] == "ok" and report["folder"] == str(shelf) and report["keep"] == "1h" and report["last"]["ok"] is True
    assert "Backups: ok, last verified" in run_cli(home, "backup", "--status").stdout
    audit = json.loads(run_cli(home, "audit", "--json", "--limit", "4").stdout)
    assert [e["action"] for e in audit][-1] == "backup_pruned" and audit[-1]["detail"]["file"] == old.name


def test_a_corrupted_backup_is_refused_by_restore_with_the_reason_and_leaves_nothing(tmp_path: Path) -> None:
    home, shelf = tmp_path / "home", tmp_path / "shelf"
    assert run_cli(home, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    assert run_cli(home, "channel", "create", "general").returncode == 0
    assert run_cli(home, "post", "general", "the text nobody may change").returncode == 0
    written = run_cli(home, "backup", "--to", str(shelf), "--json")
    good = Path(json.loads(written.stdout)["file"])
    data, key = good.read_bytes(), backup_key_path(good).read_bytes()
    middle = len(data) // 2  # a byte inside some page: its authentication code no longer matches
    cases = {
        "truncated.backup.db": data[: len(data) // 2],
        "header.backup.db": b"\xff" * 16 + data[16:],
        "flipped.backup.db": data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :],
    }
    for name, content in cases.items():
        (shelf / name).write_bytes(content)
        backup_key_path(shelf / name).write_bytes(key)  # the right key beside it: the file itself is bad
        target = tmp_path / f"restored-{name}"
        refused = run_cli(target, "restore", str(shelf / name))
        assert refused.returncode == 1 and name in refused.stderr, refused.stderr
        assert "\n" not in refused.stderr.strip()
        assert not target.exists()  # nothing left behind, not even the folder it made
    # The SHA-256 written beside the backup when it was taken names a changed copy before anything
    # else is read.
    checked = subprocess.run(["sha256sum", "-c", f"{good.name}.sha256"], cwd=shelf, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and f"{good.name}: OK" in checked.stdout
    good.write_bytes(cases["flipped.backup.db"])
    refused = run_cli(tmp_path / "restored", "restore", str(good))
    assert refused.returncode == 1 and f"{good.name} is refused: its bytes differ from the SHA-256 recorded when it was taken" in refused.stderr
    assert not (tmp_path / "restored").exists()
    good.write_bytes(data)
    restored = run_cli(tmp_path / "restored", "restore", str(good))
    assert restored.returncode == 0, restored.stderr
    assert [m["text"] for m in json.loads(run_cli(tmp_path / "restored", "read", "general", "--json").stdout)] == ["the text nobody may change"]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a read-only tmpfs standing in for a write-protected stick")
async def test_a_read_only_backup_folder_fails_the_backup_clearly_and_is_recorded(tmp_path: Path) -> None:
    (alpha,) = await make_workspace(tmp_path)
    with tmpfs(tmp_path / "stick", "ro,size=1m") as stick:
        async with alpha:
            with pytest.raises(StorageError, match=f"cannot write the backup into {stick}: Read-only file system"):
                await alpha.custody.backup(stick)
            assert list(stick.iterdir()) == []
            health = await alpha.custody.backup_health()
            assert health.state.value == "failed" and health.last is not None and "Read-only file system" in (health.last.problem or "")


async def test_a_folder_removed_while_the_backup_is_written_leaves_nothing_and_says_so(tmp_path: Path) -> None:
    """The stick pulled out (its folder gone) between the copy and its check: no file that looks
    whole anywhere, a clear error, a failed check on record, and the next run into a folder that
    is back works."""
    (alpha,) = await make_workspace(tmp_path)
    stick = tmp_path / "stick"
    async with alpha:
        await alpha.chat.create_channel("general")
        real = alpha.store.backup_into

        async def pulled_out(target: Path) -> None:
            await real(target)
            assert target.stat().st_size > 0
            shutil.rmtree(target.parent)

        alpha.store.backup_into = pulled_out  # type: ignore[method-assign]
        with pytest.raises(StorageError, match=f"the backup folder {stick} went away while the backup was written"):
            await alpha.custody.backup(stick)
        assert not stick.exists()
        last = (await alpha.audit.entries(1))[0]
        assert last.action == "backup_checked" and last.detail["ok"] is False
        alpha.store.backup_into = real  # type: ignore[method-assign]
        taken = await alpha.custody.backup(stick)
        assert sorted(p.name for p in stick.iterdir()) == [taken.path.name, f"{taken.path.name}.key", f"{taken.path.name}.sha256"]
        assert (await alpha.custody.backup_health()).state.value == "ok"
