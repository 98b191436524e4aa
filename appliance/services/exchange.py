"""What to send whom: deltas from the heads each peer last reported, the blobs it lacks,
routing of private channels, and the record of peer heads and of blobs sent."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import documents, ids, policy
from appliance import schema as t
from appliance.changes import SignedChange
from appliance.covered import add_to_graph, unpack_covered
from appliance.graph import ancestors, causal_order, frontier, split_hashes
from appliance.incoming import import_rank
from appliance.kernel import Kernel
from appliance.model import BlobDelta, Delta, DocumentDelta, WholeSegment
from appliance.services.heads import ChannelHeads
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService, logged_graph
from appliance.services.roster import Roster
from appliance.wholes import MAX_WHOLE_BYTES

_UPDATE_PEER_HEADS = (
    update(t.peer_heads).where(and_(t.peer_heads.c.peer == bindparam("of_peer"), t.peer_heads.c.doc_id == bindparam("of_doc"))).values(heads=bindparam("heads"), updated_at=bindparam("updated_at"))
)


_DOCUMENTS = select(t.documents.c.doc_id, t.documents.c.kind, t.documents.c.channel_id, t.documents.c.segment_index)
_GRAPHS = select(t.changes.c.doc_id, t.changes.c.hash, t.changes.c.deps, t.changes.c.covers)
_CHANGE_COUNTS = select(t.changes.c.doc_id, func.sum(1 + t.changes.c.covered)).group_by(t.changes.c.doc_id)


class LoggedRef(NamedTuple):
    """A change in the change log: its row, where it stands among that row's changes (those
    the row covers first, appliance/covered.py), its hash, and whether the row only covers it
    - it then has no bytes or signature there: its bytes are in the document's snapshot."""

    row_id: int
    place: int
    hash: bytes
    covered: bool


@dataclass(frozen=True)
class EntireSegment:
    """A segment the peers hold nothing of: the change rows of each actor's newest change in
    it (whose signatures vouch for the rest) and its newest change row."""

    newest_of_actors: tuple[int, ...]
    newest_change_id: int


@dataclass(frozen=True)
class Missing:
    """What some peers lack: (document, the changes) in priority order, each document's changes
    in an order Automerge can apply; our heads of every document they may receive, and the
    segments they hold nothing of."""

    wanted: list[tuple[str, list[LoggedRef]]]
    heads: dict[str, tuple[bytes, ...]]
    entire: dict[str, EntireSegment]


