"""Point-in-time restore: a backup (or a backup and a later change log) brought back as the node
was at a chosen moment - its messages, edits, deletions, reactions, channels, search and
directory as then - into an empty home or as a read-only copy that refuses writes."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from appliance.errors import InvalidInput, NotFound, StorageError
from appliance.model import iso_utc
from appliance.node import Node
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import FAST, PASSPHRASE, connect_node_db, make_workspace, run_cli

T0 = 1_780_000_000_000  # ms: the workspace is made at T0; each step of the story a minute later


class Clock:
    """A wall clock the test moves: every receipt time in the change log comes from it."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def step(self) -> int:
        self.now += 60_000
        return self.now


async def story(root: Path) -> tuple[Clock, dict[str, str], dict[str, int], Path]:
    """alice posts A, reacts, edits, posts B, deletes a third; a private channel and user carol
    come after the middle. Returns the clock, message ids, the times between steps, and a
    backup taken at the end."""
    clock = Clock()
    alice = await Node.init(root / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=clock)
    ids: dict[str, str] = {}
    marks: dict[str, int] = {}
    backups = root / "backups"
    backups.mkdir()
    async with alice:
        clock.step()
        await alice.chat.create_channel("general")
        ids["A"] = await alice.chat.post("general", "alpha wolves gather")
        ids["C"] = await alice.chat.post("general", "charlie ravens circle")
        marks["after_a"] = clock.step()
        clock.step()
        await alice.chat.react(ids["A"], "👍")
        await alice.chat.edit(ids["A"], "alpha foxes gather")
        await alice.chat.delete(ids["C"])
        ids["B"] = await alice.chat.post("general", "bravo otters swim")
        await alice.chat.create_channel("secret", private=True)
        await alice.chat.post("secret", "hidden heron")
        await alice.directory.add_user("carol")
        marks["end"] = clock.step()
        taken = await alice.custody.backup(backups)
    return clock, ids, marks, taken.path


async def test_a_restore_as_at_a_time_between_two_posts_shows_the_first_and_not_the_second(tmp_path: Path) -> None:
    clock, ids, marks, backup = await story(tmp_path)
    async with await Node.restore(tmp_path / "then", backup, PASSPHRASE, at=marks["after_a"], clock=clock) as then:
        shown = {m.id: m for m in await then.views.read("general", limit=50, mark_read=False)}
        assert set(shown) == {ids["A"], ids["C"]} and not shown[ids["C"]].deleted  # B not yet posted, C not yet deleted
        assert shown[ids["A"]].text == "alpha wolves gather" and not shown[ids["A"]].reactions and shown[ids["A"]].edited_at is None
        assert [m.id for m in await then.views.search("wolves")] == [ids["A"]]
        assert await then.views.search("foxes") == [] and await then.views.search("otters") == []
        assert [m.id for m in await then.views.search("ravens")] == [ids["C"]]
        assert {c.name for c in await then.views.list_channels()} == {"general"}
        with pytest.raises(NotFound):
            await then.views.message(ids["B"])
        assert "carol" not in {u.name for u in then.directory.users()}
        restored = [e for e in await then.audit.entries() if e.action == "restored"]
        assert len(restored) == 1 and json.loads(json.dumps(restored[0].detail))["as_at"] == iso_utc(marks["after_a"])
        # The node goes on from there: a post works and is read back.
        clock.step()
        later = await then.chat.post("general", "after the restore")
        assert later in {m.id for m in await then.views.read("general", limit=50, mark_read=False)}
    # At the end of the story the same backup shows everything as the live node did.
    async with await Node.restore(tmp_path / "end", backup, PASSPHRASE, at=marks["end"], clock=clock) as end:
        shown = {m.id: m for m in await end.views.read("general", limit=50, mark_read=False)}
        assert set(shown) == {ids["A"], ids["B"], ids["C"]} and shown[ids["C"]].deleted and not shown[ids["A"]].deleted
        assert shown[ids["A"]].text == "alpha foxes gather" and shown[ids["A"]].reactions
        assert [m.id for m in await end.views.search("otters")] == [ids["B"]]
        assert {c.name for c in await end.views.list_channels()} == {"general", "secret"}


async def test_a_time_before_the_workspace_or_after_the_backup_is_refused_and_leaves_no_node(tmp_path: Path) -> None:
    clock, _, marks, backup = await story(tmp_path)
    with pytest.raises(InvalidInput, match="before this node held its workspace"):
        await Node.restore(tmp_path / "early", backup, PASSPHRASE, at=T0 - 1, clock=clock)
    assert not Node.exists(tmp_path / "early")
    with pytest.raises(InvalidInput, match="--log"):
        await Node.restore(tmp_path / "late", backup, PASSPHRASE, at=marks["end"] + 3_600_000, clock=clock)
    assert not Node.exists(tmp_path / "late")


