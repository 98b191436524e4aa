"""The `PeerFinder` port's acceptance suite: mDNS (`sync.discovery.Discovery` on loopback, in a
network namespace when the host's loopback carries no multicast: tests/contracts/conftest.py) and
the twin (`sync.twins.MemoryPeerFinder`). Every wait is bounded."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest

from appliance import ids
from sync.discovery import Advert, Discovery, DiscoveryEvent, PeerGone, PeerSeen
from sync.ports import FinderFactory, PeerFinder
from sync.twins import MemoryLan, MemoryPeerFinder

pytestmark = pytest.mark.timeout(60)

SEE_TIMEOUT_S = 10.0


def mdns(advert: Advert, on_event: Callable[[DiscoveryEvent], None]) -> PeerFinder:
    return Discovery(advert, on_event, interfaces=["127.0.0.1"])


PORT = PeerFinder
IMPLEMENTATIONS = {"mdns": Discovery, "memory": MemoryPeerFinder}
NEEDS_MULTICAST = {"mdns"}


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.multicast_loopback) if name in NEEDS_MULTICAST else name for name in IMPLEMENTATIONS])
def make_finder(request: pytest.FixtureRequest) -> FinderFactory:
    if request.param == "mdns":
        return mdns
    return MemoryLan().finder("127.0.0.1")


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SEE_TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_finders_see_each_other_and_a_finder_that_leaves_is_gone(make_finder: FinderFactory) -> None:
    workspace = ids.key_id(os.urandom(32))
    one_id, other_id = ids.key_id(os.urandom(32)), ids.key_id(os.urandom(32))
    one_events: list[DiscoveryEvent] = []
    other_events: list[DiscoveryEvent] = []
    async with make_finder(Advert(one_id, workspace, 4101), one_events.append) as one:
        async with make_finder(Advert(other_id, workspace, 4102), other_events.append) as other:
            await until(lambda: [p.node_id for p in one.peers()] == [other_id] and [p.node_id for p in other.peers()] == [one_id], "both to see the other")
            seen = one.peers()[0]
            assert (seen.workspace_id, seen.port) == (workspace, 4102) and seen.addresses
            assert any(isinstance(e, PeerSeen) and e.node_id == other_id for e in one_events)
        await until(lambda: any(isinstance(e, PeerGone) and e.node_id == other_id for e in one_events), "the goodbye")
        assert one.peers() == []
