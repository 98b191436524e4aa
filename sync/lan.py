"""Live sync on a LAN: the service that advertises this node, finds its peers, and keeps an
authenticated session open with each trusted one (docs/lan-protocol.md).

The edge between the node and the network: sockets, timers and mDNS live here; the bytes on
the wire are `sync.wire`'s pure codec; everything a peer sends goes through the node's own
verification path (`node.intake.import_batches`, the same as bundle import). One service per node:

- a TCP server; an incoming connection passes the handshake gate (`sync.gate`: a bounded number
  of handshakes in progress, in all and per address) before it gets a task or a buffer, is
  checked against the IP allowlist before a byte of it is read, must finish the handshake
  within a deadline, and is dropped if its node is unknown or revoked; refusals are audited
  at a bounded rate, the rest summarised (`sync.refusals`);
- the IP allowlist applies to dialling too: a peer at an address it refuses is not dialled;
- discovery behind a `sync.ports.PeerFinder` (mDNS, `sync.discovery`, unless another finder is
  given); the node with the lower id dials a discovered peer of its workspace (the other dials
  too if no session shows up), and a dropped session is redialled with exponential backoff
  and jitter;
- per session, `sync.session` over the ports wired here (`sync.replica.NodeReplica`, the node's
  `peers` service, `sync.channel.StreamChannel`): both sides send their heads, then exactly
  what the other lacks, then every new change as it is made (the node's change feed),
  acknowledged by heads so the next delta - by LAN or by bundle - starts where the peer is;
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
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from appliance import crypto, ids, netpolicy
from appliance.errors import IdentityConflict, RallypointError
from appliance.feed import DocumentsChanged, FeedEvent, NodeWiped, Subscription
from sync import messages, wire
from sync.accepting import AcceptHooks, GatedProtocol
from sync.channel import StreamChannel
from sync.defaults import DEFAULT_PORT
from sync.discovery import Advert, Discovery, DiscoveryEvent, PeerGone, PeerSeen
from sync.errors import SessionError, SyncError
from sync.events import EventSink, LanEvent, PeerDiscovered, PeerLost, Received, RefusalsSummarised, Refused, SessionDown, SessionInfo, SessionUp, Wiped
from sync.gate import HandshakeGate, Pending
from sync.interfaces import interface_networks
from sync.memory import release_free_memory
from sync.ports import FinderFactory, LanBook, PeerFinder
from sync.refusals import RefusalLog
from sync.replica import LanNode, NodeReplica
from sync.service_lock import ServiceLock
from sync.session import PART_BUDGET, Session, SessionTable, SessionTiming

__all__ = [  # the events and sizes whoever runs the service imports from here
    "DEFAULT_PORT", "PART_BUDGET", "EventSink", "LanConfig", "LanEvent", "LanService", "PeerDiscovered", "PeerLost", "Received",
    "Refused", "RefusalsSummarised", "SessionDown", "SessionInfo", "SessionUp", "Wiped",
]

log = logging.getLogger(__name__)

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
    trails_interval_s: float = 60.0  # audit entries written during a session go this often
    store_poll_s: float = 0.05
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    defer_dial_s: float = 3.0  # the higher id dials too if no session came up within this


class _Refusal(Exception):
    """A connection this node will not serve; the message is the audited reason, `kind` the
    part that floods are counted by (the reason up to its first colon unless given)."""

    def __init__(self, reason: str, peer: bytes | None = None, kind: str | None = None) -> None:
        super().__init__(reason)
        self.peer = peer
        self.kind = kind or reason.split(":", 1)[0]


class LanService:
    """Runs LAN discovery and sync for one unlocked node (an async context manager)."""

    def __init__(
        self,
        node: LanNode,
        config: LanConfig = LanConfig(),
        *,
        on_event: EventSink | None = None,
        rng: Callable[[int], bytes] = crypto.random_bytes,
        finder: FinderFactory | None = None,
    ) -> None:
        """`finder` makes the peer finder (default: mDNS on the configured interfaces)."""
        self.node = node
        self.config = config
        self._on_event = on_event
        self._rng = rng
        self._finder = finder
        self._book: LanBook = node.peers
        self._replica = NodeReplica(node)
        self._server: asyncio.Server | None = None
        self._discovery: PeerFinder | None = None
        self._sessions = SessionTable(node.identity.node_id, self._replica, self._spawn)
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
                advert = Advert(node_id=self.node.identity.node_id, workspace_id=self.node.identity.workspace_id, port=self.port)
                self._discovery = (self._finder or self._mdns)(advert, self._on_discovery)
                await self._discovery.__aenter__()
            self._subscription = self.node.feed.subscribe(self._on_feed)
            self._spawn(self._poll_store())
            self._spawn(self._report_refusals())
            # A long-running node: the workers that read what peers send start now, off every
            # session's path (once started, warming again is a no-op).
            self._spawn(self.node.intake.warm_workers())
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

    def _mdns(self, advert: Advert, on_event: Callable[[DiscoveryEvent], None]) -> Discovery:
        interfaces = self.config.mdns_interfaces
        if interfaces is None and self.config.bind not in ("0.0.0.0", "::", ""):
            interfaces = [self.config.bind]
        return Discovery(advert, on_event, interfaces=interfaces)

    def stop_after_wipe(self) -> None:
        """Nothing is left to serve or advertise once the node has wiped itself: the service
        stops, and `ended` tells whoever runs it."""
        if self._ending is not None:
            return
        self.end_reason = self.node.identity.locked_reason or "this node wiped itself"
        self.emit(Wiped(self.end_reason))

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
        await self._sessions.close_all("node shutting down")
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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def emit(self, event: LanEvent) -> None:
        if isinstance(event, SessionUp):
            # A peer may now send segments whole: the workers that read them start while the
            # session exchanges heads, not when the first segment arrives (once started, a no-op).
            self._spawn(self.node.intake.warm_workers())
        if self._on_event is not None:
            self._on_event(event)

    # --- what the service knows --------------------------------------------------

    def sessions(self) -> list[SessionInfo]:
        return self._sessions.infos()

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
            self.refuse(address, f"shed for {self.config.handshake_penalty_s:g} s after a failed handshake", None)
        return pending

    def _closed_silent(self, pending: Pending, timed_out: bool) -> None:
        """An admitted connection ended before sending a byte."""
        self._gate.release(pending)
        if timed_out:
            self.refuse(pending.address, "handshake deadline passed", None)
        elif pending.evicted:
            self.refuse(pending.address, EVICTED, None)

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
            self.refuse(address, str(refusal), refusal.peer, refusal.kind)
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
            await self._book.check_peer_incarnation(peer, incarnation, via="lan", address=address)
        except IdentityConflict as exc:
            return str(exc)
        return None

    async def _refuse_session(self, writer: asyncio.StreamWriter, keys: wire.SessionKeys, address: str, peer: bytes, reason: str) -> None:
        """Ends an authenticated connection at once, telling the peer why: a Bye as the only,
        final frame of our stream, so that the other side can record it too."""
        self.emit(Refused(address, reason, ids.key_id(peer)))
        sealer = wire.FrameSealer(keys.send, self._rng(wire.STREAM_HEADER_BYTES))
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            writer.write(sealer.header + sealer.seal(messages.encode_message(messages.Bye(reason[: messages.MAX_REASON_CHARS])), final=True))
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
            self._rules = (now, await self._book.network_rules(self._local_networks[1]))
        return netpolicy.decide(address, self._rules[1])

    def refuse(self, address: str, reason: str, peer: bytes | None, kind: str | None = None) -> None:
        """Reports a refusal - an event and an audit entry - unless too many were reported
        lately (`sync.refusals`): a flood of bad connections then costs a counter each, and
        a summary per interval."""
        if not self._refusals.note(address, kind or reason.split(":", 1)[0], time.monotonic()):
            return
        self.emit(Refused(address, reason, ids.key_id(peer) if peer else None))
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
                    await self._book.audit_lan_refusal(address, reason, peer)
            now = time.monotonic()
            if now >= next_summary or self._closing:
                next_summary = now + REFUSAL_SUMMARY_INTERVAL_S
                summaries = self._refusals.summaries(now)
                for summary in summaries:
                    self.emit(RefusalsSummarised(summary.text(), summary.kind, summary.refusals, summary.addresses))
                    with contextlib.suppress(RallypointError):
                        await self._book.audit_lan_refusals(summary.text(), summary.kind, summary.refusals, summary.addresses)
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
            self.refuse(address, f"not dialled: {reason}", self._key_of(expect) if expect else None, kind="address not allowed")
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
            self.refuse(address, str(refusal), refusal.peer, refusal.kind)
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
            self.emit(PeerLost(event.node_id))
            return
        same = event.workspace_id == self.node.identity.workspace_id
        self.emit(PeerDiscovered(event, same))
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
            await self._book.note_lan_peer(peer.node_id, peer.workspace_id, (allowed or peer.addresses)[0], peer.port)

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
                session = self._sessions.with_node(expect)
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
        channel = StreamChannel(reader, writer, keys, self._rng(wire.STREAM_HEADER_BYTES), deadline_s=self.config.handshake_deadline_s)
        timing = SessionTiming(ping_interval_s=self.config.ping_interval_s, idle_timeout_s=self.config.idle_timeout_s, trails_interval_s=self.config.trails_interval_s)
        await self._sessions.run(Session(channel, self._replica, self._book, self, peer, initiator=initiator, address=address, port=port, timing=timing))

    def first_report(self, address: str, kind: str) -> bool:
        return self._refusals.note(address, kind, time.monotonic())

    def _on_feed(self, event: FeedEvent) -> None:
        if isinstance(event, NodeWiped):
            self.stop_after_wipe()
        elif isinstance(event, DocumentsChanged):
            self._sessions.changed(event.doc_ids, event.peer)

    async def _poll_store(self) -> None:
        """Keeps the node's one store poller running while the service does: what other
        processes write (a CLI post, a courier's import) reaches `_on_feed` like a local change."""
        async with self.node.feed.polling(self.config.store_poll_s):
            await self._stopping.wait()
