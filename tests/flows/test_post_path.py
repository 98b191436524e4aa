"""The lean post path (issue 15 point 1): a post, edit, deletion or reaction builds its view row
from its inputs and stores it in one writer-thread transaction - the row is what reading the
document back would give; a failed write drops the cached document; no snapshot is written on
the post path, and the upkeep (appliance/upkeep.py, driven here with an injected clock)
snapshots, checkpoints and merges the search index in the background; search finds messages
whose index segments are not merged yet."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from appliance import documents, segments
from appliance import schema as t
from appliance import upkeep as upkeep_module
from appliance.certs import Role
from appliance.errors import StorageError
from appliance.node import SEGMENT_SIZE, Attachment, Node
from appliance.services import replica
from appliance.store import Checkpoint
from appliance.upkeep import CHECKPOINT_EVERY, IDLE_AFTER_S, LULL_S, MERGE_EVERY, Upkeep
from appliance.view_rows import view_values
from tests.conftest import FAST, PASSPHRASE, connect_node_db, make_workspace, node_store, sync_all

AUTOMATIC_CHECKPOINT_PAGES = 1000  # SQLite's default wal_autocheckpoint
READER_HOLDS_S = 0.3  # how long a reader keeps the log from being emptied
STEP_DEADLINE_S = 20.0


class Clock:
    """The upkeep's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def manual_upkeep(node: Node, clock: Clock) -> Upkeep:
    """Stops the node's own background upkeep and returns one the test steps by hand."""
    await node._upkeep.stop()
    return Upkeep(node.store, node.replica, node.replica.skipped_writes.append, clock)


async def steps(upkeep: Upkeep) -> list[str]:
    """Steps until there is nothing to do (at most 200 steps); what each step did."""
    done: list[str] = []
    while len(done) < 200 and (did := await upkeep.step()) is not None:
        done.append(did)
    return done


async def row_and_document_agree(node: Node, message_id: str) -> dict[str, Any]:
    """The stored view row equals the row the document itself gives (the materialiser's reading)."""
    row = await node.views.message_row(message_id)
    doc = await node.replica.document(row["doc_id"])
    state = segments.read_message(doc, message_id, frozenset(u.key.hex() for u in node.directory.users() if u.role == Role.ADMIN))
    assert state is not None
    expected = view_values(row["channel_id"], row["doc_id"], state)
    assert {k: row[k] for k in expected} == expected
    return row


