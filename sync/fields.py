"""Field checks shared by the codecs that decode strict CBOR sent by another node: the bundle
payload and header (sync/bundle.py) and the LAN session messages (sync/messages.py).

Each check returns the value in its checked form or raises the bundle codec's `Malformed` (bytes
that break the format) or `TooLarge` (a size or count over a limit). The bundle codec lets them
through as its own outcomes; the LAN codec translates them at its boundary."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

from appliance import audit, cbor, crypto
from appliance.audit_feed import MAX_ENTRIES_CARRIED, MAX_RESTORES_ACKED, AuditCarry, FeedHead, FeedPart, Restore, TrailAck, check_entry_shape
from appliance.changes import MAX_CHANGE_BYTES, SignedChange
from appliance.errors import InvalidInput
from appliance.model import WholeSegment
from appliance.wholes import MAX_WHOLE_BYTES
from sync.errors import Malformed, TooLarge

MAX_DOC_ID_BYTES = 256
HASH_BYTES = 32
SIGNATURE_BYTES = 64

HEX_KEY = re.compile(r"[0-9a-f]{64}")  # a node key as 64 lowercase hex digits

DocChanges = tuple[tuple[str, tuple[SignedChange, ...]], ...]
Blobs = tuple[tuple[bytes, bytes], ...]


def strict_decode(raw: cbor.Buffer, what: str, max_items: int) -> Any:
    try:
        return cbor.decode(raw, what, max_items=max_items)
    except cbor.CborTooLarge as exc:
        raise TooLarge(one_line(str(exc))) from exc
    except InvalidInput as exc:
        raise Malformed(one_line(str(exc)) or f"{what}: malformed CBOR") from exc


def one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def is_int(value: Any) -> bool:
    return type(value) is int  # not bool


def need(condition: bool, message: str) -> None:
    if not condition:
        raise Malformed(message)


def fixed_bytes(value: Any, size: int, what: str) -> bytes:
    need(isinstance(value, bytes) and len(value) == size, f"{what} must be {size} bytes")
    return bytes(value)


def doc_id(value: Any, what: str) -> str:
    need(isinstance(value, str), f"{what}: a document id is not a text string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        size = 0
    need(0 < size <= MAX_DOC_ID_BYTES, f"{what}: a document id is empty, not UTF-8 or over {MAX_DOC_ID_BYTES} bytes")
    return str(value)


def sorted_hashes(value: Any, what: str) -> tuple[bytes, ...]:
    need(isinstance(value, list), f"{what}: hashes are not a list")
    for item in value:
        fixed_bytes(item, HASH_BYTES, f"{what}: a hash")
    need(all(a < b for a, b in pairwise(value)), f"{what}: hashes are not sorted ascending without duplicates")
    return tuple(value)


def heads(value: Any, what: str) -> dict[str, tuple[bytes, ...]]:
    need(isinstance(value, dict), f"{what} is not a map")
    return {doc_id(doc, what): sorted_hashes(hashes, f"{what} of {doc!r}") for doc, hashes in value.items()}


def doc_changes(value: Any, what: str) -> DocChanges:
    """An array of `[document id, [[change bytes, signature or null], ...]]`, each document once,
    order kept."""
    need(isinstance(value, list), f"{what} is not a list")
    seen: set[str] = set()
    out = []
    for group in value:
        need(isinstance(group, list) and len(group) == 2, f"{what}: an entry is not [document id, changes]")
        doc = doc_id(group[0], what)
        need(doc not in seen, f"{what}: document {doc!r} appears twice")
        seen.add(doc)
        need(isinstance(group[1], list), f"{what} of {doc!r}: changes are not a list")
        changes: list[SignedChange] = []
        append = changes.append
        for entry in group[1]:  # hot: one iteration per change
            if type(entry) is not list or len(entry) != 2:
                raise Malformed(f"{what} of {doc!r}: a change is not [bytes, signature or null]")
            data, signature = entry
            if type(data) is not bytes or not data:
                raise Malformed(f"{what} of {doc!r}: a change is not non-empty bytes")
            if len(data) > MAX_CHANGE_BYTES:
                raise TooLarge(f"{what} of {doc!r}: a change of {len(data):,} bytes exceeds {MAX_CHANGE_BYTES:,}")
            if signature is not None and (type(signature) is not bytes or len(signature) != SIGNATURE_BYTES):
                raise Malformed(f"{what} of {doc!r}: a signature is neither {SIGNATURE_BYTES} bytes nor null")
            append(SignedChange(data, signature))
        out.append((doc, tuple(changes)))
    return tuple(out)


def blob_entries(value: Any, what: str, max_blob_bytes: int) -> Blobs:
    """An array of `[sha256, data]`, each hash once, every blob's data hashing to its key."""
    need(isinstance(value, list), f"{what} blobs is not a list")
    out = []
    seen: set[bytes] = set()
    for entry in value:
        need(isinstance(entry, list) and len(entry) == 2, f"{what} blobs: an entry is not [sha256, data]")
        digest = fixed_bytes(entry[0], HASH_BYTES, f"{what} blobs: a blob key")
        data = entry[1]
        need(isinstance(data, bytes), f"{what} blobs: blob data is not bytes")
        if len(data) > max_blob_bytes:
            raise TooLarge(f"{what} blob {digest.hex()[:12]} is {len(data):,} bytes; the limit is {max_blob_bytes:,}")
        need(digest not in seen, f"{what} blob {digest.hex()[:12]} appears twice")
        seen.add(digest)
        need(crypto.sha256(data) == digest, f"{what} blob {digest.hex()[:12]}: data does not hash to its key")
        out.append((digest, data))
    return tuple(out)