class ExchangeService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, heads: ChannelHeads, replica: ReplicaService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._heads = heads
        self._replica = replica

    def routable_to(self, peer: bytes, head: documents.ChannelHead, *, head_document: bool = False) -> bool:
        """Whether a channel's documents may go to node `peer`: public channels go everywhere,
        private ones and direct conversations only to nodes that hold a member's (participant's)
        key - its certificate's home - as the head now says: a member removed, their node gets
        nothing new of it unless it serves another member. Only the head itself (names and
        roles, no messages) still goes to a former member's node, so that it learns of the
        removal and stops showing the channel. A channel that requires attributes goes, head
        and all, only to nodes that serve a user who has them (a public one: any such user)."""
        if head.kind == "public" and not head.requires:
            return True
        if head.kind == "public":  # a requirement: only to nodes that serve a user who meets it
            candidates = [cert for cert in self._roster.current.users.values() if cert.home == peer]
        else:
            users = list(head.members) + (list(head.former) if head_document else [])
            candidates = [cert for member in users if (cert := self._roster.current.users.get(bytes.fromhex(member))) is not None and cert.home == peer]
        return any(policy.satisfies(cert.attributes, head.requires) for cert in candidates)

    async def delta_for(
        self, peers: Sequence[bytes], *, only: Collection[str] | None = None, also_held: Mapping[str, Sequence[bytes]] | None = None, wholes: bool = True
    ) -> Delta:
        """Everything at least one of `peers` lacks, as far as the heads they last told us say
        (everything, for a peer we know nothing about), limited to documents all of them may
        receive; the blobs referenced by messages in those documents that some peer lacks.
        A revoked node receives the directory only: the news of its revocation, which makes
        it wipe itself. `only` limits the delta to those documents; `also_held` adds heads the
        peers are known to hold beyond their last acknowledgement (what a live session has
        just sent them).

        A segment the peers lack entirely travels whole (`Delta.wholes`, newest first): its
        compacted document and each actor's signature over its newest change - unless it is
        larger than MAX_WHOLE_BYTES compacted; then, like a segment they partly hold, as changes.
        Without `wholes`, every segment goes as changes (for a format that cannot carry wholes)."""
        missing = await self._missing(peers, only, also_held)
        wanted, our_heads = missing.wanted, missing.heads
        peer_ids = [ids.key_id(p) for p in peers]
        carried = await self._wholes([doc_id for doc_id, _ in wanted if doc_id in missing.entire], missing.entire) if wholes else []
        carried_whole = {whole.doc_id for whole in carried}
        fetched: dict[int, tuple[bytes, bytes | None, bytes | None]] = {}
        async with self._kernel.store.reading() as conn:
            as_changes = [(doc_id, refs) for doc_id, refs in wanted if doc_id not in carried_whole]
            for _, refs in as_changes:
                row_ids = [ref.row_id for ref in refs if not ref.covered]
                for start in range(0, len(row_ids), 500):
                    chunk = row_ids[start : start + 500]
                    for change in await conn.execute(select(t.changes.c.id, t.changes.c.hash, t.changes.c.data, t.changes.c.signature).where(t.changes.c.id.in_(chunk))):
                        fetched[change.id] = (change.hash, change.data, change.signature)
            blobs = await self._blobs_lacking(conn, peer_ids, [doc_id for doc_id, _ in wanted])
        delta_docs = []
        for doc_id, refs in as_changes:
            rows = [(ref.hash, None, None) if ref.covered else fetched[ref.row_id] for ref in refs]
            held = await self._replica.held_bytes(doc_id, {h for h, data, _ in rows if data is None})
            delta_docs.append(DocumentDelta(doc_id, tuple(SignedChange(held[h] if data is None else data, signature) for h, data, signature in rows)))
        return Delta(documents=tuple(delta_docs), blobs=blobs, heads=our_heads, wholes=tuple(carried))

    async def _wholes(self, order: Sequence[str], entire: Mapping[str, EntireSegment]) -> list[WholeSegment]:
        """The segments of `order` as they travel whole, in that order: a few queries for all of
        them. A segment goes as changes instead when it is too large, or when an actor's newest
        change in it has no signature here."""
        newest_rows = [row_id for doc_id in order for row_id in entire[doc_id].newest_of_actors]
        signed: dict[int, tuple[bytes, bytes | None]] = {}
        snapshots: dict[str, tuple[bytes, int]] = {}
        async with self._kernel.store.reading() as conn:
            for start in range(0, len(newest_rows), 500):
                query = select(t.changes.c.id, t.changes.c.hash, t.changes.c.signature).where(t.changes.c.id.in_(newest_rows[start : start + 500]))
                signed.update((row.id, (row.hash, row.signature)) for row in await conn.execute(query))
            for start in range(0, len(order), 500):
                query = select(t.snapshots.c.doc_id, t.snapshots.c.data, t.snapshots.c.upto_change_id).where(t.snapshots.c.doc_id.in_(order[start : start + 500]))
                snapshots.update((row.doc_id, (row.data, row.upto_change_id)) for row in await conn.execute(query))
        carried = []
        for doc_id in order:
            newest = [signed[row_id] for row_id in entire[doc_id].newest_of_actors]
            signatures = [(change_hash, signature) for change_hash, signature in newest if signature is not None]
            if len(signatures) < len(newest):
                continue
            snapshot = snapshots.get(doc_id)
            if snapshot is not None and snapshot[1] >= entire[doc_id].newest_change_id:
                data = bytes(snapshot[0])
            else:
                data = await self._replica.whole_data(doc_id)  # saved now, and kept as its snapshot
            if len(data) <= MAX_WHOLE_BYTES:
                carried.append(WholeSegment(doc_id, data, tuple(sorted(signatures))))
        return carried

    async def heads_for(self, peer: bytes) -> dict[str, tuple[bytes, ...]]:
        """Our heads of every document `peer` may receive (what a LAN session announces): the
        graph of each, and nothing of what the peer lacks."""
        self._identity.require_unlocked()
        async with self._kernel.store.reading() as conn:
            doc_rows = (await conn.execute(_DOCUMENTS)).all()
            graphs: dict[str, dict[bytes, bytes]] = {}
            for doc_id, change_hash, deps, covers in cast(list[tuple[str, bytes, bytes, bytes | None]], (await conn.execute(_GRAPHS)).all()):
                add_to_graph(graphs.setdefault(doc_id, {}), change_hash, deps, covers)
        return {row.doc_id: frontier(graphs.get(row.doc_id, {})) for row in await self._allowed(doc_rows, [peer])}

    async def changes_behind(self, peer: bytes) -> int:
        """How many of our changes `peer` lacks, as far as the heads it last told us say."""
        return sum(count for _, count in await self.documents_lacking(peer))

    async def documents_lacking(self, peer: bytes) -> list[tuple[str, int]]:
        """The documents `peer` lacks changes of, in the order `delta_for` sends them, with
        how many: a large delta can then be read and sent a few documents at a time. Only the
        documents the peer holds part of need their graphs read; of the others it lacks every
        change, which the log counts (a new peer's first session: no graph read at all)."""
        self._identity.require_unlocked()
        async with self._kernel.store.reading() as conn:
            doc_rows = (await conn.execute(_DOCUMENTS)).all()
            query = select(t.peer_heads.c.doc_id).where(and_(t.peer_heads.c.peer == ids.key_id(peer), t.peer_heads.c.heads != b""))
            partly: set[str] = set((await conn.execute(query)).scalars().all())
            counts = dict(cast(list[tuple[str, int]], (await conn.execute(_CHANGE_COUNTS)).all()))
        allowed = await self._allowed(doc_rows, [peer])
        held_part = [row.doc_id for row in allowed if row.doc_id in partly]
        lacking_part = {doc_id: len(refs) for doc_id, refs in (await self._missing([peer], held_part, None)).wanted} if held_part else {}
        lacking = [(row.doc_id, lacking_part.get(row.doc_id, 0) if row.doc_id in partly else counts.get(row.doc_id, 0)) for row in allowed]
        return [(doc_id, count) for doc_id, count in lacking if count]

    async def _missing(self, peers: Sequence[bytes], only: Collection[str] | None, also_held: Mapping[str, Sequence[bytes]] | None) -> Missing:
        """What some of `peers` lack and our heads of every document they may receive."""
        self._identity.require_unlocked()
        peer_ids = [ids.key_id(p) for p in peers]
        wanted_docs = sorted(only) if only is not None else None
        async with self._kernel.store.reading() as conn:
            doc_query = _DOCUMENTS
            heads_query = select(t.peer_heads.c.peer, t.peer_heads.c.doc_id, t.peer_heads.c.heads).where(t.peer_heads.c.peer.in_(peer_ids))
            graph_query = select(t.changes.c.doc_id, t.changes.c.id, t.changes.c.hash, t.changes.c.deps, t.changes.c.actor, t.changes.c.seq, t.changes.c.covers)
            if wanted_docs is not None:
                doc_query = doc_query.where(t.documents.c.doc_id.in_(wanted_docs))
                heads_query = heads_query.where(t.peer_heads.c.doc_id.in_(wanted_docs))
                graph_query = graph_query.where(t.changes.c.doc_id.in_(wanted_docs))
            doc_rows = (await conn.execute(doc_query)).all()
            known_heads: dict[str, dict[str, bytes]] = {}
            for reported in await conn.execute(heads_query):
                known_heads.setdefault(reported.doc_id, {})[reported.peer] = reported.heads
            graphs: dict[str, dict[bytes, bytes]] = {}
            refs: dict[bytes, LoggedRef] = {}
            covering: set[str] = set()  # documents with rows that stand for several changes
            newest: dict[str, dict[bytes, tuple[int, int]]] = {}  # doc -> actor -> (seq, row id)
            graph: dict[bytes, bytes] = {}
            last_doc = None
            # Unpacked as tuples: a hundred thousand rows by attribute cost a second here.
            graph_rows = cast(list[tuple[str, int, bytes, bytes, bytes, int, bytes | None]], (await conn.execute(graph_query)).all())
            for doc_id, row_id, change_hash, deps, actor, seq, covers in graph_rows:
                if doc_id != last_doc:
                    graph, actors, last_doc = graphs.setdefault(doc_id, {}), newest.setdefault(doc_id, {}), doc_id
                if covers:
                    covering.add(doc_id)
                    for place, change in enumerate(unpack_covered(covers)):
                        graph[change.hash] = change.deps
                        refs[change.hash] = LoggedRef(row_id, place, change.hash, True)
                graph[change_hash] = deps
                refs[change_hash] = LoggedRef(row_id, seq, change_hash, False)  # after the changes it covers: theirs are lower
                if actor not in actors or actors[actor][0] < seq:
                    actors[actor] = (seq, row_id)
        allowed = await self._allowed(doc_rows, peers)
        wanted: list[tuple[str, list[LoggedRef]]] = []
        our_heads: dict[str, tuple[bytes, ...]] = {}
        entire: dict[str, EntireSegment] = {}
        for row in allowed:
            graph = graphs.get(row.doc_id, {})
            our_heads[row.doc_id] = frontier(graph)
            their_heads = known_heads.get(row.doc_id, {})
            extra = list((also_held or {}).get(row.doc_id, ()))
            if not extra and not any(their_heads.get(p) for p in peer_ids):
                missing = sorted(refs[h] for h in graph)  # they hold nothing of it
                held_any = False
            else:
                held = [ancestors(graph, split_hashes(their_heads.get(p, b"")) + extra) for p in peer_ids]
                common = set.intersection(*held) if held else set()
                missing = sorted(refs[h] for h in graph if h not in common)
                held_any = any(held)
            if row.doc_id in covering:  # one actor's row covers changes another's came between
                missing = [missing[i] for i in causal_order([(ref.hash, graph[ref.hash]) for ref in missing])]
            if missing:
                wanted.append((row.doc_id, missing))
                if row.kind == "segment" and not held_any:
                    actors = newest.get(row.doc_id, {})
                    entire[row.doc_id] = EntireSegment(tuple(row_id for _, row_id in actors.values()), max(ref.row_id for ref in missing))
        return Missing(wanted, our_heads, entire)

    async def _allowed(self, doc_rows: Sequence[Any], peers: Sequence[bytes]) -> list[Any]:
        """The documents (rows of _DOCUMENTS) all of `peers` may receive, in the order a delta
        sends them. A revoked node receives the directory only."""
        allowed: list[Any] = []
        revoked_peer = any(p in self._roster.current.revoked for p in peers)
        for row in doc_rows:
            if row.kind != "directory" and revoked_peer:
                continue
            if row.kind != "directory":
                head = await self._heads.head(row.channel_id)
                if head is None or not all(self.routable_to(p, head, head_document=row.kind == "head") for p in peers):
                    continue
            allowed.append(row)
        allowed.sort(key=lambda r: (import_rank(r.doc_id), -r.segment_index, r.channel_id))
        return allowed

    async def _blobs_lacking(self, conn: AsyncConnection, peer_ids: Sequence[str], doc_ids: Sequence[str]) -> tuple[BlobDelta, ...]:
        referenced: dict[bytes, str] = {}
        for start in range(0, len(doc_ids), 500):
            rows = await conn.execute(select(t.messages.c.doc_id, t.messages.c.files).where(and_(t.messages.c.doc_id.in_(doc_ids[start : start + 500]), t.messages.c.files != "[]")))
            for message in rows:
                for file in json.loads(message.files):
                    referenced.setdefault(bytes.fromhex(file["hash"]), message.doc_id)
        if not referenced:
            return ()
        held: dict[bytes, int] = {}
        for blob in await conn.execute(select(t.peer_blobs.c.hash).where(and_(t.peer_blobs.c.peer.in_(peer_ids), t.peer_blobs.c.heads.is_(None)))):
            held[blob.hash] = held.get(blob.hash, 0) + 1
        needed = [h for h in referenced if held.get(h, 0) < len(peer_ids)]
        found: list[BlobDelta] = []
        for start in range(0, len(needed), 100):
            for blob in await conn.execute(select(t.blobs.c.hash, t.blobs.c.data).where(t.blobs.c.hash.in_(needed[start : start + 100]))):
                found.append(BlobDelta(blob.hash, referenced[blob.hash], blob.data))
        return tuple(sorted(found))

    async def note_sent(self, peers: Sequence[bytes], blobs: Sequence[tuple[bytes, str]], heads: Mapping[str, Sequence[bytes]]) -> None:
        """Blobs just written into a bundle for `peers`: not sent again once they acknowledge
        the heads we had (until then, every bundle repeats them: a stick can be lost)."""
        now = self._kernel.clock()
        async with self._kernel.store.transaction() as conn:
            for peer in peers:
                for digest, doc_id in blobs:
                    await self.upsert_peer_blob(conn, ids.key_id(peer), digest, doc_id, b"".join(heads.get(doc_id, ())) or b"\x00", now)

    async def record_peer_heads(self, peer: bytes, heads: Mapping[str, Sequence[bytes]], *, complete: bool = False) -> None:
        """What a peer just told us it holds (a LAN acknowledgement): the base of the next delta
        for it, by LAN or by bundle, and confirmation of the blobs sent before those heads.
        `complete`: the report lists every document it holds (store_peer_heads)."""
        now, peer_id = self._kernel.clock(), ids.key_id(peer)
        async with self._kernel.store.transaction() as conn:
            await self.store_peer_heads(conn, peer_id, heads, now, complete=complete)
            await self.confirm_sent_blobs(conn, peer_id, heads, now)

    async def store_peer_heads(self, conn: AsyncConnection, peer: str, heads: Mapping[str, Sequence[bytes]], now: int, *, complete: bool = False) -> None:
        """The latest report to arrive replaces what we believed of each document it lists; no
        clock decides (a sender's clock a day ahead once froze its acknowledgements, and a
        receiver cannot order two boxes' clocks). A report that arrives out of order (a late,
        older bundle) only makes the next delta larger: importing twice changes nothing. Any
        rule that kept the larger of two reports would over-credit a peer restored from a
        backup, which then would never be sent what it lost. A `complete` report (a LAN session's
        opening heads, a bundle for this node alone) lists every document the peer holds that we
        may send it: what it leaves out, the peer holds nothing of - a node recovered on new
        hardware from its kit, with an empty store - and is forgotten, with the attachments we
        believed it held, so everything goes again."""
        if complete:
            forgotten = await conn.execute(t.peer_heads.delete().where(and_(t.peer_heads.c.peer == peer, t.peer_heads.c.doc_id.not_in(list(heads)))))
            if forgotten.rowcount:  # it lost what it held: which attachments it kept, nothing says
                await conn.execute(t.peer_blobs.delete().where(t.peer_blobs.c.peer == peer))
        stored: set[str] = set((await conn.execute(select(t.peer_heads.c.doc_id).where(t.peer_heads.c.peer == peer))).scalars().all())
        new = [{"peer": peer, "doc_id": doc_id, "heads": b"".join(hashes), "updated_at": now} for doc_id, hashes in heads.items() if doc_id not in stored]
        known = [{"of_peer": peer, "of_doc": doc_id, "heads": b"".join(hashes), "updated_at": now} for doc_id, hashes in heads.items() if doc_id in stored]
        if new:  # one statement for all: a bundle reports a few hundred documents
            await conn.execute(insert(t.peer_heads), new)
        if known:
            await conn.execute(_UPDATE_PEER_HEADS, known)

    async def upsert_peer_blob(self, conn: AsyncConnection, peer: str, digest: bytes, doc_id: str | None, heads: bytes | None, now: int) -> None:
        where = and_(t.peer_blobs.c.peer == peer, t.peer_blobs.c.hash == digest)
        row = (await conn.execute(select(t.peer_blobs.c.heads).where(where))).first()
        if row is None:
            await conn.execute(insert(t.peer_blobs).values(peer=peer, hash=digest, doc_id=doc_id, heads=heads, updated_at=now))
        elif row.heads is not None:  # a confirmed row stays confirmed
            await conn.execute(update(t.peer_blobs).where(where).values(doc_id=doc_id, heads=heads, updated_at=now))

    async def confirm_sent_blobs(self, conn: AsyncConnection, peer: str, heads: Mapping[str, Sequence[bytes]], now: int) -> None:
        """A blob we sent counts as held once the peer acknowledges the heads we had when we sent it."""
        pending = (await conn.execute(select(t.peer_blobs.c.hash, t.peer_blobs.c.doc_id, t.peer_blobs.c.heads).where(and_(t.peer_blobs.c.peer == peer, t.peer_blobs.c.heads.is_not(None))))).all()
        by_doc: dict[str, list[Any]] = {}
        for row in pending:
            if row.doc_id in heads:
                by_doc.setdefault(row.doc_id, []).append(row)
        for doc_id, rows in by_doc.items():
            held = ancestors(await logged_graph(conn, doc_id), heads[doc_id])
            for row in rows:
                if all(h in held for h in split_hashes(row.heads)):
                    await conn.execute(update(t.peer_blobs).where(and_(t.peer_blobs.c.peer == peer, t.peer_blobs.c.hash == row.hash)).values(heads=None, updated_at=now))
