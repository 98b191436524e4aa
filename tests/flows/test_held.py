"""A big import into segments the node holds but has not loaded (issue 15 point 4): the
workers verify and apply each segment's changes and read the messages they touched; the node's
process authorises the authors and writes. It must store exactly what applying them in the
process stores - change log, message view, search, snapshots - and refuse exactly what that
refuses, all or nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from appliance import documents
from appliance import schema as t
from appliance.changes import SignedChange, parse_change
from appliance.covered import unpack_covered
from appliance.errors import ChangeRejected, MissingDependencies
from appliance.model import MAX_READ_PAGE, ImportSummary
from appliance.node import Node
from appliance.services.replica import SNAPSHOT_EVERY
from tests.conftest import PASSPHRASE, make_workspace, sync_all

IN_PROCESS = 10**9  # a threshold no import reaches


async def view(node: Node) -> list[tuple[Any, ...]]:
    """The message view, reactions included (no reactions row says "no reactions")."""
    columns = [c for c in t.messages.c if c.name != "row_id"]
    async with node.store.reading() as conn:
        assert (await conn.execute(select(func.count()).where(t.message_reactions.c.reactions == "{}"))).scalar_one() == 0
        query = select(*columns, t.REACTIONS_READ).select_from(t.MESSAGES_WITH_REACTIONS).order_by(t.messages.c.message_id)
        return [tuple(row) for row in (await conn.execute(query)).all()]


async def change_log(node: Node) -> list[tuple[Any, ...]]:
    """What the segments' change rows stand for (the directory's differ: each node joined on its
    own): a row per change, or a row covering several (appliance/covered.py)."""
    c = t.changes.c
    async with node.store.reading() as conn:
        rows = (await conn.execute(select(c.doc_id, c.hash, c.seq, c.deps, c.covers))).all()
    logged = []
    for row in rows:
        if documents.parse_doc_id(row.doc_id).kind == documents.DocumentKind.SEGMENT:
            logged += [(row.doc_id, *change) for change in unpack_covered(row.covers or b"")] + [(row.doc_id, row.hash, row.seq, row.deps)]
    return sorted(logged)


async def forwarded(node: Node) -> dict[str, list[tuple[bytes, bytes | None]]]:
    """Every segment's changes as the node would send them on: bytes and signature."""
    return {doc_id: sorted((c.data, c.signature) for c in await node.replica.changes_for(doc_id, [])) for doc_id in await segment_ids(node)}


async def row_counts(node: Node) -> dict[str, int]:
    async with node.store.reading() as conn:
        return dict((await conn.execute(select(t.changes.c.doc_id, func.count()).group_by(t.changes.c.doc_id))).all())


async def segment_ids(node: Node) -> list[str]:
    return [doc_id for doc_id in await node.replica.document_ids() if documents.parse_doc_id(doc_id).kind == documents.DocumentKind.SEGMENT]


async def segment_changes(source: Node, target: Node) -> list[tuple[str, list[SignedChange]]]:
    """What `source` holds of the segments `target` holds that `target` lacks, as changes."""
    return [(doc_id, await source.replica.changes_for(doc_id, await target.replica.document_heads(doc_id))) for doc_id in await segment_ids(target)]


async def import_from(source: Node, target: Node) -> ImportSummary:
    delta = await source.exchange.delta_for([target.identity.node_key])
    return await target.intake.import_batches([(d.doc_id, d.changes) for d in delta.documents], wholes=delta.wholes, received_from=source.identity.node_id)


