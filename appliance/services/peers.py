"""Other nodes as this one meets them: LAN sightings and syncs, the IP allowlist for LAN
sessions, the peer overview, incarnation checks (one enrollment, one machine) and the audit
of LAN refusals."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, insert, select, update

from appliance import certs, identity, ids, netpolicy
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import IdentityConflict, InvalidInput, NotFound
from appliance.kernel import Kernel
from appliance.model import LanPeer, PeerStatus
from appliance.services.directory import DirectoryService
from appliance.services.exchange import ExchangeService
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster


class PeersService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, directory: DirectoryService, exchange: ExchangeService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._directory = directory
        self._exchange = exchange

    async def note_lan_peer(self, node_id: str, workspace_id: str, address: str, port: int) -> None:
        """Remembers where a node was seen on the LAN (mDNS or an incoming session)."""
        now = self._kernel.clock()
        async with self._kernel.store.transaction() as conn:
            updated = await conn.execute(
                update(t.lan_peers).where(t.lan_peers.c.node_id == node_id).values(workspace_id=workspace_id, address=address, port=port, last_seen=now)
            )
            if updated.rowcount == 0:
                await conn.execute(insert(t.lan_peers).values(node_id=node_id, workspace_id=workspace_id, address=address, port=port, last_seen=now))

    async def note_lan_sync(self, node_key: bytes, address: str, port: int) -> None:
        """A session with this workspace node just exchanged heads."""
        now = self._kernel.clock()
        node_id, workspace_id = ids.key_id(node_key), ids.key_id(self._identity.row.workspace_key)
        async with self._kernel.store.transaction() as conn:
            updated = await conn.execute(update(t.lan_peers).where(t.lan_peers.c.node_id == node_id).values(last_seen=now, last_sync=now))
            if updated.rowcount == 0:
                await conn.execute(
                    insert(t.lan_peers).values(node_id=node_id, workspace_id=workspace_id, address=address, port=port, last_seen=now, last_sync=now)
                )

    async def lan_peers(self) -> list[LanPeer]:
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.lan_peers).order_by(t.lan_peers.c.node_id))).all()
        return [LanPeer(r.node_id, r.workspace_id, r.address, r.port, r.last_seen, r.last_sync) for r in rows]

    async def peer_overview(self, local_networks: Sequence[netpolicy.LocalNetwork] = ()) -> list[PeerStatus]:
        """Every other node of the directory and every node seen on the LAN: trust, where it
        was seen, when it last synced by LAN and by courier, how far behind it is, and - for a
        trusted node seen at an address the IP allowlist refuses - why, and how to allow it."""
        workspace_id = ids.key_id(self._identity.row.workspace_key)
        seen = {p.node_id: p for p in await self.lan_peers()}
        rules = await self.network_rules(local_networks)
        async with self._kernel.store.reading() as conn:
            courier: dict[str, int] = dict(
                (await conn.execute(select(t.bundle_log.c.sender, func.max(t.bundle_log.c.decided_at)).where(t.bundle_log.c.outcome == "accepted").group_by(t.bundle_log.c.sender))).all()
            )
            conflicted = await identity.conflicted_keys(conn)
        rows: list[PeerStatus] = []
        for info in self._directory.nodes():
            if info.this_node:
                continue
            lan = seen.pop(info.node_id, None)
            trust = self._directory.trust_of(info.key)
            behind = None if trust != "trusted" or self._identity.locked_reason is not None else await self._exchange.changes_behind(info.key)
            decision = netpolicy.decide(lan.address, rules) if lan and trust == "trusted" else None
            rows.append(
                PeerStatus(
                    info.node_id, info.name, trust, info.key,
                    lan.address if lan else None, lan.port if lan else None, lan.last_seen if lan else None, lan.last_sync if lan else None,
                    courier.get(info.node_id), behind,
                    self._conflict_text(info.key) if trust == "trusted" and info.key in conflicted else None,
                    netpolicy.refusal_reason(lan.address, decision) if lan and decision and not decision.allowed else None,
                )
            )
        for lan in seen.values():
            if lan.node_id == self._identity.node_id:
                continue
            trust = certs.Trust.UNKNOWN if lan.workspace_id == workspace_id else certs.Trust.OTHER_WORKSPACE
            rows.append(PeerStatus(lan.node_id, "", trust, None, lan.address, lan.port, lan.last_seen, lan.last_sync, None, None))
        order = {"trusted": 0, "unknown": 1, "revoked": 2, "other workspace": 3}
        return sorted(rows, key=lambda r: (order[r.trust], r.name, r.node_id))

    async def network_rules(self, local_networks: Sequence[netpolicy.LocalNetwork] = ()) -> list[netpolicy.NetworkRule]:
        """The rules in force for LAN sessions (both directions), the defaults - this node's
        interface networks, as the caller found them, and the private ranges - included while
        the operator has allowed nothing."""
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.network_rules.c.network, t.network_rules.c.action).order_by(t.network_rules.c.network))).all()
        return netpolicy.effective_rules([netpolicy.NetworkRule(rule.network, rule.action) for rule in rows], local_networks)

    async def set_network_rule(self, network: str, action: str | None) -> str:
        """Admin: allows or denies a network for LAN sessions, both directions (None removes the
        operator's rule for it). Audited. Returns the network in normal form."""
        normal = netpolicy.parse_network(network)
        if action not in ("allow", "deny", None):
            raise InvalidInput(f"unknown network rule action {action!r}")
        await self._identity.require_admin(f"network rule {action or 'remove'}")
        now = self._kernel.clock()
        async with self._kernel.store.transaction() as conn:
            removed = await conn.execute(t.network_rules.delete().where(t.network_rules.c.network == normal))
            if action is None and removed.rowcount == 0:
                raise NotFound(f"there is no rule for {normal}")
            if action is not None:
                await conn.execute(insert(t.network_rules).values(network=normal, action=action, created_at=now, created_by=self._identity.user_key.hex()))
            await self._kernel.audit(conn, now, self._identity.user_key.hex(), AuditAction.NETWORK_RULE, {"network": normal, "action": action or "removed"})
        return normal

    async def check_peer_incarnation(self, peer: bytes, incarnation: bytes, *, via: str, address: str | None = None, record: bool = True) -> None:
        """Judges a node key presented with `incarnation` (a LAN handshake, a bundle). Raises
        IdentityConflict - audited, at most once an hour per key after the first - when the key
        is this node's own from another machine, was first seen with another incarnation, or is
        already in conflict; otherwise remembers the first incarnation seen. The incarnation a
        node's certificate commits to (its enrollment-time recovery kit's) is accepted and
        replaces the one seen before: the node came back from that kit (audited). Without `record`
        (a preview) it judges and writes nothing."""
        own = peer == self._identity.row.node_key
        if own and incarnation == self._identity.row.incarnation:
            return
        async with self._kernel.store.reading() as conn:
            if await identity.known_good(conn, peer, incarnation):
                return
        now = self._kernel.clock()
        cert = None if own else self._roster.current.nodes.get(peer)
        if cert is not None and cert.recovers_as(incarnation):
            if record:
                async with self._kernel.store.transaction() as conn:
                    replaced = await identity.adopt_incarnation(conn, peer, incarnation, now)
                    if replaced is not None:
                        back: dict[str, object] = {"node": ids.key_id(peer), "via": via, "incarnation": incarnation.hex(), "replaced": replaced.hex()}
                        await self._kernel.audit(conn, now, self._identity.row.node_key.hex(), AuditAction.PEER_RECOVERED, back)
            return
        async with self._kernel.store.transaction() as conn:
            verdict = await identity.record_incarnation(conn, peer, incarnation, now, first=self._identity.row.incarnation if own else None, record=record)
            if verdict.audit:
                detail: dict[str, object] = {"node": ids.key_id(peer), "via": via, "incarnation": incarnation.hex(), "detected": verdict.detected, "refusals": verdict.refusals}
                if address is not None:
                    detail["address"] = address
                await self._kernel.audit(conn, now, self._identity.row.node_key.hex(), AuditAction.IDENTITY_CONFLICT, detail)
        if verdict.refused:
            raise IdentityConflict(self._conflict_text(peer))

    def _conflict_text(self, node_key: bytes) -> str:
        if node_key == self._identity.row.node_key:
            return (
                f"{identity.CONFLICT_PREFIX}another machine presents this node's own identity (its enrollment file was used twice, or its disk copied)"
                f" -- revoke it and re-enroll both (rallypoint node revoke {self._identity.row.node_name})"
            )
        name = self._roster.node_names.get(node_key, ids.key_id(node_key))
        return f"{identity.CONFLICT_PREFIX}two nodes present the identity of {name} ({ids.key_id(node_key)}) -- revoke it and re-enroll (rallypoint node revoke {name})"

    async def audit_conflict_reported(self, peer: bytes, reason: str, *, via: str, address: str | None = None) -> None:
        """A peer refused this node because it sees this node's identity on two machines."""
        detail: dict[str, object] = {"by": ids.key_id(peer), "via": via, "reason": reason}
        if address is not None:
            detail["address"] = address
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.row.node_key.hex(), AuditAction.IDENTITY_CONFLICT_REPORTED, detail)

    async def audit_lan_refusal(self, address: str, reason: str, peer: bytes | None = None) -> None:
        """Records that an incoming or outgoing LAN session was refused, and why."""
        detail: dict[str, object] = {"address": address, "reason": reason}
        if peer is not None:
            detail["peer"] = ids.key_id(peer)
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.row.node_key.hex(), AuditAction.LAN_REFUSED, detail)

    async def audit_lan_refusals(self, summary: str, kind: str, refusals: int, addresses: int) -> None:
        """Records a summary of LAN refusals too many to audit one by one (a flood)."""
        detail: dict[str, object] = {"summary": summary, "reason": kind, "refusals": refusals, "addresses": addresses}
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.row.node_key.hex(), AuditAction.LAN_REFUSALS_SUMMARISED, detail)
