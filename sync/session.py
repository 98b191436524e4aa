"""One LAN session's logic, against ports only (`sync.ports`): both sides send their heads,
then exactly what the other lacks, then every new change as it is made, acknowledged by heads
so that the next delta - by LAN or by bundle - starts where the peer is; what one peer sent is
relayed to the others that lack it; a peer revoked mid-session gets the directory that tells
it so, then nothing more (docs/lan-protocol.md).

No socket and no node here: `sync.lan` runs sessions over `sync.channel.StreamChannel` and
the node's services; tests run them over the in-memory twins (`sync.twins`) in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from appliance import crypto, documents, identity, ids
from appliance.audit_feed import AuditCarry
from appliance.errors import ChangeRejected, MissingDependencies, NodeLocked, RallypointError
from appliance.model import Carrier, Delta, Receipt
from sync import messages, wire
from sync.errors import ChannelLost, DoesNotFit, SessionError
from sync.events import LanEvent, Received, SessionDown, SessionInfo, SessionUp
from sync.packing import pack_delta
from sync.ports import FrameChannel, LanBook, Replica

RESYNC_GROUP_CHANGES = 32768  # changes read from the store at a time when a session starts
# ... but the first group is smaller: the peer waits for it (the sender reads a 100k channel's
# first 32,768 changes in ~160 ms), and imports it while the rest is read.
RESYNC_FIRST_GROUP_CHANGES = 4096
PART_BUDGET = 1024 * 1024  # changes and blobs per Changes message: well under the frame cap, and pipelines
ACK_WRITE_INTERVAL_S = 1.0
BLOB_PART_BYTES = 512 * 1024  # blobs larger than this go in pieces of this size, after the changes
RELAY_DELAY_S = 0.1  # before relaying what another peer sent: time for the peer to say it has it
TRAILS_BYTES = wire.MAX_MESSAGE_BYTES // 2  # audit entries per Trails message, at most


@dataclass(frozen=True)
class SessionTiming:
    ping_interval_s: float = 15.0
    idle_timeout_s: float = 45.0
    trails_interval_s: float = 60.0  # how often audit entries written since are sent (and at the start)


class SessionHost(Protocol):
    """What a session reports to the service that runs it."""

    def emit(self, event: LanEvent) -> None: ...

    def refuse(self, address: str, reason: str, peer: bytes | None) -> None:
        """A session ended for a reason worth an audit entry (rate-limited by the host)."""
        ...

    def first_report(self, address: str, kind: str) -> bool:
        """Whether a refusal of this kind from this address is reported now (not too many lately)."""
        ...

    def stop_after_wipe(self) -> None:
        """This node's own revocation arrived and it wiped itself."""
        ...


