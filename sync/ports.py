"""The ports sync/ runs against, as narrow `typing.Protocol`s, so that each real edge and its
in-memory twin are interchangeable and every implementation passes the same acceptance suite
(tests/contracts/):

- `Replica`: a node's documents as sync sees them (real: `sync.replica.NodeReplica`; twin:
  `sync.memory_replica.MemoryReplica`);
- `LanBook`: LAN sightings, the allowlist decision, refusal audit (real: the node's `peers`
  service; twin: `sync.twins.MemoryLanBook`);
- `FrameChannel`: frames after the handshake (real: `sync.channel.StreamChannel`; twin:
  `sync.twins.channel_pair`);
- `PeerFinder`: advertise, peer seen / gone (real: `sync.discovery.Discovery`; twin:
  `sync.twins.MemoryPeerFinder`);
- `Medium`: what carries bundles between nodes by hand (real: the courier stick,
  `sync.stick.StickMedium`; twin: `sync.memory_medium.MemoryMedium`); sync.sneakernet's export
  and import use nothing else.

The LAN members are exactly those `sync.lan` and `sync.session` use, with the node's signatures."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeAlias

from appliance.audit_feed import AuditCarry
from appliance.certs import Trust
from appliance.changes import SignedChange
from appliance.model import Delta, ImportSummary, Receipt, WholeSegment
from appliance.netpolicy import LocalNetwork, NetworkRule
from sync import messages
from sync.quarantine import Quarantined, QuarantineQuota

if TYPE_CHECKING:  # zeroconf loads only where mDNS is used (the courier commands never need it)
    from sync.discovery import Advert, DiscoveryEvent, PeerSeen


class Replica(Protocol):
    """A node's documents as sync sees them: heads, deltas for peers, the one verification path
    for what peers send, acknowledgements, and whom the directory trusts. Over a node:
    node.exchange (heads_for, documents_lacking, delta_for, record_peer_heads, note_sent),
    node.intake.import_batches, node.replica.document_heads, node.directory.trust_of,
    node.blobs.max_blob_bytes, node.identity.now, node.audit.feeds (audit_for, import_audit)."""

    async def heads_for(self, peer: bytes) -> dict[str, tuple[bytes, ...]]:
        """Our heads of every document `peer` may receive (a revoked peer: the directory)."""
        ...

    async def documents_lacking(self, peer: bytes) -> list[tuple[str, int]]:
        """The documents `peer` lacks changes of, as far as it acknowledged, in send order, with how many."""
        ...

    async def delta_for(
        self, peers: Sequence[bytes], *, only: Collection[str] | None = None, also_held: Mapping[str, Sequence[bytes]] | None = None
    ) -> Delta:
        """What at least one of `peers` lacks beyond what it acknowledged (and `also_held`)."""
        ...

    async def document_heads(self, doc_id: str) -> list[bytes]: ...

    async def import_batches(
        self,
        batches: Sequence[tuple[str, Sequence[SignedChange]]],
        *,
        wholes: Sequence[WholeSegment] = (),
        blobs: Sequence[tuple[bytes, bytes]] = (),
        received_from: str,
        receipt: Receipt | None = None,
    ) -> ImportSummary:
        """Verifies and applies, all or nothing (ChangeRejected, MissingDependencies); importing
        twice changes nothing the second time. `wholes`: segments carried whole, each admitted
        only if every change in it is covered by its own author's signature (appliance.wholes)."""
        ...

    async def record_peer_heads(self, peer: bytes, heads: Mapping[str, Sequence[bytes]], *, complete: bool = False) -> None:
        """What `peer` acknowledged holding: the next delta for it starts there. `complete`: it
        holds nothing of the documents the report leaves out."""
        ...

    async def audit_for(self, peer: bytes, *, max_bytes: int) -> AuditCarry:
        """Audit trails for `peer`: how far we hold each it may see (an acknowledgement), and,
        if it serves an admin, the entries beyond what it acknowledged (about `max_bytes` at most)."""
        ...

    async def import_audit(self, peer: bytes, carry: AuditCarry) -> int:
        """Checks and stores the trails `peer` sent and records its acknowledgement; returns the
        entries new here. A gap, a broken link or signature, or an origin the directory never
        certified raises ChangeRejected (AuditFeedRefused) and stores nothing."""
        ...

    async def note_sent(self, peers: Sequence[bytes], blobs: Sequence[tuple[bytes, str]], heads: Mapping[str, Sequence[bytes]]) -> None:
        """Blobs sent to `peers`: held by them once they acknowledge `heads`."""
        ...

    def trust_of(self, node_key: bytes) -> Trust:
        """The directory's one trust rule (`certs.Directory.trust_of`)."""
        ...

    def now(self) -> int:
        """This replica's clock, ms."""
        ...

    @property
    def max_blob_bytes(self) -> int: ...


