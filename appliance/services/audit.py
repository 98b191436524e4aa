"""The audit log as read back: this node's entries and its chain verified against its key, and
the workspace view - every node's trail held here (appliance/audit_feed.py), each verified
against that node's key from the directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import select

from appliance import audit, ids
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.audit_feed import check_kept, verify_feed
from appliance.kernel import Kernel
from appliance.model import AuditRecord, NodeTrail, TrailEntry
from appliance.services.audit_feeds import AuditFeeds
from appliance.services.compliance import ComplianceService
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster


class AuditService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, feeds: AuditFeeds, compliance: ComplianceService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self.feeds = feeds  # other nodes' trails: what travels, what arrived
        self.compliance = compliance  # the records officer's exports of messages, and their schedule

    async def record_export(self, recipients: Sequence[bytes], bundles: int, size: int, changes: int, audit_entries: int) -> None:
        """Audits bundles written for `recipients` (one peer, or a broadcast's)."""
        detail: dict[str, object] = {"for": [ids.key_id(r) for r in recipients], "bundles": bundles, "bytes": size, "changes": changes, "audit_entries": audit_entries}
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.row.node_key.hex(), AuditAction.BUNDLE_EXPORTED, detail)

    async def entries(self, limit: int | None = None) -> list[AuditRecord]:
        query = select(t.audit_log).order_by(t.audit_log.c.seq.desc())
        if limit:
            query = query.limit(limit)
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [AuditRecord(r["seq"], r["at"], r["actor"], r["action"], json.loads(r["detail"])) for r in reversed(rows)]

    async def verify(self) -> audit.AuditVerdict:
        """The chain checked against this node's key; entries from before audit signing (up to
        the store's upgrade) count as legacy."""
        legacy_until, entries = await self._own()
        return audit.verify_chain(entries, self._identity.row.node_key, legacy_until=legacy_until)

    async def _own(self) -> tuple[int, list[audit.AuditEntry]]:
        async with self._kernel.store.reading() as conn:
            legacy_until: int = (await conn.execute(select(t.node_identity.c.audit_legacy_until))).scalar_one()
            rows = (await conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq))).mappings().all()
        return legacy_until, [audit.AuditEntry(r["seq"], r["at"], r["actor"], r["action"], r["detail"], r["prev_hash"], r["hash"], r["signature"]) for r in rows]

    async def workspace(self, *, node: str | None = None, since: int | None = None) -> list[NodeTrail]:
        """Every node's trail held here, this node's first, then by node id: each chain verified
        in full against its node's key (another node's with no legacy allowance: see
        appliance/audit_feed.py), then its entries kept by `node` (a node id or name) and
        `since` (ms). For admins (PermissionDenied, audited, otherwise)."""
        await self._identity.require_admin("the workspace's audit trail")
        return await self._trails(node, since)

    async def verify_all(self) -> list[NodeTrail]:
        """Every trail held here verified, without its entries (any user may verify)."""
        return [replace(trail, entries=()) for trail in await self._trails(None, None)]

    async def record_trail_export(self, trails: Sequence[NodeTrail], since: int | None) -> None:
        """Audits an export of the audit trail: whose trails, how many entries, from when."""
        detail: dict[str, object] = {"nodes": [t.node_id for t in trails], "entries": sum(len(t.entries) + len(t.superseded) for t in trails), "since": since}
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.AUDIT_EXPORTED, detail)

    async def _trails(self, node: str | None, since: int | None) -> list[NodeTrail]:
        me = self._identity.row.node_key
        legacy_until, own = await self._own()
        trails: list[NodeTrail] = []
        own_verdict = audit.verify_chain(own, me, legacy_until=legacy_until)
        trails.append(self._trail(me, own_verdict, [(e, None, None) for e in own]))
        superseded = await self.feeds.superseded()
        for origin, stored in sorted((await self.feeds.stored()).items(), key=lambda item: ids.key_id(item[0])):
            trail = self._trail(origin, verify_feed([e for e, _, _ in stored], origin), stored)
            apart = superseded.get(origin, [])
            problem = check_kept([e for e, *_ in apart], origin)
            kept_apart = tuple(
                replace(self._entry(origin, e, received_at, received_from), superseded_at=superseded_at, superseded_by=superseded_by)
                for e, received_at, received_from, superseded_at, superseded_by in apart
            )
            trails.append(replace(trail, superseded=kept_apart, ok=trail.ok and problem is None, problem=trail.problem or problem))
        kept = []
        for trail in trails:
            if node is not None and node not in (trail.node_id, trail.name):
                continue
            entries = tuple(e for e in trail.entries if since is None or e.at >= since)
            kept.append(replace(trail, entries=entries, superseded=tuple(e for e in trail.superseded if since is None or e.at >= since)))
        return kept

    def _trail(self, origin: bytes, verdict: audit.AuditVerdict, stored: Sequence[tuple[audit.AuditEntry, int | None, str | None]]) -> NodeTrail:
        node_id = ids.key_id(origin)
        entries = tuple(self._entry(origin, e, received_at, received_from) for e, received_at, received_from in stored)
        return NodeTrail(
            node_id=node_id,
            node_key=origin,
            name=self._roster.node_names.get(origin, node_id),
            this_node=origin == self._identity.row.node_key,
            revoked=origin in self._roster.current.revoked,
            ok=verdict.ok,
            count=len(stored),
            verified=verdict.count,
            head=verdict.head,
            problem=verdict.problem,
            entries=entries,
        )

    def _entry(self, origin: bytes, e: audit.AuditEntry, received_at: int | None, received_from: str | None) -> TrailEntry:
        return TrailEntry(ids.key_id(origin), e.seq, e.at, e.actor, self._actor_name(e.actor), e.action, e.detail, e.prev_hash, e.hash, e.signature, received_at, received_from)

    def _actor_name(self, actor: str) -> str | None:
        try:
            key = bytes.fromhex(actor)
        except ValueError:
            return None
        cert = self._roster.users_ever.get(key)
        return cert.name if cert is not None else self._roster.node_names.get(key)
