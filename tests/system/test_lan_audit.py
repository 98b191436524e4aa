"""Audit trails over LAN sessions in one process, on real loopback sockets: each node's trail
reaches the node of an admin when a session starts and as it grows, relayed on to another
admin's node, never a member-only node; a forged trail ends the session, is audited, and
nothing of it is stored."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from appliance import audit, crypto
from appliance.audit_feed import AuditCarry, FeedPart
from appliance.model import NodeTrail
from appliance.node import Node
from sync import messages
from sync.lan import SessionDown
from tests.conftest import connect_node_db
from tests.flows.test_audit_trails import admin_workspace
from tests.system.test_lan import QUICK, Intercepted, eventually, serving

pytestmark = pytest.mark.timeout(120)
FAST_TRAILS = replace(QUICK, trails_interval_s=0.2)


async def trail(node: Node, of: Node) -> NodeTrail | None:
    return next((t for t in await node.audit.workspace() if t.node_id == of.identity.node_id), None)


def stored(node: Node, origin: Node) -> int:
    with connect_node_db(node.home / "node.db") as conn:
        return int(conn.execute("SELECT count(*) FROM workspace_audit WHERE origin = ?", (origin.identity.node_key,)).fetchone()[0])


async def test_trails_reach_admin_nodes_over_the_lan_relayed_and_as_they_grow(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        await charlie.chat.create_channel("field")  # an entry in charlie's trail
        async with serving(alpha, FAST_TRAILS) as (a, _), serving(bravo, FAST_TRAILS) as (b, _), serving(charlie, FAST_TRAILS) as (c, _):
            c.dial("127.0.0.1", a.port)
            b.dial("127.0.0.1", a.port)

            async def alpha_has_charlies() -> bool:
                got = await trail(alpha, charlie)
                return got is not None and got.ok and any(e.action == "channel_created" for e in got.entries)

            await eventually(alpha_has_charlies, what="charlie's trail at alpha (an admin's node)")

            async def bravo_has_both() -> bool:
                theirs = [await trail(bravo, alpha), await trail(bravo, charlie)]
                return all(t is not None and t.ok and t.count for t in theirs)

            await eventually(bravo_has_both, what="alpha's trail, and charlie's relayed, at bravo")
            assert stored(charlie, alpha) == 0 and stored(charlie, bravo) == 0  # a member's node gets none
            # An admin action on alpha during the session reaches bravo without a new session.
            await alpha.directory.add_user("erin")

            async def bravo_sees_erin() -> bool:
                got = await trail(bravo, alpha)
                return got is not None and got.ok and any(e.action == "user_added" for e in got.entries)

            await eventually(bravo_sees_erin, what="alpha's new entry at bravo")
        assert stored(charlie, alpha) == 0
        # What bravo acknowledged is remembered: a bundle for it carries no entry it holds.
        sent = await alpha.audit.feeds.carry_for(bravo.identity.node_key)
        held = (await trail(bravo, alpha))
        assert held is not None
        assert all(p.entries[0].seq > held.count for p in sent.parts if p.origin == alpha.identity.node_key)
        async with serving(bravo, FAST_TRAILS) as (b, _), serving(delta, FAST_TRAILS) as (d, _):
            d.dial("127.0.0.1", b.port)

            async def delta_has_alphas_relayed() -> bool:
                got = await trail(delta, alpha)
                return got is not None and got.ok and got.count >= held.count and {e.received_from for e in got.entries} == {bravo.identity.node_id}

            await eventually(delta_has_alphas_relayed, what="alpha's trail relayed by bravo to delta")


async def test_a_forged_trail_ends_the_session_is_audited_and_stores_nothing(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        real = await delta.audit.feeds.carry_for(bravo.identity.node_key)
        part = next(p for p in real.parts if p.origin == delta.identity.node_key)
        first = part.entries[0]
        forged = audit.make_entry(None, first.at, first.actor, "user_added", {"user": "mallory"}, crypto.new_signing_key(bytes(32)))
        bad = AuditCarry({}, (FeedPart(part.origin, (forged, *part.entries[1:])),))

        async def forging(peer: bytes, *, max_bytes: int = 1 << 20) -> AuditCarry:
            return bad  # a node that sends a rewritten trail of itself

        delta.audit = Intercepted(delta.audit, feeds=Intercepted(delta.audit.feeds, carry_for=forging))  # type: ignore[misc]
        async with serving(bravo, FAST_TRAILS) as (b, b_events), serving(delta, FAST_TRAILS) as (d, _):
            d.dial("127.0.0.1", b.port)

            async def ended() -> bool:
                return any("audit trail this node refuses" in e.reason for e in b_events.of(SessionDown))

            await eventually(ended, what="bravo ending the session")
        reasons = [str(e.detail.get("reason", "")) for e in await bravo.audit.entries() if e.action == "lan_refused"]
        assert any("entry 1 was altered: its signature" in r for r in reasons), reasons
        assert stored(bravo, delta) == 0
        assert isinstance(messages.Trails(bad), messages.Trails)