async def test_every_local_edit_stores_the_row_the_document_gives(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    try:
        await alice.chat.create_channel("general")
        await sync_all(alice, bob)
        root = await alice.chat.post("general", "hello @bob", attachments=[Attachment("notes.txt", b"some notes")])
        reply = await alice.chat.post("general", "a reply", reply_to=root)
        for message_id in (root, reply):
            await row_and_document_agree(alice, message_id)
        await alice.chat.edit(root, "hello again, @alice")
        await alice.chat.react(root, "👍")
        await alice.chat.react(root, "🎉")
        row = await row_and_document_agree(alice, root)
        assert row["edited_at"] is not None and set(json.loads(row["reactions"])) == {"👍", "🎉"}
        await alice.chat.react(root, "👍", remove=True)
        await row_and_document_agree(alice, root)
        await alice.chat.delete(reply)
        assert (await row_and_document_agree(alice, reply))["deleted"]
        assert [m.text for m in await alice.views.search("again")] == ["hello again, @alice"]
        assert await alice.views.search("reply") == []

        theirs = await bob.chat.post("general", "bob's words")
        await bob.chat.react(theirs, "👀")
        await sync_all(bob, alice)
        await alice.chat.react(theirs, "👀")
        await row_and_document_agree(alice, theirs)
        await alice.chat.delete(theirs)  # a moderator's deletion, audited
        row = await row_and_document_agree(alice, theirs)
        assert row["deleted"] and row["deleted_by"] == alice.identity.user_key.hex()
        assert (await alice.audit.verify()).ok
        assert (await alice.audit.entries())[-1].action == "message_deleted"
    finally:
        await alice.close()
        await bob.close()


async def test_a_failed_write_drops_the_cached_document(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        await node.chat.post("general", "kept")
    with connect_node_db(home / "node.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    store = node_store(home)

    def cap_size(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 2}")

    store.on_connect(cap_size)
    async with await Node.open(home, PASSPHRASE, store=store) as node:
        with pytest.raises(StorageError, match="full"):
            for i in range(500):
                await node.chat.post("general", f"filler {i} " + "x" * 2000)
        stored = [m.id for m in await node.views.read("general", limit=1000)]
        doc_id = (await node.views.message_row(stored[-1]))["doc_id"]
        doc = await node.replica.document(doc_id)  # reloaded from the store: no change the store lacks
        assert sorted(s.message_id for s in segments.read_messages(doc, frozenset())) == sorted(stored)


async def snapshots(node: Node) -> dict[str, int]:
    async with node.store.reading() as conn:
        return dict((await conn.execute(select(t.snapshots.c.doc_id, t.snapshots.c.upto_change_id))).all())


async def newest_change(node: Node, doc_id: str) -> int:
    async with node.store.reading() as conn:
        return int((await conn.execute(select(func.max(t.changes.c.id)).where(t.changes.c.doc_id == doc_id))).scalar_one())


async def test_a_segment_a_bulk_post_fills_is_snapshotted_at_once(alice: Node) -> None:
    """History brought in with post_many is often sent on at once: a full segment then goes
    whole as its snapshot, without a save at export."""
    await manual_upkeep(alice, Clock())
    await alice.chat.create_channel("general")
    await alice.chat.post_many("general", [f"message {i}" for i in range(SEGMENT_SIZE + 5)])
    channel_id = (await alice.views.list_channels())[0].channel_id
    full, current = documents.segment_doc_id(channel_id, 0), documents.segment_doc_id(channel_id, 1)
    stored = await snapshots(alice)
    assert stored[full] == await newest_change(alice, full) and current not in stored


async def test_no_snapshot_on_the_post_path_the_upkeep_takes_them(alice: Node) -> None:
    clock = Clock()
    upkeep = await manual_upkeep(alice, clock)
    await alice.chat.create_channel("general")
    for i in range(SEGMENT_SIZE + 5):  # a full segment, and five posts into the next
        await alice.chat.post("general", f"message {i}")

    channel_id = (await alice.views.list_channels())[0].channel_id
    full, current = documents.segment_doc_id(channel_id, 0), documents.segment_doc_id(channel_id, 1)
    before = await snapshots(alice)
    assert full not in before and current not in before  # the posts wrote none
    while (done := await upkeep.step()) is not None:  # busy: checkpoints and merges, no snapshot
        assert done != "snapshot"
    clock.now += 2 * LULL_S
    assert await upkeep.step() == "snapshot"  # the full segment, at the first lull
    assert (await snapshots(alice))[full] == await newest_change(alice, full)
    assert "snapshot" not in await steps(upkeep)  # the current segment waits for the node to idle
    assert current not in await snapshots(alice)
    clock.now += 2 * IDLE_AFTER_S
    idle = await steps(upkeep)
    assert idle.count("snapshot") == 3  # the directory, the channel head, the current segment
    assert (await snapshots(alice))[current] == await newest_change(alice, current)
    assert upkeep.snapshots == 4 and alice.replica.pending_snapshots() == {}


async def test_a_document_past_the_bound_is_snapshotted_however_busy(alice: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica, "SNAPSHOT_BOUND", 8)
    upkeep = await manual_upkeep(alice, Clock())
    await alice.chat.create_channel("general")
    posted = [await alice.chat.post("general", f"message {i}") for i in range(8)]
    segment = (await alice.views.message_row(posted[0]))["doc_id"]
    assert alice.replica.snapshots_due() == [segment]
    assert await upkeep.step() == "snapshot"
    assert segment not in alice.replica.pending_snapshots()


async def test_the_writer_never_checkpoints_the_upkeep_does(alice: Node) -> None:
    clock = Clock()
    upkeep = await manual_upkeep(alice, clock)
    await alice.chat.create_channel("general")
    await alice.store.checkpoint(Checkpoint.TRUNCATE)
    for i in range(200):  # ~10 pages each
        await alice.chat.post("general", f"message {i}")
    log, _ = await alice.store.checkpoint(Checkpoint.PASSIVE)
    assert log > AUTOMATIC_CHECKPOINT_PAGES  # SQLite's own checkpoint would have restarted the log by now
    await alice.store.checkpoint(Checkpoint.TRUNCATE)
    for i in range(CHECKPOINT_EVERY):
        await alice.chat.post("general", f"again {i}")
    assert "checkpoint" in [await upkeep.step() for _ in range(3)] and upkeep.checkpoints == 1  # busy, past the bound
    await alice.chat.post("general", "one more")
    assert "checkpoint" not in [await upkeep.step() for _ in range(3)]  # busy, under the bound
    clock.now += 2 * IDLE_AFTER_S
    assert "checkpoint" in await steps(upkeep)
    assert upkeep.checkpoints >= 2


async def test_a_log_readers_hold_past_its_bound_is_emptied_once_they_let_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upkeep_module, "FORCE_CHECKPOINT_PAGES", 1)
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        clock = Clock()
        upkeep = await manual_upkeep(node, clock)
        await node.chat.create_channel("general")
        with closing(connect_node_db(home / "node.db", isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM messages").fetchone()  # holds its snapshot: what comes after cannot be copied
            await node.chat.post("general", "written while a reader looks")
            assert "checkpoint" not in await steps(upkeep)  # busy, under CHECKPOINT_EVERY
            clock.now += 2 * IDLE_AFTER_S
            stepping = asyncio.create_task(steps(upkeep))
            await asyncio.wait({stepping}, timeout=READER_HOLDS_S)  # the forced checkpoint waits for the reader
            reader.execute("COMMIT")
            assert "checkpoint" in await asyncio.wait_for(stepping, STEP_DEADLINE_S)
        assert upkeep.forced_checkpoints >= 1
        assert await node.store.checkpoint(Checkpoint.PASSIVE) == (0, 0)  # emptied


async def test_search_finds_messages_whose_index_is_not_merged(alice: Node) -> None:
    clock = Clock()
    await alice.chat.create_channel("general")
    upkeep = await manual_upkeep(alice, clock)  # counting writes from here

    async def index_segments() -> int:
        async with alice.store.reading() as conn:
            return int((await conn.execute(text("SELECT count(DISTINCT segid) FROM messages_fts_idx"))).scalar_one())

    async with alice.store.reading() as conn:
        assert (await conn.execute(text("SELECT v FROM messages_fts_config WHERE k = 'automerge'"))).scalar_one() == 0
    words = [f"word{i}x" for i in range(MERGE_EVERY - 1)]
    for word in words:
        await alice.chat.post("general", f"the {word} of the day")
    assert await index_segments() >= len(words)  # a segment a post: nothing merged them
    for word in words:
        assert [m.text for m in await alice.views.search(word)] == [f"the {word} of the day"]
    assert "merge" not in await steps(upkeep)  # busy, and under MERGE_EVERY writes: no merge yet
    clock.now += 2 * IDLE_AFTER_S
    await steps(upkeep)  # idle: slice after slice until nothing is left to merge
    assert upkeep.merges >= 1 and await index_segments() < len(words)
    for word in words:
        assert [m.text for m in await alice.views.search(word)] == [f"the {word} of the day"]


async def test_close_flushes_what_the_upkeep_had_not_snapshotted(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await manual_upkeep(node, Clock())
        await node.chat.create_channel("general")
        posted = [await node.chat.post("general", f"message {i}") for i in range(10)]
        assert node.replica.pending_snapshots()
        segment = (await node.views.message_row(posted[0]))["doc_id"]
    with connect_node_db(home / "node.db") as conn:
        upto = dict(conn.execute("SELECT doc_id, upto_change_id FROM snapshots").fetchall())
        newest = conn.execute("SELECT max(id) FROM changes WHERE doc_id = ?", (segment,)).fetchone()[0]
    assert upto[segment] == newest
    async with await Node.open(home, PASSPHRASE) as node:
        assert [m.id for m in await node.views.read("general")] == posted
