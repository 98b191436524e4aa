"""Identifiers: time-sortable message ids and short, human-checkable key ids.

Key ids follow Syncthing's idea: a base32 rendering of a hash of the public key with a
check character (Luhn mod 32), so a mistyped or misread id is caught by eye or by code."""

from __future__ import annotations

import hashlib
import re
import threading

from appliance.errors import InvalidInput

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

_KEY_ID_DATA_CHARS = 20  # 100 bits of the key's SHA-256: collisions need ~2^50 keys
_KEY_ID_GROUP = 7
_MESSAGE_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def _luhn32_check(chars: str) -> str:
    """Luhn mod N over the base32 alphabet: catches every single-character error
    and most adjacent transpositions."""
    factor, total, n = 2, 0, len(BASE32)
    for ch in reversed(chars):
        addend = factor * BASE32.index(ch)
        factor = 1 if factor == 2 else 2
        total += addend // n + addend % n
    return BASE32[(n - total % n) % n]


def _b32(data: bytes) -> str:
    bits = int.from_bytes(data, "big")
    width = len(data) * 8
    out = []
    for shift in range(width - 5, -1, -5):
        out.append(BASE32[(bits >> shift) & 31])
    return "".join(out)


def key_id(public_key: bytes) -> str:
    """`ABCDEFG-HIJKLMN-OPQRSTC`: 20 base32 characters of SHA-256(key) and one check character."""
    data = _b32(hashlib.sha256(public_key).digest()[:15])[:_KEY_ID_DATA_CHARS]
    full = data + _luhn32_check(data)
    return "-".join(full[i : i + _KEY_ID_GROUP] for i in range(0, len(full), _KEY_ID_GROUP))


def normalise_key_id(text: str) -> str:
    """Accepts any case, spaces or dashes; raises InvalidInput when the check character fails."""
    raw = re.sub(r"[\s-]", "", text).upper()
    if len(raw) != _KEY_ID_DATA_CHARS + 1 or any(c not in BASE32 for c in raw):
        raise InvalidInput(f"not a node id: {text!r}")
    if _luhn32_check(raw[:-1]) != raw[-1]:
        raise InvalidInput(f"node id {text!r} fails its check character (mistyped?)")
    return "-".join(raw[i : i + _KEY_ID_GROUP] for i in range(0, len(raw), _KEY_ID_GROUP))


def encode_crockford(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


class MessageIdFactory:
    """ULID-style ids: 48-bit milliseconds then 80 random bits, Crockford base32.

    Within one millisecond the random part is incremented, so ids made by one process
    are strictly increasing even when the clock stalls or steps back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self, now_ms: int, random80: int) -> str:
        with self._lock:
            if now_ms <= self._last_ms:
                now_ms = self._last_ms
                random80 = self._last_rand + 1
                if random80 >= 1 << 80:
                    now_ms += 1
                    random80 = 0
            self._last_ms, self._last_rand = now_ms, random80
        return encode_crockford(now_ms, 10) + encode_crockford(random80, 16)


def unknown_user(user_hex: str) -> str:
    """How a user the directory does not name is shown: the start of their key."""
    return f"unknown:{user_hex[:8]}"


def is_message_id(text: str) -> bool:
    return bool(_MESSAGE_ID.match(text))


def message_id_ms(message_id: str) -> int:
    value = 0
    for ch in message_id[:10]:
        value = value * 32 + CROCKFORD.index(ch)
    return value


MIN_HASH_PREFIX = 8  # hex digits: what a person may type for a blob hash (`read` shows 12)


def hash_prefix_range(prefix: str, digest_bytes: int = 32) -> tuple[bytes, bytes]:
    """The lowest and highest digest that start with a hex `prefix` (of any length from
    MIN_HASH_PREFIX up to the whole digest): a range query finds every match."""
    text = prefix.strip().lower()
    if not MIN_HASH_PREFIX <= len(text) <= 2 * digest_bytes or any(c not in "0123456789abcdef" for c in text):
        raise InvalidInput(f"not a blob hash: {prefix!r} (give at least {MIN_HASH_PREFIX} of its hex digits)")
    return bytes.fromhex(text.ljust(2 * digest_bytes, "0")), bytes.fromhex(text.ljust(2 * digest_bytes, "f"))