async def test_workers_store_what_the_process_stores(tmp_path: Path) -> None:
    alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
    async with alpha, bravo, charlie:
        await alpha.chat.create_channel("general")
        ids = [await alpha.chat.post("general", f"message {i}") for i in range(40)]
        await alpha.chat.post_many("general", [f"bulk {i}" for i in range(900)])
        await import_from(alpha, bravo)
        await import_from(alpha, charlie)
        page = [m.id for m in await alpha.views.read("general", limit=1000, mark_read=False)]
        for message_id in page[: SNAPSHOT_EVERY + 50]:  # one segment gets enough to be snapshotted again
            await alpha.chat.react(message_id, "+1")
        for message_id in page[600:700]:
            await alpha.chat.react(message_id, "tada")
        await alpha.chat.react(page[601], "tada", remove=True)
        await alpha.chat.edit(ids[3], "edited: zanzibar")
        await alpha.chat.delete(ids[4])
        await alpha.chat.post("general", "a reply", reply_to=ids[5])
        await alpha.chat.post_many("general", [f"late {i}" for i in range(200)])  # into the newest segment, and a new one
        loaded_before = bravo.replica.in_memory() | charlie.replica.in_memory()
        assert not set(await segment_ids(bravo)) & loaded_before
        bravo.intake.held.threshold = 0
        charlie.intake.held.threshold = IN_PROCESS
        rows_before = await row_counts(bravo)

        by_workers = await import_from(alpha, bravo)
        in_process = await import_from(alpha, charlie)

        assert by_workers == in_process and by_workers.changes > SNAPSHOT_EVERY + 150 + 200
        assert await view(bravo) == await view(charlie)
        assert await change_log(bravo) == await change_log(charlie)
        segments_now = await segment_ids(bravo)
        assert not set(segments_now) & bravo.replica.in_memory()  # the parent loaded none of them
        assert set(segments_now) & charlie.replica.in_memory()  # the other path did
        assert await forwarded(bravo) == await forwarded(charlie)  # bytes a snapshot holds are read from it
        for doc_id in segments_now:
            assert await bravo.replica.document_heads(doc_id) == await alpha.replica.document_heads(doc_id)
        assert [m.text for m in await bravo.views.search("zanzibar")] == ["edited: zanzibar"]
        assert [m.text for m in await bravo.views.search("late 199")] == ["late 199"]
        async with bravo.store.reading() as conn:
            snapshots: dict[str, int] = dict((await conn.execute(select(t.snapshots.c.doc_id, t.snapshots.c.upto_change_id))).all())
            newest: dict[str, int] = dict((await conn.execute(select(t.changes.c.doc_id, func.max(t.changes.c.id)).group_by(t.changes.c.doc_id))).all())
        by_rows, in_rows = await row_counts(bravo), await row_counts(charlie)
        due = [doc_id for doc_id in segments_now if in_rows[doc_id] - rows_before.get(doc_id, 0) >= SNAPSHOT_EVERY]
        assert due  # a segment got enough changes for its snapshot to be refreshed
        for doc_id in due:  # saved by its worker, up to this import; a row per signed change, their bytes in the snapshot
            assert snapshots[doc_id] == newest[doc_id]
            assert by_rows[doc_id] - rows_before[doc_id] < 10
        heads = {doc_id: await alpha.replica.document_heads(doc_id) for doc_id in segments_now}
    async with await Node.open(tmp_path / "bravo", PASSPHRASE) as reopened:  # each segment loaded from its snapshot and the rows after it
        for doc_id in segments_now:
            assert sorted((await reopened.replica.document(doc_id)).get_heads()) == sorted(heads[doc_id])
        assert [m.text for m in await reopened.views.read("general", limit=5, mark_read=False)][-1] == "late 199"
    nodes = [await Node.open(tmp_path / name, PASSPHRASE) for name in ("alpha", "bravo", "charlie")]
    async with nodes[0] as alpha, nodes[1] as bravo, nodes[2] as charlie:  # reactions taken back: cleared by the workers as in the process
        for message_id in page[600:700]:
            await alpha.chat.react(message_id, "tada", remove=True)
        bravo.intake.held.threshold = 0
        charlie.intake.held.threshold = IN_PROCESS
        assert await import_from(alpha, bravo) == await import_from(alpha, charlie)
        assert not set(segments_now) & bravo.replica.in_memory()
        assert await view(bravo) == await view(charlie)
        shown = {m.id: m.reactions for m in await bravo.views.read("general", limit=MAX_READ_PAGE, mark_read=False)}
        assert [shown[message_id] for message_id in page[600:700]] == [{}] * 100
        assert shown[page[0]] == {"+1": ["alice"]}  # others' reactions stay


