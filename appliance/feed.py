"""The change feed: one typed stream of what changed in a node's store, for whoever shows or
sends it (the LAN service, the console's views, the peers screen), and one poller of what
other processes wrote to the same store (the CLI while the console runs).

Events are published after the write they describe is durable. Listeners are called in the
publishing task and must not block: a console posts itself a message, the LAN service queues
work for its sessions.

`Feed` is the port whoever subscribes or publishes depends on; `ChangeFeed` is the node's, and
`RecordingFeed` its twin that also keeps every event published through it, in order, for a
test or a twin service to read back. tests/contracts/test_feed.py runs on both."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from appliance.errors import NodeLocked, RallypointError

log = logging.getLogger(__name__)


class Origin(enum.Enum):
    """Where changes came from."""

    LOCAL = "local"  # written by this process
    STORE = "store"  # written by another process on this node, found by the poller
    PEER = "peer"  # received from another node (LAN or bundle)


@dataclass(frozen=True)
class DocumentsChanged:
    doc_ids: frozenset[str]
    origin: Origin
    peer: str | None = None  # the node id they were received from, when `origin` is PEER


@dataclass(frozen=True)
class DirectoryChanged:
    """The workspace directory (users, nodes, roles, revocations) gained entries."""

    origin: Origin


@dataclass(frozen=True)
class NodeWiped:
    """The node's revocation arrived and it erased what it held: nothing more will change."""

    reason: str


FeedEvent = DocumentsChanged | DirectoryChanged | NodeWiped
Listener = Callable[[FeedEvent], None]


class Subscription:
    """What `ChangeFeed.subscribe` returns: `close()` (or leaving its `with`) stops delivery."""

    def __init__(self, feed: ChangeFeed, listener: Listener) -> None:
        self._feed = feed
        self._listener = listener

    def close(self) -> None:
        self._feed._unsubscribe(self._listener)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ChangeFeed:
    def __init__(self, poll_store: Callable[[], Awaitable[frozenset[str]]]) -> None:
        """`poll_store` picks up other processes' writes and publishes them here (the node's
        replica does it; it raises nothing a poller should stop for but its wipe)."""
        self._poll_store = poll_store
        self._listeners: list[Listener] = []
        self._pollers = 0
        self._poller: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def subscribe(self, listener: Listener) -> Subscription:
        self._listeners.append(listener)
        return Subscription(self, listener)

    def _unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def publish(self, event: FeedEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not stop the others or fail the write
                log.exception("change feed listener %r failed on %r", listener, event)

    async def poll(self) -> frozenset[str]:
        """Picks up other processes' writes now (what the poller does every interval); returns
        the ids of the channels they changed ("directory" for the directory)."""
        return await self._poll_store()

    @contextlib.asynccontextmanager
    async def polling(self, interval_s: float) -> AsyncIterator[None]:
        """Keeps one poller running while any holder is inside: the console and the LAN service
        in one process share it. The first holder's interval is used."""
        self._pollers += 1
        if self._poller is None:
            self._stop.clear()
            self._poller = asyncio.create_task(self._run_poller(interval_s))
        try:
            yield
        finally:
            self._pollers -= 1
            if self._pollers == 0 and self._poller is not None:
                poller, self._poller = self._poller, None
                self._stop.set()
                # A poll in the middle of a database call ends by itself: cut off, it could
                # leave its connection hung.
                await asyncio.shield(poller)

    async def _run_poller(self, interval_s: float) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval_s)
            if self._stop.is_set():
                return
            try:
                await self._poll_store()
            except NodeLocked:  # the wipe was published as NodeWiped: nothing more to find
                return
            except RallypointError as exc:  # a busy or briefly unreadable store: the next poll retries
                log.warning("polling the store failed: %s", exc)


class Feed(Protocol):
    """The change feed as its users see it: subscribe, publish, poll other processes' writes
    now, or keep the one poller running while inside `polling`."""

    def subscribe(self, listener: Listener) -> Subscription: ...

    def publish(self, event: FeedEvent) -> None: ...

    async def poll(self) -> frozenset[str]: ...

    def polling(self, interval_s: float) -> contextlib.AbstractAsyncContextManager[None]: ...


class RecordingFeed:
    """A `ChangeFeed` that also keeps every event published through it (`events`, oldest
    first): it delivers, polls and stops exactly as the feed it wraps."""

    def __init__(self, poll_store: Callable[[], Awaitable[frozenset[str]]]) -> None:
        self._feed = ChangeFeed(poll_store)
        self.events: list[FeedEvent] = []

    def subscribe(self, listener: Listener) -> Subscription:
        return self._feed.subscribe(listener)

    def publish(self, event: FeedEvent) -> None:
        self.events.append(event)
        self._feed.publish(event)

    async def poll(self) -> frozenset[str]:
        return await self._feed.poll()

    def polling(self, interval_s: float) -> contextlib.AbstractAsyncContextManager[None]:
        return self._feed.polling(interval_s)
