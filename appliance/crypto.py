"""Keys and sealing. Thin, typed wrappers over PyNaCl; every failure becomes a node error."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from appliance.errors import CertificateInvalid, WrongPassphrase

KEY_BYTES = 32
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. Stored beside each sealed blob so costs can rise without breaking old files."""

    opslimit: int
    memlimit: int


INTERACTIVE = KdfParams(nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE)
MODERATE = KdfParams(nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE)
SALT_BYTES = nacl.pwhash.argon2id.SALTBYTES


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def new_signing_key(seed: bytes | None = None) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed) if seed is not None else nacl.signing.SigningKey.generate()


def sign(key: nacl.signing.SigningKey, message: bytes) -> bytes:
    return key.sign(message).signature


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def require_signature(public_key: bytes, message: bytes, signature: bytes, what: str) -> None:
    if not verify(public_key, message, signature):
        raise CertificateInvalid(f"{what}: signature does not verify")


def derive_key(secret: bytes, salt: bytes, params: KdfParams) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        KEY_BYTES, secret, salt, opslimit=params.opslimit, memlimit=params.memlimit
    )


def secretbox_seal(key: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    return bytes(nacl.secret.SecretBox(key).encrypt(plaintext, nonce))


def secretbox_open(key: bytes, sealed: bytes) -> bytes | None:
    """None when the key is wrong or the bytes were altered."""
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(sealed))
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError):
        return None


def random_bytes(n: int) -> bytes:
    return nacl.utils.random(n)


SECRETSTREAM_KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
SECRETSTREAM_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24


def secretstream_push_state(key: bytes, header: bytes) -> sodium.crypto_secretstream_xchacha20poly1305_state:
    """A libsodium secretstream (xchacha20poly1305) state, ready to push, for a header the caller
    chose, so that codecs can take their randomness as a parameter.

    init_push would draw the header from randombytes and PyNaCl offers no way to supply it.
    init_pull computes the very same state from a given header (both run HChaCha20(key,
    header[0:16]), reset the counter and copy header[16:24]), so a state set up by init_pull and
    then used to push writes, byte for byte, the stream init_push would have written had it drawn
    this header. The header MUST still be fresh randomness for every stream under one key."""
    if len(key) != SECRETSTREAM_KEY_BYTES or len(header) != SECRETSTREAM_HEADER_BYTES:
        raise ValueError(f"a secretstream needs a {SECRETSTREAM_KEY_BYTES}-byte key and a {SECRETSTREAM_HEADER_BYTES}-byte header")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    return state


NONCE_BYTES = nacl.secret.SecretBox.NONCE_SIZE


def seal_with_passphrase(
    passphrase: str, plaintext: bytes, salt: bytes, nonce: bytes, params: KdfParams
) -> bytes:
    """Argon2id(passphrase) then XSalsa20-Poly1305. Salt and nonce are parameters (tests fix them)."""
    return secretbox_seal(derive_key(passphrase.encode(), salt, params), plaintext, nonce)


def open_with_passphrase(passphrase: str, sealed: bytes, salt: bytes, params: KdfParams) -> bytes:
    opened = secretbox_open(derive_key(passphrase.encode(), salt, params), sealed)
    if opened is None:
        raise WrongPassphrase("wrong passphrase")
    return opened
