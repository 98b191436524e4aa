"""Strict, canonical CBOR: one encoding per value, so signed bytes have one meaning."""

from __future__ import annotations

from typing import Any

import cbor2

from appliance.errors import InvalidInput

MAX_DEPTH = 16


def encode(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes, what: str) -> Any:
    """Rejects trailing bytes, indefinite lengths, duplicate keys, deep nesting and any
    encoding that is not the canonical one."""
    try:
        value = cbor2.loads(
            data, max_depth=MAX_DEPTH, allow_indefinite=False, allow_duplicate_keys=False
        )
    except Exception as exc:  # cbor2 raises several unrelated types
        raise InvalidInput(f"{what}: malformed CBOR ({exc})") from exc
    if encode(value) != data:
        raise InvalidInput(f"{what}: not canonical CBOR or trailing bytes")
    return value
