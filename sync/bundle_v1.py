"""Bundle format version 1, kept for reading (docs/bundle-format.md, "Version 1").

Version 1 carried its header in clear: sender, workspace, recipients, time and heads were
readable from a lost stick. Version 2 (sync/bundle.py) moved them inside the encryption. A
fleet runs two adjacent releases side by side, so this release still opens version 1 bundles
that older nodes write; the next one drops this module. Nodes write version 2 only; the
version 1 writer that makes the test vectors and the fuzzer's mutants is in tests/format1_writer.py.

Payload, stream and key wrapping are shared with version 2 and live in sync/bundle.py."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import nacl.signing

from appliance import crypto
from appliance.ids import key_id
from sync import bundle as common
from sync import bundle_payload, fields, sealing
from sync.bundle import (
    ID_BYTES,
    KEY_BYTES,
    MAGIC,
    MAX_CHUNK_SIZE,
    MAX_CREATED_AT,
    MAX_HEADER_BYTES,
    MAX_HEADER_ITEMS,
    MAX_RECIPIENTS,
    MIN_CHUNK_SIZE,
    MIN_CIPHERTEXT_BYTES,
    SIGNATURE_BYTES,
    WRAPPED_KEY_BYTES,
    BundleContent,
    BundleHeader,
    Envelope,
    Limits,
    SenderStatus,
)
from sync.errors import (
    Malformed,
    NotAddressedToMe,
    Tampered,
    TooLarge,
    Truncated,
    UnknownSender,
)

VERSION = 1
PREFIX_BYTES = len(MAGIC) + 1 + 4  # magic, version, header length
LENGTH_BYTES = 8  # the ciphertext length field
SIGNATURE_DOMAIN = b"rallypoint/bundle/v1\x00"
HEADER_FIELDS = frozenset({"v", "id", "workspace", "sender", "created_at", "heads", "recipients", "chunk_size"})
DERIVE_CONTEXT = "rallypoint/bundle/v1/derive"


# --- reading ----------------------------------------------------------------------------


def signed_message(header_raw: bytes, ciphertext: common.Buffer) -> bytes:
    """What the sender signed: the domain, the clear header and the ciphertext's digest."""
    return SIGNATURE_DOMAIN + header_raw + hashlib.sha256(ciphertext).digest()


@dataclass(frozen=True)
class _Parsed:
    header: BundleHeader
    wrapped: dict[bytes, bytes]
    view: memoryview
    ciphertext_start: int


def read_envelope(view: memoryview, max_bundle_bytes: int) -> Envelope:
    parsed = _parse(view, max_bundle_bytes)
    return Envelope(VERSION, len(view), len(parsed.header.recipients), parsed.header.chunk_size, parsed.header.ciphertext_length)


def open_bundle(view: memoryview, *, my_key: nacl.signing.SigningKey, sender_status: SenderStatus, limits: Limits, workspace: bytes | None) -> tuple[BundleHeader, BundleContent]:
    """Version 1's checks, in its order: see docs/bundle-format.md, "Version 1"."""
    parsed = _parse(view, limits.max_bundle_bytes)
    header = parsed.header
    if workspace is not None and header.workspace != workspace:
        raise UnknownSender(f"bundle from node {key_id(header.sender)} belongs to another workspace")
    common._check_standing(header.sender, sender_status)

    start, length = parsed.ciphertext_start, header.ciphertext_length
    ciphertext = parsed.view[start : start + length]
    signature = bytes(parsed.view[start + length :])
    if not crypto.verify(header.sender, signed_message(header.raw, ciphertext), signature):
        raise Tampered(f"bundle signature by node {key_id(header.sender)} does not verify: the file was altered")

    wrapped = parsed.wrapped.get(bytes(my_key.verify_key))
    if wrapped is None:
        raise NotAddressedToMe(f"bundle is not addressed to this node (it is for {len(header.recipients)} other node(s))")
    content_key = sealing.unwrap_key(wrapped, my_key)
    if content_key is None:
        raise Tampered("the content key wrapped for this node does not open: the bundle was altered")
    plaintext = sealing.decrypt_stream(ciphertext, content_key, header.chunk_size, crypto.sha256(header.raw), limits.max_plaintext_bytes)
    return header, bundle_payload.decode_payload(plaintext, limits, VERSION)


