"""In-memory twins of the LAN ports (`sync.ports`), shipped with the code so that sessions run
in milliseconds without sockets, mDNS or a store: a `FrameChannel` pair over asyncio queues
(messages still go through `sync.wire`'s codec), a LAN book, a peer finder on a shared
in-memory LAN, and a session host that records what sessions report. The replica twin is
`sync.memory_replica.MemoryReplica`. Each passes the same acceptance suite as the real
implementation (tests/contracts/)."""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self, TypeVar

from appliance import documents, ids, netpolicy
from appliance.errors import IdentityConflict, InvalidInput
from appliance.feed import DocumentsChanged, FeedEvent, NodeWiped
from appliance.model import LanPeer
from appliance.netpolicy import LocalNetwork, NetworkRule
from sync import messages
from sync.discovery import DISCOVERY_VERSION, Advert, DiscoveryEvent, PeerGone, PeerSeen
from sync.errors import ChannelLost
from sync.events import LanEvent
from sync.memory_replica import MemoryReplica, Workspace, memory_workspace
from sync.session import Session, SessionTable, SessionTiming

_T = TypeVar("_T")


class _End(enum.Enum):
    FINAL = "final"  # the peer's final message came before this: a clean end
    LOST = "lost"  # the peer went away without a final message
    CLOSED = "closed"  # this side closed: wakes a pending receive


class MemoryChannel:
    """One end of a `channel_pair`."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[bytes | _End] = asyncio.Queue()
        self._peer: MemoryChannel | None = None
        self._opened = False
        self._closed = False
        self._ended = False
        self._bytes_sent = 0
        self._bytes_received = 0

    @property
    def bytes_sent(self) -> int:
        return self._bytes_sent

    @property
    def bytes_received(self) -> int:
        return self._bytes_received

    async def open(self) -> None:
        self._opened = True

    def send(self, message: messages.Message) -> None:
        if self._closed:
            return
        self._deliver(messages.encode_message(message))

    async def room(self) -> None:
        return  # the peer's queue is unbounded: there is always room

    async def receive(self) -> messages.Message | None:
        if self._closed or self._ended:
            return None
        item = await self._inbox.get()
        if item is _End.LOST:
            self._ended = True
            raise ChannelLost("connection lost")
        if isinstance(item, _End):
            self._ended = True
            return None
        self._bytes_received += len(item)
        return messages.decode_message(item)

    async def close(self, final: messages.Message | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if final is not None and self._opened:
            self._deliver(messages.encode_message(final))
        if self._peer is not None:
            self._peer._inbox.put_nowait(_End.FINAL if final is not None and self._opened else _End.LOST)
        self._inbox.put_nowait(_End.CLOSED)

    def _deliver(self, frame: bytes) -> None:
        if self._peer is not None:
            self._bytes_sent += len(frame)
            self._peer._inbox.put_nowait(frame)


def channel_pair() -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected channel ends."""
    one, other = MemoryChannel(), MemoryChannel()
    one._peer, other._peer = other, one
    return one, other


@dataclass(frozen=True)
class Refusal:
    address: str
    reason: str
    peer: bytes | None


class MemoryLanBook:
    """The node's record of the LAN, in memory: sightings, syncs, the allowlist's rules, the
    first incarnation seen of each key, and the audited refusals."""

    def __init__(self, workspace_id: str, node_key: bytes, incarnation: bytes, clock: Callable[[], int]) -> None:
        self._workspace_id = workspace_id
        self._node_key = node_key
        self._incarnation = incarnation
        self._clock = clock
        self._peers: dict[str, LanPeer] = {}
        self.rules: dict[str, netpolicy.RuleAction] = {}  # network -> allow | deny
        self.incarnations: dict[bytes, bytes] = {}
        self.refusals: list[Refusal] = []
        self.summaries: list[tuple[str, str, int, int]] = []
        self.conflicts_reported: list[tuple[bytes, str]] = []

    async def note_lan_peer(self, node_id: str, workspace_id: str, address: str, port: int) -> None:
        known = self._peers.get(node_id)
        self._peers[node_id] = LanPeer(node_id, workspace_id, address, port, self._clock(), None if known is None else known.last_sync)

    async def note_lan_sync(self, node_key: bytes, address: str, port: int) -> None:
        node_id, now = ids.key_id(node_key), self._clock()
        known = self._peers.get(node_id)
        self._peers[node_id] = LanPeer(node_id, self._workspace_id, address, port, now, now) if known is None else replace(known, last_seen=now, last_sync=now)

    async def lan_peers(self) -> list[LanPeer]:
        return sorted(self._peers.values(), key=lambda p: p.node_id)

    async def network_rules(self, local_networks: Sequence[LocalNetwork] = ()) -> list[NetworkRule]:
        return netpolicy.effective_rules([NetworkRule(network, action) for network, action in sorted(self.rules.items())], local_networks)

    async def set_network_rule(self, network: str, action: str | None) -> str:
        """Allows or denies a network (None removes its rule); returns it in normal form."""
        normal = netpolicy.parse_network(network)
        if action not in ("allow", "deny", None):
            raise InvalidInput(f"unknown network rule action {action!r}")
        if action is None:
            self.rules.pop(normal, None)
        else:
            self.rules[normal] = netpolicy.RuleAction(action)
        return normal

    async def check_peer_incarnation(self, peer: bytes, incarnation: bytes, *, via: str, address: str | None = None, record: bool = True) -> None:
        if peer == self._node_key:
            if incarnation != self._incarnation:
                raise IdentityConflict(f"another machine presents this node's own identity ({ids.key_id(peer)}, via {via})")
            return
        first = self.incarnations.get(peer)
        if first is None:
            if record:
                self.incarnations[peer] = incarnation
        elif first != incarnation:
            raise IdentityConflict(f"two nodes present the identity of {ids.key_id(peer)} (via {via})")

    async def audit_conflict_reported(self, peer: bytes, reason: str, *, via: str, address: str | None = None) -> None:
        self.conflicts_reported.append((peer, reason))

    async def audit_lan_refusal(self, address: str, reason: str, peer: bytes | None = None) -> None:
        self.refusals.append(Refusal(address, reason, peer))

    async def audit_lan_refusals(self, summary: str, kind: str, refusals: int, addresses: int) -> None:
        self.summaries.append((summary, kind, refusals, addresses))