class Session:
    """One authenticated connection to a trusted peer. The reader loop never waits on the
    network to send (the channel queues), and bulk data is sent by the pusher task under the
    channel's high-water mark."""

    def __init__(
        self, channel: FrameChannel, replica: Replica, book: LanBook, host: SessionHost, peer: bytes, *, initiator: bool, address: str, port: int, timing: SessionTiming
    ) -> None:
        self.channel = channel
        self.replica = replica
        self.book = book
        self.host = host
        self.peer = peer
        self.peer_id = ids.key_id(peer)
        self.initiator = initiator
        self.address = address
        self.port = port
        self.timing = timing
        self.finished = asyncio.Event()
        self.up = False
        self.close_reason: str | None = None
        self.started_at = time.time()
        self.sent_changes = 0
        self.received_changes = 0
        self._dirty: set[str] = set()  # documents whose changes the peer may lack
        self._announce: set[str] = set()  # documents whose heads we tell the peer
        self._full_resync = False
        self._rerouted = False  # a directory or channel head changed since the last look at what the peer may have
        self._wake = asyncio.Event()
        self._peer_has: dict[str, tuple[bytes, ...]] = {}  # the peer's heads as far as this session knows
        self._acks: dict[str, tuple[bytes, ...]] = {}  # acknowledged, not yet written
        self._blob: tuple[bytes, int, bytearray] | None = None  # a large blob being received
        self._ack_writer: asyncio.Task[None] | None = None
        self._closed = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._trails_acked = asyncio.Event()  # the peer acknowledged audit entries: more may follow
        self.received_audit_entries = 0

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.peer_id, self.address, self.port, self.initiator, self.started_at, self.sent_changes, self.received_changes, self.channel.bytes_sent, self.channel.bytes_received
        )

    def push(self, doc_ids: frozenset[str], received_from: str | None) -> None:
        """Documents that gained changes: ours are pushed at once; what we received is announced
        (our new heads, which also acknowledge it to its sender) and relayed after a moment to a
        peer that still lacks it - by then the peer has usually told us it got it elsewhere."""
        if any(doc_id == documents.DIRECTORY_DOC or doc_id.endswith(documents.HEAD_SUFFIX) for doc_id in doc_ids):
            self._rerouted = True
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
        """Runs the session until it ends; returns why."""
        try:
            await self.channel.open()
            # Both ends now trust each other (a refusing responder closes before its header).
            self.up = True
            self.host.emit(SessionUp(self.peer_id, self.address, self.initiator))
            self.channel.send(messages.Heads(await self.replica.heads_for(self.peer), complete=True))
            self._tasks += [asyncio.create_task(self._pusher()), asyncio.create_task(self._pinger()), asyncio.create_task(self._trails())]
            while True:
                async with asyncio.timeout(self.timing.idle_timeout_s):
                    message = await self.channel.receive()
                if message is None:
                    return "the peer closed the session"
                ended = await self._handle(message)  # the final message is a Bye saying why
                if ended is not None:
                    return ended
        except TimeoutError:
            return "the peer went silent"
        except ChannelLost as exc:
            return str(exc)
        except SessionError as exc:
            self.host.refuse(self.address, f"session ended: {exc}", self.peer)
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
        for task in self._tasks:
            task.cancel()
        await self.channel.close(messages.Bye(reason[: messages.MAX_REASON_CHARS]) if reason is not None else None)
        if self._ack_writer is not None:
            self._ack_writer.cancel()
        await self._write_acks(0)
        self.finished.set()

    # --- input -------------------------------------------------------------------

    async def _handle(self, message: messages.Message) -> str | None:
        if isinstance(message, messages.Heads):
            if message.complete:
                self._acks.clear()
                self._peer_has = dict(message.heads)
                await self.replica.record_peer_heads(self.peer, message.heads, complete=True)
                await self.book.note_lan_sync(self.peer, self.address, self.port)
                self._full_resync = True
                self._wake.set()
            else:
                # Acknowledgements are kept for later deltas (a bundle to this peer), not for
                # this session, which knows what it sent: written at most once per interval.
                self._acks.update(message.heads)
                self._peer_has.update(message.heads)
                if self._ack_writer is None or self._ack_writer.done():
                    self._ack_writer = asyncio.create_task(self._write_acks(ACK_WRITE_INTERVAL_S))
        elif isinstance(message, messages.Changes):
            await self._import(message)
        elif isinstance(message, messages.BlobPart):
            await self._receive_blob_part(message)
        elif isinstance(message, messages.Trails):
            await self._import_trails(message.carry)
        elif isinstance(message, messages.Ping):
            self.channel.send(messages.Pong(message.nonce))
        elif isinstance(message, messages.Bye):
            # The peer refused us because it sees our identity on two machines: recorded here too.
            if message.reason.startswith(identity.CONFLICT_PREFIX) and self.host.first_report(self.address, "identity conflict reported"):
                with contextlib.suppress(RallypointError):
                    await self.book.audit_conflict_reported(self.peer, message.reason, via="lan", address=self.address)
            return f"the peer said goodbye: {message.reason}"
        return None

    async def _import(self, message: messages.Changes) -> None:
        receipt = Receipt(source=Carrier.LAN, sender=self.peer, created_at=self.replica.now(), sender_heads=message.heads)
        try:
            summary = await self.replica.import_batches(message.docs, wholes=message.wholes, blobs=message.blobs, received_from=self.peer_id, receipt=receipt)
        except MissingDependencies:
            # We lack something the peer believes we have (frames lost with a dropped session):
            # our complete heads make it send everything we lack.
            self.channel.send(messages.Heads(await self.replica.heads_for(self.peer), complete=True))
            return
        except ChangeRejected as exc:
            raise SessionError(f"{self.peer_id} sent changes this node rejects: {exc}") from exc
        self.received_changes += summary.changes
        self._peer_has.update(message.heads)
        for doc_id in self._acks.keys() & message.heads.keys():
            self._acks[doc_id] = message.heads[doc_id]  # a pending acknowledgement must not overwrite newer heads
        # Acknowledge every document of the message, also those that brought nothing new (we had
        # them from another peer), so the sender learns what we hold.
        self._announce |= {doc_id for doc_id, _ in message.docs} | {whole.doc_id for whole in message.wholes}
        self._wake.set()
        if summary.wiped:
            self.host.stop_after_wipe()
            return
        if summary.changes or summary.blobs:
            self.host.emit(Received(self.peer_id, summary.changes, sum(c.new_messages for c in summary.channels), tuple(c.channel_id for c in summary.channels)))

    async def _import_trails(self, carry: AuditCarry) -> None:
        """Audit trails the peer sent, checked and stored, then acknowledged (how far we now
        hold each); an acknowledgement alone is recorded, and may let us send more."""
        try:
            self.received_audit_entries += await self.replica.import_audit(self.peer, carry)
        except ChangeRejected as exc:
            raise SessionError(f"{self.peer_id} sent an audit trail this node refuses: {exc}") from exc
        if carry.parts:
            self.channel.send(messages.Trails(AuditCarry((await self.replica.audit_for(self.peer, max_bytes=0)).held)))
        else:
            self._trails_acked.set()

    async def _trails(self) -> None:
        """Sends the audit trails the peer may receive beyond what it acknowledged: when the
        session starts (with our acknowledgement of its trails), when it acknowledges a part
        and more is waiting, and every `trails_interval_s` for entries written since."""
        first = True
        try:
            while True:
                carry = await self.replica.audit_for(self.peer, max_bytes=TRAILS_BYTES)
                if carry.parts or (first and carry):
                    await self._send_bulk(messages.Trails(carry))
                first = False
                self._trails_acked.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timing.trails_interval_s):
                        await self._trails_acked.wait()
        except SessionError as exc:
            await self.close(str(exc))
        except (NodeLocked, ConnectionError, OSError):
            await self.close(None)

    async def _write_acks(self, delay: float) -> None:
        await asyncio.sleep(delay)
        acks, self._acks = self._acks, {}
        if acks:
            with contextlib.suppress(RallypointError):
                await self.replica.record_peer_heads(self.peer, acks)

    async def _receive_blob_part(self, part: messages.BlobPart) -> None:
        """Collects a large blob's pieces, in order, up to this node's attachment limit; stores
        it through the import path once whole and matching its hash."""
        if part.offset == 0:
            if part.size > self.replica.max_blob_bytes:
                raise SessionError(f"{self.peer_id} sent a {part.size:,}-byte attachment; this node's limit is {self.replica.max_blob_bytes:,}")
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
        receipt = Receipt(source=Carrier.LAN, sender=self.peer, created_at=self.replica.now(), sender_heads={})
        try:
            await self.replica.import_batches([], blobs=[(digest, bytes(data))], received_from=self.peer_id, receipt=receipt)
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
                    for group in _batched_by_changes(await self.replica.documents_lacking(self.peer), RESYNC_GROUP_CHANGES, RESYNC_FIRST_GROUP_CHANGES):
                        await self._send_delta(await self.replica.delta_for([self.peer], only=group))
                if self._announce:
                    announced, self._announce = sorted(self._announce), set()
                    self.channel.send(messages.Heads({doc_id: await self._our_heads(doc_id) for doc_id in announced}, complete=False))
                docs, self._dirty = self._dirty, set()
                lacking = [doc_id for doc_id in sorted(docs) if not set(await self._our_heads(doc_id)) <= set(self._peer_has.get(doc_id, ()))]
                if lacking:
                    await self._send_delta(await self.replica.delta_for([self.peer], only=lacking, also_held=self._peer_has))
                if self._rerouted:
                    # The directory or a channel head changed, and with it perhaps who may have
                    # what (a member added, a user cleared for a channel): documents the peer
                    # may now have and lacks entirely go too, not only at the next session.
                    self._rerouted = False
                    newly = [(doc_id, count) for doc_id, count in await self.replica.documents_lacking(self.peer) if doc_id not in self._peer_has]
                    for group in _batched_by_changes(newly, RESYNC_GROUP_CHANGES):
                        await self._send_delta(await self.replica.delta_for([self.peer], only=group, also_held=self._peer_has))
        except SessionError as exc:
            await self.close(str(exc))
        except (NodeLocked, ConnectionError, OSError):
            await self.close(None)

    async def revoked(self) -> None:
        """Ends the session with a peer just revoked, after sending it the news."""
        if self._closed:
            return
        with contextlib.suppress(SessionError, RallypointError, ConnectionError, OSError):
            await self._send_delta(await self.replica.delta_for([self.peer], only=[documents.DIRECTORY_DOC], also_held=self._peer_has))
        await self.close(f"{self.peer_id} has been revoked")

    async def _our_heads(self, doc_id: str) -> tuple[bytes, ...]:
        return tuple(sorted(await self.replica.document_heads(doc_id)))

    async def _send_delta(self, delta: Delta) -> None:
        """Changes in parts under the frame cap, small blobs with them, large ones in pieces."""
        if not delta.documents and not delta.blobs and not delta.wholes:
            return
        large = [(digest, data) for digest, _, data in delta.blobs if len(data) > BLOB_PART_BYTES]
        try:
            parts = pack_delta(replace(delta, blobs=tuple(b for b in delta.blobs if len(b[2]) <= BLOB_PART_BYTES)), PART_BUDGET, cap=wire.MAX_MESSAGE_BYTES)
        except DoesNotFit as exc:
            raise SessionError(str(exc)) from exc
        for docs, blobs, wholes in parts:
            carried = [doc_id for doc_id, _ in docs] + [whole.doc_id for whole in wholes]
            part_heads = {doc_id: tuple(sorted(delta.heads.get(doc_id, ()))) for doc_id in carried}
            await self._send_bulk(messages.Changes(docs, blobs, part_heads, wholes))
            self.sent_changes += sum(len(c) for _, c in docs)
            self._peer_has.update(part_heads)
        for digest, data in large:
            for offset in range(0, len(data), BLOB_PART_BYTES):
                await self._send_bulk(messages.BlobPart(digest, len(data), offset, data[offset : offset + BLOB_PART_BYTES]))
        if delta.blobs:
            await self.replica.note_sent([self.peer], [(digest, doc_id) for digest, doc_id, _ in delta.blobs], delta.heads)

    async def _send_bulk(self, message: messages.Message) -> None:
        if self._closed:
            return
        self.channel.send(message)
        await self.channel.room()

    async def _pinger(self) -> None:
        nonce = 0
        while True:
            await asyncio.sleep(self.timing.ping_interval_s)
            nonce += 1
            self.channel.send(messages.Ping(nonce))


