"""Signed Automerge changes: parse a change chunk's header, hash it, sign it, and verify
batches of changes from elsewhere before they touch a document.

Pure functions of bytes. The header is parsed here rather than by the library because a
receiver must know a change's actor, sequence number and dependencies - and that its hash
really covers them - before the change is handed to Automerge."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import nacl.signing

from appliance import crypto
from appliance.errors import ApplianceError, ChangeRejected, MissingDependencies

MAGIC = bytes.fromhex("856f4a83")
CHUNK_CHANGE = 1
CHUNK_COMPRESSED_CHANGE = 2
HASH_BYTES = 32
AUTHOR_KEY_BYTES = 32
ACTOR_SUFFIX_BYTES = 16
ACTOR_BYTES = AUTHOR_KEY_BYTES + ACTOR_SUFFIX_BYTES
MAX_CHANGE_BYTES = 4 * 1024 * 1024  # one change as stored or sent
MAX_INFLATED_CHANGE_BYTES = 1024 * 1024  # one change after inflation (a 40,000-character message is ~160 KB)
MAX_BATCH_INFLATION = 64 * 1024 * 1024  # bytes inflation may add over a whole batch: caps decompression bombs
SIGNATURE_DOMAIN = b"rallypoint/change/v1\x00"


class ChangeHeader(NamedTuple):
    """A change's identity and place in its document's graph. A named tuple: an import of a
    hundred thousand changes builds as many, at a third of a frozen dataclass's cost."""

    hash: bytes
    actor: bytes
    seq: int
    deps: tuple[bytes, ...]

    @property
    def author(self) -> bytes:
        return self.actor[:AUTHOR_KEY_BYTES]


@dataclass(frozen=True)
class SignedChange:
    """A change as it travels: the bytes Automerge produced and, when it has one, its author's
    signature. A change without a signature must be vouched for by a later change of the
    same actor in the same batch."""

    data: bytes
    signature: bytes | None


@dataclass(frozen=True)
class VerifiedChange:
    header: ChangeHeader
    data: bytes  # the uncompressed chunk: exactly the bytes the hash and signature cover
    signature: bytes | None  # only signatures that were checked are kept
    vouched_by: bytes  # hash of the change whose verified signature covers this one


class MalformedChange(ApplianceError):
    """Bytes that are not an Automerge change chunk."""


