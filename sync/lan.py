"""Live sync on a LAN: the service that advertises this node, finds its peers, and keeps an
authenticated session open with each trusted one (docs/lan-protocol.md).

The edge between the node and the network: sockets, timers and mDNS live here; the bytes on
the wire are `sync.wire`'s pure codec; everything a peer sends goes through the node's own
verification path (`Node.import_batches`, the same as bundle import). One service per node:

- a TCP server; an incoming connection passes the handshake gate (`sync.gate`: a bounded number
  of handshakes in progress, in all and per address) before it gets a task or a buffer, is
  checked against the IP allowlist before a byte of it is read, must finish the handshake
  within a deadline, and is dropped if its node is unknown or revoked; refusals are audited
  at a bounded rate, the rest summarised (`sync.refusals`);
- the IP allowlist applies to dialling too: a peer at an address it refuses is not dialled;
- mDNS discovery (`sync.discovery`); the node with the lower id dials a discovered peer of its
  workspace (the other dials too if no session shows up), and a dropped session is redialled
  with exponential backoff and jitter;
- per session: both sides send their heads, then exactly what the other lacks, then every new
  change as it is made (node listeners), acknowledged by heads so the next delta - by LAN or
  by bundle - starts where the peer is;
- the store is polled for changes another process wrote (a CLI post while `serve` runs), so
  they propagate at once without two writers holding diverging documents."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from appliance import crypto, documents, identity, ids, netpolicy
from appliance.feed import DocumentsChanged, FeedEvent, NodeWiped, Subscription
from appliance.errors import ChangeRejected, IdentityConflict, InvalidInput, MissingDependencies, NodeLocked, RallypointError
from appliance.model import Delta, Receipt
from appliance.node import Node
from sync import wire
from sync.defaults import DEFAULT_PORT
from sync.discovery import Advert, Discovery, DiscoveryEvent, PeerGone, PeerSeen
from sync.accepting import AcceptHooks, GatedProtocol
from sync.errors import SessionError, SyncError
from sync.gate import HandshakeGate, Pending
from sync.interfaces import interface_networks
from sync.memory import release_free_memory
from sync.refusals import RefusalLog
from sync.service_lock import ServiceLock
from sync.sneakernet import pack_delta

log = logging.getLogger(__name__)

RESYNC_GROUP_CHANGES = 4096  # changes read from the store at a time when a session starts
PART_BUDGET = 1024 * 1024  # changes and blobs per Changes message: well under the frame cap, and pipelines
HIGH_WATER_BYTES = 4 * 1024 * 1024  # queued output beyond which the pusher waits
ACK_WRITE_INTERVAL_S = 1.0
BLOB_PART_BYTES = 512 * 1024  # blobs larger than this go in pieces of this size, after the changes
RELAY_DELAY_S = 0.1  # before relaying what another peer sent: time for the peer to say it has it
REFUSAL_REPEAT_S = 60.0  # a refusal of the same kind from the same address is reported once per this
REFUSAL_SUMMARY_INTERVAL_S = 10.0  # refusals not reported one by one are summarised this often
REFUSALS_REPORTED_PER_INTERVAL = 10
MAX_AUDITS_QUEUED = 64
LOCAL_NETWORKS_TTL_S = 10.0  # this host's interface networks are read again after this
EVICTED = "too many pending handshakes: gave way to newer connections"
RULES_TTL_S = 1.0  # the allowlist is read from the store again after this (another process may change it)
SHUTDOWN_GRACE_S = 2.0


@dataclass(frozen=True)
class LanConfig:
    bind: str = "0.0.0.0"
    port: int = DEFAULT_PORT  # 0: any free port (mDNS tells peers which)
    discovery: bool = True
    mdns_interfaces: Sequence[str] | None = None  # None: the bind address, or every interface for 0.0.0.0
    handshake_deadline_s: float = 5.0
    max_unauthenticated: int = 256  # handshakes in progress, in all (a few KiB each)
    max_unauthenticated_per_address: int = 8
    handshake_penalty_s: float = 2.0  # an address that presented an unknown key or a bad handshake is shed this long
    ping_interval_s: float = 15.0
    idle_timeout_s: float = 45.0
    store_poll_s: float = 0.05
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    defer_dial_s: float = 3.0  # the higher id dials too if no session came up within this


# --- events for whoever runs the service (the console, `serve`'s log) -----------------


@dataclass(frozen=True)
class PeerDiscovered:
    peer: PeerSeen
    same_workspace: bool


@dataclass(frozen=True)
class PeerLost:
    node_id: str


@dataclass(frozen=True)
class SessionUp:
    node_id: str
    address: str
    initiator: bool


@dataclass(frozen=True)
class SessionDown:
    node_id: str
    reason: str


@dataclass(frozen=True)
class Received:
    node_id: str
    changes: int
    messages: int
    channels: tuple[str, ...]  # ids of channels that gained changes


@dataclass(frozen=True)
class Wiped:
    """This node's own revocation arrived and it wiped itself; the service has stopped."""

    reason: str


