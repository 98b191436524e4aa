"""The messages two nodes exchange over an authenticated LAN session, one per frame
(sync/wire.py seals and opens the frames): their canonical CBOR, the reader's checks and limits,
and the exact sizes a sender packs by. docs/lan-protocol.md section 8 is the specification.

Pure: bytes in, bytes out. Whatever a peer sends raises MessageMalformed (third-party
exceptions are translated at this boundary); a message no reader would accept raises ValueError
or TypeError when encoded."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance import cbor
from appliance.audit_feed import AuditCarry
from appliance.changes import SignedChange
from appliance.model import WholeSegment
from sync import fields
from sync.errors import Malformed, MessageMalformed, TooLarge
from sync.wire import MAX_MESSAGE_BYTES

MAX_MESSAGE_ITEMS = 524_288  # CBOR data items in one message: bounds decoding memory (~100 bytes each)
MAX_NONCE = 2**64 - 1
MAX_REASON_CHARS = 300
HASH_BYTES = fields.HASH_BYTES

Hashes = Mapping[str, tuple[bytes, ...]]


@dataclass(frozen=True)
class Heads:
    """The sender's heads per document. `complete`: these are all the documents the sender may
    share with the peer (sent first, and to resynchronise); otherwise an acknowledgement of just
    these documents. Hash lists are normalised to sorted, de-duplicated tuples."""

    heads: Hashes
    complete: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _normal_heads(self.heads))


@dataclass(frozen=True)
class Changes:
    """Changes per document in the sender's order (the directory first), each change with its
    author's signature or None (vouched for by a later change of the same actor in the same
    document); segments carried whole (newest first: a compacted document and one signature per
    actor, appliance.wholes); blobs as (SHA-256, data); and the sender's heads of exactly the
    documents in `docs` and `wholes` after these. Lists are normalised to tuples, hash lists
    sorted and de-duplicated."""

    docs: fields.DocChanges = ()
    blobs: fields.Blobs = ()
    heads: Hashes = field(default_factory=dict)
    wholes: tuple[WholeSegment, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "docs", tuple((doc_id, tuple(changes)) for doc_id, changes in self.docs))
        object.__setattr__(self, "wholes", fields.normal_wholes(self.wholes))
        object.__setattr__(self, "blobs", tuple((digest, data) for digest, data in self.blobs))
        object.__setattr__(self, "heads", _normal_heads(self.heads))


@dataclass(frozen=True)
class Ping:
    nonce: int  # 0 .. 2^64 - 1, echoed by the Pong


@dataclass(frozen=True)
class Pong:
    nonce: int


@dataclass(frozen=True)
class Bye:
    reason: str  # at most 300 characters; shown to operators as plain text


@dataclass(frozen=True)
class BlobPart:
    """A piece of a blob too large for one Changes message, sent in order: `offset` is where
    `data` starts in the blob of `size` bytes whose SHA-256 is `digest`. The receiver checks the
    size against its own attachment limit before keeping anything, and the digest at the end."""

    digest: bytes
    size: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Trails:
    """Audit trails (appliance/audit_feed.py): how far the sender holds each origin's trail (an
    acknowledgement), and entries the receiver lacks - sent when a session starts, then now and
    then, only to a peer that serves an admin (docs/lan-protocol.md section 6.7)."""

    carry: AuditCarry


Message = Heads | Changes | BlobPart | Ping | Pong | Bye | Trails

_FIELDS: dict[str, frozenset[str]] = {
    "heads": frozenset({"t", "heads", "complete"}),
    "changes": frozenset({"t", "docs", "wholes", "blobs", "heads"}),
    "ping": frozenset({"t", "nonce"}),
    "pong": frozenset({"t", "nonce"}),
    "bye": frozenset({"t", "reason"}),
    "blob": frozenset({"t", "digest", "size", "offset", "data"}),
    "audit": frozenset({"t", "held", "feeds"}),
}
MAX_BLOB_SIZE = 2**40  # a sanity bound on the declared size; the receiver's attachment limit is far lower


def _normal_heads(heads: Mapping[str, Collection[bytes]]) -> dict[str, tuple[bytes, ...]]:
    return {doc_id: tuple(sorted(set(hashes))) for doc_id, hashes in heads.items()}


def encode_message(message: Message) -> bytes:
    """A message's canonical CBOR: the plaintext of one frame. Raises ValueError for a message no
    reader would accept (checked by the reader's own rules), including one over MAX_MESSAGE_BYTES
    or MAX_MESSAGE_ITEMS: split it (see `change_entry_bytes`)."""
    wire = _to_wire(message)
    try:
        _from_wire(wire)
    except (Malformed, TooLarge) as exc:
        raise ValueError(str(exc)) from exc
    raw = cbor.encode(wire)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ValueError(f"the message is {len(raw):,} bytes; one frame carries at most {MAX_MESSAGE_BYTES:,}")
    try:
        cbor.scan(raw, "the message", MAX_MESSAGE_ITEMS)
    except cbor.CborTooLarge as exc:
        raise ValueError(str(exc)) from exc
    return raw


def decode_message(raw: cbor.Buffer) -> Message:
    """The message a frame carries. Raises MessageMalformed for anything but the canonical
    encoding of a valid message."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageMalformed(f"a message of {len(raw):,} bytes exceeds {MAX_MESSAGE_BYTES:,}")
    try:
        return _from_wire(fields.strict_decode(raw, "LAN message", MAX_MESSAGE_ITEMS))
    except (Malformed, TooLarge) as exc:
        raise MessageMalformed(str(exc)) from exc


def _to_wire(message: Message) -> dict[str, Any]:
    match message:
        case Heads(heads=heads, complete=complete):
            if type(complete) is not bool:
                raise TypeError(f"Heads.complete must be a bool, not {type(complete).__name__}")
            return {"t": "heads", "heads": _heads_to_wire(heads), "complete": int(complete)}
        case Changes(docs=docs, blobs=blobs, heads=heads, wholes=wholes):
            wire_docs = []
            for doc_id, changes in docs:
                for change in changes:
                    if not isinstance(change, SignedChange):
                        raise TypeError(f"Changes: {doc_id!r} holds {type(change).__name__}, not SignedChange")
                wire_docs.append([doc_id, [[change.data, change.signature] for change in changes]])
            return {
                "t": "changes",
                "docs": wire_docs,
                "wholes": fields.wholes_to_wire(wholes),
                "blobs": [[digest, data] for digest, data in blobs],
                "heads": _heads_to_wire(heads),
            }
        case BlobPart(digest=digest, size=size, offset=offset, data=data):
            return {"t": "blob", "digest": digest, "size": size, "offset": offset, "data": data}
        case Ping(nonce=nonce):
            return {"t": "ping", "nonce": nonce}
        case Pong(nonce=nonce):
            return {"t": "pong", "nonce": nonce}
        case Bye(reason=reason):
            return {"t": "bye", "reason": reason}
        case Trails(carry=carry):
            return {"t": "audit", **fields.audit_to_wire(carry)}
    raise TypeError(f"not a LAN message: {type(message).__name__}")


def _heads_to_wire(heads: Hashes) -> dict[str, list[bytes]]:
    return {doc_id: list(hashes) for doc_id, hashes in heads.items()}


def _from_wire(obj: Any) -> Message:
    fields.need(isinstance(obj, dict), "a LAN message is not a CBOR map")
    kind = obj.get("t")
    fields.need(isinstance(kind, str), "a LAN message has no text field t giving its type")
    fields.need(kind in _FIELDS, f"unknown LAN message type {kind[:40]!r}")
    expected = _FIELDS[kind]
    fields.need(set(obj) == expected, f"a {kind} message must have exactly the fields {sorted(expected)}")
    if kind == "heads":
        complete = obj["complete"]
        fields.need(fields.is_int(complete) and complete in (0, 1), "heads message field complete must be 0 or 1")
        return Heads(fields.heads(obj["heads"], "heads message heads"), complete == 1)
    if kind == "changes":
        docs = fields.doc_changes(obj["docs"], "changes message docs")
        wholes = fields.whole_entries(obj["wholes"], "changes message wholes", {doc_id for doc_id, _ in docs})
        blobs = fields.blob_entries(obj["blobs"], "changes message", MAX_MESSAGE_BYTES)
        heads = fields.heads(obj["heads"], "changes message heads")
        carried = {doc_id for doc_id, _ in docs} | {whole.doc_id for whole in wholes}
        fields.need(set(heads) == carried, "a changes message must give heads for exactly the documents it carries")
        return Changes(docs, blobs, heads, wholes)
    if kind == "blob":
        size, offset, data = obj["size"], obj["offset"], obj["data"]
        fields.need(fields.is_int(size) and 0 < size <= MAX_BLOB_SIZE, "blob message size must be an int in 1..2^40")
        fields.need(isinstance(data, bytes) and len(data) > 0, "blob message data must be non-empty bytes")
        fields.need(fields.is_int(offset) and 0 <= offset and offset + len(data) <= size, "blob message offset and data must lie within its size")
        return BlobPart(fields.fixed_bytes(obj["digest"], HASH_BYTES, "blob message digest"), size, offset, bytes(data))
    if kind == "audit":
        return Trails(fields.audit_from_wire({"held": obj["held"], "feeds": obj["feeds"]}, "audit message"))
    if kind == "bye":
        reason = obj["reason"]
        fields.need(
            isinstance(reason, str) and len(reason) <= MAX_REASON_CHARS,
            f"bye message reason must be text of at most {MAX_REASON_CHARS} characters",
        )
        return Bye(reason)
    nonce = obj["nonce"]
    fields.need(fields.is_int(nonce) and 0 <= nonce <= MAX_NONCE, f"{kind} message nonce must be an int in 0..2^64-1")
    return Ping(nonce) if kind == "ping" else Pong(nonce)


# --- sizes, for a sender that packs changes into frames --------------------------------------

_MAX_HEAD_BYTES = 9  # a CBOR head with an 8-byte argument


def _head_bytes(argument: int) -> int:
    """The size of a CBOR head (major type and length or value) for `argument`."""
    return 1 if argument < 24 else 2 if argument < 2**8 else 3 if argument < 2**16 else 5 if argument < 2**32 else 9


# The Changes map with its keys, the type and the heads of its four containers at their largest.
CHANGES_OVERHEAD_BYTES = len(cbor.encode({"t": "changes", "docs": [], "wholes": [], "blobs": [], "heads": {}})) + 4 * (_MAX_HEAD_BYTES - 1)


def doc_entry_bytes(doc_id: str, heads: Collection[bytes]) -> int:
    """At most what one document adds to a Changes message besides its changes: its entry in
    `docs` (with the changes array's head at its largest) and its entry in `heads`."""
    size = len(doc_id.encode("utf-8"))
    text = _head_bytes(size) + size
    return (1 + text + _MAX_HEAD_BYTES) + (text + _head_bytes(len(heads)) + len(heads) * (_head_bytes(HASH_BYTES) + HASH_BYTES))


def change_entry_bytes(change: SignedChange) -> int:
    """Exactly what one change adds to its document's entry in a Changes message."""
    signature = 1 if change.signature is None else _head_bytes(fields.SIGNATURE_BYTES) + fields.SIGNATURE_BYTES
    return 1 + _head_bytes(len(change.data)) + len(change.data) + signature


def whole_entry_bytes(whole: WholeSegment, heads: Collection[bytes]) -> int:
    """Exactly what one segment carried whole adds to a Changes message: its entry in `wholes`
    and its entry in `heads`."""
    size = len(whole.doc_id.encode("utf-8"))
    text = _head_bytes(size) + size
    signed = len(whole.signatures) * (1 + _head_bytes(HASH_BYTES) + HASH_BYTES + _head_bytes(fields.SIGNATURE_BYTES) + fields.SIGNATURE_BYTES)
    entry = 1 + text + _head_bytes(len(whole.data)) + len(whole.data) + _head_bytes(len(whole.signatures)) + signed
    return entry + text + _head_bytes(len(heads)) + len(heads) * (_head_bytes(HASH_BYTES) + HASH_BYTES)


def blob_entry_bytes(data: bytes) -> int:
    """Exactly what one blob adds to a Changes message."""
    return 1 + _head_bytes(HASH_BYTES) + HASH_BYTES + _head_bytes(len(data)) + len(data)
