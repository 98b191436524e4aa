"""The real `Replica` and what the LAN service and the courier need of a node, typed
structurally: sync never imports the `Node` class, only names the services it calls (`LanNode`,
`CourierNode`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import nacl.signing

from appliance import certs
from appliance.audit_feed import AuditCarry
from appliance.changes import SignedChange
from appliance.feed import ChangeFeed
from appliance.model import Delta, ImportSummary, Receipt, WholeSegment
from sync.ports import LanBook


class NodeIdentity(Protocol):
    @property
    def node_id(self) -> str: ...
    @property
    def workspace_id(self) -> str: ...
    @property
    def workspace_key(self) -> bytes: ...
    @property
    def node_key(self) -> bytes: ...
    @property
    def incarnation(self) -> bytes: ...
    @property
    def signing_key(self) -> nacl.signing.SigningKey: ...
    @property
    def locked_reason(self) -> str | None: ...
    def now(self) -> int: ...


class NodeDirectory(Protocol):
    def trust_of(self, node_key: bytes) -> certs.Trust: ...
    def node_key_of(self, node_id: str) -> bytes: ...


class NodeExchange(Protocol):
    async def heads_for(self, peer: bytes) -> dict[str, tuple[bytes, ...]]: ...
    async def documents_lacking(self, peer: bytes) -> list[tuple[str, int]]: ...
    async def delta_for(
        self, peers: Sequence[bytes], *, only: Collection[str] | None = None, also_held: Mapping[str, Sequence[bytes]] | None = None
    ) -> Delta: ...
    async def record_peer_heads(self, peer: bytes, heads: Mapping[str, Sequence[bytes]], *, complete: bool = False) -> None: ...
    async def note_sent(self, peers: Sequence[bytes], blobs: Sequence[tuple[bytes, str]], heads: Mapping[str, Sequence[bytes]]) -> None: ...


class NodeIntake(Protocol):
    async def warm_workers(self) -> None:
        """Starts what reads segments carried whole, ahead of an import that may bring some."""
        ...

    async def import_batches(
        self,
        batches: Sequence[tuple[str, Sequence[SignedChange]]],
        *,
        wholes: Sequence[WholeSegment] = (),
        blobs: Sequence[tuple[bytes, bytes]] = (),
        received_from: str,
        receipt: Receipt | None = None,
        preview: bool = False,
        progress: Callable[[str, int], None] | None = None,
        audit: AuditCarry | None = None,
    ) -> ImportSummary: ...


class NodeDocuments(Protocol):
    async def document_heads(self, doc_id: str) -> list[bytes]: ...


class NodeBlobs(Protocol):
    @property
    def max_blob_bytes(self) -> int: ...


class LanNode(Protocol):
    """The node services the LAN service uses (`appliance.node.Node` provides them)."""

    @property
    def home(self) -> Path: ...
    @property
    def identity(self) -> NodeIdentity: ...
    @property
    def directory(self) -> NodeDirectory: ...
    @property
    def exchange(self) -> NodeExchange: ...
    @property
    def intake(self) -> NodeIntake: ...
    @property
    def replica(self) -> NodeDocuments: ...
    @property
    def blobs(self) -> NodeBlobs: ...
    @property
    def peers(self) -> LanBook: ...
    @property
    def feed(self) -> ChangeFeed: ...
    @property
    def audit(self) -> NodeAudit: ...


class NodeAuditFeeds(Protocol):
    async def carry_for(self, peer: bytes, *, max_bytes: int = ...) -> AuditCarry: ...
    async def import_carry(self, sender: bytes, carry: AuditCarry) -> int: ...


class NodeAudit(Protocol):
    @property
    def feeds(self) -> NodeAuditFeeds: ...
    async def record_export(self, recipients: Sequence[bytes], bundles: int, size: int, changes: int, audit_entries: int) -> None: ...


class CourierDirectory(NodeDirectory, Protocol):
    @property
    def current(self) -> certs.Directory: ...
    def peers(self, *, revoked: bool = False) -> list[bytes]: ...


class CourierIntake(NodeIntake, Protocol):
    async def bundle_decision(self, digest: bytes) -> tuple[str, str] | None: ...
    async def record_rejection(
        self, digest: bytes, *, outcome: str, reason: str, sender: bytes | None, bundle_id: bytes | None, created_at: int | None, quarantine: Mapping[str, object] | None = None
    ) -> None: ...


class CourierNode(Protocol):
    """The node services the courier (sync.sneakernet) uses (`appliance.node.Node` provides them)."""

    @property
    def home(self) -> Path: ...
    @property
    def identity(self) -> NodeIdentity: ...
    @property
    def directory(self) -> CourierDirectory: ...
    @property
    def exchange(self) -> NodeExchange: ...
    @property
    def intake(self) -> CourierIntake: ...
    @property
    def blobs(self) -> NodeBlobs: ...
    @property
    def peers(self) -> LanBook: ...
    @property
    def audit(self) -> NodeAudit: ...


class NodeReplica:
    """A node's store as a `Replica`: each member is the node service's own."""

    def __init__(self, node: LanNode) -> None:
        self._node = node

    async def heads_for(self, peer: bytes) -> dict[str, tuple[bytes, ...]]:
        return await self._node.exchange.heads_for(peer)

    async def documents_lacking(self, peer: bytes) -> list[tuple[str, int]]:
        return await self._node.exchange.documents_lacking(peer)

    async def delta_for(
        self, peers: Sequence[bytes], *, only: Collection[str] | None = None, also_held: Mapping[str, Sequence[bytes]] | None = None
    ) -> Delta:
        return await self._node.exchange.delta_for(peers, only=only, also_held=also_held)

    async def document_heads(self, doc_id: str) -> list[bytes]:
        return await self._node.replica.document_heads(doc_id)

    async def import_batches(
        self,
        batches: Sequence[tuple[str, Sequence[SignedChange]]],
        *,
        wholes: Sequence[WholeSegment] = (),
        blobs: Sequence[tuple[bytes, bytes]] = (),
        received_from: str,
        receipt: Receipt | None = None,
    ) -> ImportSummary:
        return await self._node.intake.import_batches(batches, wholes=wholes, blobs=blobs, received_from=received_from, receipt=receipt)

    async def record_peer_heads(self, peer: bytes, heads: Mapping[str, Sequence[bytes]], *, complete: bool = False) -> None:
        await self._node.exchange.record_peer_heads(peer, heads, complete=complete)

    async def note_sent(self, peers: Sequence[bytes], blobs: Sequence[tuple[bytes, str]], heads: Mapping[str, Sequence[bytes]]) -> None:
        await self._node.exchange.note_sent(peers, blobs, heads)

    async def audit_for(self, peer: bytes, *, max_bytes: int) -> AuditCarry:
        return await self._node.audit.feeds.carry_for(peer, max_bytes=max_bytes)

    async def import_audit(self, peer: bytes, carry: AuditCarry) -> int:
        return await self._node.audit.feeds.import_carry(peer, carry)

    def trust_of(self, node_key: bytes) -> certs.Trust:
        return self._node.directory.trust_of(node_key)

    def now(self) -> int:
        return self._node.identity.now()

    @property
    def max_blob_bytes(self) -> int:
        return self._node.blobs.max_blob_bytes
