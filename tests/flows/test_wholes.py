"""Segments carried whole (issue 15 points 3 and 4): a peer that lacks a segment entirely is
sent its compacted document and one signature per actor; the receiver reads it in worker
processes, admits it by those signatures, stores the bytes as received and never loads it in
the parent. Everything else about an import holds: all or nothing, idempotent, forwardable."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select

from appliance import documents, ids, segments
from appliance import schema as t
from appliance.changes import parse_change, sign_change
from appliance.errors import ChangeRejected
from appliance.model import Delta, ImportSummary, WholeSegment
from appliance.node import Node
from appliance.store import DB_FILE, MIGRATIONS
from appliance.whole_reader import WORKER_MEMORY_BYTES
from appliance.wholes import MAX_WHOLE_BYTES
from appliance.workers import WorkerPool, start_fork_server
from tests.conftest import PASSPHRASE, make_workspace, node_engine, sync_all

VECTORS = Path(__file__).parent / "automerge_vectors"
MESSAGES = 1200  # three segments of 512


async def delta_to(source: Node, target: Node) -> Delta:
    return await source.exchange.delta_for([target.identity.node_key])


async def import_delta(target: Node, delta: Delta, source: Node, wholes: tuple[WholeSegment, ...] | None = None, *, preview: bool = False) -> ImportSummary:
    return await target.intake.import_batches(
        [(d.doc_id, d.changes) for d in delta.documents], wholes=delta.wholes if wholes is None else wholes, received_from=source.identity.node_id, preview=preview
    )


async def stored(node: Node, doc_id: str) -> tuple[bytes | None, int, int, int]:
    """(snapshot bytes, change rows, change rows without bytes, changes the rows stand for) of
    a document."""
    async with node.store.reading() as conn:
        snapshot = (await conn.execute(select(t.snapshots.c.data).where(t.snapshots.c.doc_id == doc_id))).scalar()
        rows = (await conn.execute(select(func.count()).where(t.changes.c.doc_id == doc_id))).scalar_one()
        held = (await conn.execute(select(func.count()).where(t.changes.c.doc_id == doc_id, t.changes.c.data.is_(None)))).scalar_one()
        logged = (await conn.execute(select(func.coalesce(func.sum(1 + t.changes.c.covered), 0)).where(t.changes.c.doc_id == doc_id))).scalar_one()
    return snapshot, rows, held, logged


async def texts(node: Node) -> list[str]:
    return [m.text for m in await node.views.read("general", limit=5000, mark_read=False)]


async def test_segments_travel_whole_are_stored_as_received_and_forward_both_ways(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await make_workspace(tmp_path, "bravo", "charlie", "delta")
    async with alpha, bravo, charlie, delta:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(MESSAGES)])
        sent = await delta_to(alpha, bravo)
        segments = sorted((d for d in await alpha.replica.document_ids() if "/seg/" in d), reverse=True)
        assert [w.doc_id for w in sent.wholes] == segments and len(segments) == 3  # newest first
        assert not any("/seg/" in d.doc_id for d in sent.documents)  # directory and head as changes
        for whole in sent.wholes:
            assert len(whole.signatures) == 1  # one actor: alpha's user in this process

        preview = await import_delta(bravo, sent, alpha, preview=True)
        assert preview.channels[0].changes == MESSAGES + 1 and await bravo.replica.document_ids() == [documents.DIRECTORY_DOC]
        summary = await import_delta(bravo, sent, alpha)
        assert summary.channels[0].changes == MESSAGES + 1  # the head's change and one change a message
        assert summary.channels[0].new_messages == MESSAGES
        assert await texts(bravo) == [f"message {i}" for i in range(MESSAGES)]
        assert [m.text for m in await bravo.views.search("1199")] == ["message 1199"]
        for whole in sent.wholes:
            snapshot, rows, held, logged = await stored(bravo, whole.doc_id)
            assert snapshot == whole.data  # as received
            assert rows == held == 1 and logged == len(documents.load_document(whole.data, b"\x00" * 48).get_changes([]))  # one row for alpha's actor, no bytes

        again = await import_delta(bravo, sent, alpha)
        assert (again.changes, again.duplicates) == (0, summary.changes + summary.duplicates)

        # Forwarded by changes: changes_for reads the bytes held in the snapshot.
        await sync_all(bravo, delta)
        assert await texts(delta) == await texts(bravo)
        # A peer holding part of a segment that came whole is sent the rest as changes.
        first = parse_change((await alpha.replica.changes_for(segments[1], []))[0].data).hash
        partial = await bravo.exchange.delta_for([charlie.identity.node_key], only=[segments[1]], also_held={segments[1]: [first]})
        assert partial.wholes == ()
        ((doc_id, rest),) = partial.documents
        assert doc_id == segments[1] and [c.data for c in rest] == [c.data for c in (await alpha.replica.changes_for(segments[1], [first]))]
        # Forwarded whole: the stored snapshot, not re-saved - after bravo added to one segment.
        await bravo.chat.post("general", "from bravo")
        onward = await delta_to(bravo, charlie)
        by_doc = {w.doc_id: w for w in onward.wholes}
        assert by_doc[segments[1]].data == {w.doc_id: w for w in sent.wholes}[segments[1]].data
        assert len(by_doc[segments[0]].signatures) == 2  # alpha's and bravo's users wrote in it
        await import_delta(charlie, onward, bravo)
        assert await texts(charlie) == [f"message {i}" for i in range(MESSAGES)] + ["from bravo"]


async def test_a_whole_of_a_segment_held_in_part_imports_as_its_changes(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"early {i}" for i in range(10)])
        await sync_all(alpha, bravo)
        await alpha.chat.post_many("general", [f"late {i}" for i in range(5)])
        sent = await delta_to(alpha, bravo)  # bravo never acknowledged anything: all whole
        assert len(sent.wholes) == 1
        summary = await import_delta(bravo, sent, alpha)
        assert (summary.changes, summary.channels[0].changes) == (5, 5)
        assert len(await texts(bravo)) == 15
        _, rows, held, logged = await stored(bravo, sent.wholes[0].doc_id)
        assert (rows, held, logged) == (15, 0, 15)  # imported as changes: each with its bytes


async def test_a_whole_of_interleaved_authors_is_logged_per_actor_and_forwarded_in_causal_order(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await make_workspace(tmp_path, "bravo", "charlie", "delta")
    async with alpha, bravo, charlie, delta:
        await alpha.chat.create_channel("general")
        for turn in range(3):  # alice and bob take turns in one segment: each one's changes depend on the other's
            await alpha.chat.post_many("general", [f"alice {turn}.{i}" for i in range(3)])
            await sync_all(alpha, bravo)
            await bravo.chat.post_many("general", [f"bob {turn}.{i}" for i in range(3)])
            await sync_all(bravo, alpha)
            if turn == 0:
                await sync_all(alpha, delta)  # delta holds the first turn only
        sent = await delta_to(alpha, charlie)
        (whole,) = [w for w in sent.wholes if "/seg/" in w.doc_id]
        assert len(whole.signatures) == 2
        await import_delta(charlie, sent, alpha)
        assert (await stored(charlie, whole.doc_id))[1:] == (2, 2, 18)  # a row per actor, standing for all 18 changes

        # Listed by the replica and by the exchange, the changes come in an order Automerge can
        # apply: no change before one it depends on (alice's rows cover changes bob's came between).
        listed = [parse_change(c.data) for c in await charlie.replica.changes_for(whole.doc_id, [])]
        assert len(listed) == 18 and all(set(h.deps) <= {e.hash for e in listed[:i]} for i, h in enumerate(listed))
        held = await delta.replica.document_heads(whole.doc_id)
        partial = await charlie.exchange.delta_for([delta.identity.node_key], only=[whole.doc_id], also_held={whole.doc_id: held})
        ((_, rest),) = partial.documents
        assert len(rest) == 12
        await import_delta(delta, partial, charlie)
        assert await texts(delta) == await texts(alpha)
        assert await charlie.replica.document_heads(whole.doc_id) == await alpha.replica.document_heads(whole.doc_id)


async def test_one_bad_whole_rejects_the_import_and_stores_nothing(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(MESSAGES)])
        sent = await delta_to(alpha, bravo)
        good, bad = sent.wholes[0], sent.wholes[1]
        forged = WholeSegment(bad.doc_id, bad.data, tuple((h, bytes(64)) for h, _ in bad.signatures))
        with pytest.raises(ChangeRejected, match=f"{bad.doc_id}: change .* is not signed by its author"):
            await import_delta(bravo, sent, alpha, (good, forged))
        assert await bravo.replica.document_ids() == [documents.DIRECTORY_DOC]
        await import_delta(bravo, sent, alpha)
        assert len(await texts(bravo)) == MESSAGES


async def test_a_change_slipped_in_under_another_authors_actor_is_rejected(tmp_path: Path) -> None:
    """THE attack, through the intake: bravo's user, a member holding a copy of a segment,
    writes a change under alice's actor id, signs its own change on top and sends the
    segment whole with alice's genuine signature over her earlier newest change."""
    alpha, bravo, charlie, delta = await make_workspace(tmp_path, "bravo", "charlie", "delta")
    async with alpha, bravo, charlie, delta:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(5)])
        await sync_all(alpha, bravo)
        await sync_all(alpha, charlie)
        genuine = await delta_to(alpha, delta)
        await import_delta(delta, genuine, alpha, ())  # the directory and head only
        (whole,) = genuine.wholes
        segment, data, ((alice_tip, alice_signature),) = whole.doc_id, whole.data, whole.signatures
        doc = documents.load_document(data, parse_change((await bravo.replica.changes_for(segment, []))[-1].data).actor)
        segments.post_message(doc, message_id=ids.encode_crockford(1, 26), author=alpha.identity.user_key.hex(), created_at=1, text="alice never wrote this", root_id=None, files=[], mentions=[])
        doc.set_actor(bravo.identity.user_key + bytes(16))
        segments.post_message(doc, message_id=ids.encode_crockford(2, 26), author=bravo.identity.user_key.hex(), created_at=2, text="cover", root_id=None, files=[], mentions=[])
        cover = doc.get_last_local_change()
        assert cover is not None
        bravo_key = bravo.identity.keys.users[bravo.identity.user_key]
        attack = WholeSegment(segment, doc.save(), ((alice_tip, alice_signature), (cover.hash, sign_change(bravo_key, segment, cover.hash))))
        # delta holds nothing of the segment: it reads the whole and refuses it, naming alice.
        with pytest.raises(ChangeRejected, match=f"actor {ids.key_id(alpha.identity.user_key)} has 6 change\\(s\\) but its author signed change 5"):
            await delta.intake.import_batches([], wholes=(attack,), received_from=bravo.identity.node_id)
        assert await stored(delta, segment) == (None, 0, 0, 0)
        # charlie holds it: the whole goes through the change verifier, which refuses it too.
        with pytest.raises(ChangeRejected, match="is not signed by its author"):
            await charlie.intake.import_batches([], wholes=(attack,), received_from=bravo.identity.node_id)
        assert len(await texts(charlie)) == 5


