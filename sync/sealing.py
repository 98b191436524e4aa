"""The two libsodium constructions both bundle formats use (docs/bundle-format.md sections 3, 4
and 12): a content key sealed to each recipient (crypto_box_seal, with an ephemeral key pair
the builder may derive), and an XChaCha20-Poly1305 secretstream in chunks whose boundaries
follow from the lengths alone, so a reader knows - and limits - the plaintext before decrypting.
Pure functions of bytes; libsodium's exceptions become ValueError (building) or the reader's
BundleRejected outcomes (reading)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.signing

from appliance import cbor, crypto
from sync.errors import Malformed, Tampered, TooLarge, Truncated

Buffer = cbor.Buffer

STREAM_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
CHUNK_OVERHEAD = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17: tag byte + MAC
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


def derive(master: bytes, label: bytes, size: int, data: bytes = b"") -> bytes:
    """BLAKE2b keyed with `master`, personalised with `label`: docs/bundle-format.md section 12."""
    return hashlib.blake2b(data, digest_size=size, key=master, person=label).digest()


def wrap_key(content_key: bytes, recipient: bytes, seed: bytes) -> bytes:
    """libsodium's crypto_box_seal with its ephemeral key pair made from `seed`: the output is
    exactly what crypto_box_seal would write had randombytes produced that key pair, and opens
    with crypto_box_seal_open / nacl.public.SealedBox."""
    try:
        public = bytes(nacl.signing.VerifyKey(recipient).to_curve25519_public_key())
        ephemeral_pk, ephemeral_sk = sodium.crypto_box_seed_keypair(seed)
        nonce = hashlib.blake2b(ephemeral_pk + public, digest_size=sodium.crypto_box_NONCEBYTES).digest()
        return ephemeral_pk + sodium.crypto_box(content_key, nonce, public, ephemeral_sk)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise ValueError(f"recipient {recipient.hex()[:16]}... is not a usable Ed25519 public key") from exc


def encrypt_stream(
    key: bytes, stream_header: bytes, plaintext: bytes, chunk_size: int, ad: bytes, tags: Sequence[int] | None = None
) -> bytes:
    """A libsodium secretstream with a chosen header (see `crypto.secretstream_push_state`)."""
    state = crypto.secretstream_push_state(key, stream_header)
    pieces = [plaintext[i : i + chunk_size] for i in range(0, len(plaintext), chunk_size)]
    if tags is None:
        tags = [TAG_MESSAGE] * (len(pieces) - 1) + [TAG_FINAL]
    out = [stream_header]
    for piece, tag in zip(pieces, tags, strict=True):
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, piece, ad, tag))
    return b"".join(out)


def unwrap_key(wrapped: Buffer, my_key: nacl.signing.SigningKey) -> bytes | None:
    """The content key in a sealed box of STANZA_BYTES (always 32 bytes), or None when the
    box is not for this key (or was altered: the two look the same)."""
    try:
        return bytes(nacl.public.SealedBox(my_key.to_curve25519_private_key()).decrypt(bytes(wrapped)))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return None


def decrypt_stream(ciphertext: memoryview, key: bytes, chunk_size: int, ad: bytes, max_plaintext: int) -> bytearray:
    """Chunk boundaries follow from the lengths alone (every chunk but the last holds
    `chunk_size` bytes), so the plaintext size is known - and limited - before decrypting."""
    body = len(ciphertext) - STREAM_HEADER_BYTES
    full = chunk_size + CHUNK_OVERHEAD
    count = -(-body // full)
    last = body - (count - 1) * full
    if last <= CHUNK_OVERHEAD:
        raise Malformed(f"the encrypted stream's last chunk is {last} bytes: too short to hold any data")
    plaintext_length = body - count * CHUNK_OVERHEAD
    if plaintext_length > max_plaintext:
        raise TooLarge(f"bundle payload is {plaintext_length:,} bytes; the limit is {max_plaintext:,}")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, bytes(ciphertext[:STREAM_HEADER_BYTES]), key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise Tampered("the encrypted stream's header is unusable") from exc
    out = bytearray()
    pos = STREAM_HEADER_BYTES
    for index in range(count):
        piece = bytes(ciphertext[pos : pos + full])
        pos += len(piece)
        try:
            message, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, piece, ad)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise Tampered(f"encrypted chunk {index + 1} of {count} fails authentication (altered, reordered or spliced)") from exc
        if len(out) + len(message) > max_plaintext:  # unreachable given the check above; kept as the invariant
            raise TooLarge(f"bundle payload exceeds {max_plaintext:,} bytes")
        out += message
        if tag == TAG_FINAL:
            if index != count - 1:
                raise Tampered(f"the encrypted stream has data after its final chunk ({index + 1} of {count})")
        elif tag != TAG_MESSAGE:
            raise Malformed(f"encrypted chunk {index + 1} carries an unexpected stream tag {tag}")
        elif index == count - 1:
            raise Truncated("bundle is truncated: the encrypted stream ends without its final chunk")
    return out
