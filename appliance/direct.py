"""Direct conversations: the channel id is derived from the participants' user keys, so two
nodes that start the same conversation while apart make the same channel, and a receiver
checks a head's participant list against its id. Pure: bytes and strings in and out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from appliance.changes import AUTHOR_KEY_BYTES
from appliance.errors import InvalidInput

MIN_PARTICIPANTS = 2
MAX_PARTICIPANTS = 8
DOMAIN = b"rallypoint/direct/v1\x00"


def participants_of(keys: Iterable[bytes]) -> tuple[bytes, ...]:
    """The participants, sorted and each once; InvalidInput unless 2 to MAX_PARTICIPANTS user keys."""
    unique = sorted(set(keys))
    if any(len(key) != AUTHOR_KEY_BYTES for key in unique):
        raise InvalidInput("a direct conversation's participants are user keys")
    if not MIN_PARTICIPANTS <= len(unique) <= MAX_PARTICIPANTS:
        raise InvalidInput(f"a direct conversation has {MIN_PARTICIPANTS} to {MAX_PARTICIPANTS} participants, you included ({len(unique)} given)")
    return tuple(unique)


def direct_channel_id(keys: Iterable[bytes]) -> str:
    """First 10 bytes of SHA-256(domain || sorted keys), as the 20 hex digits of a channel id."""
    return hashlib.sha256(DOMAIN + b"".join(participants_of(keys))).digest()[:10].hex()


def encode_participants(keys: Iterable[bytes]) -> str:
    """As the head document holds them: sorted key hexes joined by commas."""
    return ",".join(key.hex() for key in participants_of(keys))


def decode_participants(text: str) -> tuple[bytes, ...]:
    """The inverse of encode_participants; InvalidInput if `text` is not its canonical output."""
    try:
        keys = tuple(bytes.fromhex(part) for part in text.split(","))
    except ValueError as exc:
        raise InvalidInput("a participant list names keys in hex") from exc
    if encode_participants(keys) != text:
        raise InvalidInput("a participant list is sorted, each key once")
    return keys


def matches(channel_id: str, participants: str) -> bool:
    """Whether a head's participant list is the one its channel id was derived from."""
    try:
        return direct_channel_id(decode_participants(participants)) == channel_id
    except InvalidInput:
        return False
