"""A node whose home is on a full disk: reading works (the command line, the node's reads, the
console), writes fail with a clear reason and lose nothing, an import that committed says so, and
junk that cannot be quarantined does not stop the genuine bundle beside it.

The home lives on a small tmpfs filled to the last byte (mounting needs root, as on CI)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import StorageError
from appliance.node import Node
from sync import sneakernet, stick
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import FAST, PASSPHRASE, make_workspace, run_cli, tmpfs
from tests.console_helpers import SIZE, main_screen, screen_text, until_shown
from tui.app import RallypointApp

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs standing in for a full disk")]

FILLER = "filler"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "disk", "size=24m,mode=0700") as mount_point:
        yield mount_point


def fill(disk: Path, leave: int = 0) -> None:
    """Fills `disk` with one file until no byte is free, then gives `leave` bytes back."""
    chunk = b"\0" * (64 * 1024)
    with open(disk / FILLER, "ab", buffering=0) as filler:
        while True:
            try:
                filler.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    if leave:
        os.truncate(disk / FILLER, max(0, (disk / FILLER).stat().st_size - leave))


def make_room(disk: Path) -> None:
    (disk / FILLER).unlink()


async def _node_with_messages(home: Path) -> list[str]:
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        await node.chat.create_channel("random")
        return [await node.chat.post("general", f"hello {i}") for i in range(5)] + [await node.chat.post("random", "unread here")]


async def test_reads_work_on_a_full_disk_and_writes_say_why_they_fail(disk: Path) -> None:
    home = disk / "alpha"
    posted = await _node_with_messages(home)
    fill(disk)

    read = run_cli(home, "read", "general", "--json")
    assert read.returncode == 0, read.stderr
    assert [m["id"] for m in json.loads(read.stdout)] == posted[:5]
    assert "rallypoint: warning: #general was not marked read: the disk is full" in read.stderr
    found = run_cli(home, "search", "hello")
    assert found.returncode == 0, found.stderr
    assert found.stdout.count("hello") == 5
    listed = run_cli(home, "channel", "list")
    assert listed.returncode == 0 and "random" in listed.stdout
    refused = run_cli(home, "post", "general", "no room")
    assert refused.returncode == 1 and "the disk is full" in refused.stderr and "nothing was written" in refused.stderr
    wrong = run_cli(home, "read", "general", passphrase="not the passphrase")
    assert wrong.returncode == 1 and wrong.stderr.strip() == "rallypoint: error: wrong passphrase"
    shelf = disk.parent / "shelf"
    shelf.mkdir()
    backup = run_cli(home, "backup", "--to", str(shelf), "--json")
    assert backup.returncode == 0, backup.stderr
    assert "was written but is not in the audit log: the disk is full" in backup.stderr
    assert Path(json.loads(backup.stdout)["file"]).exists()

    async with await Node.open(home, PASSPHRASE) as node:
        assert [m.text for m in await node.views.read("general")] == [f"hello {i}" for i in range(5)]
        assert [m.id for m in await node.views.search("hello")] == posted[4::-1]
        assert {c.name: c.unread for c in await node.views.list_channels()}["random"] == 0  # alice's own post
        assert (await node.views.message(posted[0])).text == "hello 0"
        assert (await node.audit.verify()).ok
        with pytest.raises(StorageError, match="the disk is full"):
            await node.chat.post("general", "no room")
    assert node.replica.skipped_writes and all("the disk is full" in line for line in node.replica.skipped_writes)

    make_room(disk)
    async with await Node.open(home, PASSPHRASE) as node:
        await node.chat.post("general", "room again")
        assert [m.text for m in await node.views.read("general")][-1] == "room again"
    assert node.replica.skipped_writes == []


async def test_the_console_shows_a_channel_on_a_full_disk(disk: Path) -> None:
    home = disk / "alpha"
    await _node_with_messages(home)
    fill(disk)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await until_shown(pilot, "hello 4")
        assert "# general" in screen_text(pilot.app)


async def test_an_import_that_committed_says_so_when_the_disk_fills_after_it(disk: Path, tmp_path: Path) -> None:
    """The import commits and takes its bundle off the stick; then the disk is full, and closing
    the node cannot write its document snapshots. That loses nothing and fails nothing: the node
    closes, says which write it skipped, and has everything when it opens again."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    stick_root = tmp_path / "stick"
    stick_root.mkdir()
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"carried {i}" for i in range(100)])
        await export_bundles(alpha, stick_root, for_nodes=[bravo.identity.node_id])
    shutil.move(tmp_path / "bravo", disk / "bravo")
    bravo = await Node.open(disk / "bravo", PASSPHRASE)
    report = await import_bundles(bravo, stick_root)
    assert [f.outcome for f in report.files] == [sneakernet.ACCEPTED]
    assert not list((stick_root / stick.STICK_DIR / stick.BUNDLES).iterdir())
    fill(disk)
    await bravo.close()  # the snapshots of the imported documents are due now
    assert len(bravo.replica.skipped_writes) == 1 and bravo.replica.skipped_writes[0].startswith("document snapshots were not saved (the changes are stored")

    make_room(disk)
    async with await Node.open(disk / "bravo", PASSPHRASE) as reopened:
        assert len(await reopened.views.read("general", limit=200)) == 100