@dataclass(frozen=True)
class Refused:
    address: str
    reason: str
    node_id: str | None


@dataclass(frozen=True)
class RefusalsSummarised:
    """Refusals too many to report one by one, in the last interval."""

    summary: str
    reason: str
    refusals: int
    addresses: int


LanEvent = PeerDiscovered | PeerLost | SessionUp | SessionDown | Received | Refused | RefusalsSummarised | Wiped
EventSink = Callable[[LanEvent], None]


@dataclass(frozen=True)
class SessionInfo:
    node_id: str
    address: str
    port: int
    initiator: bool
    started_at: float
    sent_changes: int
    received_changes: int
    bytes_sent: int  # on the wire, stream header and frames
    bytes_received: int


class _Refusal(Exception):
    """A connection this node will not serve; the message is the audited reason, `kind` the
    part that floods are counted by (the reason up to its first colon unless given)."""

    def __init__(self, reason: str, peer: bytes | None = None, kind: str | None = None) -> None:
        super().__init__(reason)
        self.peer = peer
        self.kind = kind or reason.split(":", 1)[0]


class LanService:
    """Runs LAN discovery and sync for one unlocked node (an async context manager)."""

    def __init__(self, node: Node, config: LanConfig = LanConfig(), *, on_event: EventSink | None = None, rng: Callable[[int], bytes] = crypto.random_bytes) -> None:
        self.node = node
        self.config = config
        self._on_event = on_event
        self._rng = rng
        self._server: asyncio.Server | None = None
        self._discovery: Discovery | None = None
        self._sessions: dict[bytes, _Session] = {}
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # store polling, peer records, revocations
        self._connections: set[asyncio.Task[Any]] = set()  # incoming connections being served
        self._gate = HandshakeGate(config.max_unauthenticated, config.max_unauthenticated_per_address, config.handshake_penalty_s)
        self._refusals = RefusalLog(time.monotonic(), per_interval=REFUSALS_REPORTED_PER_INTERVAL, repeat_s=REFUSAL_REPEAT_S)
        self._audits: deque[tuple[str, str, bytes | None]] = deque(maxlen=MAX_AUDITS_QUEUED)  # refusals to audit
        self._audit_wake = asyncio.Event()
        self._local_networks: tuple[float, tuple[netpolicy.LocalNetwork, ...]] | None = None
        self._rules: tuple[float, list[netpolicy.NetworkRule]] | None = None
        self._closing = False
        self._stopping = asyncio.Event()
        self._subscription: Subscription | None = None
        self._ending: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()  # set when the service stopped by itself (a remote wipe)
        self.end_reason: str | None = None
        self.port = 0
        self._lock = ServiceLock(node.home)

    # --- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> LanService:
        self._lock.acquire()  # before listening: a second service would advertise this node twice
        try:
            hooks = AcceptHooks(self._admit, self._accept, self._closed_silent, self.config.handshake_deadline_s)
            self._server = await asyncio.get_running_loop().create_server(lambda: GatedProtocol(hooks), self.config.bind, self.config.port, reuse_address=True)
        except OSError as exc:
            self._lock.release()
            raise SyncError(f"cannot listen on {self.config.bind}:{self.config.port}: {exc.strerror or exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            if self.config.discovery:
                interfaces = self.config.mdns_interfaces
                if interfaces is None and self.config.bind not in ("0.0.0.0", "::", ""):
                    interfaces = [self.config.bind]
                advert = Advert(node_id=self.node.identity.node_id, workspace_id=self.node.identity.workspace_id, port=self.port)
                self._discovery = Discovery(advert, self._on_discovery, interfaces=interfaces)
                await self._discovery.__aenter__()
            self._subscription = self.node.feed.subscribe(self._on_feed)
            self._spawn(self._poll_store())
            self._spawn(self._report_refusals())
            # What is alive now (the node, its directory and store, the libraries) lives as long as
            # the process: frozen, the collector's full passes - which a flood of short-lived
            # connections triggers - no longer walk it (~100k objects: a 30-200 ms stall each).
            gc.collect()
            gc.freeze()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ending is not None:
            await self._ending
        await self._shutdown()

    def _stop_after_wipe(self) -> None:
        """Nothing is left to serve or advertise once the node has wiped itself: the service
        stops, and `ended` tells whoever runs it."""
        if self._ending is not None:
            return
        self.end_reason = self.node.identity.locked_reason or "this node wiped itself"
        self._emit(Wiped(self.end_reason))

        async def end() -> None:
            await self._shutdown()
            self.ended.set()

        self._ending = asyncio.create_task(end())

    async def _shutdown(self) -> None:
        self._closing = True
        self._audit_wake.set()  # the refusal reporter writes what it holds and ends
        if self._subscription is not None:
            self._subscription.close()
        self._stopping.set()
        if self._discovery is not None:
            with contextlib.suppress(Exception):
                await self._discovery.__aexit__(None, None, None)
            self._discovery = None
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(s.close("node shutting down") for s in list(self._sessions.values())), return_exceptions=True)
        # A task may be in the middle of a write to the store (an import, a peer record): each gets
        # a moment to finish before what still waits (on the network, a backoff) is cancelled.
        running = [*self._connections, *self._dialers.values(), *self._tasks]
        if running:
            _, pending = await asyncio.wait(running, timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        self._lock.release()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _emit(self, event: LanEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    # --- what the service knows --------------------------------------------------

    def sessions(self) -> list[SessionInfo]:
        return sorted((s.info() for s in self._sessions.values()), key=lambda i: i.node_id)

    def discovered(self) -> list[PeerSeen]:
        return self._discovery.peers() if self._discovery is not None else []

    # --- incoming ------------------------------------------------------------------

    def _admit(self, transport: asyncio.BaseTransport) -> Pending | None:
        """The gate's entry for a connection just accepted, or None if it is shed."""
        if self._closing:
            return None
        assert isinstance(transport, asyncio.Transport)
        address = str((transport.get_extra_info("peername") or ("?", 0))[0])
        pending = self._gate.admit(address, time.monotonic(), transport.abort)
        if pending is None:
            self._refuse(address, f"shed for {self.config.handshake_penalty_s:g} s after a failed handshake", None)
        return pending

    def _closed_silent(self, pending: Pending, timed_out: bool) -> None:
        """An admitted connection ended before sending a byte."""
        self._gate.release(pending)
        if timed_out:
            self._refuse(pending.address, "handshake deadline passed", None)
        elif pending.evicted:
            self._refuse(pending.address, EVICTED, None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: Pending) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_connection(reader, writer, pending)
        except asyncio.CancelledError:
            # The service is shutting down. Not re-raised: this task is the connection's own,
            # and asyncio's stream server logs a cancelled handler as an error.
            writer.close()
        finally:
            self._gate.release(pending)
            self._connections.discard(task)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: Pending) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        address, port = str(peername[0]), int(peername[1])
        try:
            decision = await self._decide(address)
            if not decision.allowed:
                raise _Refusal(netpolicy.refusal_reason(address, decision), kind="address not allowed")
            responder = wire.Responder(self.node.identity.workspace_key, self.node.identity.signing_key, self._rng(32), incarnation=self.node.identity.incarnation)
            try:
                async with asyncio.timeout(self.config.handshake_deadline_s):
                    writer.write(responder.read_hello(await reader.readexactly(wire.HELLO_BYTES)))
                    await writer.drain()
                    peer, keys = responder.read_auth(await reader.readexactly(wire.AUTH_BYTES))
            except TimeoutError as exc:
                raise _Refusal("handshake deadline passed") from exc
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if pending.evicted:
                    raise _Refusal(EVICTED) from exc
                raise _Refusal("connection closed during the handshake") from exc
            except SessionError as exc:
                raise _Refusal(f"handshake failed: {exc}") from exc
            self._check_trust(peer)
            self._gate.release(pending)
            conflict = await self._check_incarnation(peer, responder.peer_incarnation, address)
            if conflict is not None:
                await self._refuse_session(writer, keys, address, peer, conflict)
                return
            await self._run_session(reader, writer, peer, keys, initiator=False, address=address, port=port)
        except _Refusal as refusal:
            writer.close()
            if refusal.peer is not None or refusal.kind == "handshake failed":  # no honest node fails so: its next tries are shed at accept
                self._gate.penalise(address, time.monotonic())
            self._refuse(address, str(refusal), refusal.peer, refusal.kind)
        except (ConnectionError, OSError, RallypointError):  # RallypointError: the node locked itself (remote wipe)
            writer.close()

    def _check_trust(self, peer: bytes) -> None:
        trust = self.node.directory.trust_of(peer)
        if trust != "trusted":
            raise _Refusal(f"{trust} node {ids.key_id(peer)}", peer, kind=f"{trust} node")

    async def _check_incarnation(self, peer: bytes, incarnation: bytes, address: str) -> str | None:
        """After the handshake authenticated a trusted key: None, or why the session is refused
        because two machines present that key (this node's own from elsewhere included; the node
        audits it). This node reaching itself is refused outright."""
        if peer == self.node.identity.node_key and incarnation == self.node.identity.incarnation:
            raise _Refusal("this node reached itself", peer)
        try:
            await self.node.peers.check_peer_incarnation(peer, incarnation, via="lan", address=address)
        except IdentityConflict as exc:
            return str(exc)
        return None

    async def _refuse_session(self, writer: asyncio.StreamWriter, keys: wire.SessionKeys, address: str, peer: bytes, reason: str) -> None:
        """Ends an authenticated connection at once, telling the peer why: a Bye as the only,
        final frame of our stream, so that the other side can record it too."""
        self._emit(Refused(address, reason, ids.key_id(peer)))
        sealer = wire.FrameSealer(keys.send, self._rng(wire.STREAM_HEADER_BYTES))
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            writer.write(sealer.header + sealer.seal(wire.encode_message(wire.Bye(reason[: wire.MAX_REASON_CHARS])), final=True))
            async with asyncio.timeout(1):
                await writer.drain()
        writer.close()

    async def _decide(self, address: str) -> netpolicy.Decision:
        """The IP allowlist's decision for a session with `address`, either direction. The rules
        are read at most once per RULES_TTL_S: a flood of connections does not become a flood
        of reads."""
        now = time.monotonic()
        if self._rules is None or now - self._rules[0] > RULES_TTL_S:
            if self._local_networks is None or now - self._local_networks[0] > LOCAL_NETWORKS_TTL_S:
                self._local_networks = (now, interface_networks())
            self._rules = (now, await self.node.peers.network_rules(self._local_networks[1]))
        return netpolicy.decide(address, self._rules[1])

    def _refuse(self, address: str, reason: str, peer: bytes | None, kind: str | None = None) -> None:
        """Reports a refusal - an event and an audit entry - unless too many were reported
        lately (`sync.refusals`): a flood of bad connections then costs a counter each, and
        a summary per interval."""
        if not self._refusals.note(address, kind or reason.split(":", 1)[0], time.monotonic()):
            return
        self._emit(Refused(address, reason, ids.key_id(peer) if peer else None))
        self._audits.append((address, reason, peer))
        self._audit_wake.set()

    async def _report_refusals(self) -> None:
        """Audits the refusals reported one by one as they come, and summarises the others once
        per interval; writes what it holds when the service stops."""
        next_summary = time.monotonic() + REFUSAL_SUMMARY_INTERVAL_S
        flooded = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_summary - time.monotonic())):
                    await self._audit_wake.wait()
            self._audit_wake.clear()
            while self._audits:
                address, reason, peer = self._audits.popleft()
                with contextlib.suppress(RallypointError):
                    await self.node.peers.audit_lan_refusal(address, reason, peer)
            now = time.monotonic()
            if now >= next_summary or self._closing:
                next_summary = now + REFUSAL_SUMMARY_INTERVAL_S
                summaries = self._refusals.summaries(now)
                for summary in summaries:
                    self._emit(RefusalsSummarised(summary.text(), summary.kind, summary.refusals, summary.addresses))
                    with contextlib.suppress(RallypointError):
                        await self.node.peers.audit_lan_refusals(summary.text(), summary.kind, summary.refusals, summary.addresses)
                if flooded and not summaries:  # a flood just ended: what it made the process allocate goes back
                    release_free_memory()
                flooded = bool(summaries)
            if self._closing:
                return

    # --- outgoing ------------------------------------------------------------------

    async def connect(self, address: str, port: int, *, expect: str | None = None) -> None:
        """Dials a peer and runs the session until it ends. `expect` is the node id mDNS
        announced: a different node answering is refused. An address the IP allowlist refuses
        is not dialled."""
        decision = await self._decide(address)
        if not decision.allowed:
            reason = netpolicy.refusal_reason(address, decision)
            self._refuse(address, f"not dialled: {reason}", self._key_of(expect) if expect else None, kind="address not allowed")
            raise SessionError(f"{address}:{port} not dialled: {reason}")
        try:
            async with asyncio.timeout(self.config.handshake_deadline_s):
                reader, writer = await asyncio.open_connection(address, port)
        except (OSError, TimeoutError) as exc:
            raise SessionError(f"cannot reach {address}:{port}: {exc}") from exc
        try:
            initiator = wire.Initiator(self.node.identity.workspace_key, self.node.identity.signing_key, self._rng(32), incarnation=self.node.identity.incarnation)
            try:
                async with asyncio.timeout(self.config.handshake_deadline_s):
                    writer.write(initiator.hello())
                    await writer.drain()
                    peer = initiator.read_response(await reader.readexactly(wire.RESPONSE_BYTES))
                    self._check_trust(peer)
                    if expect is not None and ids.key_id(peer) != expect:
                        raise _Refusal(f"{address}:{port} announced {expect} but answered as {ids.key_id(peer)}", peer, kind="another node answered")
                    conflict = await self._check_incarnation(peer, initiator.peer_incarnation, address)
                    auth, keys = initiator.auth()
                    writer.write(auth)
                    await writer.drain()
            except TimeoutError as exc:
                raise _Refusal("handshake deadline passed") from exc
            except asyncio.IncompleteReadError as exc:
                raise _Refusal("the peer closed the connection during the handshake (it refused us?)") from exc
            except SessionError as exc:
                raise _Refusal(f"handshake failed: {exc}") from exc
        except _Refusal as refusal:
            writer.close()
            self._refuse(address, str(refusal), refusal.peer, refusal.kind)
            raise SessionError(str(refusal)) from refusal
        except (OSError, RallypointError) as exc:
            writer.close()
            raise SessionError(f"{address}:{port}: {exc}") from exc
        if conflict is not None:  # authenticated first, so that the refusal reaches the peer
            await self._refuse_session(writer, keys, address, peer, conflict)
            raise SessionError(conflict)
        await self._run_session(reader, writer, peer, keys, initiator=True, address=address, port=port)

    def dial(self, address: str, port: int) -> None:
        """Keeps a session with a fixed address (a peer mDNS cannot reach, or tests)."""
        target = f"{address}:{port}"
        if target not in self._dialers and not self._closing:
            self._dialers[target] = asyncio.create_task(self._keep_dialing(target, lambda: ([address], port, None), defer=False))

    def _on_discovery(self, event: DiscoveryEvent) -> None:
        if isinstance(event, PeerGone):
            self._emit(PeerLost(event.node_id))
            return
        same = event.workspace_id == self.node.identity.workspace_id
        self._emit(PeerDiscovered(event, same))
        if event.addresses:
            self._spawn(self._note_seen(event))
        if same and not self._closing and event.node_id not in self._dialers:
            key = self._key_of(event.node_id)
            if key is not None and self.node.directory.trust_of(key) == "trusted":
                self._dialers[event.node_id] = asyncio.create_task(
                    self._keep_dialing(event.node_id, lambda: self._located(event.node_id), defer=event.node_id < self.node.identity.node_id)
                )

    def _located(self, node_id: str) -> tuple[list[str], int, str | None] | None:
        peer = next((p for p in self.discovered() if p.node_id == node_id), None)
        return None if peer is None else (list(peer.addresses), peer.port, node_id)

    async def _note_seen(self, peer: PeerSeen) -> None:
        """Remembers where a peer was seen: its first address the allowlist allows, else its first
        (`peers` then shows why it is refused)."""
        with contextlib.suppress(RallypointError):
            allowed = [address for address in peer.addresses if (await self._decide(address)).allowed]
            await self.node.peers.note_lan_peer(peer.node_id, peer.workspace_id, (allowed or peer.addresses)[0], peer.port)

    async def _keep_dialing(self, target: str, locate: Callable[[], tuple[list[str], int, str | None] | None], *, defer: bool) -> None:
        """Keeps one session with a peer while `locate` finds it (mDNS still lists it). Of two
        peers that see each other, the lower node id dials at once and the other only if no
        session came up (`defer`); failures back off exponentially, with jitter."""
        backoff = self.config.backoff_min_s
        try:
            if defer:
                await asyncio.sleep(self.config.defer_dial_s)
            while not self._closing:
                located = locate()
                if located is None:
                    return
                addresses, port, expect = located
                session = self._session_with(expect)
                if session is not None:
                    await session.finished.wait()
                    continue
                try:
                    await self._connect_any(addresses, port, expect)
                    backoff = self.config.backoff_min_s
                except SessionError:
                    pass
                except Exception:  # a bug in one attempt must not end the dialling: logged, then redialled
                    log.exception("dialling %s failed unexpectedly", target)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.config.backoff_max_s)
        finally:
            self._dialers.pop(target, None)

    def _session_with(self, node_id: str | None) -> _Session | None:
        if node_id is None:
            return None
        return next((s for s in self._sessions.values() if s.peer_id == node_id), None)

    async def _connect_any(self, addresses: Sequence[str], port: int, expect: str | None) -> None:
        last: SessionError | None = None
        for address in addresses:
            try:
                await self.connect(address, port, expect=expect)
                return
            except SessionError as exc:
                last = exc
        if last is not None:
            raise last

    def _key_of(self, node_id: str) -> bytes | None:
        try:
            return self.node.directory.node_key_of(node_id)
        except RallypointError:
            return None

    # --- sessions ------------------------------------------------------------------

    async def _run_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: bytes, keys: wire.SessionKeys, *, initiator: bool, address: str, port: int
    ) -> None:
        session = _Session(self, reader, writer, peer, keys, initiator=initiator, address=address, port=port)
        existing = self._sessions.get(peer)
        if existing is not None:
            # Both dialled at once, or a reconnect raced the old session's end: keep the session
            # the lower node id initiated, the same choice on both sides.
            lower_is_me = self.node.identity.node_id < ids.key_id(peer)
            keep_new = (initiator == lower_is_me) or existing.initiator == initiator
            if not keep_new:
                await session.close("duplicate session")
                return
            await existing.close("replaced by a newer session")
        self._sessions[peer] = session
        reason = "closed"
        try:
            reason = await session.run()
            reason = session.close_reason or reason  # why we ended it, not how the socket noticed
        finally:
            if self._sessions.get(peer) is session:
                del self._sessions[peer]
            session.finished.set()
            if session.up:
                self._emit(SessionDown(ids.key_id(peer), reason))

    def _on_feed(self, event: FeedEvent) -> None:
        if isinstance(event, NodeWiped):
            self._stop_after_wipe()
        elif isinstance(event, DocumentsChanged):
            self._push(event.doc_ids, event.peer)

    def _push(self, doc_ids: frozenset[str], received_from: str | None) -> None:
        for session in list(self._sessions.values()):
            if documents.DIRECTORY_DOC in doc_ids and self.node.directory.trust_of(session.peer) != "trusted":
                # A revocation just arrived: the peer gets the directory that tells it so (a
                # revoked node wipes itself on reading it), then nothing more.
                self._spawn(session.revoked())
                continue
            session.push(doc_ids, received_from)

    async def _poll_store(self) -> None:
        """Keeps the node's one store poller running while the service does: what other
        processes write (a CLI post, a courier's import) reaches `_on_feed` like a local change."""
        async with self.node.feed.polling(self.config.store_poll_s):
            await self._stopping.wait()


