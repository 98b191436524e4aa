"""The bundle payload codec (docs/bundle-format.md section 8): what a bundle carries, as
canonical CBOR, and in format 3 compressed with zstd. Formats 1 and 2 carry the CBOR map of four
fields as it is; format 3 adds `wholes` (segments carried whole) and compresses the map; format 4
adds `audit` (audit trails: appliance/audit_feed.py), and is written only for a bundle that
carries some, so a node that reads format 3 still reads every other bundle.

Pure: bytes in, bytes out. A reader's limits apply before anything is decoded: the
decompressed size (streamed, never past `Limits.max_plaintext_bytes`), then the CBOR item count.
Every third-party exception is translated here into a `BundleRejected` subclass."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import zstandard

from appliance import cbor
from appliance.audit_feed import AuditCarry
from appliance.changes import SignedChange
from appliance.model import WholeSegment
from sync import fields
from sync.errors import BundleRejected, Malformed, TooLarge

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

COMPRESSED_FROM = 3  # the first format whose payload is compressed and may carry wholes
AUDIT_FROM = 4  # the first format whose payload carries audit trails
ZSTD_LEVEL = 3  # measured on real payloads: see the commit that chose zstd
ZSTD_MAX_WINDOW = 8 * MiB  # bounds the decompressor's memory; the writer's level 3 window is far smaller
READ_PIECE = 1 * MiB  # decompressed bytes produced at a time
KEY_BYTES = 32
_FIELDS_BEFORE_WHOLES = frozenset({"directory", "changes", "blobs", "acks"})
_FIELDS_BEFORE_AUDIT = _FIELDS_BEFORE_WHOLES | {"wholes"}
PAYLOAD_FIELDS = _FIELDS_BEFORE_AUDIT | {"audit"}
_HEX_KEY = re.compile(r"[0-9a-f]{64}")

DocChanges = fields.DocChanges
Hashes = Mapping[str, tuple[bytes, ...]]


@dataclass(frozen=True)
class Limits:
    """Hard limits a reader applies; see docs/bundle-format.md ("Limits") for the memory bound."""

    max_bundle_bytes: int = 2 * GiB  # the declared ciphertext length
    max_plaintext_bytes: int = 256 * MiB  # decrypted stream, and decompressed payload, before any CBOR decoding
    max_items: int = 1_000_000  # CBOR data items in the payload, counted before decoding
    max_blob_bytes: int = 32 * MiB  # one blob

    def __post_init__(self) -> None:
        for name in ("max_bundle_bytes", "max_plaintext_bytes", "max_items", "max_blob_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int")


@dataclass(frozen=True)
class BundleContent:
    """What a bundle carries. Directory updates are applied before channel changes; within a
    section documents and changes keep the sender's order; segments carried whole (format 3)
    come after the channel heads, newest first. `acks` maps a peer's node key to the heads the
    sender knows that peer has (per document). Lists are normalised to tuples and ack hashes
    to sorted, de-duplicated tuples, so equal content compares equal."""

    directory: DocChanges = ()
    changes: DocChanges = ()
    blobs: tuple[tuple[bytes, bytes], ...] = ()
    acks: Mapping[bytes, Hashes] = field(default_factory=dict)
    wholes: tuple[WholeSegment, ...] = ()
    audit: AuditCarry = field(default_factory=AuditCarry)

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", _doc_groups(self.directory))
        object.__setattr__(self, "changes", _doc_groups(self.changes))
        object.__setattr__(self, "blobs", tuple((h, d) for h, d in self.blobs))
        object.__setattr__(
            self,
            "acks",
            {peer: {doc: tuple(sorted(set(hashes))) for doc, hashes in docs.items()} for peer, docs in self.acks.items()},
        )
        object.__setattr__(self, "wholes", fields.normal_wholes(self.wholes))


def _doc_groups(groups: Any) -> DocChanges:
    return tuple((doc_id, tuple(changes)) for doc_id, changes in groups)


_BUILD_LIMITS = Limits(max_bundle_bytes=2**64 - 1, max_plaintext_bytes=2**64 - 1, max_items=2**64 - 1, max_blob_bytes=2**64 - 1)


def encode_payload(content: BundleContent, version: int) -> bytes:
    """The payload of a bundle of format `version`, as it is signed and encrypted. Checked by
    the reader's own rules, so no writer writes what a reader rejects (ValueError)."""
    wire = content_to_wire(content, version)
    try:
        from_wire(wire, _BUILD_LIMITS, version)
    except BundleRejected as exc:
        raise ValueError(str(exc)) from exc
    raw = cbor.encode(wire)
    return compress(raw) if version >= COMPRESSED_FROM else raw