def _uleb(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise MalformedChange("truncated or oversized integer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def uleb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def uncompressed_chunk(data: bytes) -> bytes:
    """The change chunk with its body inflated (what `Change.raw_bytes` returns)."""
    if len(data) < 10 or data[:4] != MAGIC:
        raise MalformedChange("not an Automerge chunk (bad magic)")
    chunk_type = data[8]
    length, body_start = _uleb(data, 9)
    if body_start + length != len(data):
        raise MalformedChange("chunk length does not match its bytes")
    if chunk_type == CHUNK_CHANGE:
        return data
    if chunk_type != CHUNK_COMPRESSED_CHANGE:
        raise MalformedChange(f"unexpected chunk type {chunk_type}")
    inflater = zlib.decompressobj(wbits=-15)
    try:
        body = inflater.decompress(data[body_start:], MAX_INFLATED_CHANGE_BYTES + 1)
    except zlib.error as exc:
        raise MalformedChange(f"corrupt compressed change: {exc}") from exc
    if len(body) > MAX_INFLATED_CHANGE_BYTES or inflater.unconsumed_tail or not inflater.eof:
        raise MalformedChange("compressed change too large or incomplete")
    header = data[:8] + bytes([CHUNK_CHANGE]) + uleb128(len(body))
    return header + body


def parse_change(data: bytes) -> ChangeHeader:
    return _parse_raw(uncompressed_chunk(data))


def _parse_raw(raw: bytes) -> ChangeHeader:
    digest = crypto.sha256(raw[8:])
    if digest[:4] != raw[4:8]:
        raise MalformedChange("checksum does not match (tampered or corrupt change)")
    _, pos = _uleb(raw, 9)
    n_deps, pos = _uleb(raw, pos)
    if n_deps > 10_000:
        raise MalformedChange("too many dependencies")
    deps = []
    for _ in range(n_deps):
        if pos + HASH_BYTES > len(raw):
            raise MalformedChange("truncated dependency list")
        deps.append(raw[pos : pos + HASH_BYTES])
        pos += HASH_BYTES
    actor_len, pos = _uleb(raw, pos)
    if pos + actor_len > len(raw):
        raise MalformedChange("truncated actor id")
    actor = raw[pos : pos + actor_len]
    pos += actor_len
    seq, pos = _uleb(raw, pos)
    return ChangeHeader(hash=digest, actor=actor, seq=seq, deps=tuple(deps))


def signing_payload(doc_id: str, change_hash: bytes) -> bytes:
    """Binding the document id stops a first change (which has no deps) being replayed
    into another channel."""
    return SIGNATURE_DOMAIN + doc_id.encode() + b"\x00" + change_hash


def sign_change(key: nacl.signing.SigningKey, doc_id: str, change_hash: bytes) -> bytes:
    return crypto.sign(key, signing_payload(doc_id, change_hash))


Authorise = Callable[[bytes], str | None]
"""Given an author key, None when that author may write this document, else the reason not."""


def check_authors(doc_id: str, authors: Iterable[bytes], authorise: Authorise) -> None:
    """ChangeRejected for the first of `authors` (in key order) that `authorise` refuses: what
    a worker that verified a segment's changes leaves to the node, which holds the directory."""
    for author in sorted(authors):
        refusal = authorise(author)
        if refusal is not None:
            raise ChangeRejected(f"{doc_id}: {refusal}")


def verify_batch(
    doc_id: str,
    incoming: Iterable[SignedChange],
    known: Collection[bytes],
    authorise: Authorise,
) -> list[VerifiedChange]:
    """Checks a batch for one document and returns the changes that are new, in an order
    Automerge can apply. Raises ChangeRejected - and nothing is returned - if any change is
    malformed, has a dependency neither known nor in the batch, is by an author the
    directory does not allow, or is not covered by a valid signature.

    One Ed25519 verification per actor run: a change's hash covers its dependencies' hashes,
    so a valid signature on an actor's newest change vouches for every earlier change of that
    actor it (transitively) depends on."""
    parsed: dict[bytes, tuple[ChangeHeader, SignedChange]] = {}
    inflation = 0
    for change in incoming:
        try:
            # Deflate has slack (padding bits), so distinct compressed bytes can inflate to one
            # change: from here on only the canonical, uncompressed chunk is kept.
            raw = uncompressed_chunk(change.data)
            header = _parse_raw(raw)
        except MalformedChange as exc:
            raise ChangeRejected(f"{doc_id}: {exc}") from exc
        inflation += len(raw) - len(change.data)
        if inflation > MAX_BATCH_INFLATION:
            raise ChangeRejected(f"{doc_id}: compressed changes inflate by more than {MAX_BATCH_INFLATION:,} bytes")
        if header.hash in known or header.hash in parsed:
            continue
        if len(header.actor) != ACTOR_BYTES:
            raise ChangeRejected(f"{doc_id}: change by an actor id that names no author")
        parsed[header.hash] = (header, SignedChange(raw, change.signature))

    for header, _ in parsed.values():
        for dep in header.deps:
            if dep not in known and dep not in parsed:
                raise MissingDependencies(f"{doc_id}: change {header.hash.hex()[:12]} depends on a change this node lacks")

    by_actor: dict[bytes, list[ChangeHeader]] = {}
    seen_seq: set[tuple[bytes, int]] = set()
    for header, _ in parsed.values():
        if (header.actor, header.seq) in seen_seq:
            raise ChangeRejected(f"{doc_id}: two different changes claim the same actor and sequence number")
        seen_seq.add((header.actor, header.seq))
        by_actor.setdefault(header.actor, []).append(header)

    authorised: dict[bytes, None] = {}
    vouched: dict[bytes, bytes] = {}
    kept_signature: dict[bytes, bytes] = {}
    for actor, headers in by_actor.items():
        author = actor[:AUTHOR_KEY_BYTES]
        if author not in authorised:
            reason = authorise(author)
            if reason is not None:
                raise ChangeRejected(f"{doc_id}: {reason}")
            authorised[author] = None
        for header in sorted(headers, key=lambda h: h.seq, reverse=True):
            if header.hash in vouched:
                continue
            signature = parsed[header.hash][1].signature
            if signature is None or not crypto.verify(author, signing_payload(doc_id, header.hash), signature):
                raise ChangeRejected(f"{doc_id}: change {header.hash.hex()[:12]} is not signed by its author")
            kept_signature[header.hash] = signature
            # Walk the ancestry inside the batch; only new changes can lie on a path to a new change.
            stack, visited = [header.hash], set()
            while stack:
                current = stack.pop()
                if current in visited or current in vouched or current not in parsed:
                    continue
                visited.add(current)
                if parsed[current][0].actor == actor:
                    vouched[current] = header.hash
                stack.extend(parsed[current][0].deps)

    return [
        VerifiedChange(header=h, data=c.data, signature=kept_signature.get(h.hash), vouched_by=vouched[h.hash])
        for h, c in _causal_order(parsed)
    ]


def _causal_order(parsed: dict[bytes, tuple[ChangeHeader, SignedChange]]) -> list[tuple[ChangeHeader, SignedChange]]:
    ordered: list[tuple[ChangeHeader, SignedChange]] = []
    placed: set[bytes] = set()
    for start in parsed:
        stack = [(start, False)]
        while stack:
            current, expanded = stack.pop()
            if current in placed or current not in parsed:
                continue
            if expanded:
                placed.add(current)
                ordered.append(parsed[current])
                continue
            stack.append((current, True))
            stack.extend((dep, False) for dep in parsed[current][0].deps if dep not in placed)
    return ordered


def relay_units(changes: Sequence[SignedChange]) -> list[list[SignedChange]]:
    """Cuts a causally ordered list (as `Node.changes_for` gives it) into the smallest runs a
    sender may put in separate batches: a change stored without a signature (vouched for by a
    later change of its actor) stays with the changes up to that actor's next signed one, or
    no receiver could ever verify it."""
    units: list[list[SignedChange]] = []
    pending: list[SignedChange] = []
    open_actors: set[bytes] = set()
    for change in changes:
        pending.append(change)
        if change.signature is None or open_actors:
            actor = parse_change(change.data).actor
            if change.signature is None:
                open_actors.add(actor)
            else:
                open_actors.discard(actor)
        if not open_actors:
            units.append(pending)
            pending = []
    if pending:
        units.append(pending)
    return units