async def test_a_segment_the_binding_panics_on_is_refused_and_the_node_keeps_working(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", ["hello"])
        sent = await delta_to(alpha, bravo)
        (whole,) = sent.wholes
        crafted = WholeSegment(whole.doc_id, (VECTORS / "panic-document.bin").read_bytes(), whole.signatures)
        with pytest.raises(ChangeRejected, match="the Automerge library failed on these bytes"):
            await import_delta(bravo, sent, alpha, (crafted,))
        assert await bravo.replica.document_ids() == [documents.DIRECTORY_DOC]
        await import_delta(bravo, sent, alpha)
        assert await texts(bravo) == ["hello"]


async def test_a_whole_over_the_size_limit_is_refused_before_any_worker_sees_it(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post("general", "hello")
        sent = await delta_to(alpha, bravo)
        (whole,) = sent.wholes
        oversized = WholeSegment(whole.doc_id, whole.data + bytes(MAX_WHOLE_BYTES), whole.signatures)
        with pytest.raises(ChangeRejected, match="over the limit"):
            await import_delta(bravo, sent, alpha, (oversized,))
        assert multiprocessing.active_children() == []  # no worker was started for it


async def test_a_worker_killed_mid_import_rejects_that_import_and_the_next_succeeds(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(MESSAGES)])
        sent = await delta_to(alpha, bravo)
        importing = asyncio.ensure_future(import_delta(bravo, sent, alpha))
        deadline = time.monotonic() + 30
        while not multiprocessing.active_children():  # the pool starts with the first whole it reads
            assert time.monotonic() < deadline and not importing.done(), "no worker started"
            await asyncio.sleep(0.001)
        for worker in multiprocessing.active_children():
            os.kill(worker.pid or 0, signal.SIGKILL)
        with pytest.raises(ChangeRejected, match="the worker reading it died"):
            await asyncio.wait_for(importing, 60)
        assert await bravo.replica.document_ids() == [documents.DIRECTORY_DOC]
        await import_delta(bravo, sent, alpha)  # on a fresh pool
        assert len(await texts(bravo)) == MESSAGES
        workers = multiprocessing.active_children()
        assert workers
        for worker in workers:  # each with its address space capped
            (limit,) = [line.split()[3] for line in Path(f"/proc/{worker.pid}/limits").read_text().splitlines() if line.startswith("Max address space")]
            assert limit == str(WORKER_MEMORY_BYTES)

async def test_workers_started_ahead_read_the_next_import(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(MESSAGES)])
        before = {p.pid for p in multiprocessing.active_children()}
        await bravo.intake.warm_workers()
        started = {p.pid for p in multiprocessing.active_children()} - before
        assert len(started) >= 2  # the fork server's workers (and the fork server) are up before any whole arrives
        await bravo.intake.warm_workers()  # once started, warming again starts nothing
        assert {p.pid for p in multiprocessing.active_children()} - before == started
        await import_delta(bravo, await delta_to(alpha, bravo), alpha)
        assert len(await texts(bravo)) == MESSAGES
        assert {p.pid for p in multiprocessing.active_children()} - before == started  # read by the workers already running