def _parse(view: memoryview, max_bundle_bytes: int) -> _Parsed:
    """Framing after the version byte (magic and version are checked by the caller)."""
    size = len(view)
    if size < PREFIX_BYTES:
        raise Truncated("bundle is truncated: the file ends inside the header length")
    header_length = int.from_bytes(view[len(MAGIC) + 1 : PREFIX_BYTES], "big")
    if header_length > MAX_HEADER_BYTES:
        raise TooLarge(f"bundle header declares {header_length:,} bytes; the limit is {MAX_HEADER_BYTES:,}")
    ciphertext_start = PREFIX_BYTES + header_length + LENGTH_BYTES
    if size < ciphertext_start:
        raise Truncated(f"bundle is truncated: the file ends inside the header ({size:,} of at least {ciphertext_start:,} bytes)")
    ciphertext_length = int.from_bytes(view[ciphertext_start - LENGTH_BYTES : ciphertext_start], "big")
    if ciphertext_length > max_bundle_bytes:
        raise TooLarge(f"bundle declares {ciphertext_length:,} bytes of ciphertext; the limit is {max_bundle_bytes:,}")
    if ciphertext_length < MIN_CIPHERTEXT_BYTES:
        raise Malformed(f"bundle declares {ciphertext_length} bytes of ciphertext; a stream needs at least {MIN_CIPHERTEXT_BYTES}")
    expected = ciphertext_start + ciphertext_length + SIGNATURE_BYTES
    if size < expected:
        raise Truncated(f"bundle is truncated: its lengths say {expected:,} bytes, the file holds {size:,}")
    if size > expected:
        raise Malformed(f"bundle has {size - expected:,} trailing bytes after its signature")
    raw = bytes(view[PREFIX_BYTES : PREFIX_BYTES + header_length])
    header, wrapped = _header_from_wire(fields.strict_decode(raw, "bundle header", MAX_HEADER_ITEMS), raw, ciphertext_length)
    return _Parsed(header, wrapped, view, ciphertext_start)


def _header_from_wire(obj: Any, raw: bytes, ciphertext_length: int) -> tuple[BundleHeader, dict[bytes, bytes]]:
    fields.need(isinstance(obj, dict), "bundle header is not a CBOR map")
    fields.need(set(obj) == HEADER_FIELDS, f"bundle header must have exactly the fields {sorted(HEADER_FIELDS)}")
    fields.need(fields.is_int(obj["v"]) and obj["v"] == VERSION, f"bundle header field v must be {VERSION}, as the version byte says")
    created_at = obj["created_at"]
    fields.need(
        fields.is_int(created_at) and 0 <= created_at <= MAX_CREATED_AT, "bundle header field created_at must be an int in 0..2^63-1"
    )
    chunk_size = obj["chunk_size"]
    fields.need(
        fields.is_int(chunk_size) and MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE,
        f"bundle header field chunk_size must be an int in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}",
    )
    recipients = obj["recipients"]
    fields.need(isinstance(recipients, list) and len(recipients) > 0, "bundle header lists no recipients")
    if len(recipients) > MAX_RECIPIENTS:
        raise TooLarge(f"bundle header lists {len(recipients):,} recipients; the limit is {MAX_RECIPIENTS}")
    wrapped: dict[bytes, bytes] = {}
    for entry in recipients:
        fields.need(isinstance(entry, list) and len(entry) == 2, "a bundle recipient is not [node key, wrapped key]")
        node = fields.fixed_bytes(entry[0], KEY_BYTES, "a recipient's node key")
        wrapped[node] = fields.fixed_bytes(entry[1], WRAPPED_KEY_BYTES, "a recipient's wrapped content key")
    keys = [entry[0] for entry in recipients]
    fields.need(all(a < b for a, b in pairwise(keys)), "bundle recipients are not sorted by node key without duplicates")
    header = BundleHeader(
        version=VERSION,
        id=fields.fixed_bytes(obj["id"], ID_BYTES, "bundle id"),
        workspace=fields.fixed_bytes(obj["workspace"], KEY_BYTES, "bundle workspace key"),
        sender=fields.fixed_bytes(obj["sender"], KEY_BYTES, "bundle sender key"),
        created_at=created_at,
        heads=fields.heads(obj["heads"], "bundle heads"),
        recipients=tuple(keys),
        chunk_size=chunk_size,
        raw=raw,
        ciphertext_length=ciphertext_length,
    )
    return header, wrapped
