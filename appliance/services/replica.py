"""The node's replica of its documents: the cache of loaded Automerge documents, the change
log, local commits (sign, then one transaction), snapshots, and the pick-up of changes other
processes appended to the store, published on the change feed.

Write path of a local edit: change the in-memory Automerge document, sign the new change,
then in ONE database transaction append it to the change log and update the materialised
views (and the audit log where it applies). If that transaction fails the cached document
is dropped and reloaded from the store, so memory never runs ahead of disk. Messages take the
lean form (`commit_lean`): one transaction on the store's writer thread. Snapshots are not
written on that path: the node's upkeep (appliance/upkeep.py) asks for them (`snapshot`) when
the node idles, after a segment filled up, or when a document's pending changes pass SNAPSHOT_BOUND; a
crash loses none of them, since loading replays the change log past the snapshot."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from automerge._automerge import Document
from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import documents
from appliance import schema as t
from appliance.bulk import insert_rows, insert_tuples
from appliance.changes import ChangeHeader, SignedChange, VerifiedChange, parse_change, sign_change
from appliance.covered import CoveredChange, add_hashes, add_to_graph, unpack_covered
from appliance.errors import ChangeRejected, NodeLocked, RallypointError, StorageError
from appliance.feed import DirectoryChanged, DocumentsChanged, Origin
from appliance.graph import ancestors, causal_order, frontier
from appliance.kernel import Kernel, Stale
from appliance.services.heads import ChannelHeads
from appliance.services.identity import LOCKED_SETTING, IdentityService
from appliance.services.roster import Roster
from appliance.services.terms import TermsGate
from appliance.stored_documents import stored_documents

SNAPSHOT_EVERY = 256  # changes an import appends to a document before its snapshot is refreshed
SNAPSHOT_BOUND = 1024  # pending local changes after which the upkeep snapshots a document at once
CACHED_DOCUMENTS = 64  # loaded documents kept in memory (a full segment takes ~0.6 MB)

# Built once: SQLAlchemy then reuses their compiled form on the hot path.
_INSERT_CHANGE = insert(t.changes)
_NEWEST_OF_DOCUMENT = select(func.max(t.changes.c.id)).where(t.changes.c.doc_id == bindparam("doc_id"))
_LOGGED_GRAPH = select(t.changes.c.hash, t.changes.c.deps, t.changes.c.covers).where(t.changes.c.doc_id == bindparam("doc_id"))
_STORED_UP_TO = select(func.coalesce(func.sum(1 + t.changes.c.covered), 0)).where(and_(t.changes.c.doc_id == bindparam("doc_id"), t.changes.c.id <= bindparam("upto")))


class ReplicaService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, heads: ChannelHeads) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._heads = heads
        self._terms = TermsGate(identity, roster)  # a channel's export is a read of it
        self._actor_suffix = kernel.rng(16)  # fresh per process: a restored backup never reuses a seq
        self._docs: OrderedDict[str, Document] = OrderedDict()  # least recently used first
        self._known: dict[str, set[bytes]] = {}
        self._since_snapshot: dict[str, int] = {}
        self._doc_heads: dict[str, list[bytes]] = {}  # of documents an import wrote without loading them
        self._doc_rows: set[str] = set()
        self._full: set[str] = set()  # segments that filled up: snapshotted at the first lull
        self._watermark = 0  # the newest change-log row this process has seen
        self._imported: list[tuple[int, int]] = []  # rows (first, last] imports appended past the watermark
        self._hold_snapshots = False  # set while an import's transaction is open
        kernel.on_stale(self._drop)
        kernel.poll_with(self.refresh)

    def _drop(self, stale: Stale) -> None:
        if not stale.loaded:
            return
        if stale.doc_ids is None:
            self._docs.clear()
            self._known.clear()
            self._since_snapshot.clear()
            self._doc_heads.clear()
            self._doc_rows.clear()
            self._full.clear()
            return
        for doc_id in stale.doc_ids:
            self._forget(doc_id)

    async def load(self) -> None:
        async with self._kernel.store.reading() as conn:
            self._watermark = await self.newest_change_id(conn)

    @property
    def skipped_writes(self) -> list[str]:
        """Writes that failed without failing what was asked (a snapshot, a read marker)."""
        return self._kernel.skipped_writes

    def in_memory(self) -> frozenset[str]:
        """The documents loaded (at most CACHED_DOCUMENTS)."""
        return frozenset(self._docs)

    def loaded(self, doc_id: str) -> Document:
        """A document in memory: the one a local commit is writing (its `also` reads it)."""
        return self._docs[doc_id]

    @contextlib.contextmanager
    def snapshots_held(self) -> Iterator[None]:
        """While a write transaction is open: an evicted document must not open a second one."""
        held, self._hold_snapshots = self._hold_snapshots, True
        try:
            yield
        finally:
            self._hold_snapshots = held

    def actor(self) -> bytes:
        return self._identity.user_key + self._actor_suffix

    async def document(self, doc_id: str) -> Document:
        cached = self._docs.get(doc_id)
        if cached is not None:
            self._docs.move_to_end(doc_id)
            return cached
        async with self._kernel.store.reading() as conn:
            stored, known = await conn.run_sync(lambda sync_conn: (stored_documents(sync_conn, [doc_id])[doc_id], logged_hashes(sync_conn, [doc_id])[doc_id]))
        doc = documents.load_document(stored.data, self.actor()) if stored.data else documents.new_document(self.actor())
        self._docs[doc_id] = doc
        self._known[doc_id] = known
        self._since_snapshot[doc_id] = stored.since_snapshot
        while len(self._docs) > CACHED_DOCUMENTS:
            await self._evict(next(iter(self._docs)))
        return doc

    async def _evict(self, doc_id: str) -> None:
        """Drops a document from memory; one with many changes since its snapshot is
        snapshotted first so that reloading it stays cheap."""
        if not self._hold_snapshots and self._since_snapshot.get(doc_id, 0) >= SNAPSHOT_EVERY // 8:
            await self._snapshot(doc_id)
        self._forget(doc_id)

    def _forget(self, doc_id: str) -> None:
        self._doc_heads.pop(doc_id, None)
        self._doc_rows.discard(doc_id)
        self._full.discard(doc_id)
        self._docs.pop(doc_id, None)
        self._known.pop(doc_id, None)
        self._since_snapshot.pop(doc_id, None)

    async def ensure_document_rows(self, conn: AsyncConnection, doc_ids: Sequence[str]) -> None:
        missing = [doc_id for doc_id in doc_ids if doc_id not in self._doc_rows]
        if missing:
            await conn.run_sync(_ensure_document_rows, missing)
            self._doc_rows.update(missing)  # only after commit would be exact; a rollback forgets all caches

    def _sign(self, doc_id: str, doc: Document, mutations: Sequence[Callable[[Document], None]]) -> list[tuple[ChangeHeader, bytes, bytes]]:
        """Applies each mutation to the document as one change of this node's actor and signs it."""
        signer = self._identity.user_signing_key()
        doc.set_actor(self.actor())
        made: list[tuple[ChangeHeader, bytes, bytes]] = []
        for mutation in mutations:
            before = doc.get_heads()
            mutation(doc)
            change = doc.get_last_local_change()
            if change is None or doc.get_heads() == before:
                raise RallypointError("the edit changed nothing")
            header = parse_change(change.raw_bytes)
            made.append((header, change.raw_bytes, sign_change(signer, doc_id, header.hash)))
        return made

    def _committed(self, doc_id: str, doc: Document, made: Sequence[tuple[ChangeHeader, bytes, bytes]]) -> None:
        """Bookkeeping once a local commit is stored: its hashes are known, its changes wait for
        a snapshot (the upkeep's)."""
        if self._docs.get(doc_id) is not doc:  # evicted by what the commit loaded (a directory change re-reads many segments)
            self._forget(doc_id)
            return
        self._known[doc_id].update(header.hash for header, _, _ in made)
        self._since_snapshot[doc_id] = self._since_snapshot.get(doc_id, 0) + len(made)

    async def commit_lean(
        self, doc_id: str, mutations: Sequence[Callable[[Document], None]], write: Callable[[Connection], None], committed: Callable[[], None] | None = None
    ) -> list[ChangeHeader]:
        """A local edit on the hot path (post, edit, delete, react): one signed change per
        mutation, stored with what `write` adds - view rows built from the caller's inputs,
        never read back from the document - in ONE transaction on the store's writer thread.
        `committed` runs after the commit, still under the write lock."""
        self._identity.require_unlocked()
        async with self._kernel.lock:
            doc = await self.document(doc_id)
            new_document = doc_id not in self._doc_rows
            try:
                made = self._sign(doc_id, doc, mutations)
                rows = self._change_rows(doc_id, [(header, data, signature, header.hash) for header, data, signature in made], None)

                def work(conn: Connection) -> None:  # on the writer thread: plain values only
                    if new_document:
                        _ensure_document_rows(conn, [doc_id])
                    conn.execute(_INSERT_CHANGE, rows)
                    write(conn)

                await self._kernel.store.write(work)
            except BaseException:
                self._kernel.invalidate([doc_id])  # memory must not run ahead of the store
                raise
            self._doc_rows.add(doc_id)
            self._committed(doc_id, doc, made)
            if committed is not None:
                committed()
        self.notify([doc_id], Origin.LOCAL)
        return [header for header, _, _ in made]

    async def commit_local(
        self,
        doc_id: str,
        mutate: Callable[[Document], None] | Sequence[Callable[[Document], None]],
        also: Callable[[AsyncConnection], Any] | None = None,
    ) -> list[ChangeHeader]:
        """Makes one signed change per mutation and stores them, with whatever `also` writes,
        in one transaction."""
        self._identity.require_unlocked()
        mutations = [mutate] if callable(mutate) else list(mutate)
        async with self._kernel.lock:
            doc = await self.document(doc_id)
            try:
                made = self._sign(doc_id, doc, mutations)
                async with self._kernel.store.transaction() as conn:
                    await self.ensure_document_rows(conn, [doc_id])
                    await conn.run_sync(insert_rows, t.changes, self._change_rows(doc_id, [(header, data, signature, header.hash) for header, data, signature in made], None))
                    if also is not None:
                        await also(conn)
            except BaseException:
                self._kernel.invalidate([doc_id])  # memory must not run ahead of the store
                raise
            self._committed(doc_id, doc, made)
            if doc_id == documents.DIRECTORY_DOC:
                await self._roster.reload()  # under the lock: nothing is materialised with the old admins
        self.notify([doc_id], Origin.LOCAL)
        return [header for header, _, _ in made]

    def _change_rows(self, doc_id: str, rows: Sequence[tuple[ChangeHeader, bytes | None, bytes | None, bytes]], received_from: str | None) -> list[dict[str, Any]]:
        now = self._kernel.clock()
        return [
            {
                "doc_id": doc_id,
                "hash": header.hash,
                "actor": header.actor,
                "seq": header.seq,
                "deps": b"".join(header.deps),
                "data": data,
                "signature": signature,
                "vouched_by": vouched_by,
                "received_from": received_from,
                "received_at": now,
            }
            for header, data, signature, vouched_by in rows
        ]

    def writing(self) -> bool:
        """Whether a write holds the write lock now (the upkeep then counts the node busy)."""
        return self._kernel.lock.locked()

    def pending_snapshots(self) -> dict[str, int]:
        """Documents in memory with local changes since their snapshot: doc id -> how many."""
        return {doc_id: pending for doc_id, pending in self._since_snapshot.items() if pending and doc_id in self._docs}

    def segment_filled(self, doc_id: str) -> None:
        """A segment that filled up: no more posts come to it, so the upkeep snapshots it at the
        first lull rather than waiting for the node to idle."""
        self._full.add(doc_id)

    def snapshots_due(self) -> list[str]:
        """Documents past SNAPSHOT_BOUND pending changes: the upkeep snapshots them at once."""
        return sorted(doc_id for doc_id, pending in self.pending_snapshots().items() if pending >= SNAPSHOT_BOUND)

    def filled_segments(self) -> list[str]:
        """Segments that filled up and have changes pending."""
        return sorted(doc_id for doc_id in self._full if self._since_snapshot.get(doc_id) and doc_id in self._docs)

    async def snapshot(self, doc_id: str) -> None:
        """The upkeep's snapshot of one document, under the write lock."""
        async with self._kernel.lock:
            await self._snapshot(doc_id)

    async def _snapshot(self, doc_id: str) -> bytes | None:
        """Saves a loaded document and stores the result as its snapshot; returns the saved
        bytes (None: the document is not in memory)."""
        self._full.discard(doc_id)
        doc = self._docs.get(doc_id)
        if doc is None:
            return None
        data, known, now = doc.save(), len(self._known.get(doc_id, ())), self._kernel.clock()
        try:
            if await self._kernel.store.write(lambda conn: _snapshot_if_current(conn, doc_id, data, known, now)) and self._docs.get(doc_id) is doc:
                self._since_snapshot[doc_id] = 0
        except StorageError as exc:
            # A snapshot only makes loading faster; the change log it condenses is stored. It stays
            # pending and is written when there is room, so a full disk fails no post, import or read.
            self._kernel.note_skipped_write(f"document snapshots were not saved (the changes are stored; they are saved later): {exc}")
        return data

    async def write_snapshot(self, conn: AsyncConnection, doc_id: str, doc: Document) -> None:
        """Stores `doc`'s snapshot in `conn`'s transaction (an import's)."""
        upto = await conn.run_sync(_current_upto, doc_id, len(self._known.get(doc_id, ())))
        if upto is None:
            return  # another process appended meanwhile; the next snapshot will catch up
        await conn.run_sync(put_snapshot, doc_id, doc.save(), upto, self._kernel.clock())
        self._since_snapshot[doc_id] = 0

    async def whole_data(self, doc_id: str) -> bytes:
        """The document compacted, to send whole: its stored snapshot when that covers every
        change row, else a fresh `save()` - kept as the snapshot in the same go."""
        async with self._kernel.store.reading() as conn:
            snap = (await conn.execute(select(t.snapshots.c.data, t.snapshots.c.upto_change_id).where(t.snapshots.c.doc_id == doc_id))).first()
            newest = (await conn.execute(select(func.max(t.changes.c.id)).where(t.changes.c.doc_id == doc_id))).scalar_one()
        if snap is not None and newest is not None and snap.upto_change_id >= newest:
            return bytes(snap.data)
        doc = await self.document(doc_id)
        if self._hold_snapshots:  # an import's transaction is open: a second write would wait on it
            return doc.save()
        saved = await self._snapshot(doc_id)
        return doc.save() if saved is None else saved

    async def flush_snapshots(self) -> None:
        for doc_id, pending in list(self._since_snapshot.items()):
            if pending:
                await self._snapshot(doc_id)

    def notify(self, doc_ids: Iterable[str], origin: Origin, received_from: str | None = None) -> None:
        changed = frozenset(doc_ids)
        if not changed:
            return
        self._kernel.feed.publish(DocumentsChanged(changed, origin, received_from))
        if documents.DIRECTORY_DOC in changed:
            self._kernel.feed.publish(DirectoryChanged(origin))

    async def append_verified(self, conn: AsyncConnection, batches: Sequence[tuple[str, Sequence[VerifiedChange]]], received_from: str | None) -> None:
        """In an import's transaction: the verified changes of several documents appended to
        the log in one executemany (their document rows ensured first)."""
        await self.ensure_document_rows(conn, [doc_id for doc_id, _ in batches])
        rows = [row for doc_id, verified in batches for row in self._change_rows(doc_id, [(c.header, c.data, c.signature, c.vouched_by) for c in verified], received_from)]
        await conn.run_sync(insert_rows, t.changes, rows)

    async def apply_in_memory(self, doc_id: str, verified: Sequence[VerifiedChange], known: dict[str, set[bytes]]) -> tuple[Document, list[bytes]]:
        """Applies verified changes to the cached document (their log rows are the caller's to
        append, in the same transaction). Returns the document and its heads before."""
        doc = await self.document(doc_id)
        if not known[doc_id] <= self._known[doc_id]:  # another process wrote meanwhile
            self._forget(doc_id)
            doc = await self.document(doc_id)
        before = doc.get_heads()
        try:
            documents.apply_changes(doc, [c.data for c in verified])
        except documents.DocumentError as exc:
            raise ChangeRejected(f"{doc_id}: {exc}") from exc
        self._known[doc_id].update(c.header.hash for c in verified)
        return doc, before

    async def count_imported(self, conn: AsyncConnection, doc_id: str, doc: Document, added: int, preview: bool) -> None:
        """Snapshot bookkeeping for changes an import applied, in its transaction."""
        pending = self._since_snapshot.get(doc_id, 0) + added
        if pending >= SNAPSHOT_EVERY and not preview:
            await self.write_snapshot(conn, doc_id, doc)
            pending = 0
        self._since_snapshot[doc_id] = pending

    def imported(self, first: int, last: int, unloaded: Sequence[str], heads: Mapping[str, Sequence[bytes]]) -> None:
        """After an import's commit. It appended rows (first, last] under the write lock: they
        are this process's own, which `refresh` neither reads back nor takes for another
        process's - also when rows before them still wait for it (another process's, or a
        local post's: those do not move the watermark). The documents `unloaded` it wrote without loading them (read by the workers) are
        dropped from memory, with what derives from them; their `heads`, as it left them, are
        kept: a session acknowledges every document it received, and reading each one's log
        for that costs more than the import."""
        if self._watermark == first:
            self._watermark = last
        elif self._imported and self._imported[-1][1] == first:  # imports one after the other
            self._imported[-1] = (self._imported[-1][0], last)
        elif last > first:
            self._imported.append((first, last))
        self._kernel.invalidate(unloaded)
        self._doc_heads.update((doc_id, list(heads[doc_id])) for doc_id in unloaded if doc_id in heads)

    @staticmethod
    async def newest_change_id(conn: AsyncConnection) -> int:
        return int((await conn.execute(select(func.coalesce(func.max(t.changes.c.id), 0)))).scalar_one())

    async def stored_hashes(self, doc_ids: Sequence[str]) -> dict[str, set[bytes]]:
        async with self._kernel.store.reading() as conn:
            return await conn.run_sync(logged_hashes, doc_ids)

    async def changes_for(self, doc_id: str, have: Sequence[bytes]) -> list[SignedChange]:
        """Changes of a document that a peer with heads `have` lacks: everything that is not an
        ancestor of a head known here (a head unknown here says the peer has changes we lack,
        not which of ours it has). Each actor's run ends in a signed change."""
        async with self._kernel.store.reading() as conn:
            columns = (t.changes.c.hash, t.changes.c.seq, t.changes.c.deps, t.changes.c.data, t.changes.c.signature, t.changes.c.covers)
            rows = (await conn.execute(select(*columns).where(t.changes.c.doc_id == doc_id).order_by(t.changes.c.id))).all()
        logged: list[tuple[CoveredChange, bytes | None, bytes | None]] = []  # a change, its bytes and its signature when its row holds them
        for r in rows:
            logged += [(change, None, None) for change in unpack_covered(r.covers)] if r.covers else []
            logged.append((CoveredChange(r.hash, r.seq, r.deps), r.data, r.signature))
        if any(r.covers for r in rows):
            logged = [logged[i] for i in causal_order([(change.hash, change.deps) for change, _, _ in logged])]
        excluded = ancestors({change.hash: change.deps for change, _, _ in logged}, have)
        wanted = [entry for entry in logged if entry[0].hash not in excluded]
        held = await self.held_bytes(doc_id, {change.hash for change, data, _ in wanted if data is None})
        return [SignedChange(data if data is not None else held[change.hash], signature) for change, data, signature in wanted]

    async def held_bytes(self, doc_id: str, hashes: set[bytes]) -> dict[bytes, bytes]:
        """The bytes of changes stored without them (held in the snapshot of a segment that came
        whole), from the loaded document."""
        if not hashes:
            return {}
        return {c.hash: c.raw_bytes for c in (await self.document(doc_id)).get_changes([]) if c.hash in hashes}

    async def document_heads(self, doc_id: str) -> list[bytes]:
        """The document's heads: from memory when it is loaded, else from its change log (a
        session acknowledges every segment it received; loading each from its snapshot for
        that cost more than the import)."""
        cached = self._docs.get(doc_id)
        if cached is not None:
            return list(cached.get_heads())
        if doc_id in self._doc_heads:
            return list(self._doc_heads[doc_id])
        async with self._kernel.store.reading() as conn:
            graph = await logged_graph(conn, doc_id)
        return list(frontier(graph))

    async def document_ids(self) -> list[str]:
        async with self._kernel.store.reading() as conn:
            return list((await conn.execute(select(t.documents.c.doc_id).order_by(t.documents.c.doc_id))).scalars().all())

    async def export_channel(self, channel: str) -> dict[str, bytes]:
        """Each of the channel's Automerge documents, saved whole (doc id -> bytes)."""
        self._terms.require_reading("exporting a channel")
        head = await self._heads.channel(channel)
        async with self._kernel.store.reading() as conn:
            doc_ids: Sequence[str] = (await conn.execute(select(t.documents.c.doc_id).where(t.documents.c.channel_id == head.channel_id).order_by(t.documents.c.doc_id))).scalars().all()
        return {doc_id: (await self.document(doc_id)).save() for doc_id in doc_ids}

    async def refresh(self) -> frozenset[str]:
        """Picks up changes another process appended to this store (the CLI while the console
        runs). Returns the ids of the channels that changed - "directory" for the directory -
        counting only what this process did not write itself (empty when nothing did)."""
        self._identity.require_unlocked()
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.changes.c.id, t.changes.c.doc_id, t.changes.c.hash).where(t.changes.c.id > self._watermark).order_by(t.changes.c.id))).all()
            wiped = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == LOCKED_SETTING))).scalar()
        if wiped is not None:  # another process imported this node's revocation
            if self._identity.locked_reason is None:
                self._identity.lock(wiped)
            raise NodeLocked(wiped)
        if not rows:
            return frozenset()
        async with self._kernel.lock:
            # Imports that held the lock meanwhile, or before, appended some of these rows: they
            # are this process's own (an import may have moved the watermark past them too).
            newest = max(self._watermark, rows[-1].id)
            rows = [row for row in rows if row.id > self._watermark and not any(first < row.id <= last for first, last in self._imported)]
            self._watermark = newest
            self._imported = [(first, last) for first, last in self._imported if last > newest]
            if not rows:
                return frozenset()
            foreign = [row for row in rows if row.hash not in self._known.get(row.doc_id, ())]
            if not foreign:
                return frozenset()
            for row in foreign:
                self._doc_heads.pop(row.doc_id, None)
            loaded = [row.id for row in foreign if row.doc_id in self._docs]  # the change bytes only where a document is in memory
            data: dict[int, bytes | None] = {}
            async with self._kernel.store.reading() as conn:
                for start in range(0, len(loaded), 500):
                    data.update((await conn.execute(select(t.changes.c.id, t.changes.c.data).where(t.changes.c.id.in_(loaded[start : start + 500])))).all())
            pending: dict[str, list[bytes | None]] = {}
            for row in foreign:
                # Not read above: its document was loaded since (and holds it), or a wipe by another
                # process deleted it meanwhile (the next poll finds the node locked).
                if row.doc_id in self._docs and row.id in data:
                    pending.setdefault(row.doc_id, []).append(data[row.id])
                    self._known[row.doc_id].add(row.hash)
            for doc_id, changes in pending.items():
                present = [change for change in changes if change is not None]
                if len(present) != len(changes):  # held in a snapshot another process stored: reload on use
                    self._forget(doc_id)
                    continue
                try:
                    documents.apply_changes(self._docs[doc_id], present)
                except documents.DocumentError:
                    self._forget(doc_id)
            self._kernel.invalidate((row.doc_id for row in foreign), loaded=False)
        changed = frozenset(documents.parse_doc_id(row.doc_id)[1] or documents.DIRECTORY_DOC for row in foreign)
        if documents.DIRECTORY_DOC in changed:
            await self._roster.reload()
        self.notify((row.doc_id for row in foreign), Origin.STORE)
        return changed