def normal_wholes(wholes: Any) -> tuple[WholeSegment, ...]:
    """Segments carried whole with their signatures sorted by change hash, as they are encoded."""
    return tuple(WholeSegment(whole.doc_id, whole.data, tuple(sorted(whole.signatures))) for whole in wholes)


def wholes_to_wire(wholes: tuple[WholeSegment, ...]) -> list[Any]:
    out = []
    for whole in wholes:
        if not isinstance(whole, WholeSegment):
            raise TypeError(f"wholes holds {type(whole).__name__}, not WholeSegment")
        out.append([whole.doc_id, whole.data, [[change_hash, signature] for change_hash, signature in whole.signatures]])
    return out


def whole_entries(value: Any, what: str, chunked: set[str]) -> tuple[WholeSegment, ...]:
    """An array of `[document id, compacted document, [[change hash, signature], ...]]`, each
    document once and not among `chunked` (the documents carried as changes beside them), the
    signatures sorted by change hash without duplicates. Whether they vouch for the document's
    changes is for the receiver to judge (appliance.wholes), after loading it."""
    need(isinstance(value, list), f"{what} is not a list")
    seen: set[str] = set()
    out = []
    for entry in value:
        need(isinstance(entry, list) and len(entry) == 3, f"{what}: an entry is not [document id, document, signatures]")
        doc = doc_id(entry[0], what)
        need(doc not in seen and doc not in chunked, f"{what}: document {doc!r} appears twice")
        seen.add(doc)
        data, signed = entry[1], entry[2]
        need(type(data) is bytes and len(data) > 0, f"{what} of {doc!r}: the document is not non-empty bytes")
        if len(data) > MAX_WHOLE_BYTES:
            raise TooLarge(f"{what} of {doc!r}: a document of {len(data):,} bytes exceeds {MAX_WHOLE_BYTES:,}")
        need(isinstance(signed, list) and len(signed) > 0, f"{what} of {doc!r}: the signatures are not a non-empty list")
        signatures = []
        for pair in signed:
            need(isinstance(pair, list) and len(pair) == 2, f"{what} of {doc!r}: a signature is not [change hash, signature]")
            signatures.append((fixed_bytes(pair[0], HASH_BYTES, f"{what} of {doc!r}: a change hash"), fixed_bytes(pair[1], SIGNATURE_BYTES, f"{what} of {doc!r}: a signature")))
        need(all(a[0] < b[0] for a, b in pairwise(signatures)), f"{what} of {doc!r}: signatures are not sorted by change hash without duplicates")
        out.append(WholeSegment(doc, bytes(data), tuple(signatures)))
    return tuple(out)