class MemoryLan:
    """A LAN in memory: the finders entered on it see each other's adverts."""

    def __init__(self) -> None:
        self._finders: list[MemoryPeerFinder] = []

    def finder(self, address: str) -> Callable[[Advert, Callable[[DiscoveryEvent], None]], MemoryPeerFinder]:
        """A finder factory (`sync.ports.FinderFactory`) for a node at `address`."""
        return lambda advert, on_event: MemoryPeerFinder(self, address, advert, on_event)

    def _join(self, finder: MemoryPeerFinder) -> None:
        for other in self._finders:
            other._saw(finder.sighting)
            finder._saw(other.sighting)
        self._finders.append(finder)

    def _leave(self, finder: MemoryPeerFinder) -> None:
        if finder in self._finders:
            self._finders.remove(finder)
            for other in self._finders:
                other._lost(finder.sighting.node_id)


class MemoryPeerFinder:
    """Advertises a node on a `MemoryLan` while entered; reports the others seen and gone."""

    def __init__(self, lan: MemoryLan, address: str, advert: Advert, on_event: Callable[[DiscoveryEvent], None]) -> None:
        self._lan = lan
        self._on_event = on_event
        self.sighting = PeerSeen(advert.node_id, advert.workspace_id, (address,), advert.port, DISCOVERY_VERSION)
        self._peers: dict[str, PeerSeen] = {}

    async def __aenter__(self) -> Self:
        self._lan._join(self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._lan._leave(self)
        self._peers.clear()

    def peers(self) -> list[PeerSeen]:
        return sorted(self._peers.values(), key=lambda p: p.node_id)

    def _saw(self, peer: PeerSeen) -> None:
        self._peers[peer.node_id] = peer
        self._on_event(peer)

    def _lost(self, node_id: str) -> None:
        if self._peers.pop(node_id, None) is not None:
            self._on_event(PeerGone(node_id))


@dataclass
class MemoryHost:
    """A `sync.session.SessionHost` that records what sessions report."""

    events: list[LanEvent] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    wiped: bool = False

    def emit(self, event: LanEvent) -> None:
        self.events.append(event)

    def refuse(self, address: str, reason: str, peer: bytes | None) -> None:
        self.refusals.append(Refusal(address, reason, peer))

    def first_report(self, address: str, kind: str) -> bool:
        return True

    def stop_after_wipe(self) -> None:
        self.wiped = True


class TwinNode:
    """A node made of twins, wired as `sync.lan.LanService` wires the real ones: a
    `MemoryReplica` whose feed drives a `SessionTable`, a `MemoryLanBook`, a `MemoryHost`.
    `connect` runs a session with another twin over a `channel_pair`."""

    def __init__(self, replica: MemoryReplica, *, timing: SessionTiming = SessionTiming()) -> None:
        self.replica = replica
        self.node_key = replica.node_key
        self.node_id = ids.key_id(replica.node_key)
        self.book = MemoryLanBook(ids.key_id(replica.workspace), replica.node_key, os.urandom(16), replica.now)
        self.host = MemoryHost()
        self.timing = timing
        self.sessions = SessionTable(self.node_id, replica, self._spawn)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscription = replica.feed.subscribe(self._on_feed)

    def connect(self, other: TwinNode) -> tuple[asyncio.Task[str | None], asyncio.Task[str | None]]:
        """Starts a session between the two (this one initiates); the tasks end with why it did."""
        mine, theirs = channel_pair()
        return (
            self._spawn(self.sessions.run(Session(mine, self.replica, self.book, self.host, other.node_key, initiator=True, address="memory", port=0, timing=self.timing))),
            other._spawn(other.sessions.run(Session(theirs, other.replica, other.book, other.host, self.node_key, initiator=False, address="memory", port=0, timing=other.timing))),
        )

    async def aclose(self) -> None:
        self._subscription.close()
        await self.sessions.close_all("node shutting down")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_feed(self, event: FeedEvent) -> None:
        if isinstance(event, DocumentsChanged):
            self.sessions.changed(event.doc_ids, event.peer)
        elif isinstance(event, NodeWiped):
            self.host.stop_after_wipe()
            self._spawn(self.sessions.close_all(event.reason))


async def twin_nodes(count: int, *, timing: SessionTiming = SessionTiming()) -> tuple[Workspace, list[TwinNode]]:
    """A workspace in memory with `count` enrolled twin nodes: the first writes the directory,
    the others receive it through the verification path."""
    workspace = memory_workspace(count)
    replicas = [MemoryReplica(workspace.id, bytes(key.verify_key), clock=time_ms) for key in workspace.nodes]
    replicas[0].add_directory_entries(workspace.key, workspace.entries)
    directory = [(documents.DIRECTORY_DOC, replicas[0].changes_of(documents.DIRECTORY_DOC))]
    for replica in replicas[1:]:
        await replica.import_batches(directory, received_from=ids.key_id(replicas[0].node_key))
    return workspace, [TwinNode(replica, timing=timing) for replica in replicas]


def time_ms() -> int:
    return int(time.time() * 1000)