async def test_an_older_backup_and_the_live_store_as_log_restore_a_time_after_the_backup(tmp_path: Path) -> None:
    clock = Clock()
    alice = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=clock)
    backups = tmp_path / "backups"
    backups.mkdir()
    async with alice:
        clock.step()
        await alice.chat.create_channel("general")
        first = await alice.chat.post("general", "before the backup")
        clock.step()
        old = await alice.custody.backup(backups)
        clock.step()
        second = await alice.chat.post("general", "after the backup")
        await alice.chat.react(first, "🎉")
        middle = clock.step()
        clock.step()
        await alice.chat.post("general", "too late")
        clock.step()
    async with await Node.restore(tmp_path / "then", old.path, PASSPHRASE, at=middle, log=alice.home / "node.db", clock=clock) as then:
        shown = {m.id: m for m in await then.views.read("general", limit=50, mark_read=False)}
        assert set(shown) == {first, second}
        assert shown[first].reactions
    other = (await make_workspace(tmp_path / "other"))[0]
    await other.close()
    with pytest.raises(InvalidInput, match="another node"):
        await Node.restore(tmp_path / "wrong", old.path, PASSPHRASE, at=middle, log=other.home / "node.db", clock=clock)


async def test_a_segment_carried_whole_is_rebuilt_from_its_snapshot_as_at_the_time(tmp_path: Path) -> None:
    """bob's node receives general's segment whole in a bundle (rows without bytes, held in its
    snapshot); posts arrive after it. Restored between the two, the whole segment's messages are
    there and the later ones not."""
    alice = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    enrollment = await alice.enrollment.invite("bravo", "bob", "admin", kdf=FAST)  # an admin: bob takes the backup
    bob = await Node.join(tmp_path / "bob", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)
    clock = Clock(int(time.time() * 1000) + 1000)  # certificates were issued now: the clock starts after
    stick = tmp_path / "stick"
    stick.mkdir()
    backups = tmp_path / "backups"
    backups.mkdir()
    await alice.close()
    bob_home = bob.home
    await bob.close()
    async with await Node.open(alice.home, PASSPHRASE, clock=clock) as alice, await Node.open(bob_home, PASSPHRASE, clock=clock) as bob:
        clock.step()
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", [f"early number {i}" for i in range(600)])
        await export_bundles(alice, stick)
        await import_bundles(bob, stick)
        with connect_node_db(bob.home / "node.db") as db:
            assert db.execute("SELECT count(*) FROM changes WHERE data IS NULL").fetchone()[0] > 0  # carried whole
        middle = clock.step()
        clock.step()
        late = await alice.chat.post("general", "late news")
        await export_bundles(alice, stick)
        await import_bundles(bob, stick)
        await bob.chat.post("general", "bob adds a line")
        clock.step()
        taken = await bob.custody.backup(backups)
    async with await Node.restore(tmp_path / "then", taken.path, PASSPHRASE, at=middle, clock=clock) as then:
        texts = [m.text for m in await then.views.read("general", limit=1000, mark_read=False)]
        assert len(texts) == 600 and "late news" not in texts and "bob adds a line" not in texts
        assert len(await then.views.search("early")) == 50  # the default page of a search
        with pytest.raises(NotFound):
            await then.views.message(late)


async def test_a_read_only_copy_reads_and_refuses_every_write(tmp_path: Path) -> None:
    clock, ids, marks, backup = await story(tmp_path)
    copy = tmp_path / "copy"
    async with await Node.restore(copy, backup, PASSPHRASE, at=marks["after_a"], read_only=True, clock=clock) as then:
        assert ids["A"] in {m.id for m in await then.views.read("general", limit=50, mark_read=False)}
        with pytest.raises(StorageError, match="read-only copy"):
            await then.chat.post("general", "a new post")
    async with await Node.open(copy, PASSPHRASE, clock=clock) as again:  # and whoever opens it later
        assert [m.id for m in await again.views.search("wolves")] == [ids["A"]]
        with pytest.raises(StorageError, match="read-only copy"):
            await again.chat.react(ids["A"], "👎")
    result = run_cli(copy, "post", "general", "from the command line")
    assert result.returncode == 1 and "read-only copy" in result.stderr


def test_the_command_restores_as_at_a_time_and_refuses_one_before_the_workspace(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    assert run_cli(home, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    assert run_cli(home, "channel", "create", "general").returncode == 0
    assert run_cli(home, "post", "general", "first words").returncode == 0
    posted = datetime.fromisoformat(json.loads(run_cli(home, "read", "general", "--json").stdout)[-1]["created_at"].replace("Z", "+00:00"))
    middle = (posted + timedelta(milliseconds=300)).isoformat()
    assert run_cli(home, "post", "general", "second words").returncode == 0
    backups = tmp_path / "backups"
    backups.mkdir()
    assert run_cli(home, "backup", "--to", str(backups)).returncode == 0
    backup = next(backups.glob("*.backup.db"))
    then = tmp_path / "then"
    done = run_cli(then, "restore", "--at", middle, str(backup), "--json")
    assert done.returncode == 0, done.stderr
    texts = [m["text"] for m in json.loads(run_cli(then, "read", "general", "--json").stdout)]
    assert texts == ["first words"]
    refused = run_cli(tmp_path / "early", "restore", "--at", "2001-01-01T00:00:00Z", str(backup))
    assert refused.returncode == 1 and "before this node held its workspace" in refused.stderr


async def test_a_damaged_backup_is_refused_with_the_reason_and_leaves_no_node(tmp_path: Path) -> None:
    clock, _, marks, backup = await story(tmp_path)
    damaged = tmp_path / "damaged.backup.db"
    data = bytearray(backup.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)  # a page of the store zeroed
    damaged.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="damaged|not a readable"):
        await Node.restore(tmp_path / "from-damaged", damaged, PASSPHRASE, at=marks["after_a"], clock=clock)
    assert not Node.exists(tmp_path / "from-damaged")