class _Session:
    """One authenticated connection to a trusted peer. The reader loop never waits on the
    network to send: acknowledgements and pongs go through a writer task's queue, and bulk
    data is sent by the pusher task under a high-water mark, so two peers sending each other
    large deltas at once cannot deadlock on full socket buffers."""

    def __init__(
        self, service: LanService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: bytes, keys: wire.SessionKeys, *, initiator: bool, address: str, port: int
    ) -> None:
        self.service = service
        self.node = service.node
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.peer_id = ids.key_id(peer)
        self.initiator = initiator
        self.address = address
        self.port = port
        self.keys = keys
        self.sealer = wire.FrameSealer(keys.send, service._rng(wire.STREAM_HEADER_BYTES))
        self.finished = asyncio.Event()
        self.up = False
        self.close_reason: str | None = None
        self.started_at = time.time()
        self.sent_changes = 0
        self.received_changes = 0
        self.bytes_sent = 0
        self.bytes_received = wire.STREAM_HEADER_BYTES
        self._outbox: deque[bytes] = deque()
        self._queued_bytes = 0
        self._output = asyncio.Event()
        self._drained = asyncio.Event()
        self._dirty: set[str] = set()  # documents whose changes the peer may lack
        self._announce: set[str] = set()  # documents whose heads we tell the peer
        self._full_resync = False
        self._wake = asyncio.Event()
        self._peer_has: dict[str, tuple[bytes, ...]] = {}  # the peer's heads as far as this session knows
        self._acks: dict[str, tuple[bytes, ...]] = {}  # acknowledged, not yet written
        self._blob: tuple[bytes, int, bytearray] | None = None  # a large blob being received
        self._ack_writer: asyncio.Task[None] | None = None
        self._closed = False
        self._tasks: list[asyncio.Task[Any]] = []

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.peer_id, self.address, self.port, self.initiator, self.started_at, self.sent_changes, self.received_changes, self.bytes_sent, self.bytes_received
        )

    def push(self, doc_ids: frozenset[str], received_from: str | None) -> None:
        """Documents that gained changes: ours are pushed at once; what we received is announced
        (our new heads, which also acknowledge it to its sender) and relayed after a moment to a
        peer that still lacks it - by then the peer has usually told us it got it elsewhere."""
        if received_from is None:
            self._dirty |= doc_ids
        else:
            self._announce |= doc_ids
            if received_from != self.peer_id:
                asyncio.get_running_loop().call_later(RELAY_DELAY_S, self._relay, doc_ids)
        self._wake.set()

    def _relay(self, doc_ids: frozenset[str]) -> None:
        if not self._closed:
            self._dirty |= doc_ids
            self._wake.set()

    async def run(self) -> str:
        config = self.service.config
        try:
            self._tasks = [asyncio.create_task(self._write_frames())]
            self._enqueue(self.sealer.header)
            async with asyncio.timeout(config.handshake_deadline_s):
                opener = wire.FrameOpener(self.keys.receive, await self.reader.readexactly(wire.STREAM_HEADER_BYTES))
            # Both ends now trust each other (a refusing responder closes before its header).
            self.up = True
            self.service._emit(SessionUp(self.peer_id, self.address, self.initiator))
            self._send(wire.Heads(await self.node.exchange.heads_for(self.peer), complete=True))
            self._tasks += [asyncio.create_task(self._pusher()), asyncio.create_task(self._pinger())]
            while True:
                async with asyncio.timeout(config.idle_timeout_s):
                    size = opener.length(await self.reader.readexactly(wire.LENGTH_BYTES))
                    plaintext, final = opener.open(await self.reader.readexactly(size))
                self.bytes_received += wire.LENGTH_BYTES + size
                ended = await self._handle(wire.decode_message(plaintext))  # the final frame is a Bye saying why
                if ended is not None:
                    return ended
                if final:
                    return "the peer closed the session"
        except TimeoutError:
            return "the peer went silent"
        except asyncio.IncompleteReadError:
            return "connection lost"
        except (ConnectionError, OSError) as exc:
            return f"connection lost: {exc}"
        except SessionError as exc:
            self.service._refuse(self.address, f"session ended: {exc}", self.peer)
            await self.close(str(exc))
            return str(exc)
        except NodeLocked:
            await self.close("node locked")
            return "this node is locked"
        finally:
            await self.close(None)

    async def close(self, reason: str | None) -> None:
        """Ends the session; with a reason, says goodbye first (best effort, briefly)."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        for task in self._tasks[1:]:
            task.cancel()
        if reason is not None and self._tasks:  # a session that never ran has no stream to say goodbye in
            self._enqueue(self.sealer.seal(wire.encode_message(wire.Bye(reason[:wire.MAX_REASON_CHARS])), final=True), force=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    while self._outbox and not self._tasks[0].done():
                        await self._drained.wait()
                        self._drained.clear()
        for task in self._tasks[:1]:
            task.cancel()
        if self._ack_writer is not None:
            self._ack_writer.cancel()
        await self._write_acks(0)
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self.writer.wait_closed()
        self.finished.set()

    # --- output ------------------------------------------------------------------

    def _enqueue(self, frame: bytes, *, force: bool = False) -> None:
        if self._closed and not force:
            return
        self._outbox.append(frame)
        self._queued_bytes += len(frame)
        self._output.set()

    def _send(self, message: wire.Message) -> None:
        if self._closed:  # the stream already ended with its final frame (closed while starting): nothing may follow
            return
        self._enqueue(self.sealer.seal(wire.encode_message(message)))

    async def _send_bulk(self, message: wire.Message) -> None:
        self._send(message)
        while self._queued_bytes > HIGH_WATER_BYTES and not self._closed:
            self._drained.clear()
            await self._drained.wait()

    async def _write_frames(self) -> None:
        try:
            while True:
                await self._output.wait()
                self._output.clear()
                while self._outbox:
                    frame = self._outbox.popleft()
                    self.writer.write(frame)
                    await self.writer.drain()
                    self._queued_bytes -= len(frame)
                    self.bytes_sent += len(frame)
                    self._drained.set()
        except (ConnectionError, OSError):
            self.writer.close()  # the reader sees the end and ends the session

    # --- input -------------------------------------------------------------------

    async def _handle(self, message: wire.Message) -> str | None:
        if isinstance(message, wire.Heads):
            if message.complete:
                self._acks.clear()
                self._peer_has = dict(message.heads)
                await self.node.exchange.record_peer_heads(self.peer, message.heads)
                await self.node.peers.note_lan_sync(self.peer, self.address, self.port)
                self._full_resync = True
                self._wake.set()
            else:
                # Acknowledgements are kept for later deltas (a bundle to this peer), not for
                # this session, which knows what it sent: written at most once per interval.
                self._acks.update(message.heads)
                self._peer_has.update(message.heads)
                if self._ack_writer is None or self._ack_writer.done():
                    self._ack_writer = asyncio.create_task(self._write_acks(ACK_WRITE_INTERVAL_S))
        elif isinstance(message, wire.Changes):
            await self._import(message)
        elif isinstance(message, wire.BlobPart):
            await self._receive_blob_part(message)
        elif isinstance(message, wire.Ping):
            self._send(wire.Pong(message.nonce))
        elif isinstance(message, wire.Bye):
            # The peer refused us because it sees our identity on two machines: recorded here too.
            if message.reason.startswith(identity.CONFLICT_PREFIX) and self.service._refusals.note(self.address, "identity conflict reported", time.monotonic()):
                with contextlib.suppress(RallypointError):
                    await self.node.peers.audit_conflict_reported(self.peer, message.reason, via="lan", address=self.address)
            return f"the peer said goodbye: {message.reason}"
        return None

    async def _import(self, message: wire.Changes) -> None:
        receipt = Receipt(source="lan", sender=self.peer, created_at=self.node.identity.now(), sender_heads=message.heads)
        try:
            summary = await self.node.intake.import_batches(message.docs, blobs=message.blobs, received_from=self.peer_id, receipt=receipt)
        except MissingDependencies:
            # We lack something the peer believes we have (frames lost with a dropped session):
            # our complete heads make it send everything we lack.
            self._send(wire.Heads(await self.node.exchange.heads_for(self.peer), complete=True))
            return
        except ChangeRejected as exc:
            raise SessionError(f"{self.peer_id} sent changes this node rejects: {exc}") from exc
        self.received_changes += summary.changes
        self._peer_has.update(message.heads)
        for doc_id in self._acks.keys() & message.heads.keys():
            self._acks[doc_id] = message.heads[doc_id]  # a pending acknowledgement must not overwrite newer heads
        # Acknowledge every document of the message, also those that brought nothing new (we had
        # them from another peer), so the sender learns what we hold.
        self._announce |= {doc_id for doc_id, _ in message.docs}
        self._wake.set()
        if summary.wiped:
            self.service._stop_after_wipe()
            return
        if summary.changes or summary.blobs:
            self.service._emit(Received(self.peer_id, summary.changes, sum(c.new_messages for c in summary.channels), tuple(c.channel_id for c in summary.channels)))

    async def _write_acks(self, delay: float) -> None:
        await asyncio.sleep(delay)
        acks, self._acks = self._acks, {}
        if acks:
            with contextlib.suppress(RallypointError):
                await self.node.exchange.record_peer_heads(self.peer, acks)

    async def _receive_blob_part(self, part: wire.BlobPart) -> None:
        """Collects a large blob's pieces, in order, up to this node's attachment limit; stores
        it through the import path once whole and matching its hash."""
        if part.offset == 0:
            if part.size > self.node.blobs.max_blob_bytes:
                raise SessionError(f"{self.peer_id} sent a {part.size:,}-byte attachment; this node's limit is {self.node.blobs.max_blob_bytes:,}")
            self._blob = (part.digest, part.size, bytearray())
        elif self._blob is None or self._blob[:2] != (part.digest, part.size) or len(self._blob[2]) != part.offset:
            raise SessionError(f"{self.peer_id} sent a piece of an attachment out of order")
        digest, size, data = self._blob
        data += part.data
        if len(data) < size:
            return
        self._blob = None
        if crypto.sha256(bytes(data)) != digest:
            raise SessionError(f"{self.peer_id} sent an attachment that does not match its hash")
        receipt = Receipt(source="lan", sender=self.peer, created_at=self.node.identity.now(), sender_heads={})
        try:
            await self.node.intake.import_batches([], blobs=[(digest, bytes(data))], received_from=self.peer_id, receipt=receipt)
        except ChangeRejected as exc:
            raise SessionError(f"{self.peer_id} sent an attachment this node rejects: {exc}") from exc

    # --- pushing what the peer lacks ------------------------------------------------

    async def _pusher(self) -> None:
        """Sends what the peer lacks: everything after it sent its complete heads, then the
        new changes of the documents that local writes and imports touched."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._full_resync:
                    self._full_resync, self._dirty = False, set()
                    # A few documents at a time: the peer imports the first (the directory,
                    # channel heads, the newest segments) while the rest is still being read.
                    for group in _batched_by_changes(await self.node.exchange.documents_lacking(self.peer), RESYNC_GROUP_CHANGES):
                        await self._send_delta(await self.node.exchange.delta_for([self.peer], only=group))
                if self._announce:
                    docs, self._announce = sorted(self._announce), set()
                    self._send(wire.Heads({doc_id: await self._our_heads(doc_id) for doc_id in docs}, complete=False))
                docs, self._dirty = self._dirty, set()
                lacking = [doc_id for doc_id in sorted(docs) if not set(await self._our_heads(doc_id)) <= set(self._peer_has.get(doc_id, ()))]
                if lacking:
                    await self._send_delta(await self.node.exchange.delta_for([self.peer], only=lacking, also_held=self._peer_has))
        except SessionError as exc:
            await self.close(str(exc))
        except (NodeLocked, ConnectionError, OSError):
            await self.close(None)

    async def revoked(self) -> None:
        """Ends the session with a peer just revoked, after sending it the news."""
        if self._closed:
            return
        with contextlib.suppress(SessionError, RallypointError, ConnectionError, OSError):
            await self._send_delta(await self.node.exchange.delta_for([self.peer], only=[documents.DIRECTORY_DOC], also_held=self._peer_has))
        await self.close(f"{self.peer_id} has been revoked")

    async def _our_heads(self, doc_id: str) -> tuple[bytes, ...]:
        return tuple(sorted(await self.node.replica.document_heads(doc_id)))

    async def _send_delta(self, delta: Delta) -> None:
        """Changes in parts under the frame cap, small blobs with them, large ones in pieces."""
        if not delta.documents and not delta.blobs:
            return
        large = [(digest, data) for digest, _, data in delta.blobs if len(data) > BLOB_PART_BYTES]
        try:
            parts = pack_delta(replace(delta, blobs=tuple(b for b in delta.blobs if len(b[2]) <= BLOB_PART_BYTES)), PART_BUDGET)
        except InvalidInput as exc:
            raise SessionError(str(exc)) from exc
        for docs, blobs in parts:
            part_heads = {doc_id: tuple(sorted(delta.heads.get(doc_id, ()))) for doc_id, _ in docs}
            await self._send_bulk(wire.Changes(docs, blobs, part_heads))
            self.sent_changes += sum(len(c) for _, c in docs)
            self._peer_has.update(part_heads)
        for digest, data in large:
            for offset in range(0, len(data), BLOB_PART_BYTES):
                await self._send_bulk(wire.BlobPart(digest, len(data), offset, data[offset : offset + BLOB_PART_BYTES]))
        if delta.blobs:
            await self.node.exchange.note_sent([self.peer], [(digest, doc_id) for digest, doc_id, _ in delta.blobs], delta.heads)

    async def _pinger(self) -> None:
        nonce = 0
        while True:
            await asyncio.sleep(self.service.config.ping_interval_s)
            nonce += 1
            self._send(wire.Ping(nonce))


def _batched_by_changes(lacking: Sequence[tuple[str, int]], limit: int) -> list[list[str]]:
    """Consecutive documents, each group holding up to `limit` changes (or one document)."""
    groups: list[list[str]] = []
    count = 0
    for doc_id, changes in lacking:
        if not groups or count + changes > limit:
            groups.append([])
            count = 0
        groups[-1].append(doc_id)
        count += changes
    return groups
