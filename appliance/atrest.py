"""Encryption at rest, the pure half: the node's key file codec and the keys derived from the
data key. The data key (32 random bytes made at init or join) is sealed under the passphrase
with Argon2id; the sealed key and what unseals it (salt, KDF cost) live in `node.key` beside
`node.db`, so it is reachable before the database opens. The database is encrypted by
SQLCipher under a RAW 256-bit key derived from the data key by a domain-separated BLAKE2b
(no per-connection KDF: every connection is keyed for the cost of one hash).

Key file format 1: the magic line `rallypoint-node-key/1\\n`, then canonical CBOR
{"v": 1, "salt": 16 bytes, "ops": int, "mem": int, "sealed": 72 bytes}. Anything else is
refused with the reason (KeyFileInvalid)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from appliance import cbor, crypto
from appliance.errors import InvalidInput, KeyFileInvalid

KEY_FILE = "node.key"
MAGIC = b"rallypoint-node-key/1\n"
VERSION = 1
SEALED_KEY_BYTES = crypto.KEY_BYTES + 16 + crypto.NONCE_BYTES  # key + Poly1305 tag + nonce
MAX_KEY_FILE_BYTES = 4096
_DB_KEY_PERSON = b"rp-sqlcipher-v1"  # BLAKE2b personalisation: this derivation and no other
_MAX_KDF = 1 << 40


@dataclass(frozen=True)
class KeyFile:
    """The data key sealed under the passphrase, and what unseals it."""

    salt: bytes
    kdf: crypto.KdfParams
    sealed: bytes


def encode_key_file(key_file: KeyFile) -> bytes:
    return MAGIC + cbor.encode({"v": VERSION, "salt": key_file.salt, "ops": key_file.kdf.opslimit, "mem": key_file.kdf.memlimit, "sealed": key_file.sealed})


def decode_key_file(data: bytes, name: str = KEY_FILE) -> KeyFile:
    """The key file in `data`; KeyFileInvalid naming `name` and the reason otherwise."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileInvalid(f"{name} is not a node key file: {len(data)} bytes is too large")
    if not data.startswith(MAGIC):
        if data.startswith(MAGIC.split(b"/")[0] + b"/"):
            raise KeyFileInvalid(f"{name} is a node key file of a newer format: upgrade Rallypoint")
        raise KeyFileInvalid(f"{name} is not a node key file")
    try:
        value = cbor.decode(data[len(MAGIC) :], name, max_items=16)
    except InvalidInput as exc:
        raise KeyFileInvalid(f"{name} is damaged: {exc}") from exc
    if not isinstance(value, dict) or set(value) != {"v", "salt", "ops", "mem", "sealed"}:
        raise KeyFileInvalid(f"{name} is damaged: unexpected fields")
    if value["v"] != VERSION:
        raise KeyFileInvalid(f"{name} is a node key file of an unknown version ({value['v']!r})")
    salt, ops, mem, sealed = value["salt"], value["ops"], value["mem"], value["sealed"]
    if not (isinstance(salt, bytes) and len(salt) == crypto.SALT_BYTES):
        raise KeyFileInvalid(f"{name} is damaged: bad salt")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < _MAX_KDF for n in (ops, mem)):
        raise KeyFileInvalid(f"{name} is damaged: bad KDF cost")
    if not (isinstance(sealed, bytes) and len(sealed) == SEALED_KEY_BYTES):
        raise KeyFileInvalid(f"{name} is damaged: bad sealed key")
    return KeyFile(salt, crypto.KdfParams(ops, mem), sealed)


def database_key(data_key: bytes) -> bytes:
    """The SQLCipher key of the node's database: BLAKE2b-256 keyed by the data key, personalised
    for this use, so it reveals nothing of the data key or of any other key derived from it."""
    if len(data_key) != crypto.KEY_BYTES:
        raise ValueError("a data key is 32 bytes")
    return hashlib.blake2b(b"database", key=data_key, digest_size=32, person=_DB_KEY_PERSON).digest()


def key_pragma(db_key: bytes) -> str:
    """The statement that keys a SQLCipher connection with the raw key (no PBKDF2 on open)."""
    if len(db_key) != 32:
        raise ValueError("a database key is 32 bytes")
    return f"PRAGMA key = \"x'{db_key.hex()}'\""


def decode_data_key_file(data: bytes, name: str) -> bytes:
    """A relay's data key file: the 32-byte data key as 64 hex digits (a line break allowed) or
    as 32 raw bytes."""
    text = data.strip()
    if len(text) == 2 * crypto.KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) == crypto.KEY_BYTES:
        return data
    raise KeyFileInvalid(f"{name} does not hold a data key (64 hex digits)")


def encode_data_key_file(data_key: bytes) -> bytes:
    return data_key.hex().encode() + b"\n"


PLAINTEXT_HEADER = b"SQLite format 3\x00"


def is_plaintext_database(header: bytes) -> bool:
    """Whether a database file beginning with `header` is a plain SQLite file (SQLCipher's begin
    with their random salt)."""
    return header.startswith(PLAINTEXT_HEADER)
