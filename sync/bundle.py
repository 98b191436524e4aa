"""The bundle codec: a signed, encrypted, self-contained file that carries changes, blobs and
acknowledgements from one node to one or more others. docs/bundle-format.md is the
specification; this module follows it to the byte. It writes format version 3, whose only
clear text is what a recipient needs to find its key (anonymous recipient stanzas) and whose
payload is compressed (sync/bundle_payload.py) - or 4, the same with audit trails in the
payload, for a bundle that carries some - and reads versions 4, 3, 2 (the same framing, the
payload uncompressed) and 1 (sync/bundle_v1.py: an older release's format, with a clear header).

Pure functions of bytes, keys, randomness and time: no file or socket I/O, no clock, no
system randomness. `build_bundle` takes 32 bytes of randomness and derives everything random
from them (and from the inputs, so reusing randomness by mistake never reuses a key stream);
`open_bundle` checks, in a fixed order, everything a hostile file could get wrong and raises one
distinct `BundleRejected` subclass per outcome. Every third-party exception is translated at
this boundary."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.signing

from appliance import cbor, crypto
from appliance.certs import Trust
from appliance.ids import key_id
from sync import bundle_payload, fields, sealing
from sync.bundle_payload import BundleContent as BundleContent
from sync.bundle_payload import Limits as Limits
from sync.errors import (
    BundleRejected,
    Malformed,
    NotAddressedToMe,
    RevokedSender,
    Tampered,
    TooLarge,
    Truncated,
    UnknownSender,
    UnsupportedVersion,
)
from sync.sealing import CHUNK_OVERHEAD as CHUNK_OVERHEAD
from sync.sealing import STREAM_HEADER_BYTES as STREAM_HEADER_BYTES
from sync.sealing import TAG_FINAL as TAG_FINAL
from sync.sealing import TAG_MESSAGE as TAG_MESSAGE

Buffer = cbor.Buffer

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

MAGIC = b"\x89RPBNDL\n"
FORMAT_VERSION = 3  # 4 for a bundle that carries audit trails (bundle_payload.version_for)
READABLE_VERSIONS = (1, 2, 3, 4)
FRAMED_VERSIONS = (2, 3, 4)  # anonymous stanzas and an encrypted inner header: this module's framing
PREFIX_BYTES = len(MAGIC) + 1 + 4 + 2  # magic, version, chunk size, stanza count
LENGTH_BYTES = 8  # the ciphertext length field
SIGNATURE_BYTES = fields.SIGNATURE_BYTES
SIGNATURE_DOMAIN = b"rallypoint/bundle/v2\x00"  # the same in format 3: the signed envelope names the version
INNER_LENGTH_BYTES = 4 + 8  # the inner header's length (u32) and the payload's (u64)

MAX_HEADER_BYTES = 256 * KiB
MAX_HEADER_ITEMS = 65_536
MAX_RECIPIENTS = 1024  # recipient stanzas
MAX_DOC_ID_BYTES = fields.MAX_DOC_ID_BYTES
MAX_CREATED_AT = 2**63 - 1
MIN_CHUNK_SIZE = 1 * KiB
MAX_CHUNK_SIZE = 1 * MiB
DEFAULT_CHUNK_SIZE = 64 * KiB

ID_BYTES = 16
KEY_BYTES = 32
HASH_BYTES = fields.HASH_BYTES
CONTENT_KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
WRAPPED_KEY_BYTES = 32 + 16 + CONTENT_KEY_BYTES  # sealed box: ephemeral key, MAC, content key
STANZA_BYTES = WRAPPED_KEY_BYTES  # a recipient stanza is a sealed content key and nothing else
ENVELOPE_MAX_BYTES = PREFIX_BYTES + MAX_RECIPIENTS * STANZA_BYTES  # what `addressed_to` needs at most
RANDOMNESS_BYTES = 32
DEFAULT_LIMITS = Limits()
DEFAULT_MAX_BUNDLE_BYTES = DEFAULT_LIMITS.max_bundle_bytes

MIN_CIPHERTEXT_BYTES = STREAM_HEADER_BYTES + CHUNK_OVERHEAD + 1

HEADER_FIELDS = frozenset({"v", "id", "workspace", "sender", "incarnation", "created_at", "heads", "recipients"})  # the inner header
INCARNATION_BYTES = 16  # the inner header field "incarnation" (appliance.identity)
DERIVE_CONTEXT = "rallypoint/bundle/v2/derive"  # unchanged in format 3

SenderStatus = Callable[[bytes], Trust]
"""Given a sender's node key, its trust by the caller's directory (`certs.Directory.trust_of`)."""


Hashes = Mapping[str, tuple[bytes, ...]]


@dataclass(frozen=True)
class BundleHeader:
    """Who sent a bundle, when, for whom, and the sender's heads. In versions 2 and 3 this is
    the encrypted inner header, known only to recipients; in version 1 it was clear text."""

    version: int
    id: bytes
    workspace: bytes
    sender: bytes
    created_at: int  # milliseconds since the Unix epoch, as the sender's clock said
    heads: Hashes  # the sender's heads per document: an implicit acknowledgement
    recipients: tuple[bytes, ...]  # node keys, ascending
    chunk_size: int
    raw: bytes  # the exact header bytes the signature covers
    ciphertext_length: int
    incarnation: bytes | None = None  # the sender's machine (appliance.identity); None in format 1, which predates it


@dataclass(frozen=True)
class Envelope:
    """What anyone holding the file can know without a key: the format version, the file's
    size, how many recipient stanzas it has, and the stream's framing. Not authenticated."""

    version: int
    size: int
    stanzas: int
    chunk_size: int
    ciphertext_length: int


