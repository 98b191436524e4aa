"""The `LanBook` port's acceptance suite, run by every implementation: the node's `peers`
service (a real node and store) and the twin (`sync.twins.MemoryLanBook`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import ids, netpolicy
from appliance.errors import IdentityConflict
from appliance.model import LanPeer
from appliance.services.peers import PeersService
from sync.ports import LanBook
from sync.twins import MemoryLanBook, time_ms
from tests.conftest import make_workspace

pytestmark = pytest.mark.timeout(60)


@dataclass
class World:
    book: LanBook
    node_key: bytes  # the book's own node
    incarnation: bytes  # its own installation
    lan_peers: Callable[[], Awaitable[list[LanPeer]]]
    set_rule: Callable[[str, str | None], Awaitable[str]]  # as an admin would
    refusals: Callable[[], Awaitable[list[tuple[str, str]]]]  # (address, reason) audited, in order
    summaries: Callable[[], Awaitable[list[int]]]  # refusal counts of the summaries audited, in order


async def node_world(root: Path) -> AsyncIterator[World]:
    (alpha,) = await make_workspace(root)
    async with alpha:

        async def refusals() -> list[tuple[str, str]]:
            entries = sorted(await alpha.audit.entries(), key=lambda e: e.seq)
            return [(str(e.detail["address"]), str(e.detail["reason"])) for e in entries if e.action == "lan_refused"]

        async def summaries() -> list[int]:
            entries = sorted(await alpha.audit.entries(), key=lambda e: e.seq)
            return [int(str(e.detail["refusals"])) for e in entries if e.action == "lan_refusals_summarised"]

        yield World(alpha.peers, alpha.identity.node_key, alpha.identity.incarnation, alpha.peers.lan_peers, alpha.peers.set_network_rule, refusals, summaries)


async def memory_world() -> AsyncIterator[World]:
    node_key, incarnation = os.urandom(32), os.urandom(16)
    book = MemoryLanBook(ids.key_id(os.urandom(32)), node_key, incarnation, time_ms)

    async def refusals() -> list[tuple[str, str]]:
        return [(r.address, r.reason) for r in book.refusals]

    async def summaries() -> list[int]:
        return [count for _, _, count, _ in book.summaries]

    yield World(book, node_key, incarnation, book.lan_peers, book.set_network_rule, refusals, summaries)


PORT = LanBook
IMPLEMENTATIONS = {"node": PeersService, "memory": MemoryLanBook}


@pytest.fixture(params=list(IMPLEMENTATIONS))
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    made = node_world(tmp_path) if request.param == "node" else memory_world()
    yield await anext(made)
    with pytest.raises(StopAsyncIteration):
        await anext(made)


async def allowed(world: World, address: str) -> bool:
    return netpolicy.decide(address, await world.book.network_rules()).allowed


async def test_refusals_are_recorded_in_order(world: World) -> None:
    await world.book.audit_lan_refusal("192.0.2.7", "unknown node X", os.urandom(32))
    await world.book.audit_lan_refusal("192.0.2.8", "handshake deadline passed")
    await world.book.audit_lan_refusals("40 refusals from 12 addresses", "handshake failed", 40, 12)
    assert await world.refusals() == [("192.0.2.7", "unknown node X"), ("192.0.2.8", "handshake deadline passed")]
    assert await world.summaries() == [40]


async def test_by_default_private_networks_are_allowed_and_others_not(world: World) -> None:
    assert await allowed(world, "192.168.1.5") and await allowed(world, "10.1.2.3")
    assert not await allowed(world, "8.8.8.8")


async def test_a_denied_network_is_refused_and_its_neighbours_still_allowed(world: World) -> None:
    assert await world.set_rule("192.168.1.0/24", "deny") == "192.168.1.0/24"
    assert not await allowed(world, "192.168.1.5")
    assert await allowed(world, "192.168.2.5")
    await world.set_rule("192.168.1.0/24", None)
    assert await allowed(world, "192.168.1.5")


async def test_an_allowed_public_network_is_allowed(world: World) -> None:
    await world.set_rule("203.0.113.0/24", "allow")
    assert await allowed(world, "203.0.113.9")
    assert not await allowed(world, "198.51.100.9")


async def test_a_key_presented_with_a_second_incarnation_is_a_conflict(world: World) -> None:
    peer, first = os.urandom(32), os.urandom(16)
    await world.book.check_peer_incarnation(peer, first, via="lan", address="192.0.2.7")
    await world.book.check_peer_incarnation(peer, first, via="lan", address="192.0.2.7")  # the same machine again
    with pytest.raises(IdentityConflict):
        await world.book.check_peer_incarnation(peer, os.urandom(16), via="lan", address="192.0.2.9")


async def test_this_nodes_own_key_from_another_machine_is_a_conflict(world: World) -> None:
    await world.book.check_peer_incarnation(world.node_key, world.incarnation, via="lan")
    with pytest.raises(IdentityConflict):
        await world.book.check_peer_incarnation(world.node_key, os.urandom(16), via="lan")


async def test_sightings_and_syncs_are_remembered(world: World) -> None:
    seen, synced = os.urandom(32), os.urandom(32)
    workspace = ids.key_id(os.urandom(32))
    await world.book.note_lan_peer(ids.key_id(seen), workspace, "192.168.1.20", 4500)
    await world.book.note_lan_sync(synced, "192.168.1.21", 4501)
    peers = {p.node_id: p for p in await world.lan_peers()}
    assert (peers[ids.key_id(seen)].address, peers[ids.key_id(seen)].port, peers[ids.key_id(seen)].last_sync) == ("192.168.1.20", 4500, None)
    assert (peers[ids.key_id(synced)].address, peers[ids.key_id(synced)].last_sync is not None) == ("192.168.1.21", True)
