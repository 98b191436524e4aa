"""The good format 2 test vectors follow from docs/bundle-format.md alone: each is rebuilt here,
byte for byte, from the fixed inputs tests/vectors/README.md lists, with the primitives the
specification names used directly - Ed25519 keys from seeds, BLAKE2b and SHA-256, canonical CBOR
(cbor2), crypto_box with a seeded ephemeral key pair, XChaCha20-Poly1305 secretstream, Ed25519
signatures - and none of the codec's own code (sync/bundle.py, sync/sealing.py, appliance.cbor,
appliance.crypto). Only the content (real Automerge changes) comes from tests/make_vectors.py:
what a payload carries is not the format's business."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import cbor2
import nacl.bindings as sodium
import nacl.signing
import pytest

from appliance.changes import SignedChange
from tests import make_vectors as mv

MAGIC = b"\x89RPBNDL\n"  # section 2
VERSION = 2
DERIVE_CONTEXT = "rallypoint/bundle/v2/derive"  # section 12
SIGNATURE_DOMAIN = b"rallypoint/bundle/v2\x00"  # section 7
CREATED_AT = 1767225600000  # README: 2026-01-01T00:00:00Z
INCARNATION = bytes(range(0xA0, 0xB0))  # README: the sender's incarnation in every format 2 vector
DEFAULT_CHUNK_SIZE = 65536  # section 10: the chunk size this implementation writes


def seed_key(byte: int) -> nacl.signing.SigningKey:
    """README: each key is made from a 32-byte seed of a single byte repeated."""
    return nacl.signing.SigningKey(bytes([byte]) * 32)


SENDER = seed_key(0x01)
NODES = {"A": seed_key(0x02), "B": seed_key(0x03), "C": seed_key(0x04)}
WORKSPACE = bytes(seed_key(0x05).verify_key)


def canonical(value: Any) -> bytes:
    """Section 1: length-first core deterministic CBOR."""
    return cbor2.dumps(value, canonical=True)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def padme(length: int) -> int:
    """Section 5, as written there."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    size_bits = exponent.bit_length()
    mask = (1 << (exponent - size_bits)) - 1
    return (length + mask) & ~mask


@dataclass(frozen=True)
class Content:
    directory: list[tuple[str, tuple[SignedChange, ...]]] = field(default_factory=list)
    changes: list[tuple[str, tuple[SignedChange, ...]]] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)
    acks: dict[bytes, dict[str, list[bytes]]] = field(default_factory=dict)


def payload(content: Content) -> bytes:
    """Section 8."""

    def section(documents: list[tuple[str, tuple[SignedChange, ...]]]) -> list[Any]:
        return [[doc_id, [[change.data, change.signature] for change in changes]] for doc_id, changes in documents]

    return canonical(
        {
            "directory": section(content.directory),
            "changes": section(content.changes),
            "blobs": [[sha256(data), data] for data in content.blobs],
            "acks": {peer.hex(): {doc: sorted(hashes) for doc, hashes in docs.items()} for peer, docs in content.acks.items()},
        }
    )


