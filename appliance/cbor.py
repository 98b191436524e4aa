"""Strict, canonical CBOR: one encoding per value, so signed bytes have one meaning.

Rallypoint's profile: unsigned and negative integers, byte and text strings, arrays, maps and
null - nothing else. `decode` first walks the item heads without building anything, so item
bombs, deep nesting and tags (which cbor2 expands: string references and shared values turn
kilobytes into gigabytes) are refused before a single object is allocated."""

from __future__ import annotations

from typing import Any

import cbor2

from appliance.errors import InvalidInput

MAX_DEPTH = 16
DEFAULT_MAX_ITEMS = 100_000
NULL = 0xF6

Buffer = bytes | bytearray | memoryview


class CborTooLarge(InvalidInput):
    """More data items than the caller allows."""


def encode(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def scan(buf: Buffer, what: str, max_items: int = DEFAULT_MAX_ITEMS) -> None:
    """Checks one CBOR item's structure against the profile without decoding it: the count
    of data items, the nesting depth, no tags, no simple values but null, no floats, no
    indefinite lengths, and no bytes before or after the item. Hot: one pass per payload."""
    size = len(buf)
    pos = items = 0
    remaining = 1
    stack: list[int] = []
    push, pop = stack.append, stack.pop
    try:
        while remaining or stack:
            if not remaining:
                remaining = pop()
                continue
            remaining -= 1
            items += 1
            if items > max_items:
                raise CborTooLarge(f"{what} holds more than {max_items:,} CBOR items")
            initial = buf[pos]  # IndexError past the end
            pos += 1
            argument = initial & 0x1F
            if argument >= 24:
                if argument == 24:
                    argument = buf[pos]
                    pos += 1
                elif argument < 28:
                    width = 1 << (argument - 24)
                    argument = int.from_bytes(buf[pos : pos + width], "big")
                    pos += width
                else:
                    raise InvalidInput(f"{what}: indefinite-length or reserved CBOR encoding")
            major = initial >> 5
            if major == 2 or major == 3:
                pos += argument  # a string past the end fails the next read or the final check
            elif major == 4 or major == 5:
                if len(stack) >= MAX_DEPTH:
                    raise InvalidInput(f"{what}: CBOR nested deeper than {MAX_DEPTH}")
                push(remaining)
                remaining = argument if major == 4 else 2 * argument
            elif major == 6:
                raise InvalidInput(f"{what}: CBOR tags are not allowed")
            elif major == 7 and initial != NULL:
                raise InvalidInput(f"{what}: CBOR simple value or float 0x{initial:02x} is not allowed (only null)")
    except IndexError:
        raise InvalidInput(f"{what}: CBOR ends inside an item") from None
    if pos != size:
        raise InvalidInput(f"{what}: CBOR ends inside an item" if pos > size else f"{what}: trailing bytes after the CBOR item")


def decode_in_profile(data: Buffer, what: str, *, max_items: int = DEFAULT_MAX_ITEMS) -> Any:
    """Rejects anything outside the profile and duplicate map keys, whatever the encoding: for
    values whose author's signed op vouches for them (a message, an edit)."""
    scan(data, what, max_items)
    try:
        return cbor2.loads(data, max_depth=MAX_DEPTH, allow_indefinite=False, allow_duplicate_keys=False)
    except Exception as exc:  # cbor2 raises several unrelated types (CBORDecodeError is no ValueError)
        raise InvalidInput(f"{what}: malformed CBOR ({exc})") from exc


def decode(data: Buffer, what: str, *, max_items: int = DEFAULT_MAX_ITEMS) -> Any:
    """Rejects anything outside the profile, duplicate map keys, and any encoding that is not
    the canonical one."""
    value = decode_in_profile(data, what, max_items=max_items)
    if encode(value) != data:
        raise InvalidInput(f"{what}: not canonical CBOR")
    return value