def _children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(entry.name))
    return children


def _is_fork_server(pid: int) -> bool:
    try:
        return b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def test_a_fork_server_started_ahead_is_the_one_the_workers_fork_from(tmp_path: Path) -> None:
    """What `rallypoint bundle import` does before it unlocks the node: the fork server boots
    while the caller goes on, once per process, and the node's workers fork from it."""
    start_fork_server()
    servers = {pid for pid in _children_of(os.getpid()) if _is_fork_server(pid)}
    assert len(servers) == 1
    start_fork_server()  # started once
    assert {pid for pid in _children_of(os.getpid()) if _is_fork_server(pid)} == servers
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(MESSAGES)])
        await bravo.intake.warm_workers()
        assert {worker.pid for worker in multiprocessing.active_children()} & _children_of(servers.pop())  # forked by the server started ahead
        await import_delta(bravo, await delta_to(alpha, bravo), alpha)
        assert len(await texts(bravo)) == MESSAGES


async def test_a_warm_up_under_way_is_waited_for_not_repeated() -> None:
    """A LAN service warms the pool as it starts; whoever warms it meanwhile (a bench, a session)
    returns once the workers are up, and starts none of its own."""
    pool = WorkerPool()
    try:
        before = {p.pid for p in multiprocessing.active_children()}
        first = asyncio.ensure_future(pool.warm())
        deadline = time.monotonic() + 30
        while not pool.started:  # the first warm-up has the pool, its workers still starting
            assert time.monotonic() < deadline and not first.done()
            await asyncio.sleep(0.001)
        await pool.warm()
        assert len({p.pid for p in multiprocessing.active_children()} - before) == pool.workers
        await first
        assert len({p.pid for p in multiprocessing.active_children()} - before) == pool.workers
    finally:
        pool.close()