async def logged_graph(conn: AsyncConnection, doc_id: str) -> dict[bytes, bytes]:
    """A document's change graph (hash -> concatenated deps) as its change log holds it."""
    graph: dict[bytes, bytes] = {}
    for change_hash, deps, covers in cast(list[tuple[bytes, bytes, bytes | None]], (await conn.execute(_LOGGED_GRAPH, {"doc_id": doc_id})).all()):
        add_to_graph(graph, change_hash, deps, covers)
    return graph


def logged_hashes(conn: Connection, doc_ids: Sequence[str]) -> dict[str, set[bytes]]:
    """The hashes of every change the log holds of each of `doc_ids` (rows that cover several
    expanded), one statement per 500 documents."""
    known: dict[str, set[bytes]] = {doc_id: set() for doc_id in doc_ids}
    for start in range(0, len(doc_ids), 500):
        chunk = doc_ids[start : start + 500]
        rows = cast(list[tuple[str, bytes, bytes | None]], conn.execute(select(t.changes.c.doc_id, t.changes.c.hash, t.changes.c.covers).where(t.changes.c.doc_id.in_(chunk))).all())
        for doc_id, change_hash, covers in rows:  # as tuples: by attribute, a 100k-change channel costs a second
            add_hashes(known[doc_id], change_hash, covers)
    return known


