"""The intake of segments carried whole (model.WholeSegment): read and checked against their
authors' signatures by the rule of appliance/wholes.py in the node's worker processes
(appliance/workers.py), their authors authorised on the directory here, and written by
the intake's one transaction - the change rows without bytes, the snapshot as received, the
message view from the workers' readings. A whole of a document this node holds part of is
imported as its changes instead, through the same verifier as any other batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import documents
from appliance import schema as t
from appliance.bulk import insert_tuples
from appliance.changes import Authorise, SignedChange, check_authors
from appliance.errors import ChangeRejected
from appliance.kernel import Clock
from appliance.model import WholeSegment
from appliance.services.replica import ReplicaService, newest_change_ids
from appliance.services.views import ViewsService, insert_view_rows, store_reactions
from appliance.whole_reader import LOG_COLUMNS, LogStamp, WholeAdmitted
from appliance.workers import WorkerPool, settle


def check_wholes(wholes: Sequence[WholeSegment]) -> None:
    """Each whole names a segment, once: ChangeRejected otherwise."""
    seen: set[str] = set()
    for whole in wholes:
        try:
            kind = documents.parse_doc_id(whole.doc_id).kind
        except documents.DocumentError as exc:
            raise ChangeRejected(str(exc)) from exc
        if kind != documents.DocumentKind.SEGMENT:
            raise ChangeRejected(f"{whole.doc_id}: only segments travel whole")
        if whole.doc_id in seen:
            raise ChangeRejected(f"{whole.doc_id}: carried whole twice")
        seen.add(whole.doc_id)


class WholesIntake:
    """Owns the node's worker pool (started on the first whole it reads, shut at close)."""

    def __init__(self, replica: ReplicaService, views: ViewsService, clock: Clock, pool: WorkerPool | None = None) -> None:
        self._replica = replica
        self._clock = clock
        self._views = views
        self.pool = pool or WorkerPool()

    def close(self) -> None:
        self.pool.close()

    async def split_known(self, wholes: Sequence[WholeSegment], known: Mapping[str, Collection[bytes]], grouped: dict[str, list[SignedChange]]) -> list[WholeSegment]:
        """Wholes of documents this node holds changes of - or that chunks of the same import
        carry - are read as their changes and join `grouped` (each change with its signature
        when the whole carries one). Returns the wholes of documents wholly new here."""
        partial = [whole for whole in wholes if known.get(whole.doc_id) or whole.doc_id in grouped]
        readings = await self.pool.list_all([(whole.doc_id, whole.data) for whole in partial])
        for whole, reading in zip(partial, readings, strict=True):
            signatures = dict(whole.signatures)
            grouped.setdefault(whole.doc_id, []).extend(SignedChange(raw, signatures.get(change_hash)) for change_hash, raw in zip(reading.hashes, reading.raw_changes, strict=True))
        held = {whole.doc_id for whole in partial}
        return [whole for whole in wholes if whole.doc_id not in held]

    def start_reading(self, wholes: Sequence[WholeSegment], admins: frozenset[str], received_from: str | None) -> WholeReads:
        """Hands every whole to the workers at once; the import writes each as its reading comes
        back (`admit_and_write`), so the parent writes while the workers read."""
        stamp = LogStamp(received_from, self._clock())
        return WholeReads(tuple((whole, asyncio.ensure_future(self.pool.admit(whole.doc_id, whole.data, dict(whole.signatures), admins, stamp))) for whole in wholes))

    async def admit_and_write(
        self, conn: AsyncConnection, reads: WholeReads, authoriser: Callable[[str], Authorise], progress: Callable[[str, int], None] | None = None
    ) -> list[WrittenWhole]:
        """In the import's transaction, as the workers finish (each has checked its whole against
        its authors' signatures): checks each whole's authors with `authoriser(doc_id)`
        (ChangeRejected for the first refused: the transaction then rolls back every whole
        written before it), then writes the change rows, the snapshot as received and the
        message view - every whole read by then in one go, so a statement serves several
        segments."""
        written: list[WrittenWhole] = []
        pending = list(reads.pending)
        await self._replica.ensure_document_rows(conn, [whole.doc_id for whole, _ in pending])  # while the workers read
        while pending:
            await asyncio.wait([reading for _, reading in pending], return_when=asyncio.FIRST_COMPLETED)
            ready = [(whole, reading.result()) for whole, reading in pending if reading.done()]
            pending = [(whole, reading) for whole, reading in pending if not reading.done()]
            for whole, admitted in ready:
                check_authors(whole.doc_id, admitted.authors, authoriser(whole.doc_id))
                if progress is not None:
                    progress("verify", admitted.changes)
            await conn.run_sync(_store_wholes, ready, self._clock())
            for whole, admitted in ready:
                written.append(WrittenWhole(whole.doc_id, admitted.changes, len(admitted.messages), admitted.heads))
                if progress is not None:
                    progress("write", admitted.changes)
        return written


@dataclass(frozen=True)
class WholeReads:
    """Wholes handed to the workers, each with its reading to come."""

    pending: tuple[tuple[WholeSegment, asyncio.Future[WholeAdmitted]], ...]

    async def settle(self) -> None:
        """Cancels what is still being read and waits for it: nothing runs on behind an import
        that ended early."""
        await settle([reading for _, reading in self.pending])


@dataclass(frozen=True)
class WrittenWhole:
    doc_id: str
    changes: int
    new_messages: int
    heads: tuple[bytes, ...]


def _store_wholes(conn: Connection, ready: Sequence[tuple[WholeSegment, WholeAdmitted]], now: int) -> None:
    """The change rows without bytes (one per actor), the snapshots as received covering them
    (the documents are not loaded here), the message view rows (VIEW_COLUMNS), their search
    entries and reactions. A document wholly new here has no messages in the view yet, unless a crafted
    segment repeats a message id of another: the insert then fails, and the import with it."""
    insert_tuples(conn, t.changes, LOG_COLUMNS, [row for _, admitted in ready for row in admitted.log_rows])
    doc_ids = [whole.doc_id for whole, _ in ready]
    newest = newest_change_ids(conn, doc_ids)
    conn.execute(delete(t.snapshots).where(t.snapshots.c.doc_id.in_(doc_ids)))  # none is expected: the documents are new here
    insert_tuples(conn, t.snapshots, _SNAPSHOT_COLUMNS, [(whole.doc_id, whole.data, newest[whole.doc_id], now) for whole, _ in ready])
    insert_view_rows(conn, [row for _, admitted in ready for row in admitted.messages], conn.dialect.name == "sqlite")
    store_reactions(conn, [row for _, admitted in ready for row in admitted.reactions])


_SNAPSHOT_COLUMNS = ("doc_id", "data", "upto_change_id", "saved_at")
