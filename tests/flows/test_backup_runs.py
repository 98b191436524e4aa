"""Backup runs on a node in one process: each backup checked and its check recorded and
audited, retention pruning only this node's old backups, the schedule an admin sets, the
backups' health, and a copy that fails its check kept nowhere."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance import cipher
from appliance.errors import BackupCheckFailed, InvalidInput, PermissionDenied
from appliance.node import Node
from appliance.retention import DAY_MS, HOUR_MS, BackupHealth, HealthState, backup_name, parse_keep
from appliance.services.backup_runs import BackupSchedule, check_copy
from appliance.store import Store
from tests.conftest import FAST, PASSPHRASE, make_workspace

START = 1_800_000_000_000


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def _alpha(home: Path, clock: Clock) -> Node:
    return await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=clock)


async def test_daily_backups_are_checked_recorded_and_pruned_by_the_policy(tmp_path: Path) -> None:
    clock, shelf = Clock(START), tmp_path / "shelf"
    policy = parse_keep("3d", 2)
    async with await _alpha(tmp_path / "alpha", clock) as alpha:
        await alpha.chat.create_channel("general")
        other = shelf / backup_name("BCDEFGH-IJKLMNO-PQRSTUD", START - 90 * DAY_MS)  # another node's, older than any window
        taken = []
        for day in range(8):
            clock.now = START + day * DAY_MS
            await alpha.chat.post("general", f"day {day}")
            taken.append(await alpha.custody.backup(shelf, policy))
            if day == 0:
                assert stat.S_IMODE(shelf.stat().st_mode) == 0o700  # made by the first run
                other.write_bytes(b"not ours")
                (shelf / "notes.txt").write_text("the operator's")
                (shelf / (backup_name(alpha.identity.node_id, START - 90 * DAY_MS) + ".txt")).write_text("named like one, is not")
        # Day 7: backups of days 4..7 are inside the 3-day window (day 4 is exactly on its edge).
        names = sorted(p.name for p in shelf.iterdir())
        kept = [t.path.name for t in taken[4:]]
        beside = [f"{name}{suffix}" for name in kept for suffix in (".sha256", ".key")]  # each kept backup's SHA-256 and key file; the pruned ones' went with them
        assert names == sorted([*kept, *beside, other.name, "notes.txt", backup_name(alpha.identity.node_id, START - 90 * DAY_MS) + ".txt"])
        assert all(stat.S_IMODE((shelf / name).stat().st_mode) == 0o600 for name in kept)
        assert [p for t in taken for p in t.pruned] == [t.path.name for t in taken[:4]]
        entries = [(e.action, e.detail) for e in await alpha.audit.entries(200)]
        checked = [d for a, d in entries if a == "backup_checked"]
        assert len(checked) == 8 and all(d["ok"] is True and d["problem"] is None for d in checked)
        pruned = [d["file"] for a, d in entries if a == "backup_pruned"]
        assert pruned == [t.path.name for t in taken[:4]]
        assert (await alpha.audit.verify()).ok

        health = await alpha.custody.backup_health()
        assert health.state is HealthState.OK and health.last_verified is not None and health.last_verified.file == taken[-1].path.name
        clock.now += 27 * HOUR_MS  # the next daily backup did not happen
        assert (await alpha.custody.backup_health()).state is HealthState.STALE

        # The floor: with a window of one hour, the newest two verified stay.
        clock.now += DAY_MS
        last = await alpha.custody.backup(shelf, parse_keep("1h", 2))
        assert sorted(p.name for p in shelf.iterdir() if p.name.startswith(f"rallypoint-{alpha.identity.node_id}") and p.name.endswith(".db")) == sorted([taken[-1].path.name, last.path.name])


async def test_a_backup_changed_since_its_check_is_not_counted_as_verified(tmp_path: Path) -> None:
    clock, shelf = Clock(START), tmp_path / "shelf"
    async with await _alpha(tmp_path / "alpha", clock) as alpha:
        first = await alpha.custody.backup(shelf)
        clock.now += DAY_MS
        second = await alpha.custody.backup(shelf)
        with first.path.open("ab") as grown:
            grown.write(b"\0" * 4096)  # not the file that was checked
        clock.now += 10 * DAY_MS
        third = await alpha.custody.backup(shelf, parse_keep("1d", 3))
        # A floor of three verified would keep all three; first no longer counts, and goes.
        assert third.pruned == (first.path.name,) and second.path.exists()


async def test_a_copy_that_fails_its_check_is_kept_nowhere_and_recorded(tmp_path: Path) -> None:
    clock, shelf = Clock(START), tmp_path / "shelf"
    async with await _alpha(tmp_path / "alpha", clock) as alpha:
        await alpha.custody.backup(shelf)
        real = alpha.store.backup_into  # the store's own copy, then damaged as a failing disk would

        async def damaging(target: Path) -> None:
            await real(target)
            key = alpha.store.db_key
            assert key is not None
            with cipher.Keyed(str(target), key).connect() as conn:  # an audit entry rewritten behind the chain's back
                conn.execute("UPDATE audit_log SET detail = '{\"forged\":1}' WHERE seq = 2")

        alpha.store.backup_into = damaging  # type: ignore[method-assign]
        clock.now += DAY_MS
        with pytest.raises(BackupCheckFailed, match="audit log does not verify against the node's key: entry 2 was altered"):
            await alpha.custody.backup(shelf, parse_keep("1h", 1))
        assert len(list(shelf.iterdir())) == 3  # the earlier backup, its SHA-256 and key file only: no partial, nothing pruned
        health = await alpha.custody.backup_health()
        assert health.state is HealthState.FAILED and health.last is not None and "entry 2 was altered" in (health.last.problem or "")
        assert "LAST FAILED" in health.summary
        last = (await alpha.audit.entries(1))[0]
        assert last.action == "backup_checked" and last.detail["ok"] is False


async def test_the_check_refuses_another_nodes_backup_and_a_damaged_file(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        mine = await alpha.custody.backup(tmp_path / "shelf")
        key = alpha.store.db_key
        assert (await check_copy(mine.path, alpha.identity.row.node_key, key)).problem is None
        assert "does not open as a node database" in ((await check_copy(mine.path, alpha.identity.row.node_key)).problem or "")  # no key
        refused = await check_copy(mine.path, bravo.identity.row.node_key, key)
        assert refused.problem is not None and "backup of another node" in refused.problem and alpha.identity.node_id in refused.problem
    data = bytearray(mine.path.read_bytes())
    page = 4096  # the second page: a b-tree page whose header is garbled
    data[page : page + 8] = b"\xff" * 8
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(bytes(data))
    problem = (await check_copy(damaged, db_key=key)).problem
    assert problem is not None and ("integrity check failed" in problem or "does not open" in problem)
    (tmp_path / "text.db").write_text("shopping list" * 400)
    assert "does not open as a node database" in ((await check_copy(tmp_path / "text.db")).problem or "")
    # The copy is opened for reading only: the check writes nothing into what it checks.
    before = mine.path.read_bytes()
    assert (await check_copy(mine.path, db_key=key)).problem is None and mine.path.read_bytes() == before
    assert sorted(p.name for p in mine.path.parent.iterdir()) == [mine.path.name, f"{mine.path.name}.key", f"{mine.path.name}.sha256"]
    store = Store.copy_at(mine.path, key)
    async with store:
        assert store.read_only is not None


async def test_the_schedule_is_set_by_an_admin_audited_and_run_by_the_node(tmp_path: Path) -> None:
    alpha, bob = await make_workspace(tmp_path, "bob")
    shelf = tmp_path / "media" / "BACKUPS"
    shelf.parent.mkdir()
    async with alpha, bob:
        with pytest.raises(InvalidInput, match="no backup folder is set"):
            await alpha.custody.scheduled_backup()
        with pytest.raises(PermissionDenied, match="backup schedule needs the admin role"):
            await bob.custody.set_backup_schedule(BackupSchedule(shelf, parse_keep("30d")))
        with pytest.raises(InvalidInput, match="absolute"):
            await alpha.custody.set_backup_schedule(BackupSchedule(Path("relative"), parse_keep("30d")))
        await alpha.custody.set_backup_schedule(BackupSchedule(shelf, parse_keep("2d", 3)))
        assert await alpha.custody.backup_schedule() == BackupSchedule(shelf, parse_keep("2d", 3))
        assert (await alpha.audit.entries(1))[0].detail == {"folder": str(shelf), "keep": "2d", "keep_at_least": 3}
    async with await Node.open(tmp_path / "alpha", PASSPHRASE, sign_in=False) as node:  # the timer: nobody signs in
        shelf.parent.rename(tmp_path / "unplugged")  # the stick is not there today
        with pytest.raises(InvalidInput, match=f"no folder {shelf.parent}"):
            await node.custody.scheduled_backup()
        missed = await node.custody.backup_health()
        assert missed.state is HealthState.FAILED and missed.last is not None and f"no folder {shelf.parent}" in (missed.last.problem or "")
        (tmp_path / "unplugged").rename(shelf.parent)
        taken = await node.custody.scheduled_backup()
        assert taken.path.parent == shelf
        actions = [(e.action, e.actor) for e in await node.audit.entries(2)]
        assert actions == [("backup_checked", node.identity.row.node_key.hex()), ("backup", node.identity.row.node_key.hex())]
        health: BackupHealth = await node.custody.backup_health()
        assert health.state is HealthState.OK and health.folder == str(shelf) and health.policy == "2d"
    async with await Node.open(tmp_path / "alpha", PASSPHRASE) as alpha_again:
        await alpha_again.custody.set_backup_schedule(None)
        assert await alpha_again.custody.backup_schedule() is None
    assert sorted(os.listdir(shelf)) == [taken.path.name, f"{taken.path.name}.key", f"{taken.path.name}.sha256"]


async def test_a_sha256_whose_backup_never_got_its_name_is_debris(tmp_path: Path) -> None:
    """A run killed between writing the SHA-256 and naming the backup leaves the .sha256 alone:
    the next run removes it (and counts it), and leaves every .sha256 whose backup is there."""
    clock, shelf = Clock(START), tmp_path / "shelf"
    async with await _alpha(tmp_path / "alpha", clock) as alpha:
        first = await alpha.custody.backup(shelf)
        orphan = shelf / f"{backup_name(alpha.identity.node_id, START + HOUR_MS)}.sha256"
        orphan.write_text("0" * 64 + "  x\n")
        orphan_key = shelf / f"{backup_name(alpha.identity.node_id, START + HOUR_MS)}.key"  # its key file too, and a key file's partial
        orphan_key.write_bytes(b"k" * 10)
        (shelf / f".{backup_name(alpha.identity.node_id, START + 2 * HOUR_MS)}.key.partial").write_bytes(b"k" * 5)
        users = shelf / "notes.sha256"
        users.write_text("the operator's")
        clock.now += DAY_MS
        second = await alpha.custody.backup(shelf)
        assert (second.debris_files, second.debris_bytes) == (3, 68 + 10 + 5)
        kept = [first.path.name, second.path.name]
        assert sorted(p.name for p in shelf.iterdir()) == sorted([*kept, *(f"{name}{suffix}" for name in kept for suffix in (".sha256", ".key")), users.name])
