"""Audit trails that travel (appliance/audit_feed.py): what of them to send a peer, checking
what arrives, storing it with the rest of an import, and how far each peer holds each trail.

Who receives them: a node that serves an admin (an admin's certificate names it as `home`)
receives every trail this node holds - its own, and those it holds of other nodes, which it
relays; any other node receives none (only, as an acknowledgement, how far this node holds its
own trail). How far a peer holds a trail, and which branch, is what it last acknowledged
(`peer_audit`), never what was sent: a lost bundle leaves no gap, the next one sends the same
entries again. A branch that a later restore superseded is kept apart (`audit_superseded`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, func, insert, select, true
from sqlalchemy import literal as sa_literal
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import audit, cbor, ids
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.audit_feed import (
    MAX_ENTRIES_CARRIED,
    AuditCarry,
    FeedHead,
    FeedPart,
    HeldBranch,
    Restore,
    TrailAck,
    carried_bytes,
    extend_feed,
    resend_after,
    restores_in,
    up_to_signed,
    within,
)
from appliance.errors import AuditFeedRefused
from appliance.kernel import Kernel
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster


@dataclass(frozen=True)
class CheckedFeeds:
    """An arrival's audit trails, checked: the new entries per origin (to store) and the sender's
    acknowledgement (how far it holds each origin's trail)."""

    new: tuple[FeedPart, ...]
    held: Mapping[bytes, TrailAck]
    skipped: Mapping[str, str] = field(default_factory=dict)  # node id -> why its part was skipped (a gap, a fork)
    supersede: Mapping[bytes, int] = field(default_factory=dict)  # origin -> the seq from which its held entries give way

    @property
    def entries(self) -> int:
        return sum(len(part.entries) for part in self.new)


def _entry(row: Any) -> audit.AuditEntry:
    """An entry from a row of `audit_log` or `workspace_audit`."""
    signature = row["signature"]
    return audit.AuditEntry(row["seq"], row["at"], row["actor"], row["action"], row["detail"], bytes(row["prev_hash"]), bytes(row["hash"]), None if signature is None else bytes(signature))


class AuditFeeds:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster

    def serves_admin(self, peer: bytes) -> bool:
        """Whether node `peer` is the home of a current admin: only such nodes receive trails."""
        return any(cert.role == "admin" and cert.home == peer for cert in self._roster.current.users.values())

    def known_origin(self, origin: bytes) -> bool:
        """Whether the directory ever certified node `origin` (revoked since or not)."""
        return origin in self._roster.node_names or origin in self._roster.current.revoked

    async def _heads(self, conn: AsyncConnection) -> dict[bytes, FeedHead]:
        """How far this node holds each trail, its own and those of other nodes."""
        me = self._identity.row.node_key
        heads: dict[bytes, FeedHead] = {}
        own = (await conn.execute(select(t.audit_log.c.seq, t.audit_log.c.hash).order_by(t.audit_log.c.seq.desc()).limit(1))).first()
        if own is not None:
            heads[me] = FeedHead(own.seq, bytes(own.hash))
        last = select(t.workspace_audit.c.origin, func.max(t.workspace_audit.c.seq).label("seq")).group_by(t.workspace_audit.c.origin).subquery()
        query = select(t.workspace_audit.c.origin, t.workspace_audit.c.seq, t.workspace_audit.c.hash).join(
            last, and_(t.workspace_audit.c.origin == last.c.origin, t.workspace_audit.c.seq == last.c.seq)
        )
        for row in (await conn.execute(query)).all():
            heads[bytes(row.origin)] = FeedHead(row.seq, bytes(row.hash))
        return heads

    async def _restores(self, conn: AsyncConnection, origin: bytes | None) -> dict[bytes, tuple[Restore, ...]]:
        """The `restored` entries of the trails held here (of `origin` only, if given), in order."""
        me, found = self._identity.row.node_key, dict[bytes, list[Restore]]()
        if origin in (None, me):
            own = select(t.audit_log.c.seq, t.audit_log.c.hash, t.audit_log.c.at).where(t.audit_log.c.action == AuditAction.RESTORED).order_by(t.audit_log.c.seq)
            found[me] = [Restore(r.seq, bytes(r.hash), r.at) for r in (await conn.execute(own)).all()]
        if origin != me:
            w = t.workspace_audit
            query = select(w.c.origin, w.c.seq, w.c.hash, w.c.at).where(w.c.action == AuditAction.RESTORED).order_by(w.c.origin, w.c.seq)
            for row in (await conn.execute(query if origin is None else query.where(w.c.origin == origin))).all():
                found.setdefault(bytes(row.origin), []).append(Restore(row.seq, bytes(row.hash), row.at))
        return {o: tuple(rs) for o, rs in found.items()}

    def _trail(self, origin: bytes) -> tuple[Table, Any]:
        """The table holding `origin`'s trail here, and the condition picking it out."""
        if origin == self._identity.row.node_key:
            return t.audit_log, true()
        return t.workspace_audit, t.workspace_audit.c.origin == origin

    async def _acks_of(self, conn: AsyncConnection, peer: bytes) -> dict[bytes, TrailAck]:
        rows = (await conn.execute(select(t.peer_audit).where(t.peer_audit.c.peer == ids.key_id(peer)))).mappings().all()
        return {bytes(r["origin"]): TrailAck(FeedHead(r["seq"], bytes(r["hash"])), tuple(Restore(*fields) for fields in cbor.decode(r["restores"], "a peer's acknowledged restores"))) for r in rows}

    async def carry_for(self, peer: bytes, *, max_bytes: int = 32 * 1024 * 1024) -> AuditCarry:
        """What to send `peer`: every trail beyond what it acknowledged (or, if it holds another
        branch and ours has the later restore, from where they part), up to a signed entry each
        and about `max_bytes` in all, if it serves an admin; always how far this node holds each
        trail it may see."""
        me = self._identity.row.node_key
        async with self._kernel.store.reading() as conn:
            restores = await self._restores(conn, None)
            held = {origin: TrailAck(head, restores.get(origin, ())) for origin, head in (await self._heads(conn)).items()}  # and which branch
            if self.serves_admin(me):  # this node receives trails: it says how far, also "none"
                held = {origin: held.get(origin, TrailAck()) for origin in set(self._roster.node_names) | set(held)}
            if not self.serves_admin(peer):
                return AuditCarry({peer: held[peer]} if peer in held else {})
            theirs = await self._acks_of(conn, peer)
            parts: list[FeedPart] = []
            budget = MAX_ENTRIES_CARRIED
            for origin, ours in sorted(held.items()):
                if origin == peer or ours.head.seq == 0 or budget <= 0:
                    continue
                table, picked = self._trail(origin)
                ack = theirs.get(origin, TrailAck())
                at_ack = (await conn.execute(select(table.c.hash).where(picked, table.c.seq == ack.head.seq))).scalar_one_or_none() if ack.head.seq else None
                after = resend_after(ack, None if at_ack is None else bytes(at_ack), restores.get(origin, ()))
                if after is None or ours.head.seq <= after:
                    continue
                query = select(table).where(picked, table.c.seq > after).order_by(table.c.seq).limit(budget)
                found = [_entry(r) for r in (await conn.execute(query)).mappings().all()]
                entries = up_to_signed(found, min(budget, within(found, max_bytes)))
                max_bytes -= carried_bytes(entries)
                if entries:
                    parts.append(FeedPart(origin, entries))
                    budget -= len(entries)
        return AuditCarry(held, tuple(parts))

    async def check(self, carry: AuditCarry, sender: bytes) -> CheckedFeeds:
        """The new entries of each trail in `carry`, each checked against its origin's key after
        what this node holds; raises AuditFeedRefused for a trail with a broken link, hash or
        signature, or of a node the directory never certified. A part with a gap, or a fork its
        branch does not win, is skipped (see `Extension.recoverable`), as is this node's own
        trail sent back. Run under the kernel's lock, before the import's transaction."""
        me = self._identity.row.node_key
        new: list[FeedPart] = []
        skipped: dict[str, str] = {}
        supersede: dict[bytes, int] = {}
        async with self._kernel.store.reading() as conn:
            for part in carry.parts:
                if part.origin == me or not part.entries:
                    continue
                node = ids.key_id(part.origin)
                if not self.known_origin(part.origin):
                    raise AuditFeedRefused(f"the audit trail of node {node} from {ids.key_id(sender)} is refused: the directory never certified that node")
                extension = extend_feed(await self._branch(conn, part), part)
                if extension.problem is not None and extension.recoverable:
                    skipped[node] = extension.problem
                elif extension.problem is not None:
                    raise AuditFeedRefused(f"the audit trail of node {node} from {ids.key_id(sender)} is refused: {extension.problem}")
                if extension.new:
                    new.append(FeedPart(part.origin, extension.new))
                if extension.supersedes is not None:
                    supersede[part.origin] = extension.supersedes
        return CheckedFeeds(tuple(new), carry.held, skipped, supersede)

    async def _branch(self, conn: AsyncConnection, part: FeedPart) -> HeldBranch:
        """What this node holds of `part`'s trail, as `extend_feed` needs it."""
        w = t.workspace_audit
        last = (await conn.execute(select(w.c.seq, w.c.hash).where(w.c.origin == part.origin).order_by(w.c.seq.desc()).limit(1))).first()
        if last is None:
            return HeldBranch()
        low, high = part.entries[0].seq - 1, min(part.entries[-1].seq, last.seq)
        rows = (await conn.execute(select(w).where(w.c.origin == part.origin, w.c.seq >= low, w.c.seq <= high))).mappings().all()
        restores = (await self._restores(conn, part.origin)).get(part.origin, ())
        return HeldBranch(FeedHead(last.seq, bytes(last.hash)), {r["seq"]: _entry(r) for r in rows}, restores)

    async def import_carry(self, sender: bytes, carry: AuditCarry) -> int:
        """Trails that arrived on their own (a LAN Trails message): checked and stored under the
        kernel's lock in one transaction with the sender's acknowledgement; returns the entries
        new here. Not an audit entry of its own: each stored entry says when and from whom it
        came (an entry per arrival would give the peers new entries to send each other for ever)."""
        async with self._kernel.lock:
            self._identity.require_unlocked()
            checked = await self.check(carry, sender)
            async with self._kernel.store.transaction() as conn:
                await self.store(conn, checked, sender)
        return checked.entries

    async def store(self, conn: AsyncConnection, checked: CheckedFeeds, sender: bytes) -> None:
        """In the import's transaction: the new entries, and the sender's acknowledgement (the
        latest report replaces the one before, as for document heads)."""
        now, sender_id = self._kernel.clock(), ids.key_id(sender)
        rows = [
            {
                "origin": part.origin,
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "detail": e.detail,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
                "signature": e.signature,
                "received_at": now,
                "received_from": sender_id,
            }
            for part in checked.new
            for e in part.entries
        ]
        w, kept = t.workspace_audit, t.audit_superseded
        for origin, since in checked.supersede.items():
            gone = and_(w.c.origin == origin, w.c.seq >= since)
            columns = [w.c.origin, w.c.hash, w.c.seq, w.c.at, w.c.actor, w.c.action, w.c.detail, w.c.prev_hash, w.c.signature, w.c.received_at, w.c.received_from]
            moved = select(*columns, sa_literal(now), sa_literal(sender_id)).where(gone)
            await conn.execute(kept.insert().from_select([*(c.name for c in columns), "superseded_at", "superseded_by"], moved).prefix_with("OR IGNORE", dialect="sqlite"))
            apart = (await conn.execute(w.delete().where(gone))).rowcount
            branch = next(part.entries for part in checked.new if part.origin == origin)
            detail: dict[str, object] = {"node": ids.key_id(origin), "from_seq": since, "kept_apart": apart, "from": sender_id, "restored_at_seq": restores_in(branch)[-1].seq}
            await self._kernel.audit(conn, now, self._identity.row.node_key.hex(), AuditAction.TRAIL_SUPERSEDED, detail)
        if rows:
            await conn.execute(insert(t.workspace_audit), rows)
        await self.store_held(conn, sender_id, checked.held, now)

    async def store_held(self, conn: AsyncConnection, peer: str, held: Mapping[bytes, TrailAck], now: int) -> None:
        if not held:
            return
        await conn.execute(t.peer_audit.delete().where(and_(t.peer_audit.c.peer == peer, t.peer_audit.c.origin.in_(list(held)))))
        acks = [
            {
                "peer": peer,
                "origin": origin,
                "seq": ack.head.seq,
                "hash": ack.head.hash,
                "restores": cbor.encode([[r.seq, r.hash, r.at] for r in ack.restores]),
                "updated_at": now,
            }
            for origin, ack in held.items()
        ]
        await conn.execute(insert(t.peer_audit), acks)

    async def stored(self, origins: Sequence[bytes] | None = None) -> dict[bytes, list[tuple[audit.AuditEntry, int, str]]]:
        """Other nodes' trails as stored: per origin, (entry, received_at, received_from) in order."""
        query = select(t.workspace_audit).order_by(t.workspace_audit.c.origin, t.workspace_audit.c.seq)
        if origins is not None:
            query = query.where(t.workspace_audit.c.origin.in_(list(origins)))
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(query)).mappings().all()
        trails: dict[bytes, list[tuple[audit.AuditEntry, int, str]]] = {}
        for row in rows:
            trails.setdefault(bytes(row["origin"]), []).append((_entry(row), row["received_at"], row["received_from"]))
        return trails

    async def superseded(self) -> dict[bytes, list[tuple[audit.AuditEntry, int, str, int, str]]]:
        """Entries of other nodes' trails a later restore superseded: per origin, (entry,
        received_at, received_from, superseded_at, superseded_by) by seq and time."""
        kept = t.audit_superseded
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(kept).order_by(kept.c.origin, kept.c.superseded_at, kept.c.seq))).mappings().all()
        found: dict[bytes, list[tuple[audit.AuditEntry, int, str, int, str]]] = {}
        for row in rows:
            found.setdefault(bytes(row["origin"]), []).append((_entry(row), row["received_at"], row["received_from"], row["superseded_at"], row["superseded_by"]))
        return found