def compress(raw: bytes) -> bytes:
    """One zstd frame that declares its content size (a reader refuses a frame that does not)."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(raw)


def content_to_wire(content: BundleContent, version: int) -> dict[str, Any]:
    """The payload map of format `version`, before encoding (and compression)."""

    def groups(section: DocChanges, name: str) -> list[Any]:
        out = []
        for doc_id, changes in section:
            entries = []
            for change in changes:
                if not isinstance(change, SignedChange):
                    raise TypeError(f"{name}: {doc_id!r} holds {type(change).__name__}, not SignedChange")
                entries.append([change.data, change.signature])
            out.append([doc_id, entries])
        return out

    acks = {}
    for peer, docs in content.acks.items():
        if not isinstance(peer, bytes) or len(peer) != KEY_BYTES:
            raise ValueError("acks: a peer is not a 32-byte node key")
        acks[peer.hex()] = {doc: list(hashes) for doc, hashes in docs.items()}
    wire = {
        "directory": groups(content.directory, "directory"),
        "changes": groups(content.changes, "changes"),
        "blobs": [[digest, data] for digest, data in content.blobs],
        "acks": acks,
    }
    if version >= COMPRESSED_FROM:
        wire["wholes"] = fields.wholes_to_wire(content.wholes)
    elif content.wholes:
        raise ValueError(f"bundle format {version} cannot carry segments whole (format {COMPRESSED_FROM} can)")
    if version >= AUDIT_FROM:
        wire["audit"] = fields.audit_to_wire(content.audit)
    elif content.audit:
        raise ValueError(f"bundle format {version} cannot carry audit trails (format {AUDIT_FROM} can)")
    return wire


def version_for(content: BundleContent) -> int:
    """The format a bundle with `content` is written in: 4 when it carries audit trails, else 3
    (readable by nodes that predate format 4)."""
    return AUDIT_FROM if content.audit else COMPRESSED_FROM


def decode_payload(payload: cbor.Buffer, limits: Limits, version: int) -> BundleContent:
    """The content of an authenticated payload of format `version`: decompressed (format 3),
    within the limits, then decoded and checked."""
    raw = decompress(payload, limits.max_plaintext_bytes) if version >= COMPRESSED_FROM else payload
    return from_wire(fields.strict_decode(raw, "bundle payload", limits.max_items), limits, version)


def decompress(data: cbor.Buffer, max_bytes: int) -> bytearray:
    """One zstd frame's content, produced a piece at a time and refused as soon as it would pass
    `max_bytes`, so a small frame that expands without bound (a bomb) costs no more memory than
    the limit. The frame must declare its content size and produce exactly that many bytes."""
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise Malformed(f"the bundle payload is not a zstd frame ({fields.one_line(str(exc))})") from exc
    if declared < 0:
        raise Malformed("the bundle payload's zstd frame does not declare its content size")
    if declared > max_bytes:
        raise TooLarge(f"the bundle payload decompresses to {declared:,} bytes; the limit is {max_bytes:,}")
    out = bytearray()
    try:
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        with decompressor.stream_reader(data, read_across_frames=True) as reader:
            while piece := reader.read(min(READ_PIECE, declared + 1 - len(out))):
                out += piece
                if len(out) > declared:
                    raise Malformed(f"the bundle payload's zstd frame holds more than the {declared:,} bytes it declares")
    except zstandard.ZstdError as exc:
        raise Malformed(f"the bundle payload does not decompress ({fields.one_line(str(exc))})") from exc
    if len(out) != declared:
        raise Malformed(f"the bundle payload's zstd frame ends after {len(out):,} of the {declared:,} bytes it declares")
    return out


def from_wire(obj: Any, limits: Limits, version: int) -> BundleContent:
    expected = PAYLOAD_FIELDS if version >= AUDIT_FROM else _FIELDS_BEFORE_AUDIT if version >= COMPRESSED_FROM else _FIELDS_BEFORE_WHOLES
    fields.need(isinstance(obj, dict), "bundle payload is not a CBOR map")
    fields.need(set(obj) == expected, f"bundle payload must have exactly the fields {sorted(expected)}")

    directory = fields.doc_changes(obj["directory"], "payload directory")
    changes = fields.doc_changes(obj["changes"], "payload changes")
    chunked = {doc_id for doc_id, _ in directory + changes}
    wholes = fields.whole_entries(obj["wholes"], "payload wholes", chunked) if "wholes" in obj else ()
    blobs = fields.blob_entries(obj["blobs"], "payload", limits.max_blob_bytes)

    acks_wire = obj["acks"]
    fields.need(isinstance(acks_wire, dict), "payload acks is not a map")
    acks: dict[bytes, Hashes] = {}
    for peer, docs in acks_wire.items():
        fields.need(isinstance(peer, str) and _HEX_KEY.fullmatch(peer) is not None, "payload acks: a peer is not 64 lowercase hex digits")
        acks[bytes.fromhex(peer)] = fields.heads(docs, f"payload acks for {peer[:12]}")
    carried = fields.audit_from_wire(obj["audit"], "payload audit") if "audit" in obj else AuditCarry()
    return BundleContent(directory=directory, changes=changes, blobs=blobs, acks=acks, wholes=wholes, audit=carried)
