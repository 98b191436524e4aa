"""A local user's signing key sealed under their own secret: Argon2id over the secret with a
salt of the user's own and the node's KDF cost, then XSalsa20-Poly1305. The derived key also
seals what else only that user may read (their TOTP secret). Salts and nonces are parameters."""

from __future__ import annotations

from appliance import crypto, ids
from appliance.errors import InvalidInput

MIN_SECRET_CHARS = 8
ONE_TIME_SECRET_CHARS = 16  # a secret made for a user by the node: 80 bits, typed once


def check_secret(secret: str) -> None:
    if len(secret) < MIN_SECRET_CHARS:
        raise InvalidInput(f"a user's secret must have at least {MIN_SECRET_CHARS} characters")


def derive(secret: str, salt: bytes, kdf: crypto.KdfParams) -> bytes:
    """The user's secret-derived key (slow on purpose: run it off the event loop)."""
    return crypto.derive_key(secret.encode(), salt, kdf)


def seal(derived: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    return crypto.secretbox_seal(derived, plaintext, nonce)


def open_sealed(derived: bytes, sealed: bytes) -> bytes | None:
    """None when the secret the key was derived from is not the one it was sealed under."""
    return crypto.secretbox_open(derived, sealed)


def one_time_secret(random: bytes) -> str:
    """A secret the node makes up for a user (an admin hands it over; the user replaces it)."""
    if len(random) != ONE_TIME_SECRET_CHARS:
        raise ValueError(f"a one-time secret takes {ONE_TIME_SECRET_CHARS} random bytes")
    plain = "".join(ids.CROCKFORD[b % 32] for b in random)
    return "-".join(plain[i : i + 4] for i in range(0, ONE_TIME_SECRET_CHARS, 4))
