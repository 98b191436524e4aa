"""Attribute policies: attributes an admin assigns to a user (in their certificate, signed),
and the attributes a channel requires (a root scalar of its head). Pure: strings in and out.

An attribute is `key=value`: keys lowercase letters, digits, - and _ (up to 32), values
printable without spaces, commas or `=` (up to 64). A channel's requirement is every listed
attribute, exactly: a user qualifies when their certificate carries each of them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from appliance.errors import InvalidInput

MAX_ATTRIBUTES = 16
_KEY = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_VALUE = re.compile(r"[^\s,=]{1,64}")

Attributes = tuple[tuple[str, str], ...]  # sorted by key, each key once


def check_attributes(pairs: Iterable[tuple[str, str]]) -> Attributes:
    """The attributes, checked and sorted; InvalidInput for a bad key or value, a key twice, or too many."""
    found: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise InvalidInput(f"invalid attribute name {str(key)!r}: lowercase letters, digits, - and _, up to 32")
        if not isinstance(value, str) or not _VALUE.fullmatch(value) or not value.isprintable():
            raise InvalidInput(f"invalid value for attribute {key}: up to 64 printable characters, no spaces, commas or =")
        if key in found:
            raise InvalidInput(f"attribute {key} given twice")
        found[key] = value
    if len(found) > MAX_ATTRIBUTES:
        raise InvalidInput(f"at most {MAX_ATTRIBUTES} attributes")
    return tuple(sorted(found.items()))


def parse_assignments(words: Iterable[str]) -> Attributes:
    """`key=value` words, as an operator types them."""
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise InvalidInput(f"{word!r}: an attribute is written key=value")
        pairs.append((key.strip(), value.strip()))
    return check_attributes(pairs)


def encode(attributes: Attributes) -> str:
    """As a channel head holds a requirement: `key=value` joined by commas, sorted; "" for none."""
    return ",".join(f"{key}={value}" for key, value in check_attributes(attributes))


def decode(text: str) -> Attributes:
    """The inverse of encode; InvalidInput if `text` is not its canonical output."""
    if text == "":
        return ()
    attributes = parse_assignments(text.split(","))
    if encode(attributes) != text:
        raise InvalidInput("a requirement lists each attribute once, sorted")
    return attributes


def satisfies(held: Mapping[str, str] | Attributes, required: Attributes) -> bool:
    have = dict(held)
    return all(have.get(key) == value for key, value in required)


def describe(attributes: Attributes) -> str:
    return ", ".join(f"{key}={value}" for key, value in attributes) or "none"
