"""The change feed's contract (appliance/feed.py `Feed`), run on the node's `ChangeFeed` and on
`RecordingFeed`: listeners get every event in order until they close, a failing listener
harms no one, `poll` polls now, and `polling` keeps one poller for every holder, which stops
when the last leaves or the node is wiped and carries on past a failed poll.

The store's poll is a scripted function here: what the feed does with a poll is the contract;
the node's real poll is covered by the flows (tests/flows/test_node.py and the console)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from appliance.errors import NodeLocked, RallypointError
from appliance.feed import ChangeFeed, DirectoryChanged, DocumentsChanged, Feed, FeedEvent, NodeWiped, Origin, RecordingFeed

PORT = Feed
IMPLEMENTATIONS: list[Callable[..., Feed]] = [ChangeFeed, RecordingFeed]
INTERVAL_S = 0.01
WAIT_S = 10.0  # every wait in this suite ends by then

EVENTS: list[FeedEvent] = [
    DocumentsChanged(frozenset({"c1/head"}), Origin.LOCAL),
    DirectoryChanged(Origin.PEER),
    DocumentsChanged(frozenset({"c2/s0"}), Origin.PEER, peer="NODE"),
    NodeWiped("revoked"),
]


@dataclass
class ScriptedStore:
    """The store's poll as the feed sees it: answers from `script` (an exception is raised),
    then nothing found; remembers which task called it."""

    script: list[frozenset[str] | Exception] = field(default_factory=list)
    callers: list[asyncio.Task[object] | None] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def poll(self) -> frozenset[str]:
        self.callers.append(asyncio.current_task())
        self.called.set()
        answer = self.script.pop(0) if self.script else frozenset()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def calls(self, count: int) -> None:
        """Returns once the poll has been called `count` times."""
        async with asyncio.timeout(WAIT_S):
            while len(self.callers) < count:
                self.called.clear()
                await self.called.wait()


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: cls.__name__)
def implementation(request: pytest.FixtureRequest) -> Callable[..., Feed]:
    cls: Callable[..., Feed] = request.param
    return cls


@pytest.fixture
def store() -> ScriptedStore:
    return ScriptedStore()


@pytest.fixture
def feed(implementation: Callable[..., Feed], store: ScriptedStore) -> Feed:
    return implementation(store.poll)


def test_every_listener_gets_every_event_in_order(feed: Feed) -> None:
    first: list[FeedEvent] = []
    second: list[FeedEvent] = []
    with feed.subscribe(first.append), feed.subscribe(second.append):
        for event in EVENTS:
            feed.publish(event)
    assert first == EVENTS and second == EVENTS


def test_a_listener_gets_nothing_from_before_it_subscribed_or_after_it_closed(feed: Feed) -> None:
    seen: list[FeedEvent] = []
    feed.publish(EVENTS[0])
    subscription = feed.subscribe(seen.append)
    feed.publish(EVENTS[1])
    subscription.close()
    feed.publish(EVENTS[2])
    subscription.close()  # closing twice is harmless
    with feed.subscribe(seen.append):
        feed.publish(EVENTS[3])
    feed.publish(EVENTS[0])
    assert seen == [EVENTS[1], EVENTS[3]]


def test_a_failing_listener_stops_neither_the_others_nor_the_publisher(feed: Feed) -> None:
    seen: list[FeedEvent] = []

    def broken(event: FeedEvent) -> None:
        raise ValueError("a broken listener")

    with feed.subscribe(broken), feed.subscribe(seen.append):
        feed.publish(EVENTS[0])
        feed.publish(EVENTS[1])
    assert seen == EVENTS[:2]


async def test_poll_polls_the_store_now_and_returns_what_it_found(feed: Feed, store: ScriptedStore) -> None:
    store.script = [frozenset({"c1", "directory"})]
    assert await feed.poll() == frozenset({"c1", "directory"})
    assert await feed.poll() == frozenset()
    assert len(store.callers) == 2


async def test_polling_keeps_one_poller_for_every_holder_until_the_last_leaves(feed: Feed, store: ScriptedStore) -> None:
    async with feed.polling(INTERVAL_S):
        await store.calls(2)
        async with feed.polling(INTERVAL_S):
            await store.calls(len(store.callers) + 2)
        await store.calls(len(store.callers) + 2)  # the first holder still holds it
    pollers = set(store.callers)
    assert len(pollers) == 1
    poller = pollers.pop()
    assert poller is not None and poller.done()
    async with feed.polling(INTERVAL_S):  # a later holder starts a poller again
        await store.calls(len(store.callers) + 1)
    assert store.callers[-1] is not poller


async def test_a_wiped_node_ends_the_poller_and_a_failed_poll_does_not(feed: Feed, store: ScriptedStore) -> None:
    store.script = [RallypointError("the store is busy"), frozenset({"c1"}), NodeLocked("wiped")]
    async with feed.polling(INTERVAL_S):
        await store.calls(3)
        poller = store.callers[-1]
        assert poller is not None
        async with asyncio.timeout(WAIT_S):
            await asyncio.shield(poller)
    assert len(store.callers) == 3