class LanBook(Protocol):
    """The node's record of the LAN: where peers were seen and synced, the IP allowlist, the
    identity-conflict check, and the audit of refusals. Over a node: node.peers."""

    async def note_lan_peer(self, node_id: str, workspace_id: str, address: str, port: int) -> None: ...

    async def note_lan_sync(self, node_key: bytes, address: str, port: int) -> None: ...

    async def network_rules(self, local_networks: Sequence[LocalNetwork] = ()) -> list[NetworkRule]:
        """The allowlist in force (decided with `appliance.netpolicy.decide`)."""
        ...

    async def check_peer_incarnation(self, peer: bytes, incarnation: bytes, *, via: str, address: str | None = None, record: bool = True) -> None:
        """Raises IdentityConflict when two machines present `peer`'s key."""
        ...

    async def audit_conflict_reported(self, peer: bytes, reason: str, *, via: str, address: str | None = None) -> None: ...

    async def audit_lan_refusal(self, address: str, reason: str, peer: bytes | None = None) -> None: ...

    async def audit_lan_refusals(self, summary: str, kind: str, refusals: int, addresses: int) -> None: ...


class FrameChannel(Protocol):
    """An authenticated session's messages, both ways, after the handshake. `send` never waits
    on the network (a reader loop that answers pings cannot deadlock); bulk senders wait for
    `room` between messages. After `close`, or once the peer's stream ended, `receive` returns
    None at once."""

    @property
    def bytes_sent(self) -> int: ...

    @property
    def bytes_received(self) -> int: ...

    async def open(self) -> None:
        """Starts the streams (on the wire: the stream headers); raises TimeoutError past the
        handshake deadline. A channel closed before it opened sends nothing."""
        ...

    def send(self, message: messages.Message) -> None:
        """Queues a message (ignored once closed)."""
        ...

    async def room(self) -> None:
        """Returns once queued output is under the high-water mark, or the channel closed."""
        ...

    async def receive(self) -> messages.Message | None:
        """The next message; None after the peer's final message or a close. Raises
        ChannelLost when the connection broke, SessionError for a frame that does not verify."""
        ...

    async def close(self, final: messages.Message | None = None) -> None:
        """Ends the channel, with `final` as the last message if given (sent best effort, briefly)."""
        ...


class PeerFinder(Protocol):
    """Advertises this node while entered, and reports peers seen and gone to the listener it
    was made with. Real: `sync.discovery.Discovery` (mDNS)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...

    def peers(self) -> list[PeerSeen]: ...


FinderFactory: TypeAlias = "Callable[[Advert, Callable[[DiscoveryEvent], None]], PeerFinder]"
"""Makes the finder for this node's advert, reporting to the given listener."""


@dataclass(frozen=True)
class StickFile:
    """A candidate bundle file found by a scan: a regular file with a bundle file name, within the
    size limit when it was scanned. Its content is not authenticated until the bundle is opened."""

    path: Path
    name: str
    outbox: str  # "bundles", "to-<NODEID>" or "broadcast"
    size: int


@dataclass(frozen=True)
class StickProblem:
    """Something on the medium that was skipped, and why. `path` is printable: control
    characters, bidi controls, undecodable bytes and backslashes are escaped."""

    path: str
    reason: str


@dataclass(frozen=True)
class StickScan:
    files: tuple[StickFile, ...]  # sorted by name
    problems: tuple[StickProblem, ...]


class Medium(Protocol):
    """A courier medium laid out as docs/bundle-format.md ("Stick layout") says, read as hostile
    ground: anyone may have prepared it. Failures of the medium raise sync.errors.StickError
    with a one-line message; a caller's mistake (a name that is not a bundle file name, an
    outbox that does not exist in the layout) raises ValueError."""

    async def scan(self, outboxes: Sequence[str], *, max_file_bytes: int) -> StickScan:
        """The candidate bundle files in the named outboxes, and what was skipped (junk is a
        problem, never an error). A missing layout or outbox is an empty scan."""
        ...

    async def read(self, file: StickFile, *, max_file_bytes: int) -> bytes:
        """The bytes of a file the scan found; refused if it changed kind or grew past the limit."""
        ...

    async def read_head(self, file: StickFile, size: int) -> bytes:
        """The first `size` bytes of a file the scan found (all of it if shorter)."""
        ...

    async def write(self, outbox: str, name: str, data: bytes) -> Path:
        """Writes a bundle atomically: a reader sees the old file or the whole new one under
        `name`, never part of one. Creates the layout if missing; returns the file's path."""
        ...

    async def remove(self, file: StickFile) -> None:
        """Deletes a file the scan found; one already gone is fine."""
        ...

    async def remove_own_older(self, outbox: str, is_own: Callable[[str], bool], keep: Collection[str]) -> int:
        """Deletes the bundle files in `outbox` that `is_own` claims, except those named in
        `keep`; returns how many."""
        ...

    async def quarantine(self, data: bytes, name: str, reason: str, quota: QuarantineQuota = QuarantineQuota()) -> Quarantined:
        """Keeps a rejected bundle's bytes with its reason, within `quota` (sync.quarantine),
        never overwriting an earlier copy; says where the copy is and what was dropped."""
        ...