def audit_to_wire(carry: AuditCarry) -> dict[str, Any]:
    """`{"held": {origin hex: [seq, hash, restore or null]}, "feeds": {origin hex: [entry, ...]}}`:
    how far the sender holds each trail (its head) and which branch (its newest restore,
    `[seq, hash, at]`); each entry `[seq, at, actor, action, detail, prev_hash, hash, signature
    or null]`."""
    for origin in list(carry.held) + [part.origin for part in carry.parts]:
        if not isinstance(origin, bytes) or len(origin) != HASH_BYTES:
            raise ValueError("audit: an origin is not a 32-byte node key")
    return {
        "held": {
            origin.hex(): [ack.head.seq, ack.head.hash, [[r.seq, r.hash, r.at] for r in ack.restores]]
            for origin, ack in carry.held.items()
        },
        "feeds": {part.origin.hex(): [[e.seq, e.at, e.actor, e.action, e.detail, e.prev_hash, e.hash, e.signature] for e in part.entries] for part in carry.parts},
    }


def audit_from_wire(obj: Any, what: str) -> AuditCarry:
    """The audit part of a payload or a LAN message, strictly: raises Malformed."""
    need(isinstance(obj, dict) and set(obj) == {"held", "feeds"}, f"{what} must be a map of exactly held and feeds")
    held_wire, feeds_wire = obj["held"], obj["feeds"]
    need(isinstance(held_wire, dict) and isinstance(feeds_wire, dict), f"{what}: held and feeds must be maps")
    held: dict[bytes, TrailAck] = {}
    for origin, ack in held_wire.items():
        need(isinstance(origin, str) and HEX_KEY.fullmatch(origin) is not None, f"{what} held: an origin is not 64 lowercase hex digits")
        need(isinstance(ack, list) and len(ack) == 3, f"{what} held: {origin[:12]} is not [seq, hash, restores]")
        seq, digest, restores = ack
        need(is_int(seq) and 0 <= seq < 2**53, f"{what} held: a sequence number is not an int in range")
        head = FeedHead(seq, fixed_bytes(digest, HASH_BYTES, f"{what} held: a head hash"))
        need(isinstance(restores, list) and len(restores) <= MAX_RESTORES_ACKED, f"{what} held: the restores of {origin[:12]} are not a list of at most {MAX_RESTORES_ACKED}")
        found: list[Restore] = []
        for restore in restores:
            need(isinstance(restore, list) and len(restore) == 3, f"{what} held: a restore of {origin[:12]} is not [seq, hash, at]")
            need(is_int(restore[0]) and 0 < restore[0] <= seq and is_int(restore[2]) and 0 <= restore[2] < 2**63, f"{what} held: a restore's seq or time is out of range")
            need(not found or found[-1].seq < restore[0], f"{what} held: the restores of {origin[:12]} are not in order")
            found.append(Restore(restore[0], fixed_bytes(restore[1], HASH_BYTES, f"{what} held: a restore hash"), restore[2]))
        held[bytes.fromhex(origin)] = TrailAck(head, tuple(found))
    parts, count = [], 0
    for origin, entries in feeds_wire.items():
        need(isinstance(origin, str) and HEX_KEY.fullmatch(origin) is not None, f"{what} feeds: an origin is not 64 lowercase hex digits")
        need(isinstance(entries, list) and len(entries) > 0, f"{what} feeds: the feed of {origin[:12]} is not a non-empty list")
        count += len(entries)
        need(count <= MAX_ENTRIES_CARRIED, f"{what} carries more than {MAX_ENTRIES_CARRIED:,} audit entries")
        parts.append(FeedPart(bytes.fromhex(origin), tuple(_audit_entry(e, f"{what} feed of {origin[:12]}") for e in entries)))
    return AuditCarry(held, tuple(parts))


def _audit_entry(obj: Any, what: str) -> audit.AuditEntry:
    need(isinstance(obj, list) and len(obj) == 8, f"{what}: an entry is not a list of 8 fields")
    seq, at, actor, action, detail, prev_hash, digest, signature = obj
    need(is_int(seq) and is_int(at) and 0 < seq < 2**53 and 0 <= at < 2**63, f"{what}: an entry's seq or time is not an int in range")
    need(isinstance(actor, str) and isinstance(action, str) and isinstance(detail, str), f"{what}: entry {seq}'s actor, action and detail must be text")
    entry = audit.AuditEntry(
        seq,
        at,
        actor,
        action,
        detail,
        fixed_bytes(prev_hash, HASH_BYTES, f"{what}: entry {seq}'s prev_hash"),
        fixed_bytes(digest, HASH_BYTES, f"{what}: entry {seq}'s hash"),
        None if signature is None else fixed_bytes(signature, SIGNATURE_BYTES, f"{what}: entry {seq}'s signature"),
    )
    problem = check_entry_shape(entry)
    need(problem is None, f"{what}: {problem}")
    return entry