@pytest.mark.parametrize("threshold", [0, IN_PROCESS], ids=["workers", "in-process"])
async def test_a_bad_segment_batch_rejects_the_import_and_stores_nothing(tmp_path: Path, threshold: int) -> None:
    alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
    async with alpha, bravo, charlie:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(700)])
        await import_from(alpha, bravo)
        await import_from(alpha, charlie)
        for message in await alpha.views.read("general", limit=MAX_READ_PAGE, mark_read=False):
            await alpha.chat.react(message.id, "+1")
        await sync_all(alpha, bravo)  # bravo now has alpha's reactions, to react on top of them
        for message in (await bravo.views.read("general", limit=MAX_READ_PAGE, mark_read=False))[:300]:
            await bravo.chat.react(message.id, "eyes")
        charlie.intake.held.threshold = threshold
        before = (await view(charlie), await change_log(charlie))
        batches = await segment_changes(alpha, charlie)
        assert [len(c) for _, c in batches] == [512, 188]

        # A signature that does not verify, in the last segment only: nothing of the first lands either.
        doc_id, changes = batches[-1]
        forged = batches[:-1] + [(doc_id, changes[:-1] + [SignedChange(changes[-1].data, bytes(64))])]
        with pytest.raises(ChangeRejected, match=f"{doc_id}: change .* is not signed by its author"):
            await charlie.intake.import_batches(forged, received_from=alpha.identity.node_id)
        assert (await view(charlie), await change_log(charlie)) == before

        # Changes that build on changes charlie lacks (bravo's reactions without alpha's).
        only_bravos = [(doc_id, [c for c in changes if parse_change(c.data).actor[:32] == bravo.identity.user_key]) for doc_id, changes in await segment_changes(bravo, charlie)]
        assert sum(len(c) for _, c in only_bravos) == 300
        with pytest.raises(MissingDependencies):
            await charlie.intake.import_batches(only_bravos, received_from=bravo.identity.node_id)
        assert (await view(charlie), await change_log(charlie)) == before

        # An author charlie's directory no longer lets write: bravo, made an observer.
        await alpha.directory.set_role("bravo", "observer")
        await import_from(alpha, charlie)  # the directory, and alpha's reactions
        settled = (await view(charlie), await change_log(charlie))
        with pytest.raises(ChangeRejected, match="bravo is an observer and cannot write"):
            await import_from(bravo, charlie)
        assert (await view(charlie), await change_log(charlie)) == settled
        assert len([m for m in await charlie.views.read("general", limit=MAX_READ_PAGE, mark_read=False) if m.reactions == {"+1": ["alice"]}]) == 700


async def test_heads_kept_from_an_import_follow_later_writes(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(600)])
        await import_from(alpha, bravo)  # two segments, read by the workers: bravo keeps their heads
        newest = sorted(await segment_ids(bravo))[-1]
        assert newest not in bravo.replica.in_memory()
        assert await bravo.replica.document_heads(newest) == await alpha.replica.document_heads(newest)
        async with await Node.open(tmp_path / "bravo", PASSPHRASE) as other:  # another process on bravo's store
            await other.chat.post("general", "from the other process")
            written_there = await other.replica.document_heads(newest)
        assert await bravo.replica.refresh()  # what the console's poll does
        assert await bravo.replica.document_heads(newest) == written_there != await alpha.replica.document_heads(newest)
        await bravo.chat.post("general", "and from this one")  # loads the segment: its heads from memory
        assert newest in bravo.replica.in_memory()
        assert await bravo.replica.document_heads(newest) != written_there


