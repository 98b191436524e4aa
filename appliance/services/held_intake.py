"""The intake of a big import into segments this node already holds: each segment's changes
verified, applied and its touched messages read in the node's worker processes
(appliance/held_reader.py), their authors authorised on the directory here, and the rows
written by the intake's one transaction as the workers finish - the parent loads no segment.
A small import, or one into segments in memory, is applied here in the process instead: a
worker would first have to load what is already loaded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import documents
from appliance import schema as t
from appliance.bulk import insert_tuples
from appliance.changes import Authorise, SignedChange, check_authors
from appliance.held_reader import HeldApplied, HeldBatch
from appliance.kernel import Clock
from appliance.services.replica import SNAPSHOT_EVERY, ReplicaService, newest_change_ids, put_snapshot
from appliance.services.views import ViewsService, store_view_rows
from appliance.stored_documents import StoredDocument, stored_documents
from appliance.whole_reader import LOG_COLUMNS, LogStamp
from appliance.workers import WorkerPool, settle

HELD_IN_WORKERS = 256  # changes into segments held here but not in memory from which an import hands them to the workers


@dataclass(frozen=True)
class HeldWork:
    """An import's segments for the workers (`doc_ids`), with everything it brings (`grouped`)
    and who may write each (`authoriser`). Which changes of each the node holds, the worker
    reads from the segment as stored."""

    doc_ids: tuple[str, ...]
    grouped: Mapping[str, Sequence[SignedChange]]
    authoriser: Callable[[str], Authorise]


@dataclass(frozen=True)
class WrittenHeld:
    doc_id: str
    changes: int
    new_messages: int
    heads: tuple[bytes, ...]  # empty when nothing was applied


class HeldIntake:
    def __init__(self, replica: ReplicaService, views: ViewsService, clock: Clock, pool: WorkerPool) -> None:
        self._replica = replica
        self._views = views
        self._clock = clock
        self._pool = pool
        self.threshold = HELD_IN_WORKERS

    def for_workers(self, grouped: Mapping[str, Sequence[SignedChange]]) -> tuple[str, ...]:
        """The segments whose changes the workers apply: those not in memory, when they bring
        at least `threshold` changes between them."""
        loaded = self._replica.in_memory()
        chosen = tuple(doc_id for doc_id in grouped if documents.parse_doc_id(doc_id).kind == documents.DocumentKind.SEGMENT and doc_id not in loaded)
        return chosen if chosen and sum(len(grouped[doc_id]) for doc_id in chosen) >= self.threshold else ()

    async def apply_and_write(
        self,
        conn: AsyncConnection,
        work: HeldWork,
        admins: frozenset[str],
        received_from: str | None,
        preview: bool,
        progress: Callable[[str, int], None] | None = None,
    ) -> list[WrittenHeld]:
        """In the import's transaction: hands every segment, as stored, to the workers with its
        changes; as each comes back verified and applied, checks its authors with
        `work.authoriser` (ChangeRejected for the first refused: the transaction then rolls
        back everything) and writes its change rows, view rows and - when due, and not a
        `preview` - its snapshot, every segment back by then in one go."""
        stored: dict[str, StoredDocument] = await conn.run_sync(stored_documents, list(work.doc_ids))
        await self._replica.ensure_document_rows(conn, list(work.doc_ids))  # held here: their rows are there, but for a damaged store
        stamp = LogStamp(received_from, self._clock())
        pending = [
            asyncio.ensure_future(self._pool.apply_held(self._batch(doc_id, stored[doc_id], work, admins, stamp, preview)))
            for doc_id in work.doc_ids
        ]
        written: list[WrittenHeld] = []
        try:
            while pending:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                ready = [reading.result() for reading in pending if reading.done()]
                pending = [reading for reading in pending if not reading.done()]
                for applied in ready:
                    check_authors(applied.doc_id, applied.authors, work.authoriser(applied.doc_id))
                    if progress is not None:
                        progress("verify", len(work.grouped[applied.doc_id]))
                applied_now = [applied for applied in ready if applied.changes]
                new_messages = await conn.run_sync(_store_held, applied_now, self._clock())
                self._views.view_changed([applied.doc_id for applied in applied_now])
                for applied in ready:
                    written.append(WrittenHeld(applied.doc_id, applied.changes, new_messages.get(applied.doc_id, 0), applied.heads))
                    if progress is not None:
                        progress("write", applied.changes)
        finally:
            await settle(pending)
        return written

    @staticmethod
    def _batch(doc_id: str, stored: StoredDocument, work: HeldWork, admins: frozenset[str], stamp: LogStamp, preview: bool) -> HeldBatch:
        incoming = tuple(work.grouped[doc_id])
        due = not preview and stored.since_snapshot + len(incoming) >= SNAPSHOT_EVERY
        return HeldBatch(doc_id, stored.data, incoming, admins, stamp, due)


def _store_held(conn: Connection, applied: Sequence[HeldApplied], now: int) -> dict[str, int]:
    """The change rows, the snapshots saved (each up to its document's newest row, now this
    import's) and the view rows; returns how many messages are new, per segment."""
    insert_tuples(conn, t.changes, LOG_COLUMNS, [row for item in applied for row in item.log_rows])
    saved = {item.doc_id: item.saved for item in applied if item.saved is not None}
    for doc_id, newest in newest_change_ids(conn, list(saved)).items():
        put_snapshot(conn, doc_id, saved[doc_id], newest, now)
    messages = [row for item in applied for row in item.messages]
    return store_view_rows(conn, messages, {item.doc_id for item in applied if item.every_message}, [row for item in applied for row in item.reactions])