def newest_change_ids(conn: Connection, doc_ids: Sequence[str]) -> dict[str, int]:
    """The newest change-log row of each of `doc_ids` that has one (what a snapshot written
    now covers)."""
    if not doc_ids:
        return {}
    query = select(t.changes.c.doc_id, func.max(t.changes.c.id)).where(t.changes.c.doc_id.in_(doc_ids)).group_by(t.changes.c.doc_id)
    return dict(cast(list[tuple[str, int]], conn.execute(query).all()))


def _ensure_document_rows(conn: Connection, doc_ids: Sequence[str]) -> None:
    present: set[str] = set(conn.execute(select(t.documents.c.doc_id).where(t.documents.c.doc_id.in_(doc_ids))).scalars().all())
    refs = [(doc_id, documents.parse_doc_id(doc_id)) for doc_id in doc_ids if doc_id not in present]
    insert_tuples(conn, t.documents, ("doc_id", "kind", "channel_id", "segment_index"), [(doc_id, ref.kind.value, ref.channel_id, ref.segment) for doc_id, ref in refs])


def _current_upto(conn: Connection, doc_id: str, known: int) -> int | None:
    """The newest change-log row of a document, when the log holds exactly the `known` changes
    up to it (None: another process appended meanwhile, a snapshot now would miss them)."""
    upto: int | None = conn.execute(_NEWEST_OF_DOCUMENT, {"doc_id": doc_id}).scalar_one()
    stored = int(conn.execute(_STORED_UP_TO, {"doc_id": doc_id, "upto": upto}).scalar_one())
    return None if stored != known else upto


def put_snapshot(conn: Connection, doc_id: str, data: bytes, upto: int, now: int) -> None:
    values = {"data": data, "upto_change_id": upto, "saved_at": now}
    if conn.execute(update(t.snapshots).where(t.snapshots.c.doc_id == doc_id).values(**values)).rowcount == 0:
        conn.execute(insert(t.snapshots).values(doc_id=doc_id, **values))


def _snapshot_if_current(conn: Connection, doc_id: str, data: bytes, known: int, now: int) -> bool:
    upto = _current_upto(conn, doc_id, known)
    if upto is not None:
        put_snapshot(conn, doc_id, data, upto, now)
    return upto is not None
