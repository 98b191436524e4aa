"""What the LAN service tells whoever runs it (the console, `serve`'s log): events as sessions
come and go, and what each session did so far."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sync.discovery import PeerSeen


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
EventSink = Callable[[LanEvent], object]  # what a sink returns is ignored


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
