"""Exports encrypted to a recipient's X25519 key, age-like: a random file key sealed to the
recipient (libsodium sealed box), the content in chunks under XChaCha20-Poly1305 secretstream
with that key, the last chunk tagged final, so a stream of any size is written and read in
bounded memory and a cut, reordered or altered file is refused.

    MAGIC (8) | sealed file key (80) | secretstream header (24) | chunks: u32 length | ciphertext

Key files: `IDENTITY_PREFIX` + hex secret key on one line (0600), the public key as 64 hex."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public

from appliance import crypto
from appliance.errors import InvalidInput

MAGIC = b"RPXSEAL1"
CHUNK_BYTES = 64 * 1024
SEALED_KEY_BYTES = 80  # sealed box: ephemeral public key (32) + file key (32) + MAC (16)
IDENTITY_PREFIX = "RALLYPOINT-EXPORT-SECRET-KEY-1 "
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


class SealedExportError(InvalidInput):
    """An encrypted export that cannot be opened: another recipient's, cut, or altered."""


def new_identity() -> tuple[str, str]:
    """(identity file text, recipient public key hex)."""
    key = nacl.public.PrivateKey.generate()
    return f"{IDENTITY_PREFIX}{bytes(key).hex()}\n", bytes(key.public_key).hex()


def parse_recipient(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput("a recipient is an X25519 public key: 64 hex digits (rallypoint export-key prints one)")
    return raw


def parse_identity(text: str) -> bytes:
    line = text.strip()
    if not line.startswith(IDENTITY_PREFIX.strip()):
        raise InvalidInput("not an export identity file (it starts with RALLYPOINT-EXPORT-SECRET-KEY-1)")
    try:
        raw = bytes.fromhex(line[len(IDENTITY_PREFIX.strip()) :].strip())
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput("the identity file's key is not 32 bytes of hex")
    return raw


class SealingWriter:
    """A write-only binary stream that encrypts what it is given into `raw`."""

    def __init__(self, raw: BinaryIO, recipient: bytes) -> None:
        self._raw = raw
        file_key = crypto.random_bytes(crypto.SECRETSTREAM_KEY_BYTES)
        header = crypto.random_bytes(crypto.SECRETSTREAM_HEADER_BYTES)
        self._state = crypto.secretstream_push_state(file_key, header)
        raw.write(MAGIC + nacl.public.SealedBox(nacl.public.PublicKey(recipient)).encrypt(file_key) + header)
        self._buffer = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) > CHUNK_BYTES:
            self._push(bytes(self._buffer[:CHUNK_BYTES]), _MESSAGE)
            del self._buffer[:CHUNK_BYTES]
        return len(data)

    def _push(self, chunk: bytes, tag: int) -> None:
        sealed = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, chunk, None, tag)
        self._raw.write(struct.pack(">I", len(sealed)) + sealed)

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        """Writes the final chunk (what the reader needs to know the stream is whole)."""
        if not self.closed:
            self._push(bytes(self._buffer), _FINAL)
            self._buffer.clear()
            self.closed = True


def open_sealed(source: BinaryIO, identity: bytes) -> Iterator[bytes]:
    """The plaintext chunks; SealedExportError before any chunk that does not hold."""
    start = source.read(len(MAGIC) + SEALED_KEY_BYTES + crypto.SECRETSTREAM_HEADER_BYTES)
    if not start.startswith(MAGIC):
        raise SealedExportError("not an encrypted Rallypoint export")
    if len(start) < len(MAGIC) + SEALED_KEY_BYTES + crypto.SECRETSTREAM_HEADER_BYTES:
        raise SealedExportError("the encrypted export is cut short")
    try:
        file_key = nacl.public.SealedBox(nacl.public.PrivateKey(identity)).decrypt(start[len(MAGIC) : len(MAGIC) + SEALED_KEY_BYTES])
    except nacl.exceptions.CryptoError as exc:
        raise SealedExportError("this export was not encrypted to this key (wrong identity file)") from exc
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, start[len(MAGIC) + SEALED_KEY_BYTES :], file_key)
    while True:
        prefix = source.read(4)
        if len(prefix) < 4:
            raise SealedExportError("the encrypted export is cut short: its final chunk is missing")
        (size,) = struct.unpack(">I", prefix)
        if size < _ABYTES or size > CHUNK_BYTES + _ABYTES:
            raise SealedExportError("the encrypted export is damaged (a chunk length is out of range)")
        sealed = source.read(size)
        if len(sealed) < size:
            raise SealedExportError("the encrypted export is cut short inside a chunk")
        try:
            chunk, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, sealed, None)
        except nacl.exceptions.CryptoError as exc:
            raise SealedExportError("the encrypted export was altered (a chunk does not authenticate)") from exc
        yield chunk
        if tag == _FINAL:
            if source.read(1):
                raise SealedExportError("the encrypted export has bytes after its final chunk")
            return
