"""The usual format-2 message value read straight from its bytes.

Nearly every message is [author key, time, text], or that with a root id (or null), no files
and a few mentions after it. appliance/segments.py decodes a value by checking its CBOR against
the profile item by item and then decoding it (~2.5 us a message, most of what reading a
segment's messages costs); this reads the usual shape in one pass, with the same result the
general path gives for it. Anything else - another shape, another width of an author key,
negative times, files, a malformed byte - is left to the general path, which reads it or says
what is wrong: this never refuses.

Pure: bytes in, values out."""

from __future__ import annotations

from typing import NamedTuple

from appliance.changes import AUTHOR_KEY_BYTES

_ARRAY = 0x80  # major type 4 with its count in the initial byte: 0x80-0x97
_KEY_HEAD = bytes([0x58, AUTHOR_KEY_BYTES])  # a byte string of 32, as every author key is written
_NULL = 0xF6


class UsualMessage(NamedTuple):
    author: str  # hex
    created_at: int
    text: str
    root_id: str | None
    mentions: tuple[str, ...]  # user hexes


def read_usual_message(data: bytes) -> UsualMessage | None:
    """The message in `data` if it is in the usual shape, exactly as the general path reads
    it; None for any other bytes."""
    try:
        count = data[0] - _ARRAY
        if not 3 <= count <= 6 or data[1:3] != _KEY_HEAD:
            return None
        author = data[3:35].hex()
        initial = data[35]  # the time: an unsigned integer
        if initial < 24:
            created_at, position = initial, 36
        elif initial < 28:
            end = 36 + (1 << (initial - 24))
            created_at, position = int.from_bytes(data[36:end], "big"), end
        else:
            return None
        read = _text(data, position)
        if read is None:
            return None
        text, position = read
        root_id = None
        if count > 3:
            if data[position] == _NULL:
                position += 1
            else:
                read = _text(data, position)
                if read is None:
                    return None
                root_id, position = read
        if count > 4:
            if data[position] != _ARRAY:  # files: the general path reads them
                return None
            position += 1
        mentions: list[str] = []
        if count > 5:
            listed = data[position] - _ARRAY
            if not 0 <= listed < 24:
                return None
            position += 1
            for _ in range(listed):
                if data[position : position + 2] != _KEY_HEAD:
                    return None
                mentions.append(data[position + 2 : position + 34].hex())
                position += 34
    except (IndexError, UnicodeDecodeError):  # cut short, or text that is not UTF-8
        return None
    if position != len(data):  # trailing bytes, or an item that ran past the end
        return None
    return UsualMessage._make((author, created_at, text, root_id, tuple(mentions)))  # no keyword handling: ~0.3 us less


def _text(data: bytes, position: int) -> tuple[str, int] | None:
    """The text string whose head is at `position` and where the next item starts; None for
    another type, an indefinite length or a string cut short."""
    initial = data[position]
    if 0x60 <= initial < 0x78:
        start, length = position + 1, initial - 0x60
    elif 0x78 <= initial < 0x7C:
        start = position + 1 + (1 << (initial - 0x78))
        length = int.from_bytes(data[position + 1 : start], "big")
    else:
        return None
    end = start + length
    if end > len(data):
        return None
    return data[start:end].decode("utf-8"), end