async def test_a_refresh_during_imports_never_takes_them_for_another_process(tmp_path: Path) -> None:
    """The console polls the store for other processes' writes while imports run: rows an
    import appended while a poll waited for the write lock are this process's own."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        polled: list[frozenset[str]] = []
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                polled.append(await bravo.replica.refresh())
                await asyncio.sleep(0)

        poller = asyncio.ensure_future(poll())
        try:
            for round_ in range(12):
                await alpha.chat.post_many("general", [f"round {round_} message {i}" for i in range(300)])
                await import_from(alpha, bravo)
        finally:
            stop.set()
            await asyncio.wait_for(poller, 10)
        assert len(polled) > 12 and not any(polled)
        assert len(await bravo.views.read("general", limit=MAX_READ_PAGE, mark_read=False)) == 3600


async def test_an_import_after_a_local_post_is_not_taken_for_another_process(tmp_path: Path) -> None:
    """A local post does not move the watermark of what the poll has seen: imports after it
    are still this process's own."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await import_from(alpha, bravo)
        await bravo.replica.refresh()
        await bravo.chat.post("general", "bravo, before the imports")
        for round_ in range(3):  # new segments each time: they come whole, read by the workers
            await alpha.chat.post_many("general", [f"round {round_} message {i}" for i in range(1100)])
            await import_from(alpha, bravo)
        await bravo.chat.post("general", "bravo, between them")
        await alpha.chat.post_many("general", [f"one more {i}" for i in range(1100)])
        await import_from(alpha, bravo)
        assert await bravo.replica.refresh() == frozenset()
        assert await bravo.replica.refresh() == frozenset()
        async with await Node.open(tmp_path / "bravo", PASSPHRASE) as other:  # another process's write is still seen
            await other.chat.post("general", "from the other process")
        assert await bravo.replica.refresh()


async def test_a_segment_a_worker_keeps_loaded_is_used_only_for_the_bytes_stored(tmp_path: Path) -> None:
    """A worker keeps the segments it read (appliance/kept_documents.py). After an import the
    node rolled back (a preview), the worker's copy holds changes the store does not: the next
    import into that segment must start from the store's bytes, not from that copy."""
    alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
    async with alpha, bravo, charlie:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(600)])
        await import_from(alpha, charlie)
        await import_from(alpha, bravo)  # whole: the workers read each segment, and keep it
        first = [m.id for m in await alpha.views.read("general", limit=MAX_READ_PAGE, mark_read=False)][:300]
        for message_id in first:
            await alpha.chat.react(message_id, "+1")
            await charlie.chat.react(message_id, "eyes")
        bravo.intake.held.threshold = 0
        preview = await bravo.intake.import_batches(await segment_changes(alpha, bravo), received_from=alpha.identity.node_id, preview=True)
        assert preview.preview and preview.changes == 300

        assert (await import_from(charlie, bravo)).changes == 300
        reactions = {m.id: m.reactions for m in await bravo.views.read("general", limit=MAX_READ_PAGE, mark_read=False)}
        assert [reactions[message_id] for message_id in first] == [{"eyes": ["charlie"]}] * 300  # alice's, previewed, are not there
        for doc_id in await segment_ids(bravo):
            assert sorted(await bravo.replica.document_heads(doc_id)) == sorted(await charlie.replica.document_heads(doc_id))

        assert (await import_from(alpha, bravo)).changes == 300
        reactions = {m.id: m.reactions for m in await bravo.views.read("general", limit=MAX_READ_PAGE, mark_read=False)}
        assert [reactions[message_id] for message_id in first] == [{"+1": ["alice"], "eyes": ["charlie"]}] * 300
        heads = {doc_id: sorted(await bravo.replica.document_heads(doc_id)) for doc_id in await segment_ids(bravo)}
    async with await Node.open(tmp_path / "bravo", PASSPHRASE) as reopened:  # what the store holds, loaded afresh
        for doc_id, expected in heads.items():
            assert sorted((await reopened.replica.document(doc_id)).get_heads()) == expected
