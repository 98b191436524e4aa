"""What the LAN side of sync needs from the rest of the system, as narrow ports: a session runs
against a `Replica`, a `LanBook` and a `FrameChannel`; the service finds peers through a
`PeerFinder`. Each port has a real implementation (`sync.replica.NodeReplica`, the node's
`peers` service, `sync.channel.StreamChannel`, `sync.discovery.Discovery`) and an in-memory
twin (`sync.twins`), and every implementation passes the same acceptance suite
(tests/contracts/).

The members are exactly those `sync.lan` and `sync.session` use, with the node's signatures."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self

from appliance.changes import SignedChange
from appliance.model import Delta, ImportSummary, Receipt
from appliance.netpolicy import LocalNetwork, NetworkRule
from sync import wire
from sync.discovery import Advert, DiscoveryEvent, PeerSeen


class Replica(Protocol):
    """A node's documents as sync sees them: heads, deltas for peers, the one verification path
    for what peers send, acknowledgements, and whom the directory trusts. Over a node:
    node.exchange (heads_for, documents_lacking, delta_for, record_peer_heads, note_sent),
    node.intake.import_batches, node.replica.document_heads, node.directory.trust_of,
    node.blobs.max_blob_bytes, node.identity.now."""

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
        blobs: Sequence[tuple[bytes, bytes]] = (),
        received_from: str,
        receipt: Receipt | None = None,
    ) -> ImportSummary:
        """Verifies and applies, all or nothing (ChangeRejected, MissingDependencies); importing
        twice changes nothing the second time."""
        ...

    async def record_peer_heads(self, peer: bytes, heads: Mapping[str, Sequence[bytes]]) -> None:
        """What `peer` acknowledged holding: the next delta for it starts there."""
        ...

    async def note_sent(self, peers: Sequence[bytes], blobs: Sequence[tuple[bytes, str]], heads: Mapping[str, Sequence[bytes]]) -> None:
        """Blobs sent to `peers`: held by them once they acknowledge `heads`."""
        ...

    def trust_of(self, node_key: bytes) -> str:
        """"trusted", "revoked" or "unknown"."""
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

    def send(self, message: wire.Message) -> None:
        """Queues a message (ignored once closed)."""
        ...

    async def room(self) -> None:
        """Returns once queued output is under the high-water mark, or the channel closed."""
        ...

    async def receive(self) -> wire.Message | None:
        """The next message; None after the peer's final message or a close. Raises
        ChannelLost when the connection broke, SessionError for a frame that does not verify."""
        ...

    async def close(self, final: wire.Message | None = None) -> None:
        """Ends the channel, with `final` as the last message if given (sent best effort, briefly)."""
        ...


class PeerFinder(Protocol):
    """Advertises this node while entered, and reports peers seen and gone to the listener it
    was made with. Real: `sync.discovery.Discovery` (mDNS)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...

    def peers(self) -> list[PeerSeen]: ...


FinderFactory = Callable[[Advert, Callable[[DiscoveryEvent], None]], PeerFinder]
"""Makes the finder for this node's advert, reporting to the given listener."""
