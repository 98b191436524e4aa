"""Builds every bundle test vector in tests/vectors/ from fixed keys, randomness and time:
format 2 at the top, format 3 (what nodes write now: a compressed payload that may carry
segments whole) in v3/, format 1 (what an older release wrote, still read) in v1/.

    python -m tests.make_vectors           # check: exit 1 if a committed file differs
    python -m tests.make_vectors --write   # regenerate tests/vectors/**/*.bundle and the manifests

Good vectors come from the builders; bad ones are good ones altered byte by byte, or (where
the point is a check deeper than the signature, or behind the encryption) altered and
encrypted or signed again with the keys it takes, so a reader must get that far to find the
fault. tests/vectors/README.md explains."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import zstandard
from automerge._automerge import ROOT, Document, ScalarType

from appliance import cbor, crypto
from appliance.changes import SignedChange, parse_change, sign_change
from appliance.model import WholeSegment
from appliance.wholes import MAX_WHOLE_BYTES
from sync import bundle, bundle_payload, errors, sealing
from sync.bundle import BundleContent, BundleHeader
from tests import format1_writer

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST = "manifest.json"
V1 = "v1"  # the folder of format 1 vectors
V3 = "v3"  # the folder of format 3 vectors

# The outcomes of docs/bundle-format.md section 9, as the manifests name them, and the error
# sync/errors.py raises for each (None: the bundle opens).
ACCEPTED = "accepted"
OUTCOMES: dict[str, type[errors.BundleRejected] | None] = {
    ACCEPTED: None,
    "rejected: malformed": errors.Malformed,
    "rejected: truncated": errors.Truncated,
    "rejected: tampered": errors.Tampered,
    "rejected: not addressed to this node": errors.NotAddressedToMe,
    "rejected: unknown sender": errors.UnknownSender,
    "rejected: revoked sender": errors.RevokedSender,
    "rejected: unsupported version": errors.UnsupportedVersion,
    "rejected: too large": errors.TooLarge,
}


def _key(n: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([n]) * 32)


SENDER = _key(1)
IDENTITIES = {"A": _key(2), "B": _key(3), "C": _key(4)}
WORKSPACE_KEY = _key(5)
WORKSPACE = bytes(WORKSPACE_KEY.verify_key)
STRANGER = _key(6)  # a node no directory knows
REVOKED = _key(7)  # a node whose certificate the reader's directory has revoked
AUTHOR = _key(8)  # the user who wrote the channel changes
ADMIN = _key(9)  # the user who wrote the directory change
OTHER_WORKSPACE = bytes(_key(10).verify_key)
CREATED_AT = 1_767_225_600_000  # 2026-01-01T00:00:00Z in milliseconds
INCARNATION = bytes(range(0xA0, 0xB0))  # the sender's, in every format 2 vector

CHANNEL = "c0ffee00c0ffee00"
HEAD_DOC = f"{CHANNEL}/head"
SEGMENT_DOC = f"{CHANNEL}/seg/000000"


def pk(key: nacl.signing.SigningKey) -> bytes:
    return bytes(key.verify_key)


def randomness(name: str) -> bytes:
    return hashlib.sha256(b"rallypoint bundle test vector " + name.encode()).digest()


def automerge_changes(author: nacl.signing.SigningKey, doc_id: str, texts: list[str], sign_all: bool = True) -> tuple[SignedChange, ...]:
    """One real Automerge change per text (a string put at the root), deterministic: fixed
    actor id (the author's key and 16 zero bytes) and Automerge's zero timestamp. Unless
    `sign_all`, only the last change is signed (it vouches for the earlier ones)."""
    doc = Document(actor_id=pk(author) + bytes(16))
    out = []
    for index, text in enumerate(texts):
        with doc.transaction() as tx:
            tx.put(ROOT, "text", ScalarType.Str, text)
        change = doc.get_last_local_change()
        assert change is not None
        signed = sign_all or index == len(texts) - 1
        signature = sign_change(author, doc_id, parse_change(change.bytes).hash) if signed else None
        out.append(SignedChange(change.bytes, signature))
    return tuple(out)


def last_hash(changes: tuple[SignedChange, ...]) -> bytes:
    return parse_change(changes[-1].data).hash


def build(
    name: str,
    content: BundleContent,
    recipients: list[str],
    *,
    sender: nacl.signing.SigningKey = SENDER,
    workspace: bytes = WORKSPACE,
    heads: Mapping[str, Sequence[bytes]] | None = None,
    chunk_size: int = bundle.DEFAULT_CHUNK_SIZE,
) -> bytes:
    return format1_writer.build_bundle(
        content,
        sender_key=sender,
        workspace=workspace,
        recipients=[pk(IDENTITIES[r]) for r in recipients],
        heads=heads or {},
        created_at=CREATED_AT,
        randomness=randomness(name),
        chunk_size=chunk_size,
    )


def seal_raw(name: str, plaintext: bytes, recipients: list[str], **kwargs: Any) -> bytes:
    """A format 1 bundle around an arbitrary (possibly invalid) payload, properly encrypted and signed."""
    return format1_writer.seal_plaintext(
        plaintext,
        sender_key=SENDER,
        workspace=WORKSPACE,
        recipients=[pk(IDENTITIES[r]) for r in recipients],
        heads={},
        created_at=CREATED_AT,
        randomness=randomness(name),
        chunk_size=kwargs.pop("chunk_size", bundle.DEFAULT_CHUNK_SIZE),
        **kwargs,
    )


def split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(header bytes, ciphertext, signature) of a well-framed bundle."""
    header_length = int.from_bytes(data[9:13], "big")
    header = data[13 : 13 + header_length]
    start = 13 + header_length + 8
    ciphertext_length = int.from_bytes(data[start - 8 : start], "big")
    return header, data[start : start + ciphertext_length], data[start + ciphertext_length :]


def resign(header: bytes, ciphertext: bytes, key: nacl.signing.SigningKey = SENDER) -> bytes:
    return format1_writer.frame(header, ciphertext, format1_writer.sign(key, header, ciphertext))


def chunks(ciphertext: bytes, chunk_size: int) -> tuple[bytes, list[bytes]]:
    step = chunk_size + bundle.CHUNK_OVERHEAD
    body = ciphertext[bundle.STREAM_HEADER_BYTES :]
    return ciphertext[: bundle.STREAM_HEADER_BYTES], [body[i : i + step] for i in range(0, len(body), step)]


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def summarize(header: BundleHeader, content: BundleContent) -> str:
    """The manifest's `contains` line, recomputed by the test from what opened."""
    directory = sum(len(c) for _, c in content.directory)
    changes = sum(len(c) for _, c in content.changes)
    blob_bytes = sum(len(d) for _, d in content.blobs)
    wholes = f"{len(content.wholes)} segment(s) whole of {sum(len(w.data) for w in content.wholes)} bytes, " if content.wholes else ""
    return (
        f"{directory} directory change(s), {changes} channel change(s) in {len(content.changes)} document(s), {wholes}"
        f"{len(content.blobs)} blob(s) of {blob_bytes} bytes, acks for {len(content.acks)} peer(s); "
        f"header: heads for {len(header.heads)} document(s), {len(header.recipients)} recipient(s), chunk size {header.chunk_size}"
    )


def count_items(plaintext: bytes) -> int:
    limit = 1
    while True:
        try:
            cbor.scan(plaintext, "count", limit)
            return limit
        except cbor.CborTooLarge:
            limit += 1


Entry = dict[str, Any]


def build_vectors() -> dict[str, bytes]:
    """Every file of tests/vectors/ except README.md, by its path in that folder."""
    return (
        build_v2_vectors()
        | {f"{V1}/{name}": data for name, data in build_v1_vectors().items()}
        | {f"{V3}/{name}": data for name, data in build_v3_vectors().items()}
    )


def build_v1_vectors() -> dict[str, bytes]:
    """Format 1: `NAME.bundle` and `manifest.json` of tests/vectors/v1/."""
    files: dict[str, bytes] = {}
    manifest: dict[str, Entry] = {}

    add = _adder(files, manifest)

    segment = automerge_changes(AUTHOR, SEGMENT_DOC, ["hello", "hello, world"])
    small = BundleContent(changes=((SEGMENT_DOC, segment),))
    add("ok_small", build("ok_small", small, ["A"], heads={SEGMENT_DOC: [last_hash(segment)]}),
        "two signed Automerge changes in one channel segment, for A", "accepted")

    directory = automerge_changes(ADMIN, "directory", ["certificate for node B"])
    head = automerge_changes(AUTHOR, HEAD_DOC, ["general"])
    unsigned_first = automerge_changes(AUTHOR, SEGMENT_DOC, ["one", "two"], sign_all=False)
    multi = BundleContent(
        directory=(("directory", directory),),
        changes=((HEAD_DOC, head), (SEGMENT_DOC, unsigned_first)),
        acks={pk(IDENTITIES["A"]): {SEGMENT_DOC: (last_hash(segment),)}},
    )
    multi_heads = {"directory": [last_hash(directory)], HEAD_DOC: [last_hash(head)], SEGMENT_DOC: [last_hash(unsigned_first)]}
    add("ok_multi_recipient", build("ok_multi_recipient", multi, ["A", "B"], heads=multi_heads),
        "directory update first, two channel documents (the first change unsigned, vouched for by the second), acks for A; for A and B, opened by B", "accepted", open_as="B")

    blob_data = bytes((i * 7 + 3) % 251 for i in range(3000))
    with_blob = BundleContent(changes=((SEGMENT_DOC, segment),), blobs=((hashlib.sha256(blob_data).digest(), blob_data),))
    base = build("ok_with_blob", with_blob, ["A"], heads={SEGMENT_DOC: [last_hash(segment)]}, chunk_size=1024)
    add("ok_with_blob", base, "one change and a 3000-byte blob, chunk size 1024 so the stream has 4 chunks, for A", "accepted")

    add("ok_empty", build("ok_empty", BundleContent(), ["A"]), "no content and no heads (a bare acknowledgement), for A", "accepted")

    # Faults in the framing and the signed bytes (the base is ok_with_blob: 4 chunks of 1024).
    header, ciphertext, signature = split(base)
    start = len(base) - len(signature) - len(ciphertext)
    add("tampered_ciphertext", flip(base, start + len(ciphertext) // 2), "one ciphertext byte flipped", "rejected: tampered")
    id_offset = base.index(b"\x62id\x50", 13) + 4  # the text "id", then a 16-byte byte string
    add("tampered_header", flip(base, id_offset), "one byte of the header's bundle id flipped (still canonical CBOR)", "rejected: tampered")
    add("tampered_signature", flip(base, len(base) - 1), "the last byte of the signature flipped", "rejected: tampered")
    stream_header, pieces = chunks(ciphertext, 1024)
    assert len(pieces) == 4
    mid_second = start + len(stream_header) + len(pieces[0]) + len(pieces[1]) // 2
    add("truncated_mid_chunk", base[:mid_second], "the file cut in the middle of the second chunk", "rejected: truncated")
    before_final = start + len(ciphertext) - len(pieces[-1])
    add("truncated_at_chunk_boundary", base[:before_final], "the file cut exactly before the final chunk", "rejected: truncated")
    add("truncated_stream_resigned", resign(header, stream_header + b"".join(pieces[:-1])),
        "final chunk removed, lengths fixed and signed again by the sender: the stream ends without TAG_FINAL", "rejected: truncated")
    add("reordered_chunks", resign(header, stream_header + pieces[0] + pieces[2] + pieces[1] + pieces[3]),
        "chunks 2 and 3 swapped, signed again by the sender: chunk 2 fails authentication", "rejected: tampered")
    plaintext = cbor.encode(bundle_payload.content_to_wire(with_blob, 2))
    tags = [bundle.TAG_MESSAGE, bundle.TAG_FINAL, bundle.TAG_MESSAGE, bundle.TAG_FINAL]
    add("data_after_final", seal_raw("data_after_final", plaintext, ["A"], chunk_size=1024, stream_tags=tags),
        "a properly signed stream whose second of four chunks carries TAG_FINAL", "rejected: tampered")
    add("bad_magic", b"\x89RPBNDX\n" + base[8:], "the magic's seventh byte changed", "rejected: malformed")
    add("trailing_garbage", base + b"\x00" * 7, "seven zero bytes after the signature", "rejected: malformed")
    add("oversized_header_length", base[:9] + b"\xff\xff\xff\xff" + base[13:], "header length field 0xFFFFFFFF (over 256 KiB)", "rejected: too large")
    c_field = 13 + len(header)
    add("oversized_ciphertext_length", base[:c_field] + (2**40).to_bytes(8, "big") + base[c_field + 8 :],
        "ciphertext length field 2^40 (over the 2 GiB default limit)", "rejected: too large")

    # Faults in the header, signed again so only the header check can catch them.
    canonical_field = b"\x6achunk_size\x19\x04\x00"
    assert header.count(canonical_field) == 1
    long_form = header.replace(canonical_field, b"\x6achunk_size\x1a\x00\x00\x04\x00")
    add("noncanonical_header", resign(long_form, ciphertext), "chunk_size 1024 written as a 4-byte integer, signed again by the sender", "rejected: malformed")
    fields = cbor.decode(header, "vector")
    extra = dict(fields, x=1)
    add("header_unknown_field", resign(cbor.encode(extra), ciphertext), "header with an extra field \"x\", signed again by the sender", "rejected: malformed")
    add("no_recipients", resign(cbor.encode(dict(fields, recipients=[])), ciphertext), "header with an empty recipient list, signed again by the sender", "rejected: malformed")
    garbage = dict(fields, recipients=[[fields["recipients"][0][0], bytes(80)]])
    add("wrapped_key_garbage", resign(cbor.encode(garbage), ciphertext), "A's wrapped content key replaced by zeros, signed again by the sender", "rejected: tampered")

    # Who sent it, for whom.
    add("not_addressed", build("not_addressed", small, ["A", "B"], heads={SEGMENT_DOC: [last_hash(segment)]}),
        "an intact bundle for A and B, opened by C", "rejected: not addressed to this node", open_as="C")
    add("unknown_sender", build("unknown_sender", small, ["A"], sender=STRANGER), "signed by a node the directory does not know", "rejected: unknown sender", status="unknown")
    add("revoked_sender", build("revoked_sender", small, ["A"], sender=REVOKED), "signed by a node whose certificate is revoked", "rejected: revoked sender", status="revoked")
    add("other_workspace", build("other_workspace", small, ["A"], workspace=OTHER_WORKSPACE),
        "an intact bundle for another workspace (readers pass their workspace key)", "rejected: unknown sender")

    # Payload: limits and shape (properly encrypted and signed).
    add("payload_over_limit", build("payload_over_limit", with_blob, ["A"], chunk_size=1024),
        f"a {len(plaintext):,}-byte payload opened with max_plaintext_bytes 2048", "rejected: too large", limits={"max_plaintext_bytes": 2048})
    add("blob_over_limit", build("blob_over_limit", with_blob, ["A"]), "a 3000-byte blob opened with max_blob_bytes 2048", "rejected: too large", limits={"max_blob_bytes": 2048})
    small_items = count_items(cbor.encode(bundle_payload.content_to_wire(small, 2)))
    add("items_over_limit", build("items_over_limit", small, ["A"]), f"a payload of {small_items} CBOR items opened with max_items 10", "rejected: too large", limits={"max_items": 10})
    wrong_hash = cbor.encode({"directory": [], "changes": [], "blobs": [[hashlib.sha256(b"other").digest(), blob_data]], "acks": {}})
    add("blob_hash_mismatch", seal_raw("blob_hash_mismatch", wrong_hash, ["A"]), "a blob whose data does not hash to its key", "rejected: malformed")
    add("payload_missing_field", seal_raw("payload_missing_field", cbor.encode({"directory": [], "changes": [], "blobs": []}), ["A"]),
        "a payload map without \"acks\"", "rejected: malformed")
    stringref = cbor2.dumps({"acks": {}, "blobs": [], "changes": [], "directory": cbor2.CBORTag(256, [])}, canonical=True)
    add("payload_cbor_tag", seal_raw("payload_cbor_tag", stringref, ["A"]), "a payload holding a CBOR tag (256, string references)", "rejected: malformed")
    noncanonical = b"\xa4" + b"\x69directory\x80" + b"\x67changes\x80" + b"\x65blobs\x80" + b"\x64acks\xa0"
    add("payload_noncanonical", seal_raw("payload_noncanonical", noncanonical, ["A"]), "a payload map with its keys out of canonical order", "rejected: malformed")

    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return files


def _adder(files: dict[str, bytes], manifest: dict[str, Entry]) -> Callable[..., None]:
    def add(name: str, data: bytes, description: str, expected: str, *, open_as: str = "A", status: str = "trusted", limits: dict[str, int] | None = None) -> None:
        entry: Entry = {"description": description, "open_as": open_as, "sender_status": status, "expected": expected}
        if limits:
            entry["limits"] = limits
        if expected not in OUTCOMES:
            raise ValueError(f"{name}: {expected!r} is not an outcome of docs/bundle-format.md section 9")
        if expected == ACCEPTED:
            header, content = bundle.open_bundle(data, my_key=IDENTITIES[open_as], sender_status=lambda _k: status, workspace=WORKSPACE)
            entry["contains"] = summarize(header, content)
        files[f"{name}.bundle"] = data
        manifest[name] = entry

    return add


# --- format 2 ----------------------------------------------------------------------------------

Inner = Callable[[bytes, bytes, bytes, bytes], bytes]


def build2(name: str, content: BundleContent, recipients: list[str], *, sender: nacl.signing.SigningKey = SENDER, workspace: bytes = WORKSPACE,
           heads: Mapping[str, Sequence[bytes]] | None = None, chunk_size: int = bundle.DEFAULT_CHUNK_SIZE, version: int = 2) -> bytes:  # fmt: skip
    """A bundle of format 2 (as the previous release wrote it) or 3 (as `bundle.build_bundle` writes it)."""
    return seal2(name, bundle_payload.encode_payload(content, version), recipients, sender=sender, workspace=workspace, heads=heads, chunk_size=chunk_size, version=version)


def seal2(name: str, payload: bytes, recipients: list[str], *, sender: nacl.signing.SigningKey = SENDER, workspace: bytes = WORKSPACE, heads: Mapping[str, Sequence[bytes]] | None = None,
          chunk_size: int = bundle.DEFAULT_CHUNK_SIZE, stream_tags: list[int] | None = None, inner: Inner | None = None, version: int = 2) -> bytes:  # fmt: skip
    """A format 2 (or 3) bundle around an arbitrary payload; `inner` rewrites the plaintext (see
    `bundle._seal_plaintext`)."""
    return bundle._seal_plaintext(
        payload, sender_key=sender, workspace=workspace, recipients=[pk(IDENTITIES[r]) for r in recipients], heads=heads or {},
        created_at=CREATED_AT, incarnation=INCARNATION, randomness=randomness(name), chunk_size=chunk_size, stream_tags=stream_tags, inner=inner, version=version,
    )  # fmt: skip


def resigned_header(edit: Callable[[dict[str, Any]], bytes]) -> Inner:
    """An `inner` that replaces the inner header by `edit(fields)` and signs it again with the
    sender's key, so only the checks behind the signature can find the fault."""

    def inner(envelope: bytes, header_raw: bytes, payload: bytes, _signature: bytes) -> bytes:
        new_raw = edit(cbor.decode(header_raw, "vector"))
        return bundle._inner_plaintext(envelope, new_raw, payload, crypto.sign(SENDER, bundle._signed_message(envelope, new_raw, payload)))

    return inner


def opened_inner(data: bytes, reader: str) -> tuple[bytes, bytes, bytes]:
    """(inner header bytes, payload, signature) of a format 2 bundle, as `reader` decrypts it."""
    view = memoryview(data)
    parsed = bundle._parse(view, bundle.DEFAULT_MAX_BUNDLE_BYTES)
    key = next(k for s in parsed.stanzas if (k := sealing.unwrap_key(s, IDENTITIES[reader])) is not None)
    plaintext = sealing.decrypt_stream(view[parsed.ciphertext_start :], key, parsed.envelope.chunk_size, crypto.sha256(bytes(parsed.raw_envelope)), 2**32)
    header_raw, payload, signature = bundle._split_inner(plaintext)
    return header_raw, bytes(payload), signature


def build_v2_vectors() -> dict[str, bytes]:
    """Format 2: `NAME.bundle` and `manifest.json` of tests/vectors/."""
    files: dict[str, bytes] = {}
    manifest: dict[str, Entry] = {}
    add = _adder(files, manifest)

    segment = automerge_changes(AUTHOR, SEGMENT_DOC, ["hello", "hello, world"])
    small = BundleContent(changes=((SEGMENT_DOC, segment),))
    small_heads = {SEGMENT_DOC: [last_hash(segment)]}
    add("ok_small", build2("ok_small", small, ["A"], heads=small_heads), "two signed Automerge changes in one channel segment, for A", "accepted")
    directory = automerge_changes(ADMIN, "directory", ["certificate for node B"])
    head = automerge_changes(AUTHOR, HEAD_DOC, ["general"])
    unsigned_first = automerge_changes(AUTHOR, SEGMENT_DOC, ["one", "two"], sign_all=False)
    multi = BundleContent(
        directory=(("directory", directory),),
        changes=((HEAD_DOC, head), (SEGMENT_DOC, unsigned_first)),
        acks={pk(IDENTITIES["A"]): {SEGMENT_DOC: (last_hash(segment),)}},
    )
    multi_heads = {"directory": [last_hash(directory)], HEAD_DOC: [last_hash(head)], SEGMENT_DOC: [last_hash(unsigned_first)]}
    ok_multi = build2("ok_multi_recipient", multi, ["A", "B"], heads=multi_heads)
    add("ok_multi_recipient", ok_multi,
        "directory update first, two channel documents (the first change unsigned, vouched for by the second), acks for A; for A and B, opened by B", "accepted", open_as="B")
    blob_data = bytes((i * 7 + 3) % 251 for i in range(3000))
    with_blob = BundleContent(changes=((SEGMENT_DOC, segment),), blobs=((hashlib.sha256(blob_data).digest(), blob_data),))
    base = build2("ok_with_blob", with_blob, ["A"], heads=small_heads, chunk_size=1024)
    add("ok_with_blob", base, "one change and a 3000-byte blob, chunk size 1024 so the stream has 4 chunks, for A", "accepted")
    add("ok_empty", build2("ok_empty", BundleContent(), ["A"]), "no content and no heads (a bare acknowledgement), for A", "accepted")

    # The clear framing (base: ok_with_blob, one stanza, 4 chunks of 1024).
    start = bundle.PREFIX_BYTES + bundle.STANZA_BYTES + bundle.LENGTH_BYTES
    ciphertext = base[start:]
    stream_header, pieces = chunks(ciphertext, 1024)
    assert len(pieces) == 4
    add("bad_magic", b"\x89RPBNDX\n" + base[8:], "the magic's seventh byte changed", "rejected: malformed")
    add("unsupported_version", base[:8] + b"\x05" + base[9:], "format version byte 5", "rejected: unsupported version")
    add("bad_chunk_size", base[:9] + (512).to_bytes(4, "big") + base[13:], "chunk size field 512 (under 1024)", "rejected: malformed")
    add("no_stanzas", base[:13] + b"\x00\x00" + base[15:], "stanza count 0", "rejected: malformed")
    add("too_many_stanzas", base[:13] + (bundle.MAX_RECIPIENTS + 1).to_bytes(2, "big") + base[15:], "stanza count 1025 (over 1024)", "rejected: too large")
    add("trailing_garbage", base + b"\x00" * 7, "seven zero bytes after the ciphertext", "rejected: malformed")
    add("oversized_ciphertext_length", base[: start - 8] + (2**40).to_bytes(8, "big") + base[start:],
        "ciphertext length field 2^40 (over the 2 GiB default limit)", "rejected: too large")
    add("truncated_mid_chunk", base[: start + len(stream_header) + len(pieces[0]) + len(pieces[1]) // 2], "the file cut in the middle of the second chunk", "rejected: truncated")
    add("truncated_at_chunk_boundary", base[: len(base) - len(pieces[-1])], "the file cut exactly before the final chunk", "rejected: truncated")

    # Stanzas: who may open it.
    add("tampered_stanza", flip(base, bundle.PREFIX_BYTES + 40), "one byte of A's only stanza flipped: it no longer opens for A (nor for anyone)", "rejected: not addressed to this node")
    add("not_addressed", build2("not_addressed", small, ["A", "B"], heads=small_heads), "an intact bundle for A and B, opened by C", "rejected: not addressed to this node", open_as="C")
    ab_header, _, ab_signature = opened_inner(ok_multi, "B")
    readdressed = bundle._seal_plaintext(
        cbor.encode(bundle_payload.content_to_wire(multi, 2)), sender_key=SENDER, workspace=WORKSPACE, recipients=[pk(IDENTITIES[r]) for r in ("A", "B", "C")],
        heads=multi_heads, created_at=CREATED_AT, incarnation=INCARNATION, randomness=randomness("readdressed"),
        chunk_size=bundle.DEFAULT_CHUNK_SIZE, inner=lambda envelope, _h, payload, _s: bundle._inner_plaintext(envelope, ab_header, payload, ab_signature), version=2,
    )  # fmt: skip
    add("readdressed_by_recipient", readdressed,
        "B, a recipient, re-encrypted ok_multi_recipient's inner header, payload and signature with a stanza for C added: the signature covers the stanzas", "rejected: tampered", open_as="C")

    # The stream (one stanza for A; no outer signature: the stream's own authentication decides).
    add("tampered_ciphertext", flip(base, start + len(ciphertext) // 2), "one ciphertext byte flipped", "rejected: tampered")
    add("reordered_chunks", base[:start] + stream_header + pieces[0] + pieces[2] + pieces[1] + pieces[3], "chunks 2 and 3 swapped", "rejected: tampered")
    dropped = stream_header + b"".join(pieces[:-1])
    add("truncated_stream", base[: start - 8] + len(dropped).to_bytes(8, "big") + dropped,
        "final chunk removed and the length fixed: the stream ends without TAG_FINAL", "rejected: truncated")
    blob_payload = cbor.encode(bundle_payload.content_to_wire(with_blob, 2))
    tags = [bundle.TAG_MESSAGE, bundle.TAG_FINAL, bundle.TAG_MESSAGE, bundle.TAG_FINAL]
    add("data_after_final", seal2("data_after_final", blob_payload, ["A"], chunk_size=1024, stream_tags=tags),
        "a properly encrypted stream whose second of four chunks carries TAG_FINAL", "rejected: tampered")

    # Behind the encryption: the inner header and the signature.
    _, _, other_signature = opened_inner(files["ok_small.bundle"], "A")
    add("swapped_signature", seal2("swapped_signature", blob_payload, ["A"], inner=lambda e, h, p, _s: bundle._inner_plaintext(e, h, p, other_signature)),
        "the signature of ok_small in place of this bundle's own", "rejected: tampered")
    later = (CREATED_AT.to_bytes(8, "big"), (CREATED_AT + 1).to_bytes(8, "big"))
    add("tampered_inner_header", seal2("tampered_inner_header", blob_payload, ["A"], inner=lambda e, h, p, s: bundle._inner_plaintext(e, h.replace(*later), p, s)),
        "created_at changed by one millisecond inside the encryption (as a recipient could), not signed again", "rejected: tampered")
    add("noncanonical_header", seal2("noncanonical_header", blob_payload, ["A"], inner=resigned_header(lambda f: cbor.encode(f).replace(b"\x61v\x02", b"\x61v\x18\x02"))),
        "the inner header's v written as a 1-byte-argument integer, signed again by the sender", "rejected: malformed")
    add("header_unknown_field", seal2("header_unknown_field", blob_payload, ["A"], inner=resigned_header(lambda f: cbor.encode(dict(f, x=1)))),
        "inner header with an extra field \"x\", signed again by the sender", "rejected: malformed")
    add("recipients_mismatch", seal2("recipients_mismatch", blob_payload, ["A"], inner=resigned_header(lambda f: cbor.encode(dict(f, recipients=sorted([pk(IDENTITIES["A"]), pk(IDENTITIES["B"])]))))),
        "the inner header lists A and B, the bundle has one stanza (A's); signed again by the sender", "rejected: malformed")
    add("bad_padding", seal2("bad_padding", blob_payload, ["A"], inner=lambda e, h, p, s: bundle._inner_plaintext(e, h, p, s)[:-1] + b"\x01"),
        "the last padding byte is 1, not 0", "rejected: malformed")

    # Who sent it.
    add("unknown_sender", build2("unknown_sender", small, ["A"], sender=STRANGER), "signed by a node the directory does not know", "rejected: unknown sender", status="unknown")
    add("revoked_sender", build2("revoked_sender", small, ["A"], sender=REVOKED), "signed by a node whose certificate is revoked", "rejected: revoked sender", status="revoked")
    add("other_workspace", build2("other_workspace", small, ["A"], workspace=OTHER_WORKSPACE),
        "an intact bundle for another workspace (readers pass their workspace key)", "rejected: unknown sender")

    # Payload: limits and shape (properly encrypted and signed).
    add("payload_over_limit", build2("payload_over_limit", with_blob, ["A"], chunk_size=1024),
        "a bundle whose decrypted stream exceeds max_plaintext_bytes 2048", "rejected: too large", limits={"max_plaintext_bytes": 2048})
    add("blob_over_limit", build2("blob_over_limit", with_blob, ["A"]), "a 3000-byte blob opened with max_blob_bytes 2048", "rejected: too large", limits={"max_blob_bytes": 2048})
    small_items = count_items(cbor.encode(bundle_payload.content_to_wire(small, 2)))
    add("items_over_limit", build2("items_over_limit", small, ["A"]), f"a payload of {small_items} CBOR items opened with max_items 10", "rejected: too large", limits={"max_items": 10})
    wrong_hash = cbor.encode({"directory": [], "changes": [], "blobs": [[hashlib.sha256(b"other").digest(), blob_data]], "acks": {}})
    add("blob_hash_mismatch", seal2("blob_hash_mismatch", wrong_hash, ["A"]), "a blob whose data does not hash to its key", "rejected: malformed")
    add("payload_missing_field", seal2("payload_missing_field", cbor.encode({"directory": [], "changes": [], "blobs": []}), ["A"]), "a payload map without \"acks\"", "rejected: malformed")
    stringref = cbor2.dumps({"acks": {}, "blobs": [], "changes": [], "directory": cbor2.CBORTag(256, [])}, canonical=True)
    add("payload_cbor_tag", seal2("payload_cbor_tag", stringref, ["A"]), "a payload holding a CBOR tag (256, string references)", "rejected: malformed")
    noncanonical = b"\xa4" + b"\x69directory\x80" + b"\x67changes\x80" + b"\x65blobs\x80" + b"\x64acks\xa0"
    add("payload_noncanonical", seal2("payload_noncanonical", noncanonical, ["A"]), "a payload map with its keys out of canonical order", "rejected: malformed")

    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return files


# --- format 3 ----------------------------------------------------------------------------------


def whole_segment(author: nacl.signing.SigningKey, doc_id: str, texts: list[str]) -> WholeSegment:
    """A segment carried whole: the compacted document of one change per text by `author`
    (deterministic, as `automerge_changes`) and the author's signature over the last change."""
    doc = Document(actor_id=pk(author) + bytes(16))
    for text in texts:
        with doc.transaction() as tx:
            tx.put(ROOT, "text", ScalarType.Str, text)
    change = doc.get_last_local_change()
    assert change is not None
    newest = parse_change(change.bytes).hash
    return WholeSegment(doc_id, doc.save(), ((newest, sign_change(author, doc_id, newest)),))


def compressed(wire: dict[str, Any]) -> bytes:
    return bundle_payload.compress(cbor.encode(wire))


def build_v3_vectors() -> dict[str, bytes]:
    """Format 3: `NAME.bundle` and `manifest.json` of tests/vectors/v3/. The framing is format
    2's (its vectors cover it); these cover what changed: the compressed payload and wholes."""
    files: dict[str, bytes] = {}
    manifest: dict[str, Entry] = {}
    add = _adder(files, manifest)

    def build3(name: str, content: BundleContent, recipients: list[str], **kwargs: Any) -> bytes:
        return build2(f"v3/{name}", content, recipients, version=3, **kwargs)

    def seal3(name: str, payload: bytes) -> bytes:
        return seal2(f"v3/{name}", payload, ["A"], version=3)

    segment = automerge_changes(AUTHOR, SEGMENT_DOC, ["hello", "hello, world"])
    small = BundleContent(changes=((SEGMENT_DOC, segment),))
    add("ok_small", build3("ok_small", small, ["A"], heads={SEGMENT_DOC: [last_hash(segment)]}), "two signed Automerge changes in one channel segment, for A", "accepted")
    head = automerge_changes(AUTHOR, HEAD_DOC, ["general"])
    whole = whole_segment(AUTHOR, SEGMENT_DOC, ["one", "two", "three"])
    with_whole = BundleContent(changes=((HEAD_DOC, head),), wholes=(whole,))
    whole_heads = {HEAD_DOC: [last_hash(head)], SEGMENT_DOC: [whole.signatures[0][0]]}
    add("ok_whole", build3("ok_whole", with_whole, ["A", "B"], heads=whole_heads),
        "a channel head as changes and a segment of three changes carried whole (its author's one signature over the third), for A and B", "accepted")
    blob_data = bytes((i * 7 + 3) % 251 for i in range(3000))
    with_blob = BundleContent(changes=((SEGMENT_DOC, segment),), blobs=((hashlib.sha256(blob_data).digest(), blob_data),))
    add("ok_with_blob", build3("ok_with_blob", with_blob, ["A"], chunk_size=1024), "one change and a 3000-byte blob, chunk size 1024, for A", "accepted")
    add("ok_empty", build3("ok_empty", BundleContent(), ["A"]), "no content and no heads (a bare acknowledgement), for A", "accepted")

    # The compression.
    empty = bundle_payload.content_to_wire(BundleContent(), 3)
    bomb = bundle_payload.compress(cbor.encode(dict(empty, blobs=[[hashlib.sha256(bytes(4 * 1024 * 1024)).digest(), bytes(4 * 1024 * 1024)]])))
    add("zstd_bomb", seal3("zstd_bomb", bomb), f"a {len(bomb):,}-byte zstd frame that expands to over 4 MiB, opened with max_plaintext_bytes 1048576",
        "rejected: too large", limits={"max_plaintext_bytes": 1024 * 1024})
    raw = cbor.encode(empty)
    add("zstd_size_undeclared", seal3("zstd_size_undeclared", zstandard_frame_without_size(raw)), "a zstd frame that does not declare its content size", "rejected: malformed")
    frame = compressed(bundle_payload.content_to_wire(with_blob, 3))
    add("zstd_truncated", seal3("zstd_truncated", frame[:-16]), "the zstd frame cut 16 bytes short, signed as it is", "rejected: malformed")
    add("payload_uncompressed", seal3("payload_uncompressed", raw), "the payload's CBOR map not compressed", "rejected: malformed")
    add("payload_without_wholes", seal3("payload_without_wholes", compressed(bundle_payload.content_to_wire(small, 2))), "a compressed payload map of format 2's four fields", "rejected: malformed")
    small_items = count_items(cbor.encode(bundle_payload.content_to_wire(small, 3)))
    add("items_over_limit", build3("items_over_limit", small, ["A"]), f"a payload of {small_items} CBOR items opened with max_items 10", "rejected: too large", limits={"max_items": 10})

    # Wholes: the reader's limits and shape (whether the signatures vouch is the receiver's check).
    def with_wholes(entries: list[Any]) -> bytes:
        return compressed(dict(empty, wholes=entries))

    signed = [[change_hash, signature] for change_hash, signature in whole.signatures]
    add("whole_over_limit", seal3("whole_over_limit", with_wholes([[SEGMENT_DOC, bytes(MAX_WHOLE_BYTES + 1), signed]])),
        "a segment carried whole of 2 MiB + 1 byte (over MAX_WHOLE_BYTES)", "rejected: too large")
    add("whole_unsigned", seal3("whole_unsigned", with_wholes([[SEGMENT_DOC, whole.data, []]])), "a segment carried whole without signatures", "rejected: malformed")
    add("whole_also_as_changes", seal3("whole_also_as_changes", compressed(dict(bundle_payload.content_to_wire(small, 3), wholes=[[SEGMENT_DOC, whole.data, signed]]))),
        "one segment both as changes and whole", "rejected: malformed")
    add("whole_short_signature", seal3("whole_short_signature", with_wholes([[SEGMENT_DOC, whole.data, [[signed[0][0], signed[0][1][:63]]]]])),
        "a segment carried whole whose signature is 63 bytes", "rejected: malformed")

    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return files


def zstandard_frame_without_size(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=False).compress(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the vectors into tests/vectors/")
    args = parser.parse_args(argv)
    files = build_vectors()
    if args.write:
        (VECTORS / V1).mkdir(parents=True, exist_ok=True)
        (VECTORS / V3).mkdir(parents=True, exist_ok=True)
        for stale in VECTORS.glob("**/*.bundle"):
            if stale.relative_to(VECTORS).as_posix() not in files:
                stale.unlink()
        for name, data in files.items():
            (VECTORS / name).write_bytes(data)
        print(f"wrote {len(files)} files to {VECTORS}")
        return 0
    differ = [name for name, data in files.items() if not (VECTORS / name).is_file() or (VECTORS / name).read_bytes() != data]
    for name in differ:
        print(f"differs: {name}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
