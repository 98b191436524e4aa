"""The bundle format version 1 writer (docs/bundle-format.md section 14), which nodes no longer
use: builders MUST NOT write version 1. Tests keep it to make the version 1 vectors, the
fuzzer's version 1 mutants and a stick as the previous release wrote it, which prove that
sync/bundle_v1.py still reads what older nodes write."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import nacl.signing

from appliance import cbor, crypto
from sync import bundle as common
from sync import bundle_payload, bundle_v1, sealing
from sync.bundle import CONTENT_KEY_BYTES, ID_BYTES, MAGIC, MAX_HEADER_BYTES, RANDOMNESS_BYTES, STREAM_HEADER_BYTES, BundleContent
from sync.bundle_v1 import DERIVE_CONTEXT, LENGTH_BYTES, VERSION
from sync.errors import BundleRejected


def build_bundle(
    content: BundleContent,
    *,
    sender_key: nacl.signing.SigningKey,
    workspace: bytes,
    recipients: Sequence[bytes],
    heads: Mapping[str, Sequence[bytes]],
    created_at: int,
    randomness: bytes,
    chunk_size: int = common.DEFAULT_CHUNK_SIZE,
) -> bytes:
    """A version 1 bundle, exactly as the previous release wrote it."""
    return seal_plaintext(
        bundle_payload.encode_payload(content, VERSION), sender_key=sender_key, workspace=workspace, recipients=recipients, heads=heads,
        created_at=created_at, randomness=randomness, chunk_size=chunk_size,
    )


def seal_plaintext(
    plaintext: bytes,
    *,
    sender_key: nacl.signing.SigningKey,
    workspace: bytes,
    recipients: Sequence[bytes],
    heads: Mapping[str, Sequence[bytes]],
    created_at: int,
    randomness: bytes,
    chunk_size: int,
    stream_tags: Sequence[int] | None = None,
) -> bytes:
    """Encrypts, wraps, signs and frames a payload that is already encoded. `stream_tags`
    overrides the chunk tags (to write bad streams)."""
    if not isinstance(randomness, bytes) or len(randomness) != RANDOMNESS_BYTES:
        raise ValueError(f"randomness must be {RANDOMNESS_BYTES} bytes")
    if not plaintext:
        raise ValueError("empty plaintext")
    keys = [bytes(r) for r in recipients]
    recipient_keys = sorted(set(keys))
    if len(recipient_keys) != len(keys):
        raise ValueError("a recipient is listed twice")
    heads_wire = {doc: sorted({bytes(h) for h in hashes}) for doc, hashes in heads.items()}
    sender = bytes(sender_key.verify_key)

    context = [DERIVE_CONTEXT, sender, workspace, recipient_keys, heads_wire, created_at, chunk_size, crypto.sha256(plaintext)]
    master = hashlib.blake2b(cbor.encode(context), digest_size=32, key=randomness).digest()
    content_key = sealing.derive(master, b"rp-content-key", CONTENT_KEY_BYTES)
    header_obj = {
        "v": VERSION,
        "id": sealing.derive(master, b"rp-bundle-id", ID_BYTES),
        "workspace": workspace,
        "sender": sender,
        "created_at": created_at,
        "heads": heads_wire,
        "recipients": [[r, sealing.wrap_key(content_key, r, sealing.derive(master, b"rp-wrap-seed", 32, r))] for r in recipient_keys],
        "chunk_size": chunk_size,
    }
    header_raw = cbor.encode(header_obj)
    if len(header_raw) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(header_raw):,} bytes; the format allows {MAX_HEADER_BYTES:,}")
    try:
        bundle_v1._header_from_wire(header_obj, header_raw, 0)
    except BundleRejected as exc:
        raise ValueError(str(exc)) from exc
    stream_header = sealing.derive(master, b"rp-stream-header", STREAM_HEADER_BYTES)
    ciphertext = sealing.encrypt_stream(content_key, stream_header, plaintext, chunk_size, crypto.sha256(header_raw), stream_tags)
    return frame(header_raw, ciphertext, sign(sender_key, header_raw, ciphertext))


def sign(sender_key: nacl.signing.SigningKey, header_raw: bytes, ciphertext: common.Buffer) -> bytes:
    return crypto.sign(sender_key, bundle_v1.signed_message(header_raw, ciphertext))


def frame(header_raw: bytes, ciphertext: bytes, signature: bytes, version: int = VERSION) -> bytes:
    return b"".join(
        [MAGIC, bytes([version]), len(header_raw).to_bytes(4, "big"), header_raw, len(ciphertext).to_bytes(LENGTH_BYTES, "big"), ciphertext, signature]
    )