async def test_junk_that_cannot_be_quarantined_does_not_stop_the_genuine_bundle(disk: Path, tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    stick_root = tmp_path / "stick"
    stick_root.mkdir()
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post("general", "genuine")
        written = await export_bundles(alpha, stick_root, for_nodes=[bravo.identity.node_id])
    genuine = written.bundles[0].path
    junk = genuine.with_name(stick.anonymous_file_name(bytes(16)))  # sorts first
    junk.write_bytes(os.urandom(4 << 20))
    shutil.move(tmp_path / "bravo", disk / "bravo")
    fill(disk, leave=2 << 20)  # room for the import, not for a copy of the junk
    async with await Node.open(disk / "bravo", PASSPHRASE) as bravo:
        report = await import_bundles(bravo, stick_root)
        outcomes = {f.name: f for f in report.files}
        assert outcomes[genuine.name].outcome == sneakernet.ACCEPTED
        rejected = outcomes[junk.name]
        assert rejected.rejected and rejected.quarantined is None
        assert rejected.quarantine_problem is not None and rejected.quarantine_problem.startswith("disk is full: cannot quarantine")
        assert junk.exists() and not genuine.exists()  # the junk's only copy stays where it was
        assert [m.text for m in await bravo.views.read("general")] == ["genuine"]
        audited = next(e for e in await bravo.audit.entries() if e.action == "bundle_rejected")
        assert audited.detail["quarantine"]["problem"] == rejected.quarantine_problem


async def test_a_plain_node_on_a_full_disk_opens_for_reading_and_is_encrypted_once_there_is_room(disk: Path) -> None:
    """A node from before encryption at rest whose disk is full when it is first unlocked after
    the update: there is no room for its encrypted copy, so it opens as it is (for reading), and
    the first unlock with room converts it."""
    from appliance import atrest, cipher
    from tests.plain_store import make_plain

    home = disk / "alpha"
    posted = await _node_with_messages(home)
    make_plain(home)
    fill(disk)
    async with await Node.open(home, PASSPHRASE) as node:
        assert [m.id for m in await node.views.search("hello")] == posted[4::-1]
        with pytest.raises(StorageError, match="the disk is full"):
            await node.chat.post("general", "no room")
    assert cipher.is_plaintext(home / "node.db") and not (home / atrest.KEY_FILE).exists()
    assert not (home / "node.db.encrypting").exists()

    make_room(disk)
    async with await Node.open(home, PASSPHRASE) as node:
        assert [m.text for m in await node.views.read("general")] == [f"hello {i}" for i in range(5)]
        await node.chat.post("general", "room again")
        assert [e.action for e in await node.audit.entries()][-1] == "store_encrypted"
    assert not cipher.is_plaintext(home / "node.db") and (home / atrest.KEY_FILE).exists()
