"""The in-memory twin of `sync.ports.Replica`: signed Automerge changes held in memory, every
import verified with `appliance.changes.verify_batch` (format, hash chain, signatures), the
authors judged by a `certs.Directory` resolved from the directory document's own signed
certificates and revocations. Real verification, no store: what a session does with a
replica can be tested in milliseconds, and the twin passes the same acceptance suite as the
node (tests/contracts/).

Simpler than the node where sync does not look: any trusted user may write any channel
document, and every document goes to every trusted peer."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import nacl.signing
from automerge._automerge import Document
from automerge.core import ROOT, ScalarType

from appliance import audit, certs, crypto, documents, graph, segments
from appliance.audit_feed import AuditCarry, Extension, FeedHead, FeedPart, HeldBranch, TrailAck, carried_bytes, extend_feed, resend_after, restores_in, up_to_signed, within
from appliance.changes import ChangeHeader, SignedChange, parse_change, sign_change, verify_batch
from appliance.errors import AuditFeedRefused, ChangeRejected, NodeLocked
from appliance.feed import ChangeFeed, DocumentsChanged, NodeWiped, Origin
from appliance.incoming import group_incoming, import_rank
from appliance.model import BlobDelta, ChannelIntake, Delta, DocumentDelta, ImportSummary, Receipt, WholeSegment
from appliance.wholes import MAX_WHOLE_BYTES, vouch_for_whole


@dataclass(frozen=True)
class Workspace:
    """A workspace made in memory: its key, its first admin, and the directory entries that
    certify them and the nodes (what `memory_workspace` returns)."""

    key: nacl.signing.SigningKey
    admin: nacl.signing.SigningKey
    nodes: tuple[nacl.signing.SigningKey, ...]
    entries: tuple[certs.Certificate | certs.Revocation, ...]

    @property
    def id(self) -> bytes:
        return bytes(self.key.verify_key)


def memory_workspace(nodes: int, *, now_ms: int = 1_700_000_000_000) -> Workspace:
    """A workspace key, an admin user, and `nodes` node keys, all certified."""
    key, admin = crypto.new_signing_key(os.urandom(32)), crypto.new_signing_key(os.urandom(32))
    node_keys = tuple(crypto.new_signing_key(os.urandom(32)) for _ in range(nodes))
    workspace = bytes(key.verify_key)
    entries: list[certs.Certificate | certs.Revocation] = [
        certs.issue_certificate(key, workspace=workspace, kind=certs.SubjectKind.USER, key=bytes(admin.verify_key), name="admin", role=certs.Role.ADMIN, issued_at=now_ms)
    ]
    for index, node in enumerate(node_keys):
        entries.append(certs.issue_certificate(admin, workspace=workspace, kind=certs.SubjectKind.NODE, key=bytes(node.verify_key), name=f"node-{index}", role=certs.Role.NODE, issued_at=now_ms))
    return Workspace(key, admin, node_keys, tuple(entries))


class MemoryReplica:
    """One node's documents in memory. `feed` publishes what changed, as the node's does."""

    def __init__(self, workspace: bytes, node_key: bytes, *, clock: Callable[[], int], max_blob_bytes: int = 16 * 1024 * 1024) -> None:
        self.node_key = node_key
        self.workspace = workspace
        self.feed = ChangeFeed(self._nothing_to_poll)
        self._clock = clock
        self._max_blob_bytes = max_blob_bytes
        self._changes: dict[str, dict[bytes, SignedChange]] = {}  # per document, in causal order
        self._deps: dict[str, dict[bytes, bytes]] = {}  # per document: hash -> its deps joined (appliance.graph)
        self._peer_heads: dict[bytes, dict[str, tuple[bytes, ...]]] = {}
        self._blobs: dict[bytes, tuple[str, bytes]] = {}  # hash -> (document, bytes)
        self._peer_blobs: dict[bytes, dict[bytes, tuple[str, tuple[bytes, ...]] | None]] = {}  # None: held
        self._directory = certs.resolve_directory(workspace, [], [], clock())
        self.locked_reason: str | None = None
        self.trails: dict[bytes, list[audit.AuditEntry]] = {}  # origin -> its trail as held here (this replica writes none of its own)
        self._peer_audit: dict[bytes, dict[bytes, TrailAck]] = {}  # peer -> origin -> what it acknowledged
        self.superseded: dict[bytes, list[audit.AuditEntry]] = {}  # origin -> entries a later restore superseded

    async def _nothing_to_poll(self) -> frozenset[str]:
        return frozenset()  # no other process writes this replica

    # --- Replica ----------------------------------------------------------------------

    async def heads_for(self, peer: bytes) -> dict[str, tuple[bytes, ...]]:
        self._require_unlocked()
        return {doc_id: self._frontier(doc_id) for doc_id in self._allowed([peer])}

    async def documents_lacking(self, peer: bytes) -> list[tuple[str, int]]:
        self._require_unlocked()
        return [(doc_id, len(missing)) for doc_id, missing in self._missing([peer], None, None)]

    async def delta_for(
        self, peers: Sequence[bytes], *, only: Collection[str] | None = None, also_held: Mapping[str, Sequence[bytes]] | None = None
    ) -> Delta:
        self._require_unlocked()
        wanted = self._missing(peers, only, also_held)
        wanted_docs = {doc_id for doc_id, _ in wanted}
        blobs = tuple(sorted(BlobDelta(digest, doc_id, data) for digest, (doc_id, data) in self._blobs.items() if doc_id in wanted_docs and not all(self._holds(p, digest) for p in peers)))
        allowed = [doc_id for doc_id in self._allowed(peers) if only is None or doc_id in only]
        wholes: list[WholeSegment] = []
        chunks: list[DocumentDelta] = []
        for doc_id, changes in wanted:
            # Only segments travel whole, and only to peers that hold none of them.
            lacked = documents.parse_doc_id(doc_id).kind == documents.DocumentKind.SEGMENT and not any(self._held(p, doc_id, also_held) for p in peers)
            whole = whole_segment(doc_id, changes) if lacked else None
            if whole is None:
                chunks.append(DocumentDelta(doc_id, tuple(changes)))
            else:
                wholes.append(whole)
        return Delta(documents=tuple(chunks), blobs=blobs, heads={doc_id: self._frontier(doc_id) for doc_id in allowed}, wholes=tuple(wholes))

    async def document_heads(self, doc_id: str) -> list[bytes]:
        self._require_unlocked()
        return list(self._frontier(doc_id))

    async def import_batches(
        self,
        batches: Sequence[tuple[str, Sequence[SignedChange]]],
        *,
        wholes: Sequence[WholeSegment] = (),
        blobs: Sequence[tuple[bytes, bytes]] = (),
        received_from: str,
        receipt: Receipt | None = None,
    ) -> ImportSummary:
        self._require_unlocked()
        grouped = group_incoming([*batches, *((whole.doc_id, ()) for whole in wholes)], blobs, self._max_blob_bytes)
        # Everything is verified before anything is kept: one bad change rejects the whole import.
        plan: list[tuple[str, list[SignedChange]]] = []
        duplicates = 0
        for whole in wholes:
            known = self._changes.get(whole.doc_id, {})
            admitted = self._admit_whole(whole)
            duplicates += sum(1 for header, _ in admitted if header.hash in known)
            plan.append((whole.doc_id, [change for header, change in admitted if header.hash not in known]))
        for doc_id in grouped:
            if not grouped[doc_id]:
                continue  # a document that came whole alone
            known = {**self._changes.get(doc_id, {}), **{parse_change(c.data).hash: c for d, cs in plan if d == doc_id for c in cs}}
            verified = verify_batch(doc_id, grouped[doc_id], known, self._authorise(doc_id))
            duplicates += len(grouped[doc_id]) - len(verified)
            plan.append((doc_id, [SignedChange(v.data, v.signature) for v in verified]))
        directory = self._directory
        if any(doc_id == documents.DIRECTORY_DOC and changes for doc_id, changes in plan):
            directory = self._resolve([*self._changes.get(documents.DIRECTORY_DOC, {}).values(), *dict(plan)[documents.DIRECTORY_DOC]])
        for doc_id, changes in plan:
            self._keep(doc_id, changes)
        new_blobs = [(digest, data) for digest, data in blobs if digest not in self._blobs]
        for digest, data in new_blobs:
            self._blobs[digest] = (self._referencing(digest), data)
        self._directory = directory
        if receipt is not None and receipt.sender_heads:
            await self.record_peer_heads(receipt.sender, receipt.sender_heads)
        touched = frozenset(doc_id for doc_id, changes in plan if changes)
        channels = tuple(
            ChannelIntake(documents.parse_doc_id(doc_id)[1], "", True, len(changes), len(changes)) for doc_id, changes in plan if changes and doc_id != documents.DIRECTORY_DOC
        )
        summary = ImportSummary(sum(len(c) for _, c in plan), duplicates, 0, channels, len(new_blobs), preview=False)
        if self.node_key in directory.revoked:
            self._wipe("this node was revoked")
            return ImportSummary(summary.changes, duplicates, 0, channels, len(new_blobs), preview=False, wiped=True)
        if touched:
            self._publish(touched, Origin.PEER, received_from)
        return summary

    async def record_peer_heads(self, peer: bytes, heads: Mapping[str, Sequence[bytes]], *, complete: bool = False) -> None:
        self._require_unlocked()
        known = self._peer_heads.setdefault(peer, {})
        forgotten = [doc_id for doc_id in known if doc_id not in heads] if complete else []
        for doc_id in forgotten:
            del known[doc_id]
        if forgotten:
            self._peer_blobs.pop(peer, None)
        for doc_id, hashes in heads.items():
            known[doc_id] = tuple(hashes)
        sent = self._peer_blobs.get(peer, {})
        for digest, pending in list(sent.items()):
            if pending is not None and pending[0] in heads and set(pending[1]) <= self._ancestors(pending[0], heads[pending[0]]):
                sent[digest] = None

    async def note_sent(self, peers: Sequence[bytes], blobs: Sequence[tuple[bytes, str]], heads: Mapping[str, Sequence[bytes]]) -> None:
        self._require_unlocked()
        for peer in peers:
            sent = self._peer_blobs.setdefault(peer, {})
            for digest, doc_id in blobs:
                if sent.get(digest, ()) is not None:  # a confirmed blob stays confirmed
                    sent[digest] = (doc_id, tuple(heads.get(doc_id, ())))

    def _ack(self, trail: Sequence[audit.AuditEntry]) -> TrailAck:
        return TrailAck(FeedHead(len(trail), trail[-1].hash), restores_in(trail)) if trail else TrailAck()

    async def audit_for(self, peer: bytes, *, max_bytes: int) -> AuditCarry:
        """As the node: entries only for a peer that is an admin's home, beyond its acknowledgement."""
        self._require_unlocked()
        held = {origin: self._ack(trail) for origin, trail in self.trails.items() if trail}
        if not any(c.role == "admin" and c.home == peer for c in self._directory.users.values()):
            return AuditCarry({peer: held[peer]} if peer in held else {})
        parts = []
        for origin, trail in sorted(self.trails.items()):
            ack = self._peer_audit.get(peer, {}).get(origin, TrailAck())
            at_ack = trail[ack.head.seq - 1].hash if 0 < ack.head.seq <= len(trail) else None
            after = resend_after(ack, at_ack, restores_in(trail))
            if origin == peer or after is None or len(trail) <= after:
                continue
            if entries := up_to_signed(trail[after:], within(trail[after:], max_bytes)):
                parts.append(FeedPart(origin, entries))
                max_bytes -= carried_bytes(entries)
        return AuditCarry(held, tuple(parts))

    async def import_audit(self, peer: bytes, carry: AuditCarry) -> int:
        self._require_unlocked()
        extended: dict[bytes, Extension] = {}
        for part in carry.parts:
            if part.origin == self.node_key or not part.entries:
                continue
            if part.origin not in self._directory.nodes and part.origin not in self._directory.revoked:
                raise AuditFeedRefused(f"the audit trail of a node the directory never certified is refused (from {peer.hex()[:12]})")
            trail = self.trails.get(part.origin, [])
            branch = HeldBranch(FeedHead(len(trail), trail[-1].hash), dict(enumerate(trail, start=1)), restores_in(trail)) if trail else HeldBranch()
            extension = extend_feed(branch, part)
            if extension.problem is not None and not extension.recoverable:
                raise AuditFeedRefused(f"an audit trail from {peer.hex()[:12]} is refused: {extension.problem}")
            extended[part.origin] = extension  # nothing new, for a part skipped (a gap, a fork)
        for origin, extension in extended.items():
            trail = self.trails.setdefault(origin, [])
            if extension.supersedes is not None:
                self.superseded.setdefault(origin, []).extend(trail[extension.supersedes - 1 :])
                del trail[extension.supersedes - 1 :]
            trail.extend(extension.new)
        self._peer_audit.setdefault(peer, {}).update(carry.held)
        return sum(len(extension.new) for extension in extended.values())

    def trust_of(self, node_key: bytes) -> certs.Trust:
        return self._directory.trust_of(node_key)

    def now(self) -> int:
        return self._clock()

    @property
    def max_blob_bytes(self) -> int:
        return self._max_blob_bytes

    # --- local writes -------------------------------------------------------------------

    @property
    def directory(self) -> certs.Directory:
        return self._directory

    def document_ids(self) -> list[str]:
        return sorted(self._changes, key=import_rank)

    def changes_of(self, doc_id: str) -> list[SignedChange]:
        return list(self._changes.get(doc_id, {}).values())

    def blob(self, digest: bytes) -> bytes | None:
        found = self._blobs.get(digest)
        return None if found is None else found[1]

    def add_directory_entries(self, author: nacl.signing.SigningKey, entries: Iterable[certs.Certificate | certs.Revocation]) -> None:
        """Writes signed certificates and revocations into the directory document, as an admin."""
        listed = list(entries)

        def put(doc: Document) -> None:
            with doc.transaction() as tx:
                for entry in listed:
                    prefix = "cert" if isinstance(entry, certs.Certificate) else "rev"
                    tx.put(ROOT, f"{prefix}:{entry.fingerprint.hex()}", ScalarType.Bytes, entry.encoded)

        self._write(documents.DIRECTORY_DOC, author, put)
        self._directory = self._resolve(self.changes_of(documents.DIRECTORY_DOC))
        self._publish(frozenset([documents.DIRECTORY_DOC]), Origin.LOCAL, None)

    def post(self, doc_id: str, author: nacl.signing.SigningKey, text: str, *, attachment: bytes | None = None) -> None:
        """A message by `author` in a channel document; with an attachment, its blob too."""
        files: list[segments.FileRef] = []
        if attachment is not None:
            digest = crypto.sha256(attachment)
            self._blobs[digest] = (doc_id, attachment)
            files.append(segments.FileRef("file.bin", len(attachment), digest.hex()))
        message_id = f"{self.node_key.hex()[:8]}{len(self._changes.get(doc_id, {})):018d}"  # unique per node

        def put(doc: Document) -> None:
            segments.post_message(doc, message_id=message_id, author=bytes(author.verify_key).hex(), created_at=self._clock(), text=text, root_id=None, files=files, mentions=[])

        self._write(doc_id, author, put)
        self._publish(frozenset([doc_id]), Origin.LOCAL, None)

    def texts(self, doc_id: str) -> list[str]:
        """The texts of a channel document's messages, in message order."""
        doc = self._load(doc_id, b"\x00" * 48)
        return [m.text for m in segments.read_messages(doc, frozenset())]

    # --- inside -------------------------------------------------------------------------

    def _write(self, doc_id: str, author: nacl.signing.SigningKey, mutate: Callable[[Document], None]) -> None:
        self._require_unlocked()
        if self.trust_of(self.node_key) != "trusted" and doc_id != documents.DIRECTORY_DOC:
            raise ChangeRejected("this node is not in the workspace's directory")
        doc = self._load(doc_id, bytes(author.verify_key) + self.node_key[:16])
        mutate(doc)
        change = doc.get_last_local_change()
        if change is None:
            return
        header = parse_change(change.bytes)
        self._keep(doc_id, [SignedChange(change.bytes, sign_change(author, doc_id, header.hash))])

    def _load(self, doc_id: str, actor: bytes) -> Document:
        doc = documents.new_document(actor)
        documents.apply_changes(doc, [c.data for c in self.changes_of(doc_id)])
        return doc

    def _keep(self, doc_id: str, changes: Iterable[SignedChange]) -> None:
        stored, deps = self._changes.setdefault(doc_id, {}), self._deps.setdefault(doc_id, {})
        for change in changes:
            header = parse_change(change.data)
            stored[header.hash] = change
            deps[header.hash] = b"".join(header.deps)

    def _admit_whole(self, whole: WholeSegment) -> list[tuple[ChangeHeader, SignedChange]]:
        """A whole segment's changes, in the document's causal order, each with its author's
        signature where it is one the sender signed; ChangeRejected unless the admission rule
        (appliance.wholes) vouches for every one of them."""
        if len(whole.data) > MAX_WHOLE_BYTES:
            raise ChangeRejected(f"{whole.doc_id}: a segment carried whole of {len(whole.data):,} bytes exceeds {MAX_WHOLE_BYTES:,}")
        try:
            listed = [change.bytes for change in documents.load_document(whole.data, bytes(48)).get_changes([])]
        except documents.DocumentError as exc:
            raise ChangeRejected(f"{whole.doc_id}: {exc}") from exc
        headers = [parse_change(data) for data in listed]
        signatures = dict(whole.signatures)
        vouch_for_whole(whole.doc_id, headers, signatures, self._authorise(whole.doc_id))
        return [(header, SignedChange(data, signatures.get(header.hash))) for header, data in zip(headers, listed, strict=True)]

    def _held(self, peer: bytes, doc_id: str, also_held: Mapping[str, Sequence[bytes]] | None) -> bool:
        """Whether `peer` acknowledged holding any of `doc_id` (or `also_held` says it does)."""
        return bool(self._peer_heads.get(peer, {}).get(doc_id) or (also_held or {}).get(doc_id))

    def _referencing(self, digest: bytes) -> str:
        """The document whose messages reference a blob ("" if none does yet)."""
        wanted = digest.hex()
        for doc_id in self.document_ids():
            if doc_id != documents.DIRECTORY_DOC and any(f.hash == wanted for m in segments.read_messages(self._load(doc_id, bytes(48)), frozenset()) for f in m.files):
                return doc_id
        return ""

    def _authorise(self, doc_id: str) -> Callable[[bytes], str | None]:
        def authorise(author: bytes) -> str | None:
            if doc_id == documents.DIRECTORY_DOC:
                return None if author == self.workspace or self._directory.is_admin(author) or not self._directory.users else "only admins write the directory"
            return None if author in self._directory.users else f"author {author.hex()[:12]} is not a user of this workspace"

        return authorise

    def _resolve(self, changes: Sequence[SignedChange]) -> certs.Directory:
        doc = documents.new_document(b"\x00" * 48)
        documents.apply_changes(doc, [c.data for c in changes])
        found_certs: list[certs.Certificate] = []
        found_revs: list[certs.Revocation] = []
        for key, data in documents.directory_entries(doc):
            if key.startswith("cert:"):
                found_certs.append(certs.decode_certificate(data))
            else:
                found_revs.append(certs.decode_revocation(data))
        return certs.resolve_directory(self.workspace, found_certs, found_revs, self._clock())

    def _allowed(self, peers: Sequence[bytes]) -> list[str]:
        """The documents all of `peers` may receive: a revoked node only the directory."""
        revoked = any(p in self._directory.revoked for p in peers)
        return [doc_id for doc_id in self.document_ids() if doc_id == documents.DIRECTORY_DOC or not revoked]

    def _missing(self, peers: Sequence[bytes], only: Collection[str] | None, also_held: Mapping[str, Sequence[bytes]] | None) -> list[tuple[str, list[SignedChange]]]:
        wanted: list[tuple[str, list[SignedChange]]] = []
        for doc_id in self._allowed(peers):
            if only is not None and doc_id not in only:
                continue
            extra = list((also_held or {}).get(doc_id, ()))
            held = [self._ancestors(doc_id, [*self._peer_heads.get(p, {}).get(doc_id, ()), *extra]) for p in peers]
            common = set.intersection(*held) if held else set()
            missing = [change for digest, change in self._changes[doc_id].items() if digest not in common]
            if missing:
                wanted.append((doc_id, missing))
        return wanted

    def _holds(self, peer: bytes, digest: bytes) -> bool:
        sent = self._peer_blobs.get(peer, {})
        return digest in sent and sent[digest] is None

    def _ancestors(self, doc_id: str, heads: Iterable[bytes]) -> set[bytes]:
        return graph.ancestors(self._deps.get(doc_id, {}), heads)

    def _frontier(self, doc_id: str) -> tuple[bytes, ...]:
        return graph.frontier(self._deps.get(doc_id, {}))

    def _publish(self, doc_ids: frozenset[str], origin: Origin, peer: str | None) -> None:
        self.feed.publish(DocumentsChanged(doc_ids, origin, peer))

    def _wipe(self, reason: str) -> None:
        self._changes.clear()
        self._deps.clear()
        self._peer_heads.clear()
        self._blobs.clear()
        self.locked_reason = reason
        self.feed.publish(NodeWiped(reason))

    def _require_unlocked(self) -> None:
        if self.locked_reason is not None:
            raise NodeLocked(self.locked_reason)


def whole_segment(doc_id: str, changes: Sequence[SignedChange]) -> WholeSegment | None:
    """`changes` (a whole document, in causal order) as one compacted document with one signature
    per actor, over its newest change; None where that change carries no signature of its own
    or the document is over MAX_WHOLE_BYTES compacted (it then travels as change chunks)."""
    newest: dict[bytes, tuple[ChangeHeader, bytes | None]] = {}
    for change in changes:
        header = parse_change(change.data)
        if header.actor not in newest or newest[header.actor][0].seq < header.seq:
            newest[header.actor] = (header, change.signature)
    signatures = []
    for header, signature in newest.values():
        if signature is None:
            return None
        signatures.append((header.hash, signature))
    doc = documents.new_document(bytes(48))
    documents.apply_changes(doc, [change.data for change in changes])
    data = doc.save()
    return None if len(data) > MAX_WHOLE_BYTES else WholeSegment(doc_id, data, tuple(sorted(signatures)))
