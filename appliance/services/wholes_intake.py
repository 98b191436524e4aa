"""The intake of segments carried whole (model.WholeSegment): read in the node's worker
processes (appliance/workers.py), admitted by the rule of appliance/wholes.py, and written by
the intake's one transaction - the change rows without bytes, the snapshot as received, the
message view from the workers' readings. A whole of a document this node holds part of is
imported as its changes instead, through the same verifier as any other batch."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import documents
from appliance import schema as t
from appliance.changes import Authorise, SignedChange
from appliance.errors import ChangeRejected
from appliance.kernel import Clock
from appliance.model import WholeSegment
from appliance.services.replica import ReplicaService, put_snapshot
from appliance.services.views import ViewsService
from appliance.wholes import vouch_for_whole
from appliance.workers import WholeReading, WorkerPool


@dataclass(frozen=True)
class AdmittedWhole:
    """A whole segment read and admitted, ready to write."""

    whole: WholeSegment
    reading: WholeReading
    vouched: Mapping[bytes, bytes]  # change hash -> the signed change that vouches for it

    @property
    def change_count(self) -> int:
        return len(self.reading.headers)


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
        readings = await self.pool.read_all([(whole.doc_id, whole.data, True) for whole in partial], frozenset())
        for whole, reading in zip(partial, readings, strict=True):
            signatures = dict(whole.signatures)
            grouped.setdefault(whole.doc_id, []).extend(SignedChange(raw, signatures.get(header.hash)) for header, raw in zip(reading.headers, reading.raw_changes, strict=True))
        held = {whole.doc_id for whole in partial}
        return [whole for whole in wholes if whole.doc_id not in held]

    async def admit(
        self, wholes: Sequence[WholeSegment], admins: frozenset[str], authoriser: Callable[[str], Authorise], progress: Callable[[str, int], None] | None = None
    ) -> list[AdmittedWhole]:
        """Reads every whole in the workers at once, then checks each against its authors'
        signatures and `authoriser(doc_id)`: ChangeRejected for the first that fails."""
        readings = await self.pool.read_all([(whole.doc_id, whole.data, False) for whole in wholes], admins)
        admitted = []
        for whole, reading in zip(wholes, readings, strict=True):
            vouched = vouch_for_whole(whole.doc_id, reading.headers, dict(whole.signatures), authoriser(whole.doc_id))
            admitted.append(AdmittedWhole(whole, reading, vouched))
            if progress is not None:
                progress("verify", len(reading.headers))
        return admitted

    async def write(self, conn: AsyncConnection, admitted: AdmittedWhole, received_from: str | None) -> int:
        """In the import's transaction: the change rows, the snapshot as received and the
        message view. Returns how many messages are new."""
        doc_id = admitted.whole.doc_id
        signatures = dict(admitted.whole.signatures)
        rows = [(header, None, signatures.get(header.hash), admitted.vouched[header.hash]) for header in admitted.reading.headers]
        # The changes' rows without bytes, and the snapshot as received covering them: the
        # document is not loaded here.
        await self._replica.ensure_document_row(conn, doc_id)
        await self._replica.append_changes(conn, doc_id, rows, received_from)
        upto = (await conn.execute(select(func.max(t.changes.c.id)).where(t.changes.c.doc_id == doc_id))).scalar_one()
        await conn.run_sync(put_snapshot, doc_id, admitted.whole.data, upto, self._clock())
        channel_id = documents.parse_doc_id(doc_id).channel_id
        return await self._views.write_states(conn, channel_id, doc_id, admitted.reading.messages)