def build(name: str, content: Content, recipients: list[str], heads: dict[str, list[bytes]], chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """Sections 2 to 8, with the randomness derived as section 12 says."""
    randomness = sha256(b"rallypoint bundle test vector " + name.encode())  # README
    sender = bytes(SENDER.verify_key)
    keys = sorted(bytes(NODES[r].verify_key) for r in recipients)
    heads_map = {doc: sorted(hashes) for doc, hashes in heads.items()}
    body = payload(content)

    context = canonical([DERIVE_CONTEXT, sender, INCARNATION, WORKSPACE, keys, heads_map, CREATED_AT, chunk_size, sha256(body)])
    master = hashlib.blake2b(context, key=randomness, digest_size=32).digest()

    def derive(label: bytes, size: int, data: bytes = b"") -> bytes:
        return hashlib.blake2b(data, key=master, person=label, digest_size=size).digest()

    content_key = derive(b"rp-content-key", 32)
    stanzas = []
    for key in keys:  # section 3
        recipient_x25519 = sodium.crypto_sign_ed25519_pk_to_curve25519(key)
        ephemeral_public, ephemeral_secret = sodium.crypto_box_seed_keypair(derive(b"rp-wrap-seed", 32, key))
        nonce = hashlib.blake2b(ephemeral_public + recipient_x25519, digest_size=24).digest()
        stanzas.append(ephemeral_public + sodium.crypto_box(content_key, nonce, recipient_x25519, ephemeral_secret))
    envelope = MAGIC + bytes([VERSION]) + chunk_size.to_bytes(4, "big") + len(stanzas).to_bytes(2, "big") + b"".join(sorted(stanzas))

    inner_header = canonical(  # section 6
        {
            "v": VERSION,
            "id": derive(b"rp-bundle-id", 16),
            "heads": heads_map,
            "sender": sender,
            "workspace": WORKSPACE,
            "created_at": CREATED_AT,
            "recipients": keys,
            "incarnation": INCARNATION,
        }
    )
    signature = SENDER.sign(SIGNATURE_DOMAIN + sha256(envelope) + inner_header + sha256(body)).signature  # section 7
    plain = len(inner_header).to_bytes(4, "big") + inner_header + len(body).to_bytes(8, "big") + body + signature
    plain += bytes(padme(len(plain)) - len(plain))  # section 5

    stream_header = derive(b"rp-stream-header", 24)  # section 4, with init_pull's state (section 4: "Reproducibility")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, stream_header, content_key)
    pieces = [plain[at : at + chunk_size] for at in range(0, len(plain), chunk_size)]
    chunks = [
        sodium.crypto_secretstream_xchacha20poly1305_push(
            state,
            piece,
            sha256(envelope),
            sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL if index == len(pieces) - 1 else sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
        )
        for index, piece in enumerate(pieces)
    ]
    ciphertext = stream_header + b"".join(chunks)
    return envelope + len(ciphertext).to_bytes(8, "big") + ciphertext


@functools.cache
def good_vectors() -> dict[str, bytes]:
    """The good vectors README.md describes, from their inputs."""
    segment = mv.automerge_changes(mv.AUTHOR, mv.SEGMENT_DOC, ["hello", "hello, world"])
    small_heads = {mv.SEGMENT_DOC: [mv.last_hash(segment)]}
    directory = mv.automerge_changes(mv.ADMIN, "directory", ["certificate for node B"])
    head = mv.automerge_changes(mv.AUTHOR, mv.HEAD_DOC, ["general"])
    unsigned_first = mv.automerge_changes(mv.AUTHOR, mv.SEGMENT_DOC, ["one", "two"], sign_all=False)
    multi = Content(
        directory=[("directory", directory)],
        changes=[(mv.HEAD_DOC, head), (mv.SEGMENT_DOC, unsigned_first)],
        acks={bytes(NODES["A"].verify_key): {mv.SEGMENT_DOC: [mv.last_hash(segment)]}},
    )
    multi_heads = {"directory": [mv.last_hash(directory)], mv.HEAD_DOC: [mv.last_hash(head)], mv.SEGMENT_DOC: [mv.last_hash(unsigned_first)]}
    blob = bytes((i * 7 + 3) % 251 for i in range(3000))
    return {
        "ok_small": build("ok_small", Content(changes=[(mv.SEGMENT_DOC, segment)]), ["A"], small_heads),
        "ok_multi_recipient": build("ok_multi_recipient", multi, ["A", "B"], multi_heads),
        "ok_with_blob": build("ok_with_blob", Content(changes=[(mv.SEGMENT_DOC, segment)], blobs=[blob]), ["A"], small_heads, chunk_size=1024),
        "ok_empty": build("ok_empty", Content(), ["A"], {}),
    }


def test_every_accepted_vector_is_rebuilt() -> None:
    manifest = json.loads((mv.VECTORS / mv.MANIFEST).read_text())
    assert set(good_vectors()) == {name for name, entry in manifest.items() if entry["expected"] == mv.ACCEPTED}


@pytest.mark.parametrize("name", sorted(good_vectors()))
def test_a_good_vector_follows_from_the_specification(name: str) -> None:
    assert good_vectors()[name] == (mv.VECTORS / f"{name}.bundle").read_bytes()