class SessionTable:
    """The sessions of one node, at most one per peer, and where a change goes: to every
    session, except that a peer the directory no longer trusts gets the news of its
    revocation and is let go."""

    def __init__(self, own_id: str, replica: Replica, spawn: Callable[[Coroutine[Any, Any, Any]], object]) -> None:
        self._own_id = own_id
        self._replica = replica
        self._spawn = spawn
        self._sessions: dict[bytes, Session] = {}

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def infos(self) -> list[SessionInfo]:
        return sorted((s.info() for s in self._sessions.values()), key=lambda i: i.node_id)

    def with_node(self, node_id: str | None) -> Session | None:
        if node_id is None:
            return None
        return next((s for s in self._sessions.values() if s.peer_id == node_id), None)

    async def run(self, session: Session) -> str | None:
        """Runs `session` as the one with its peer; returns why it ended, None if it was a
        duplicate and never ran."""
        existing = self._sessions.get(session.peer)
        if existing is not None:
            # Both dialled at once, or a reconnect raced the old session's end: keep the session
            # the lower node id initiated, the same choice on both sides.
            lower_is_me = self._own_id < session.peer_id
            keep_new = (session.initiator == lower_is_me) or existing.initiator == session.initiator
            if not keep_new:
                await session.close("duplicate session")
                return None
            await existing.close("replaced by a newer session")
        self._sessions[session.peer] = session
        reason = "closed"
        try:
            reason = await session.run()
            reason = session.close_reason or reason  # why we ended it, not how the socket noticed
            return reason
        finally:
            if self._sessions.get(session.peer) is session:
                del self._sessions[session.peer]
            session.finished.set()
            if session.up:
                session.host.emit(SessionDown(session.peer_id, reason))

    def changed(self, doc_ids: frozenset[str], received_from: str | None) -> None:
        """Documents gained changes (ours, or `received_from` that peer)."""
        for session in list(self._sessions.values()):
            if documents.DIRECTORY_DOC in doc_ids and self._replica.trust_of(session.peer) != "trusted":
                # A revocation just arrived: the peer gets the directory that tells it so (a
                # revoked node wipes itself on reading it), then nothing more.
                self._spawn(session.revoked())
                continue
            session.push(doc_ids, received_from)

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(s.close(reason) for s in list(self._sessions.values())), return_exceptions=True)


def _batched_by_changes(lacking: Sequence[tuple[str, int]], limit: int, first: int | None = None) -> list[list[str]]:
    """Consecutive documents, each group holding up to `limit` changes - the first up to
    `first`, when given - or one document."""
    groups: list[list[str]] = []
    count = 0
    for doc_id, changes in lacking:
        if not groups or count + changes > (min(first, limit) if first is not None and len(groups) == 1 else limit):
            groups.append([])
            count = 0
        groups[-1].append(doc_id)
        count += changes
    return groups