# --- building ---------------------------------------------------------------------------


def build_bundle(
    content: BundleContent,
    *,
    sender_key: nacl.signing.SigningKey,
    workspace: bytes,
    recipients: Sequence[bytes],
    heads: Mapping[str, Sequence[bytes]],
    created_at: int,
    incarnation: bytes,
    randomness: bytes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """The bundle's bytes (format version 3, or 4 when it carries audit trails). `randomness` is 32 bytes that MUST come fresh
    from a CSPRNG for each bundle (`appliance.crypto.random_bytes(32)`); the same inputs and
    randomness give the same bytes. Raises ValueError for inputs no reader would accept (bad
    lengths, duplicate keys or documents, a blob whose key is not its SHA-256, no recipients, ...)."""
    return _seal_plaintext(
        bundle_payload.encode_payload(content, bundle_payload.version_for(content)),
        sender_key=sender_key,
        workspace=workspace,
        recipients=recipients,
        heads=heads,
        created_at=created_at,
        incarnation=incarnation,
        randomness=randomness,
        chunk_size=chunk_size,
        version=bundle_payload.version_for(content),
    )


def _seal_plaintext(
    payload: bytes,
    *,
    sender_key: nacl.signing.SigningKey,
    workspace: bytes,
    recipients: Sequence[bytes],
    heads: Mapping[str, Sequence[bytes]],
    created_at: int,
    incarnation: bytes,
    randomness: bytes,
    chunk_size: int,
    stream_tags: Sequence[int] | None = None,
    inner: Callable[[bytes, bytes, bytes, bytes], bytes] | None = None,
    version: int = FORMAT_VERSION,
) -> bytes:
    """Signs, pads, encrypts and frames a payload that is already encoded (and, in format 3,
    compressed). The vector generator and the fuzzer alone use `stream_tags` (overrides the
    chunk tags), `inner` (given the envelope, inner header, payload and signature, returns the
    plaintext to encrypt), to write bad bundles, and `version` 2, to write the previous format."""
    if version not in FRAMED_VERSIONS:
        raise ValueError(f"this writer frames formats {FRAMED_VERSIONS}, not {version}")
    if not isinstance(randomness, bytes) or len(randomness) != RANDOMNESS_BYTES:
        raise ValueError(f"randomness must be {RANDOMNESS_BYTES} bytes")
    if not payload:
        raise ValueError("empty payload")
    if not (fields.is_int(chunk_size) and MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE):
        raise ValueError(f"chunk_size must be an int in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    keys = [bytes(r) for r in recipients]
    recipient_keys = sorted(set(keys))
    if len(recipient_keys) != len(keys):
        raise ValueError("a recipient is listed twice")
    if not recipient_keys:
        raise ValueError("a bundle needs at least one recipient (no recipients given)")
    if len(recipient_keys) > MAX_RECIPIENTS:
        raise ValueError(f"{len(recipient_keys):,} recipients; the format allows {MAX_RECIPIENTS}")
    heads_wire = {doc: sorted({bytes(h) for h in hashes}) for doc, hashes in heads.items()}
    sender = bytes(sender_key.verify_key)

    context = [DERIVE_CONTEXT, sender, incarnation, workspace, recipient_keys, heads_wire, created_at, chunk_size, crypto.sha256(payload)]
    master = hashlib.blake2b(cbor.encode(context), digest_size=32, key=randomness).digest()
    content_key = sealing.derive(master, b"rp-content-key", CONTENT_KEY_BYTES)
    # Sorted by their own (random-looking) bytes: the order says nothing about the recipients.
    stanzas = sorted(sealing.wrap_key(content_key, r, sealing.derive(master, b"rp-wrap-seed", 32, r)) for r in recipient_keys)
    envelope = MAGIC + bytes([version]) + chunk_size.to_bytes(4, "big") + len(stanzas).to_bytes(2, "big") + b"".join(stanzas)
    header_obj = {
        "v": version,
        "id": sealing.derive(master, b"rp-bundle-id", ID_BYTES),
        "workspace": workspace,
        "sender": sender,
        "incarnation": incarnation,
        "created_at": created_at,
        "heads": heads_wire,
        "recipients": recipient_keys,
    }
    header_raw = cbor.encode(header_obj)
    if len(header_raw) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(header_raw):,} bytes; the format allows {MAX_HEADER_BYTES:,}")
    try:
        _header_from_wire(header_obj, header_raw, version, chunk_size, 0)
    except BundleRejected as exc:
        raise ValueError(str(exc)) from exc
    signature = crypto.sign(sender_key, _signed_message(envelope, header_raw, payload))
    plaintext = (inner or _inner_plaintext)(envelope, header_raw, payload, signature)
    stream_header = sealing.derive(master, b"rp-stream-header", STREAM_HEADER_BYTES)
    ciphertext = sealing.encrypt_stream(content_key, stream_header, plaintext, chunk_size, crypto.sha256(envelope), stream_tags)
    return envelope + len(ciphertext).to_bytes(LENGTH_BYTES, "big") + ciphertext


def _inner_plaintext(_envelope: bytes, header_raw: bytes, payload: bytes, signature: bytes) -> bytes:
    """Inner header, payload and signature with their lengths, zero-padded (Padmé)."""
    body = len(header_raw).to_bytes(4, "big") + header_raw + len(payload).to_bytes(8, "big") + payload + signature
    return body + bytes(padded_length(len(body)) - len(body))


def padded_length(length: int) -> int:
    """Padmé (Nikitin et al., "Reducing metadata leakage from encrypted files and
    communication with PURBs", 2019): rounds up to a length whose low bits are zero, at most
    ~12% more, so the size reveals O(log log n) bits instead of log n."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    low_bits = exponent - exponent.bit_length()
    mask = (1 << low_bits) - 1
    return (length + mask) & ~mask


def _signed_message(envelope: Buffer, header_raw: bytes, payload: Buffer) -> bytes:
    """What the sender signs: the clear envelope (version, chunk size, every stanza's bytes),
    the exact inner header, and the payload's digest. Binding the stanzas means a recipient,
    who knows the content key, cannot re-address the bundle to others and keep the signature."""
    return SIGNATURE_DOMAIN + crypto.sha256(bytes(envelope)) + header_raw + hashlib.sha256(payload).digest()


# --- reading ----------------------------------------------------------------------------


def read_envelope(data: Buffer, *, max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> Envelope:
    """What a bundle shows without a key (`bundle inspect`): checked for framing (magic,
    version, lengths, no trailing bytes), not authenticated."""
    view = memoryview(data).cast("B")
    if _version(view) == 1:
        from sync import bundle_v1  # builds on this module, so imported when needed

        return bundle_v1.read_envelope(view, max_bundle_bytes)
    return _parse(view, max_bundle_bytes).envelope


def open_bundle(
    data: Buffer,
    *,
    my_key: nacl.signing.SigningKey,
    sender_status: SenderStatus,
    limits: Limits = DEFAULT_LIMITS,
    workspace: bytes | None = None,
) -> tuple[BundleHeader, BundleContent]:
    """Decrypts and verifies a bundle addressed to the node whose key is `my_key`.

    Checks in this order, raising the first failure: magic, version, lengths (Malformed,
    UnsupportedVersion, TooLarge, Truncated), a stanza that opens with this key
    (NotAddressedToMe), the stream (Malformed, TooLarge, Tampered, Truncated), the inner
    framing and header (Malformed, TooLarge), the workspace when given and the sender's
    standing (UnknownSender, RevokedSender), the signature (Tampered), the recipient list
    (Malformed), the payload (Malformed, TooLarge). Version 1 files keep version 1's order."""
    view = memoryview(data).cast("B")
    if _version(view) == 1:
        from sync import bundle_v1  # builds on this module, so imported when needed

        return bundle_v1.open_bundle(view, my_key=my_key, sender_status=sender_status, limits=limits, workspace=workspace)
    parsed = _parse(view, limits.max_bundle_bytes)
    envelope = parsed.envelope
    content_key = next((key for stanza in parsed.stanzas if (key := sealing.unwrap_key(stanza, my_key)) is not None), None)
    if content_key is None:
        raise NotAddressedToMe(f"bundle is not addressed to this node (none of its {envelope.stanzas} recipient stanza(s) opens with this node's key)")
    ciphertext = view[parsed.ciphertext_start :]
    plaintext = sealing.decrypt_stream(ciphertext, content_key, envelope.chunk_size, hashlib.sha256(parsed.raw_envelope).digest(), limits.max_plaintext_bytes)
    header_raw, payload, signature = _split_inner(plaintext)
    header = _header_from_wire(fields.strict_decode(header_raw, "bundle header", MAX_HEADER_ITEMS), header_raw, envelope.version, envelope.chunk_size, envelope.ciphertext_length)
    if workspace is not None and header.workspace != workspace:
        raise UnknownSender(f"bundle from node {key_id(header.sender)} belongs to another workspace")
    _check_standing(header.sender, sender_status)
    if not crypto.verify(header.sender, _signed_message(parsed.raw_envelope, header_raw, payload), signature):
        raise Tampered(f"bundle signature by node {key_id(header.sender)} does not verify: the bundle was altered or re-addressed")
    if len(header.recipients) != envelope.stanzas or bytes(my_key.verify_key) not in header.recipients:
        raise Malformed(f"the sender lists {len(header.recipients)} recipient(s) that do not match the bundle's {envelope.stanzas} stanza(s)")
    return header, bundle_payload.decode_payload(payload, limits, envelope.version)


def addressed_to(head: Buffer, my_key: nacl.signing.SigningKey) -> bool:
    """Whether a bundle may be for the node whose key is `my_key`, from the file's first
    ENVELOPE_MAX_BYTES (or all of it): False only for a version 2 or 3 envelope none of whose
    stanzas opens with that key, so a node skips other nodes' bundles on a stick without
    reading them whole. True for anything else (version 1, damage): opening it says why."""
    view = memoryview(head).cast("B")
    try:
        if _version(view) not in FRAMED_VERSIONS or len(view) < PREFIX_BYTES:
            return True
    except BundleRejected:
        return True
    count = int.from_bytes(view[len(MAGIC) + 5 : PREFIX_BYTES], "big")
    end = PREFIX_BYTES + count * STANZA_BYTES
    if not 0 < count <= MAX_RECIPIENTS or len(view) < end:
        return True
    return any(sealing.unwrap_key(view[at : at + STANZA_BYTES], my_key) is not None for at in range(PREFIX_BYTES, end, STANZA_BYTES))


def _check_standing(sender: bytes, sender_status: SenderStatus) -> None:
    status = sender_status(sender)
    if status == Trust.UNKNOWN:
        raise UnknownSender(f"bundle from node {key_id(sender)}, which this workspace's directory does not know")
    if status == Trust.REVOKED:
        raise RevokedSender(f"bundle from node {key_id(sender)}, whose certificate is revoked")
    if status != Trust.TRUSTED:
        raise ValueError(f"sender_status returned {status!r}; expected 'trusted', 'unknown' or 'revoked'")


def _version(view: memoryview) -> int:
    """The format version byte, after the magic; raises for a file that has neither."""
    size = len(view)
    if size < len(MAGIC):
        if bytes(view) == MAGIC[:size]:
            raise Truncated("bundle is truncated: the file ends inside the magic" if size else "bundle file is empty")
        raise Malformed("not a Rallypoint bundle (bad magic)")
    if view[: len(MAGIC)] != MAGIC:
        raise Malformed("not a Rallypoint bundle (bad magic)")
    if size < len(MAGIC) + 1:
        raise Truncated("bundle is truncated: the file ends before the format version")
    version = view[len(MAGIC)]
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersion(f"bundle format version {version} is not supported (this node reads versions 1, 2, 3 and 4)")
    return version


@dataclass(frozen=True)
class _Parsed:
    envelope: Envelope
    raw_envelope: memoryview  # magic to the last stanza: the stream's additional data, signed
    stanzas: tuple[memoryview, ...]
    ciphertext_start: int


def _parse(view: memoryview, max_bundle_bytes: int) -> _Parsed:
    """Versions 2 and 3's clear framing, after `_version`."""
    size = len(view)
    if size < PREFIX_BYTES:
        raise Truncated("bundle is truncated: the file ends inside the chunk size or stanza count")
    chunk_size = int.from_bytes(view[len(MAGIC) + 1 : len(MAGIC) + 5], "big")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise Malformed(f"bundle chunk size {chunk_size:,} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    count = int.from_bytes(view[len(MAGIC) + 5 : PREFIX_BYTES], "big")
    if count == 0:
        raise Malformed("bundle has no recipient stanzas")
    if count > MAX_RECIPIENTS:
        raise TooLarge(f"bundle has {count:,} recipient stanzas; the limit is {MAX_RECIPIENTS}")
    ciphertext_start = PREFIX_BYTES + count * STANZA_BYTES + LENGTH_BYTES
    if size < ciphertext_start:
        raise Truncated(f"bundle is truncated: the file ends inside its recipient stanzas ({size:,} of at least {ciphertext_start:,} bytes)")
    ciphertext_length = int.from_bytes(view[ciphertext_start - LENGTH_BYTES : ciphertext_start], "big")
    if ciphertext_length > max_bundle_bytes:
        raise TooLarge(f"bundle declares {ciphertext_length:,} bytes of ciphertext; the limit is {max_bundle_bytes:,}")
    if ciphertext_length < MIN_CIPHERTEXT_BYTES:
        raise Malformed(f"bundle declares {ciphertext_length} bytes of ciphertext; a stream needs at least {MIN_CIPHERTEXT_BYTES}")
    expected = ciphertext_start + ciphertext_length
    if size < expected:
        raise Truncated(f"bundle is truncated: its lengths say {expected:,} bytes, the file holds {size:,}")
    if size > expected:
        raise Malformed(f"bundle has {size - expected:,} trailing bytes after its ciphertext")
    stanza_end = ciphertext_start - LENGTH_BYTES
    stanzas = tuple(view[at : at + STANZA_BYTES] for at in range(PREFIX_BYTES, stanza_end, STANZA_BYTES))
    return _Parsed(Envelope(view[len(MAGIC)], size, count, chunk_size, ciphertext_length), view[:stanza_end], stanzas, ciphertext_start)


def _split_inner(plaintext: bytearray) -> tuple[bytes, memoryview, bytes]:
    """(inner header bytes, payload, signature) of a decrypted stream; the rest must be the
    exact zero padding."""
    view = memoryview(plaintext)
    size = len(view)
    if size < INNER_LENGTH_BYTES + SIGNATURE_BYTES:
        raise Malformed(f"the decrypted bundle is {size} bytes: too short for a header, a payload and a signature")
    header_length = int.from_bytes(view[:4], "big")
    if header_length > MAX_HEADER_BYTES:
        raise TooLarge(f"bundle header declares {header_length:,} bytes; the limit is {MAX_HEADER_BYTES:,}")
    payload_at = 4 + header_length + 8
    if payload_at + SIGNATURE_BYTES > size:
        raise Malformed("the bundle's inner header runs past the decrypted data")
    payload_length = int.from_bytes(view[payload_at - 8 : payload_at], "big")
    body = payload_at + payload_length + SIGNATURE_BYTES
    if payload_length == 0 or body > size:
        raise Malformed(f"the bundle's payload length {payload_length:,} does not fit the decrypted data")
    if size != padded_length(body) or any(view[body:]):
        raise Malformed("the bundle's padding is not the zero bytes its length calls for")
    return bytes(view[4 : 4 + header_length]), view[payload_at : payload_at + payload_length], bytes(view[body - SIGNATURE_BYTES : body])


# --- header fields (the checks, shared with sync/messages.py, are in sync/fields.py) --------


def _header_from_wire(obj: Any, raw: bytes, version: int, chunk_size: int, ciphertext_length: int) -> BundleHeader:
    fields.need(isinstance(obj, dict), "bundle header is not a CBOR map")
    fields.need(set(obj) == HEADER_FIELDS, f"bundle header must have exactly the fields {sorted(HEADER_FIELDS)}")
    fields.need(fields.is_int(obj["v"]) and obj["v"] == version, f"bundle header field v must be {version}, as the version byte says")
    created_at = obj["created_at"]
    fields.need(
        fields.is_int(created_at) and 0 <= created_at <= MAX_CREATED_AT, "bundle header field created_at must be an int in 0..2^63-1"
    )
    recipients = obj["recipients"]
    fields.need(isinstance(recipients, list) and len(recipients) > 0, "bundle header lists no recipients")
    if len(recipients) > MAX_RECIPIENTS:
        raise TooLarge(f"bundle header lists {len(recipients):,} recipients; the limit is {MAX_RECIPIENTS}")
    keys = [fields.fixed_bytes(r, KEY_BYTES, "a recipient's node key") for r in recipients]
    fields.need(all(a < b for a, b in pairwise(keys)), "bundle recipients are not sorted by node key without duplicates")
    return BundleHeader(
        version=version,
        id=fields.fixed_bytes(obj["id"], ID_BYTES, "bundle id"),
        workspace=fields.fixed_bytes(obj["workspace"], KEY_BYTES, "bundle workspace key"),
        sender=fields.fixed_bytes(obj["sender"], KEY_BYTES, "bundle sender key"),
        incarnation=fields.fixed_bytes(obj["incarnation"], INCARNATION_BYTES, "bundle sender incarnation"),
        created_at=created_at,
        heads=fields.heads(obj["heads"], "bundle heads"),
        recipients=tuple(keys),
        chunk_size=chunk_size,
        raw=raw,
        ciphertext_length=ciphertext_length,
    )
