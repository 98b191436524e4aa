"""Audit trails that travel (appliance/audit_feed.py): what of them to send a peer, checking
what arrives, storing it with the rest of an import, and how far each peer holds each trail.

Who receives them: a node that serves an admin (an admin's certificate names it as `home`)
receives every trail this node holds - its own, and those it holds of other nodes, which it
relays; any other node receives none (only, as an acknowledgement, how far this node holds its
own trail). How far a peer holds a trail is what it last acknowledged (`peer_audit`), never what
was sent: a lost bundle leaves no gap, the next one sends the same entries again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import and_, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import audit, ids
from appliance import schema as t
from appliance.audit_feed import MAX_ENTRIES_CARRIED, AuditCarry, FeedHead, FeedPart, carried_bytes, extend_feed, up_to_signed, within
from appliance.errors import AuditFeedRefused
from appliance.kernel import Kernel
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster


@dataclass(frozen=True)
class CheckedFeeds:
    """An arrival's audit trails, checked: the new entries per origin (to store) and the sender's
    acknowledgement (how far it holds each origin's trail)."""

    new: tuple[FeedPart, ...]
    held: Mapping[bytes, int]
    skipped: Mapping[str, str] = field(default_factory=dict)  # node id -> why its part was skipped (a gap, a fork)

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

    async def held(self, conn: AsyncConnection) -> dict[bytes, int]:
        """How far this node holds each trail: its own, and those of other nodes."""
        own: int = (await conn.execute(select(func.coalesce(func.max(t.audit_log.c.seq), 0)))).scalar_one()
        query = select(t.workspace_audit.c.origin, func.max(t.workspace_audit.c.seq)).group_by(t.workspace_audit.c.origin)
        held = {bytes(origin): int(seq) for origin, seq in cast(list[tuple[bytes, int]], (await conn.execute(query)).all())}
        held[self._identity.row.node_key] = own
        return {origin: seq for origin, seq in held.items() if seq}

    async def carry_for(self, peer: bytes, *, max_bytes: int = 32 * 1024 * 1024) -> AuditCarry:
        """What to send `peer`: every trail beyond what it acknowledged, up to a signed entry
        each and about `max_bytes` in all, if it serves an admin; always how far this node
        holds each trail it may see."""
        me = self._identity.row.node_key
        async with self._kernel.store.reading() as conn:
            held = await self.held(conn)
            if self.serves_admin(me):  # this node receives trails: it says how far, also "none"
                held = {origin: held.get(origin, 0) for origin in set(self._roster.node_names) | set(held)}
            if not self.serves_admin(peer):
                return AuditCarry({peer: held[peer]} if peer in held else {})
            query = select(t.peer_audit.c.origin, t.peer_audit.c.seq).where(t.peer_audit.c.peer == ids.key_id(peer))
            theirs = {bytes(origin): int(seq) for origin, seq in cast(list[tuple[bytes, int]], (await conn.execute(query)).all())}
            parts: list[FeedPart] = []
            budget = MAX_ENTRIES_CARRIED
            for origin, seq in sorted(held.items()):
                after = theirs.get(origin, 0)
                if origin == peer or seq <= after or budget <= 0:
                    continue
                table = t.audit_log if origin == me else t.workspace_audit
                query = select(table).where(table.c.seq > after).order_by(table.c.seq).limit(budget)
                if origin != me:
                    query = query.where(t.workspace_audit.c.origin == origin)
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
        signature, or of a node the directory never certified. A part with a gap or a fork is
        skipped (see `Extension.recoverable`), as is this node's own trail sent back. Run under
        the kernel's lock, before the import's transaction."""
        me = self._identity.row.node_key
        new: list[FeedPart] = []
        skipped: dict[str, str] = {}
        async with self._kernel.store.reading() as conn:
            for part in carry.parts:
                if part.origin == me:
                    continue
                node = ids.key_id(part.origin)
                if not self.known_origin(part.origin):
                    raise AuditFeedRefused(f"the audit trail of node {node} from {ids.key_id(sender)} is refused: the directory never certified that node")
                last = (
                    await conn.execute(
                        select(t.workspace_audit.c.seq, t.workspace_audit.c.hash).where(t.workspace_audit.c.origin == part.origin).order_by(t.workspace_audit.c.seq.desc()).limit(1)
                    )
                ).first()
                extension = extend_feed(FeedHead() if last is None else FeedHead(last.seq, bytes(last.hash)), part)
                if extension.problem is not None and extension.recoverable:
                    skipped[node] = extension.problem
                elif extension.problem is not None:
                    raise AuditFeedRefused(f"the audit trail of node {node} from {ids.key_id(sender)} is refused: {extension.problem}")
                if extension.new:
                    new.append(FeedPart(part.origin, extension.new))
        return CheckedFeeds(tuple(new), carry.held, skipped)

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
        if rows:
            await conn.execute(insert(t.workspace_audit), rows)
        await self.store_held(conn, sender_id, checked.held, now)

    async def store_held(self, conn: AsyncConnection, peer: str, held: Mapping[bytes, int], now: int) -> None:
        if not held:
            return
        await conn.execute(t.peer_audit.delete().where(and_(t.peer_audit.c.peer == peer, t.peer_audit.c.origin.in_(list(held)))))
        await conn.execute(insert(t.peer_audit), [{"peer": peer, "origin": origin, "seq": seq, "updated_at": now} for origin, seq in held.items()])

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
