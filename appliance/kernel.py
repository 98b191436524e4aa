"""The node's kernel: what every service of a node shares - the store, the write lock, the
clock and randomness, the change feed, the audit trail writer, the writes skipped for lack
of room, and the one place caches are invalidated.

Each cache has one owner service, which registers how to drop its entries (`on_stale`);
whoever learns that documents changed behind a cache's back (a failed transaction, an import,
another process, a wipe) calls `invalidate` and every owner drops what derives from them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import nacl.signing
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import audit
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.feed import ChangeFeed
from appliance.store import Storage

Clock = Callable[[], int]
Random = Callable[[int], bytes]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Stale:
    """Documents whose cached forms are out of date: `doc_ids` (None: every document); with
    `loaded`, the loaded documents themselves too, not only what is derived from them."""

    doc_ids: frozenset[str] | None
    loaded: bool


class Kernel:
    def __init__(self, store: Storage, clock: Clock, rng: Random, signer: nacl.signing.SigningKey | None) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng
        self.signer = signer  # the node's key: signs every audit entry (set by the identity service)
        self.lock = asyncio.Lock()  # held across a read-then-write of the documents in memory
        self.feed = ChangeFeed(self._poll_store)
        # Writes that failed without failing what was asked (a snapshot, a read marker): said once each.
        self.skipped_writes: list[str] = []
        self._droppers: list[Callable[[Stale], None]] = []
        self._poller: Callable[[], Awaitable[frozenset[str]]] | None = None

    def on_stale(self, drop: Callable[[Stale], None]) -> None:
        """Registers a cache owner's way of dropping entries."""
        self._droppers.append(drop)

    def invalidate(self, doc_ids: Iterable[str] | None = None, *, loaded: bool = True) -> None:
        """The one entry point for stale caches: every owner drops what derives from `doc_ids`
        (None: everything)."""
        stale = Stale(None if doc_ids is None else frozenset(doc_ids), loaded)
        for drop in self._droppers:
            drop(stale)

    def poll_with(self, poller: Callable[[], Awaitable[frozenset[str]]]) -> None:
        """Sets what the feed's poller runs (the replica's pick-up of other processes' writes)."""
        self._poller = poller

    async def _poll_store(self) -> frozenset[str]:
        return frozenset() if self._poller is None else await self._poller()

    def note_skipped_write(self, what: str) -> None:
        if what not in self.skipped_writes:
            self.skipped_writes.append(what)

    async def audit(self, conn: AsyncConnection, at: int, actor: str, action: AuditAction, detail: dict[str, object]) -> None:
        """Appends an audit entry signed by the node's key, in `conn`'s transaction."""
        await append_audit(conn, self.signer, at, actor, action, detail)

    def audit_in(self, conn: Connection, at: int, actor: str, action: AuditAction, detail: dict[str, object]) -> None:
        """The same, in a transaction of the store's writer thread (`Storage.write`)."""
        append_audit_in(conn, self.signer, at, actor, action, detail)


async def append_audit(conn: AsyncConnection, signer: nacl.signing.SigningKey | None, at: int, actor: str, action: AuditAction, detail: dict[str, object]) -> None:
    """Appends an entry signed with `signer`, the node's key (None only while it is still sealed)."""
    await conn.run_sync(append_audit_in, signer, at, actor, action, detail)


def append_audit_in(conn: Connection, signer: nacl.signing.SigningKey | None, at: int, actor: str, action: AuditAction, detail: dict[str, object]) -> None:
    """`append_audit` on a synchronous connection: the one writer of the chain."""
    last = conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq.desc()).limit(1)).mappings().first()
    prev = audit.AuditEntry(last["seq"], last["at"], last["actor"], last["action"], last["detail"], last["prev_hash"], last["hash"]) if last else None
    entry = audit.make_entry(prev, at, actor, action, detail, signer)
    conn.execute(
        insert(t.audit_log).values(
            seq=entry.seq, at=entry.at, actor=entry.actor, action=entry.action, detail=entry.detail, prev_hash=entry.prev_hash, hash=entry.hash, signature=entry.signature
        )
    )