async def test_heads_of_a_document_not_in_memory_come_from_its_change_log(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", ["first"])
        await sync_all(alpha, bravo)
        await alpha.chat.post("general", "alpha, apart")  # concurrent: the segment gets two heads
        await bravo.chat.post("general", "bravo, apart")
        await sync_all(bravo, alpha)
    async with await Node.open(tmp_path / "alpha", PASSPHRASE) as reopened:  # nothing loaded yet
        segment = next(d for d in await reopened.replica.document_ids() if "/seg/" in d)
        from_log = await reopened.replica.document_heads(segment)
        loaded = (await reopened.replica.document(segment)).get_heads()
        assert len(loaded) == 2 and sorted(from_log) == sorted(loaded)


async def test_without_wholes_every_segment_goes_as_changes(tmp_path: Path) -> None:
    """For a reader of a format that cannot carry wholes (a format 1 bundle)."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", ["one", "two"])
        sent = await alpha.exchange.delta_for([bravo.identity.node_key], wholes=False)
        assert sent.wholes == () and [len(d.changes) for d in sent.documents if "/seg/" in d.doc_id] == [2]
        await import_delta(bravo, sent, alpha)
        assert await texts(bravo) == ["one", "two"]


async def test_a_downgrade_below_0008_fills_the_bytes_in_from_the_snapshots(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(20)])
        await import_delta(bravo, await delta_to(alpha, bravo), alpha)
        (segment,) = [d for d in await alpha.replica.document_ids() if "/seg/" in d]
        expected = [c.data for c in await alpha.replica.changes_for(segment, [])]
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with node_engine(tmp_path / "bravo" / DB_FILE).begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
        assert [row[0] for row in conn.execute(select(t.changes.c.data).where(t.changes.c.doc_id == segment).order_by(t.changes.c.id))] == expected
    async with await Node.open(tmp_path / "bravo", PASSPHRASE) as reopened:  # upgraded again
        assert len(await texts(reopened)) == 20
